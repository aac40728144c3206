//! The pipeline on the mock backends: concurrency, idempotence, teardown order, failure
//! isolation, cancellation, zone failover and secrets — the executor's own logic.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use kgenv_core::backends::compute::InstanceStatus;
use kgenv_core::error::{QuotaInfo, QuotaScope};
use kgenv_core::mock::{Fault, Held, MockWorld};
use kgenv_core::runner::{Change, Event, Outcome, RunOptions, Runner};
use kgenv_core::spec::{
    BucketMount, Container, Data, Env, GithubKey, Image, Instance, Jupyter, Target,
};
use kgenv_core::state::StateStore;
use tokio_util::sync::CancellationToken;

/// Keys and certificates go under one temp KGENV_HOME for the whole test binary.
fn home() -> &'static std::path::Path {
    static HOME: OnceLock<tempfile::TempDir> = OnceLock::new();
    HOME.get_or_init(|| {
        let d = tempfile::tempdir().expect("temp home");
        std::env::set_var("KGENV_HOME", d.path());
        d
    })
    .path()
}

/// A full gce environment; `pw_var` is a per-test password variable.
fn full_env(name: &str, pw_var: &str, zones: &[&str]) -> Env {
    home();
    std::env::set_var(pw_var, format!("pw-{name}-secret"));
    let mut inst = Instance::builder()
        .project("my-project")
        .gpu("nvidia-tesla-t4", 1);
    for z in zones {
        inst = inst.zone(*z);
    }
    Env::builder(name)
        .target(Target::Gce)
        .instance(inst)
        .bucket(BucketMount::builder(format!("{name}-data")))
        .github_key(GithubKey::builder().repo("me/work"))
        .image(Image::builder().apt("cmake"))
        .container(Container::builder())
        .jupyter(Jupyter::builder().password_env(pw_var))
        .data(Data::builder("titanic"))
        .build()
        .expect("valid env")
}

struct Run {
    world: MockWorld,
    runner: Runner,
    state_dir: tempfile::TempDir,
    events: Arc<Mutex<Vec<Event>>>,
}

impl Run {
    fn new(env: Env) -> Self {
        let world = MockWorld::new();
        Self::with_world(env, world)
    }
    fn with_world(env: Env, world: MockWorld) -> Self {
        let state_dir = tempfile::tempdir().expect("state dir");
        let runner = Runner::new(env, world.backends()).state_dir(state_dir.path());
        Self {
            world,
            runner,
            state_dir,
            events: Arc::default(),
        }
    }
    fn sink(&self) -> impl Fn(Event) + Send + Sync + 'static {
        let events = self.events.clone();
        move |e| events.lock().expect("events").push(e)
    }
    fn state_text(&self) -> Option<String> {
        std::fs::read_to_string(StateStore::path_for(
            self.state_dir.path(),
            &self.runner.env().name,
        ))
        .ok()
    }
}

/// The steps of `report` whose outcome is `outcome`, in the order they finished.
fn outcomes<'r>(report: &'r kgenv_core::runner::Report, outcome: &Outcome) -> Vec<&'r str> {
    report
        .steps
        .iter()
        .filter(|s| s.outcome == *outcome)
        .map(|s| s.step.as_str())
        .collect()
}

#[tokio::test]
async fn up_converges_and_second_up_makes_no_mutating_call() {
    let r = Run::new(full_env("idem", "KG_PW_IDEM", &["us-central1-a"]));
    let report = r
        .runner
        .up(RunOptions::default(), r.sink())
        .await
        .expect("up");
    // On a fresh world every step that makes something changed; only the ones that make
    // nothing (the read-only preflight, the login, the GPU check) found nothing to do.
    let mut satisfied = outcomes(&report, &Outcome::Satisfied);
    satisfied.sort();
    assert_eq!(satisfied, ["gpu", "host", "preflight"], "{report:#?}");
    assert_eq!(
        report.changed() + satisfied.len(),
        report.steps.len(),
        "{report:#?}"
    );
    assert!(!r.world.mutating_calls().is_empty());
    let w = r.world.state();
    assert_eq!(w.instances.len(), 1);
    assert_eq!(w.containers.len(), 1);
    assert!(w.containers.values().all(|c| c.running));
    assert_eq!(w.landed.len(), 3, "titanic's three files");

    r.world.clear_calls();
    let again = r
        .runner
        .up(RunOptions::default(), r.sink())
        .await
        .expect("second up");
    assert_eq!(again.changed(), 0, "{again:#?}");
    let mutating = r.world.mutating_calls();
    assert!(
        mutating.is_empty(),
        "second up made mutating calls: {mutating:#?}"
    );
    assert!(again.steps.iter().all(|s| s.outcome == Outcome::Satisfied));

    // And plan agrees: nothing to change.
    let plan = r
        .runner
        .plan(RunOptions::default(), |_| {})
        .await
        .expect("plan");
    assert_eq!(plan.planned_changes(), 0, "{plan:#?}");
}

#[tokio::test]
async fn plan_makes_no_mutating_call_and_lists_actions() {
    let r = Run::new(full_env("plan", "KG_PW_PLAN", &["us-central1-a"]));
    let report = r
        .runner
        .plan(RunOptions::default(), r.sink())
        .await
        .expect("plan");
    assert!(
        r.world.mutating_calls().is_empty(),
        "{:#?}",
        r.world.mutating_calls()
    );
    assert_eq!(
        report.outcome("instance"),
        Some(&Outcome::Planned {
            change: Change::Create
        })
    );
    let events = r.events.lock().expect("events");
    let instance_actions = events.iter().find_map(|e| match e {
        Event::Planned { step, actions, .. } if step == "instance" => Some(actions.clone()),
        _ => None,
    });
    let actions = instance_actions.expect("instance planned");
    assert!(
        actions
            .iter()
            .any(|a| a.contains("resolves to common-cu129-ubuntu-2204-nvidia-580-v20261101")),
        "{actions:?}"
    );
    assert!(
        actions.iter().any(
            |a| a.contains("POST compute/v1/projects/my-project/zones/us-central1-a/instances")
        ),
        "{actions:?}"
    );
    assert!(r.state_text().is_none(), "plan writes no state");
}

/// A hang guard for waits on a held call: generous, so only a bug (the call never made)
/// reaches it, and then the test fails saying what it waited for.
const GUARD: Duration = Duration::from_secs(60);

/// Waits until `held`'s call has started, or fails naming it.
async fn started(held: &Held, why: &str) {
    tokio::time::timeout(GUARD, held.started())
        .await
        .unwrap_or_else(|_| panic!("{} never started: {why}", held.op()));
}

#[tokio::test]
async fn independent_steps_overlap_and_dependents_wait() {
    let r = Run::new(full_env("overlap", "KG_PW_OVERLAP", &["us-central1-a"]));
    // Both inserts held at their start: the run can only get both going at once if the
    // firewall and the instance do not wait for each other.
    let fw = r.world.hold_next("compute.insert_firewall");
    let inst = r.world.hold_next("compute.insert_instance");
    let up = r.runner.up(RunOptions::default().until("host"), r.sink());
    let both = async {
        started(&fw, "the firewall insert").await;
        started(
            &inst,
            "the instance insert, while the firewall insert was in flight",
        )
        .await;
        assert!(
            !r.world.calls().iter().any(|c| c.op == "remote.connect"),
            "the host step started while its dependencies were in flight"
        );
        fw.release();
        inst.release();
    };
    let (report, ()) = tokio::join!(up, both);
    report.expect("up");
    let calls = r.world.calls();
    let find = |op: &str| {
        calls
            .iter()
            .find(|c| c.op == op)
            .cloned()
            .unwrap_or_else(|| panic!("no {op} in {calls:#?}"))
    };
    let fw = find("compute.insert_firewall");
    let inst = find("compute.insert_instance");
    let connect = find("remote.connect");
    assert!(
        connect.start >= inst.end && connect.start >= fw.end,
        "host connected before its dependencies finished"
    );
}

#[tokio::test]
async fn down_reverses_the_order_and_leaves_only_buckets_and_data() {
    let r = Run::new(full_env("down", "KG_PW_DOWN", &["us-central1-a"]));
    r.runner
        .up(RunOptions::default(), r.sink())
        .await
        .expect("up");
    r.world.clear_calls();
    let report = r
        .runner
        .down(RunOptions::default(), r.sink())
        .await
        .expect("down");
    // What up made is removed (the bucket's mount, not the bucket); the rest had nothing
    // of kgenv's to remove (kept data, disk and image; read-only steps).
    let mut removed = outcomes(&report, &Outcome::Removed);
    removed.sort();
    assert_eq!(
        removed,
        [
            "bucket",
            "container",
            "firewall/down-ssh",
            "github-key",
            "instance",
            "jupyter"
        ],
        "{report:#?}"
    );
    assert_eq!(
        removed.len() + outcomes(&report, &Outcome::Nothing).len(),
        report.steps.len(),
        "{report:#?}"
    );
    let calls = r.world.mutating_calls();
    let pos = |op: &str| {
        calls
            .iter()
            .position(|c| c.op == op)
            .unwrap_or_else(|| panic!("no {op} in {calls:#?}"))
    };
    assert!(pos("engine.remove_container") < pos("compute.delete_instance"));
    assert!(pos("github.delete_key") < pos("compute.delete_instance"));
    // The firewall goes after what reached the host through it, like the instance.
    assert!(pos("engine.remove_container") < pos("compute.delete_firewall"));
    assert!(pos("github.delete_key") < pos("compute.delete_firewall"));
    let deletes = |op: &str| calls.iter().filter(|c| c.op == op).count();
    assert_eq!(
        (
            deletes("compute.delete_instance"),
            deletes("compute.delete_firewall")
        ),
        (1, 1),
        "each deleted once: {calls:#?}"
    );
    let w = r.world.state();
    assert!(
        w.instances.is_empty() && w.firewalls.is_empty() && w.containers.is_empty(),
        "{w:#?}"
    );
    assert!(w.github_keys.is_empty());
    // The data disk's mount goes with the VM's boot disk (its fstab): nothing to undo.
    assert_eq!(
        w.host_scripts.keys().collect::<Vec<_>>(),
        vec!["disk-mount"],
        "every other host change is undone"
    );
    assert_eq!(w.buckets.len(), 1, "buckets are kept");
    assert_eq!(
        w.disks.len(),
        1,
        "the data disk is kept: {:?}",
        w.disks.keys()
    );
    assert_eq!(w.landed.len(), 3, "data is kept");
    // Only the bucket fact (kept on purpose) remains in the state.
    let state = r.state_text().expect("state with the kept bucket");
    assert!(
        state.contains("bucket_created_by_kgenv")
            && !state.contains("\"created\": {\n        \"instance\""),
        "{state}"
    );
    // A second down has nothing to do.
    r.world.clear_calls();
    r.runner
        .down(RunOptions::default(), r.sink())
        .await
        .expect("down again");
    assert!(r.world.mutating_calls().is_empty());
}

#[tokio::test]
async fn a_failure_stops_only_its_dependents() {
    let r = Run::new(full_env("fail", "KG_PW_FAIL", &["us-central1-a"]));
    r.world
        .fail_next("engine.build_image", 1, Fault::PermissionDenied);
    let err = r
        .runner
        .up(RunOptions::default(), r.sink())
        .await
        .expect_err("image fails");
    let kgenv_core::Error::RunFailed { failed, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(failed, &vec!["image".to_string()]);
    let skipped: Vec<String> = r
        .events
        .lock()
        .expect("events")
        .iter()
        .filter_map(|e| match e {
            Event::Skipped { step, .. } => Some(step.clone()),
            _ => None,
        })
        .collect();
    for dependent in ["container", "gpu", "jupyter"] {
        assert!(
            skipped.iter().any(|s| s == dependent),
            "{dependent} should be skipped: {skipped:?}"
        );
    }
    let w = r.world.state();
    assert_eq!(
        w.landed.len(),
        3,
        "data does not depend on the image and still landed"
    );
    assert_eq!(
        w.github_keys.len(),
        1,
        "github key does not depend on the image"
    );
    assert!(w.containers.is_empty());
    // The next up picks up where it failed.
    r.runner
        .up(RunOptions::default(), r.sink())
        .await
        .expect("retry converges");
    assert_eq!(r.world.state().containers.len(), 1);
}

#[tokio::test]
async fn cancel_lets_running_steps_finish_and_keeps_state_consistent() {
    let r = Run::new(full_env("cancel", "KG_PW_CANCEL", &["us-central1-a"]));
    let insert = r.world.hold_next("compute.insert_instance");
    let token = CancellationToken::new();
    let world = r.world.clone();
    let runner = Runner::new(r.runner.env().clone(), world.backends())
        .state_dir(r.state_dir.path())
        .cancel_token(token.clone());
    let up = runner.up(RunOptions::default(), |_| {});
    let cancel_mid_insert = async {
        // The instance insert is in flight (held) when the cancel comes; it then goes on.
        started(&insert, "the instance insert").await;
        token.cancel();
        assert!(
            !r.world
                .calls()
                .iter()
                .any(|c| c.op == "compute.insert_instance"),
            "the insert had not finished when the run was cancelled"
        );
        insert.release();
    };
    let (err, ()) = tokio::join!(up, cancel_mid_insert);
    let err = err.expect_err("cancelled");
    assert!(err.is_cancelled(), "{err}");
    // The insert in flight finished and was recorded; nothing after it ran.
    let w = r.world.state();
    assert_eq!(w.instances.len(), 1);
    let state: serde_json::Value =
        serde_json::from_str(&r.state_text().expect("state written")).expect("state parses");
    assert_eq!(state["steps"]["instance"]["facts"]["zone"], "us-central1-a");
    assert!(w.containers.is_empty());
    assert!(
        !r.world.calls().iter().any(|c| c.op == "remote.connect"),
        "no step started after the cancel"
    );
    // The cancelled runner starts nothing more: its down is refused as cancelled and
    // changes nothing.
    r.world.clear_calls();
    let refused = runner
        .down(RunOptions::default(), |_| {})
        .await
        .expect_err("a cancelled runner runs no step");
    assert!(refused.is_cancelled(), "{refused}");
    assert!(
        r.world.mutating_calls().is_empty(),
        "{:#?}",
        r.world.mutating_calls()
    );
    // From that state, a new run's down cleans up everything kgenv made.
    let fresh = Runner::new(r.runner.env().clone(), world.backends()).state_dir(r.state_dir.path());
    fresh
        .down(RunOptions::default(), |_| {})
        .await
        .expect("down");
    let w = r.world.state();
    assert!(w.instances.is_empty() && w.firewalls.is_empty(), "{w:#?}");
}

#[tokio::test]
async fn stockout_moves_to_the_next_zone_and_leaves_nothing_behind() {
    let world = MockWorld::new();
    world.edit(|s| s.stockout_zones.push("us-central1-a".into()));
    let r = Run::with_world(
        full_env("stock", "KG_PW_STOCK", &["us-central1-a", "us-central1-b"]),
        world,
    );
    r.runner
        .up(RunOptions::default().until("instance"), r.sink())
        .await
        .expect("up");
    let w = r.world.state();
    let zones: Vec<&str> = w.instances.values().map(|i| i.at.zone.as_str()).collect();
    assert_eq!(zones, vec!["us-central1-b"]);
    assert!(r
        .state_text()
        .expect("state")
        .contains("\"zone\": \"us-central1-b\""));
}

#[tokio::test]
async fn global_quota_stops_at_once_with_nothing_created() {
    let r = Run::new(full_env(
        "quota",
        "KG_PW_QUOTA",
        &["us-central1-a", "us-west1-b"],
    ));
    r.world.fail_next(
        "compute.insert_instance",
        1,
        Fault::Quota(QuotaInfo {
            metric: "GPUS_ALL_REGIONS".into(),
            limit: Some(0.0),
            scope: QuotaScope::Global,
        }),
    );
    let err = r
        .runner
        .up(RunOptions::default().until("instance"), r.sink())
        .await
        .expect_err("quota");
    assert_eq!(
        err.quota().map(|q| q.metric.as_str()),
        Some("GPUS_ALL_REGIONS"),
        "{err}"
    );
    let inserts = r
        .world
        .calls()
        .iter()
        .filter(|c| c.op == "compute.insert_instance")
        .count();
    assert_eq!(inserts, 1, "a global quota is not retried in another zone");
    assert!(r.world.state().instances.is_empty());
}

#[tokio::test]
async fn a_stopped_instance_is_started_not_recreated() {
    let r = Run::new(full_env("stopped", "KG_PW_STOPPED", &["us-central1-a"]));
    r.runner
        .up(RunOptions::default().until("instance"), r.sink())
        .await
        .expect("up");
    r.world.edit(|s| {
        s.instances
            .values_mut()
            .for_each(|i| i.status = InstanceStatus::Terminated)
    });
    r.world.clear_calls();
    r.runner
        .up(RunOptions::default().until("instance"), r.sink())
        .await
        .expect("up again");
    let ops: Vec<String> = r.world.mutating_calls().into_iter().map(|c| c.op).collect();
    assert_eq!(ops, vec!["compute.start_instance".to_string()]);
}

#[tokio::test]
async fn selection_runs_only_what_was_asked() {
    let r = Run::new(full_env("select", "KG_PW_SELECT", &["us-central1-a"]));
    let report = r
        .runner
        .up(RunOptions::default().until("instance"), r.sink())
        .await
        .expect("until");
    let steps: Vec<&str> = report.steps.iter().map(|s| s.step.as_str()).collect();
    // The instance and what it depends on (the read-only preflight), not the firewall
    // beside it nor anything after it.
    assert_eq!(steps, vec!["preflight", "instance"]);
    let err = r
        .runner
        .up(RunOptions::default().only(["nope"]), r.sink())
        .await
        .expect_err("unknown step");
    assert!(
        err.is_config() && err.to_string().contains("steps are:"),
        "{err}"
    );
    let report = r
        .runner
        .plan(RunOptions::default().only(["firewall"]), |_| {})
        .await
        .expect("prefix");
    assert!(
        report.steps.iter().all(|s| s.step.starts_with("firewall/")),
        "{report:#?}"
    );
}

#[tokio::test]
async fn no_secret_reaches_state_events_or_the_simulated_host_in_plaintext() {
    let r = Run::new(full_env("secret", "KG_PW_SECRET", &["us-central1-a"]));
    r.runner
        .up(RunOptions::default(), r.sink())
        .await
        .expect("up");
    let secret = "pw-secret-secret";
    assert!(!r.state_text().expect("state").contains(secret));
    let events = format!("{:?}", r.events.lock().expect("events"));
    assert!(!events.contains(secret));
    let w = r.world.state();
    let config = w
        .host_files
        .iter()
        .find(|(p, _)| p.ends_with("jupyter_server_config.json"))
        .map(|(_, (c, mode))| (String::from_utf8_lossy(c).into_owned(), *mode))
        .expect("jupyter config on host");
    assert!(
        !config.0.contains(secret) && config.0.contains("argon2:$argon2id$"),
        "{}",
        config.0
    );
    assert_eq!(config.1, 0o600);
    let key = w
        .host_files
        .iter()
        .find(|(p, _)| p.ends_with("key.pem"))
        .map(|(_, (_, m))| *m);
    assert_eq!(key, Some(0o600));
}

#[tokio::test]
async fn missing_password_fails_before_any_call() {
    home();
    let env = Env::builder("nopw")
        .target(Target::Local)
        .image(Image::builder())
        .container(Container::builder())
        .jupyter(Jupyter::builder().password_env("KG_PW_NEVER_SET"))
        .build()
        .expect("valid");
    let r = Run::new(env);
    let err = r
        .runner
        .up(RunOptions::default(), r.sink())
        .await
        .expect_err("no password");
    assert!(err.is_config(), "{err}");
    assert!(err.to_string().contains("KG_PW_NEVER_SET"), "{err}");
    assert!(r.world.calls().is_empty(), "{:#?}", r.world.calls());
}

#[tokio::test]
async fn two_runs_on_one_environment_exclude_each_other() {
    let r = Run::new(full_env("lock", "KG_PW_LOCK", &["us-central1-a"]));
    // The first run is held inside its instance insert, so it holds the lock for as long as
    // the second run waits for it (LOCK_GRACE) and longer.
    let insert = r.world.hold_next("compute.insert_instance");
    let other =
        Runner::new(r.runner.env().clone(), r.world.backends()).state_dir(r.state_dir.path());
    let first = r.runner.up(RunOptions::default().until("instance"), |_| {});
    let second = async {
        started(&insert, "the first run's instance insert").await;
        let b = other
            .up(RunOptions::default().until("instance"), |_| {})
            .await;
        insert.release();
        b
    };
    let (a, b) = tokio::join!(first, second);
    a.expect("first run");
    let e = b.expect_err("second run is refused while the first holds the lock");
    assert!(e.to_string().contains("busy"), "{e}");
    assert_eq!(r.world.state().instances.len(), 1);
    let inserts = r
        .world
        .calls()
        .iter()
        .filter(|c| c.op == "compute.insert_instance")
        .count();
    assert_eq!(inserts, 1, "the refused run made no insert");
}

/// A local environment whose only work is titanic's data, `train.csv` served zipped.
fn zipped_data_run(name: &str, extract: bool) -> (Run, String) {
    home();
    let dest = format!("/data/{name}");
    let env = Env::builder(name)
        .target(Target::Local)
        .data(Data::builder("titanic").dest(&dest).extract(extract))
        .build()
        .expect("valid env");
    let r = Run::new(env);
    r.world.edit(|s| {
        s.zipped.insert(
            "titanic/train.csv".into(),
            vec![kgenv_core::backends::kaggle::DataFile {
                name: "train.csv".into(),
                size: 61_194,
            }],
        );
    });
    (r, dest)
}

#[tokio::test]
async fn the_data_step_extracts_when_the_spec_says_so() {
    let (r, dest) = zipped_data_run("unzip", true);
    r.runner
        .up(RunOptions::default(), r.sink())
        .await
        .expect("up");
    let w = r.world.state();
    let file = |f: &str| w.data_files.get(&format!("{dest}/{f}")).copied();
    assert_eq!(file("train.csv"), Some(61_194), "{:?}", w.data_files);
    assert_eq!(
        file("train.csv.zip"),
        None,
        "the archive is gone once unpacked"
    );
    assert_eq!(
        file("test.csv"),
        Some(28_629),
        "files not zipped land as they are"
    );
    assert!(w.extract_requested.contains(&format!("{dest}/train.csv")));

    // A second run finds everything there (by listed name) and fetches nothing.
    r.world.clear_calls();
    r.runner
        .up(RunOptions::default(), r.sink())
        .await
        .expect("second up");
    assert!(
        r.world.mutating_calls().is_empty(),
        "{:#?}",
        r.world.mutating_calls()
    );
}

#[tokio::test]
async fn the_data_step_leaves_zips_alone_by_default() {
    let (r, dest) = zipped_data_run("keepzip", false);
    r.runner
        .up(RunOptions::default(), r.sink())
        .await
        .expect("up");
    let w = r.world.state();
    let file = |f: &str| w.data_files.get(&format!("{dest}/{f}")).copied();
    assert_eq!(file("train.csv.zip"), Some(61_194), "{:?}", w.data_files);
    assert_eq!(file("train.csv"), None, "nothing unpacked");
    assert!(w.extract_requested.is_empty());
}

//! Confirm before destroying: `down`'s preview (what each step deletes and keeps, from the
//! state file alone, in `down`'s order), `--delete-disk` checked against the disks the
//! environment keeps, `down_confirmed` refusing without an answer, and `up` asking before a
//! change its step marks disruptive. Engine rules run on small made-up steps; the runner's
//! on the simulated world with the example environment.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;
use kgenv_core::backends::remote::HostAddr;
use kgenv_core::mock::MockWorld;
use kgenv_core::plan::{
    drive, CheckOutcome, Destroyed, Disruption, Event, EventSink, Step, StepCtx, Teardown,
};
use kgenv_core::runner::{RunOptions, Runner};
use kgenv_core::spec::Env;
use kgenv_core::state::{State, StateStore, StepRecord};
use kgenv_core::Error;

fn home() {
    static HOME: OnceLock<tempfile::TempDir> = OnceLock::new();
    HOME.get_or_init(|| {
        let d = tempfile::tempdir().expect("temp home");
        std::env::set_var("KGENV_HOME", d.path());
        std::env::set_var("KGENV_JUPYTER_PASSWORD", "confirm-test-password");
        d
    });
}

fn local_env() -> Env {
    kgenv_core::config::parse_str(
        "name = \"kg\"\ntarget = \"local\"\n",
        "kgenv.toml".as_ref(),
        &kgenv_core::config::Overrides::default(),
    )
    .expect("env")
}

fn no_host(_: &Env, _: &State) -> kgenv_core::Result<HostAddr> {
    Err(Error::Usage("no host in these tests".into()))
}

/// A made-up step: `disruptive` makes its check find a change that restarts the VM; `disk`
/// makes it hold a data disk of that name, kept unless named.
struct Fake {
    id: String,
    deps: Vec<String>,
    disruptive: bool,
    disk: Option<String>,
    applied: AtomicUsize,
}

impl Fake {
    fn new(id: &str, deps: &[&str]) -> Self {
        Self {
            id: id.into(),
            deps: deps.iter().map(|d| d.to_string()).collect(),
            disruptive: false,
            disk: None,
            applied: AtomicUsize::new(0),
        }
    }
}

#[async_trait]
impl Step for Fake {
    fn id(&self) -> &str {
        &self.id
    }
    fn deps(&self) -> &[String] {
        &self.deps
    }
    fn summary(&self) -> String {
        format!("fake {}", self.id)
    }
    fn planned_actions(&self) -> Vec<String> {
        vec!["make it".into()]
    }
    async fn check(&self, _ctx: &StepCtx) -> kgenv_core::Result<CheckOutcome> {
        Ok(if self.disruptive {
            CheckOutcome::drifted(
                vec!["machine_type: n1-standard-8 → n1-standard-16".into()],
                vec!["POST setMachineType".into()],
            )
            .disruptive("stops and restarts the VM")
        } else {
            CheckOutcome::satisfied()
        })
    }
    async fn apply(&self, _ctx: &StepCtx) -> kgenv_core::Result<()> {
        self.applied.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    async fn destroy(&self, _ctx: &StepCtx) -> kgenv_core::Result<Destroyed> {
        Ok(Destroyed::Nothing)
    }
    fn teardown(&self, record: &StepRecord, ctx: &StepCtx) -> Teardown {
        let t = Teardown::deleting_created(record);
        match &self.disk {
            Some(d) if ctx.delete_disk_requested(d) => t.disk(d).delete(format!("disk {d}")),
            Some(d) => t.disk(d).keep(format!("disk {d}")),
            None => t,
        }
    }
}

struct Rig {
    ctx: StepCtx,
    events: Arc<Mutex<Vec<Event>>>,
    _dir: tempfile::TempDir,
}

fn rig() -> Rig {
    let dir = tempfile::tempdir().expect("state dir");
    let store = StateStore::open(dir.path(), "kg", "local").expect("state");
    let events: Arc<Mutex<Vec<Event>>> = Arc::default();
    let seen = events.clone();
    let ctx = StepCtx::new(
        Arc::new(local_env()),
        MockWorld::new().backends(),
        store,
        EventSink::new(move |e| seen.lock().expect("events").push(e)),
        no_host,
    );
    Rig {
        ctx,
        events,
        _dir: dir,
    }
}

fn all(steps: &[Arc<dyn Step>]) -> BTreeSet<String> {
    steps.iter().map(|s| s.id().to_string()).collect()
}

#[tokio::test]
async fn a_disruptive_change_is_refused_without_a_confirmation_and_applied_with_one() {
    let mut vm = Fake::new("vm", &[]);
    vm.disruptive = true;
    let vm = Arc::new(vm);
    let steps: Vec<Arc<dyn Step>> = vec![vm.clone()];
    let r = rig();

    // plan shows what it would stop, on the step's own line and in the event's field.
    drive::plan(&steps, &all(&steps), &r.ctx, "plan")
        .await
        .expect("plan");
    let planned = r
        .events
        .lock()
        .expect("events")
        .iter()
        .find(|e| matches!(e, Event::Planned { .. }))
        .cloned()
        .expect("a planned event");
    match &planned {
        Event::Planned { disruption, .. } => {
            assert_eq!(disruption.as_deref(), Some("stops and restarts the VM"));
        }
        other => panic!("{other:?}"),
    }
    let line = planned.to_string();
    assert!(
        line.lines()
            .next()
            .is_some_and(|l| l.contains("stops and restarts the VM")),
        "{line}"
    );
    let json = serde_json::to_value(&planned).expect("json");
    assert_eq!(json["disruption"], "stops and restarts the VM");

    // No confirmation callback: refused, typed, exit-2 kind, nothing applied.
    let err = drive::up(&steps, &all(&steps), &r.ctx, "up")
        .await
        .expect_err("refused");
    assert!(err.is_not_confirmed() && err.is_config(), "{err:?}");
    assert_eq!(err.kind(), "not_confirmed");
    let text = kgenv_core::error::error_chain(&err);
    assert!(
        text.contains("stops and restarts the VM") && text.contains("--yes"),
        "{text}"
    );
    assert_eq!(
        err.unconfirmed().map(|u| u.changes.clone()),
        Some(vec![
            "step `vm` stops and restarts the VM (machine_type: n1-standard-8 → n1-standard-16)"
                .to_string()
        ])
    );
    assert_eq!(vm.applied.load(Ordering::SeqCst), 0);

    // A callback that says no: the same. One that says yes sees the change, then it applies.
    let no = r.ctx.clone().with_confirm(Arc::new(|_: &Disruption| false));
    assert!(drive::up(&steps, &all(&steps), &no, "up")
        .await
        .expect_err("no")
        .is_not_confirmed());
    assert_eq!(vm.applied.load(Ordering::SeqCst), 0);
    let asked: Arc<Mutex<Vec<Disruption>>> = Arc::default();
    let log = asked.clone();
    let yes = r.ctx.clone().with_confirm(Arc::new(move |d: &Disruption| {
        log.lock().expect("asked").push(d.clone());
        true
    }));
    drive::up(&steps, &all(&steps), &yes, "up")
        .await
        .expect("confirmed");
    assert_eq!(vm.applied.load(Ordering::SeqCst), 1);
    let asked = asked.lock().expect("asked");
    assert_eq!(asked.len(), 1);
    assert_eq!(
        (asked[0].step.as_str(), asked[0].what.as_str()),
        ("vm", "stops and restarts the VM")
    );
}

#[tokio::test]
async fn a_change_that_disrupts_nothing_is_not_asked_about() {
    let steps: Vec<Arc<dyn Step>> = vec![Arc::new(Fake::new("quiet", &[]))];
    let r = rig();
    let asked = Arc::new(AtomicUsize::new(0));
    let count = asked.clone();
    let ctx = r.ctx.clone().with_confirm(Arc::new(move |_: &Disruption| {
        count.fetch_add(1, Ordering::SeqCst);
        false
    }));
    drive::up(&steps, &all(&steps), &ctx, "up")
        .await
        .expect("up");
    assert_eq!(asked.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn the_preview_lists_deletes_and_keeps_in_down_order_from_the_state_alone() {
    // vm ← disk-holder ← app: down goes app, disk-holder, vm.
    let mut data = Fake::new("data-disk", &["vm"]);
    data.disk = Some("kg-data".into());
    let steps: Vec<Arc<dyn Step>> = vec![
        Arc::new(Fake::new("vm", &[])),
        Arc::new(data),
        Arc::new(Fake::new("app", &["data-disk"])),
        Arc::new(Fake::new("untouched", &[])),
    ];
    let r = rig();
    for (step, role, id) in [
        ("vm", "instance", "projects/p/zones/z/instances/kg"),
        ("app", "container", "kg"),
        ("data-disk", "attachment", "kg-data on kg"),
    ] {
        r.ctx
            .state
            .update(step, |rec| {
                rec.created.insert(role.into(), id.into());
            })
            .await
            .expect("record");
    }
    let state = r.ctx.state.snapshot().await;

    let p = drive::down_preview(&steps, &all(&steps), &state, &r.ctx);
    let order: Vec<&str> = p.steps.iter().map(|s| s.step.as_str()).collect();
    assert_eq!(
        order,
        ["app", "data-disk", "vm"],
        "dependents first; nothing for `untouched`"
    );
    assert_eq!(
        p.deletes(),
        [
            "container kg",
            "attachment kg-data on kg",
            "instance projects/p/zones/z/instances/kg"
        ]
    );
    assert_eq!(p.keeps(), ["disk kg-data"]);
    assert_eq!(p.disks(), ["kg-data"]);
    let shown = p.to_string();
    assert!(
        shown.contains("deletes 3 resource(s)") && shown.contains("keeps:"),
        "{shown}"
    );

    // Named, the disk moves from kept to deleted.
    let named = r.ctx.clone().with_delete_disks(vec!["kg-data".into()]);
    let p = drive::down_preview(&steps, &all(&steps), &state, &named);
    assert!(p.deletes().contains(&"disk kg-data".to_string()) && p.keeps().is_empty());

    // `--only app`: only that step.
    let only = BTreeSet::from(["app".to_string()]);
    let p = drive::down_preview(&steps, &only, &state, &r.ctx);
    assert_eq!(p.deletes(), ["container kg"]);
    assert!(p.disks().is_empty());

    // Refusing carries the lines.
    let err = p.not_confirmed();
    assert!(err.is_config());
    assert_eq!(
        err.unconfirmed().map(|u| u.changes.clone()),
        Some(vec!["container kg".to_string()])
    );
    assert_eq!(
        r.ctx.state.snapshot().await,
        state,
        "the preview changed nothing"
    );
}

fn example_runner(world: &MockWorld, state: &std::path::Path) -> Runner {
    home();
    let env = kgenv_core::config::load("../../examples/kgenv.toml".as_ref()).expect("example");
    Runner::new(env, world.backends()).state_dir(state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_confirmed_asks_with_the_preview_and_changes_nothing_when_refused() {
    let world = MockWorld::new();
    let dir = tempfile::tempdir().expect("state");
    let runner = example_runner(&world, dir.path());
    runner.up(RunOptions::default(), |_| {}).await.expect("up");
    let before = runner.state().await.expect("state");

    let preview = runner
        .down_preview(&RunOptions::default())
        .await
        .expect("preview");
    assert!(
        preview.deletes().iter().any(|d| d.starts_with("instance ")),
        "{preview}"
    );
    assert!(
        preview
            .keeps()
            .iter()
            .any(|k| k.starts_with("bucket gs://") && k.contains("--delete-bucket")),
        "{preview}"
    );
    assert_eq!(runner.state().await.expect("state"), before, "read-only");

    // Refused: the error carries what was shown; nothing changed.
    let shown: Arc<Mutex<Option<usize>>> = Arc::default();
    let seen = shown.clone();
    let err = runner
        .down_confirmed(
            RunOptions::default(),
            move |p| {
                *seen.lock().expect("shown") = Some(p.deletes().len());
                false
            },
            |_| {},
        )
        .await
        .expect_err("refused");
    assert!(err.is_not_confirmed() && err.is_config(), "{err:?}");
    assert_eq!(*shown.lock().expect("shown"), Some(preview.deletes().len()));
    assert_eq!(
        err.unconfirmed()
            .map(|u| (u.changes.clone(), u.keeps.clone())),
        Some((preview.deletes(), preview.keeps()))
    );
    assert_eq!(runner.state().await.expect("state"), before);
    assert_eq!(world.state().instances.len(), 1);

    // A disk that is not one the environment keeps: refused before anything, even with yes.
    let err = runner
        .down_confirmed(
            RunOptions::default().delete_disk("someone-elses").yes(),
            |_| true,
            |_| {},
        )
        .await
        .expect_err("unknown disk");
    assert_eq!(err.kind(), "usage", "{err}");
    assert!(err.to_string().contains("someone-elses"), "{err}");
    assert_eq!(runner.state().await.expect("state"), before);

    // Yes: no question, everything kgenv made is gone, the bucket stays.
    let report = runner
        .down_confirmed(
            RunOptions::default().yes(),
            |_| panic!("not asked with yes"),
            |_| {},
        )
        .await
        .expect("down");
    assert!(report.changed() > 0);
    let left = runner.state().await.expect("state");
    let standing: Vec<&String> = left
        .steps
        .iter()
        .filter(|(_, r)| !r.created.is_empty())
        .map(|(id, _)| id)
        .collect();
    assert_eq!(
        standing,
        vec!["data-disk"],
        "only the kept data disk stands"
    );
    assert_eq!(world.state().buckets.len(), 1, "bucket kept");

    // Nothing left to delete: nothing to confirm either.
    runner
        .down_confirmed(RunOptions::default(), |_| false, |_| {})
        .await
        .expect("an empty down needs no answer");
}

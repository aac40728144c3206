//! Spot and flex-start VMs on the Compute fake (issue 14, part 3): the insert bodies pass
//! Google's discovery document; the config refuses a flex-start without a run duration GCE
//! accepts, or a `spot` contradicting `provisioning`; a preempted spot VM shows in `status`
//! as "preempted at" the preemption operation's time, and `up` or `start` brings the same
//! VM back in the same zone with the same disks and the user's data; a preemption in the
//! middle of `up` is converged by the next `up`.
//!
//! Nothing here waits on time: where a test needs an operation under way, it gives it a
//! long latency, waits for the request itself (bounded, a deadline is a failure) and ends
//! it with [`FakeGce::finish_operations_now`].

#[path = "support/gce_fake.rs"]
mod gce_fake;
#[path = "support/gce_rig.rs"]
mod gce_rig;

use std::path::Path;
use std::time::{Duration, Instant};

use gce_fake::FakeGce;
use kgenv_core::config::{parse_str, Overrides};
use kgenv_core::runner::{Event, Preempted};
use kgenv_core::spec::{Env, Instance, InstanceBuilder};

use gce_rig::{gce_and_disk, Rig, PROJECT};

const ZONE: &str = "us-central1-a";

/// An environment `kg` on [`ZONE`] with an SSH rule, shaped by `f`.
fn env(base: InstanceBuilder, f: impl FnOnce(InstanceBuilder) -> InstanceBuilder) -> Env {
    gce_rig::env_in(&[ZONE], base, true, f)
}

/// A rig on a fake configured by `configure`, whose `up` also makes the data disk.
async fn rig_with(env: Env, configure: impl FnOnce(&mut gce_fake::Config)) -> Rig {
    let mut config = gce_fake::Config::default();
    configure(&mut config);
    Rig::with_fake(FakeGce::start_with(config).await, env).up_steps(gce_and_disk())
}

/// The body of the (last) `instances.insert` the fake received.
fn insert_body(rig: &Rig) -> serde_json::Value {
    rig.fake
        .requests()
        .into_iter()
        .rfind(|r| r.method_id == "compute.instances.insert")
        .and_then(|r| r.body)
        .expect("an insert with a body")
}

fn status_of(rig: &Rig) -> String {
    rig.fake
        .instance(PROJECT, ZONE, "kg")
        .and_then(|i| i["status"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// `(id, users)` of a disk as GCE shows it.
fn disk(rig: &Rig, name: &str) -> (String, Vec<String>) {
    let d = rig.fake.disk(PROJECT, ZONE, name).expect("the disk");
    let users = d["users"]
        .as_array()
        .map(|u| {
            u.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    (d["id"].as_str().unwrap_or_default().to_string(), users)
}

/// What the preemption operation `op` says about its time, in UTC to the second.
fn op_time_utc(rig: &Rig, op: &str) -> String {
    let shown = rig.fake.operation(op).expect("the operation");
    let t = shown["insertTime"].as_str().expect("insertTime");
    chrono::DateTime::parse_from_rfc3339(t)
        .expect("RFC 3339")
        .with_timezone(&chrono::Utc)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The diff lines the instance step planned in the events so far.
fn instance_diff(rig: &Rig) -> Vec<String> {
    rig.events
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter_map(|e| match e {
            Event::Planned { step, diff, .. } if step == "instance" => Some(diff.join("; ")),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spot_and_flex_start_insert_bodies_pass_the_discovery_check() {
    let rig = rig_with(
        env(Instance::builder().no_gpu(), |b| b.provisioning("spot")),
        |_| {},
    )
    .await;
    rig.up().await.expect("up spot");
    let spot = insert_body(&rig);
    assert_eq!(spot["scheduling"]["provisioningModel"], "SPOT");
    assert_eq!(spot["scheduling"]["instanceTerminationAction"], "STOP");
    assert_eq!(spot["scheduling"]["automaticRestart"], false);
    rig.fake.assert_conforms();

    let rig = rig_with(
        env(Instance::builder().gpu("nvidia-l4", 1), |b| {
            b.machine_type("g2-standard-8")
                .provisioning("flex-start")
                .max_run_duration("8h")
        }),
        |_| {},
    )
    .await;
    rig.up().await.expect("up flex-start");
    let flex = insert_body(&rig);
    assert_eq!(flex["scheduling"]["provisioningModel"], "FLEX_START");
    assert_eq!(flex["scheduling"]["maxRunDuration"]["seconds"], "28800");
    assert_eq!(flex["scheduling"]["instanceTerminationAction"], "STOP");
    assert_eq!(flex["scheduling"]["onHostMaintenance"], "TERMINATE");
    assert_eq!(flex["scheduling"]["automaticRestart"], false);
    assert_eq!(
        flex["reservationAffinity"]["consumeReservationType"],
        "NO_RESERVATION"
    );
    // At the end of the run duration GCE stops the VM: the data disk must outlive even a
    // delete of the VM, so it is attached without auto-delete.
    let attach = rig
        .fake
        .requests()
        .into_iter()
        .find(|r| r.method_id == "compute.instances.attachDisk")
        .and_then(|r| r.body)
        .expect("the data disk attached");
    assert_eq!(attach["autoDelete"], false, "{attach}");
    let summary = rig
        .runner
        .steps()
        .into_iter()
        .find(|s| s.id == "instance")
        .expect("the instance step")
        .summary;
    assert!(
        summary.contains("flex-start: GCE stops it after 8h of running, its disks and data kept"),
        "the steps list says what happens at the end: {summary}"
    );
    assert!(
        rig.warnings().iter().any(|w| w.contains(
            "is flex-start: GCE stops it after 8h of running (its max_run_duration); its boot and data disks and your data are kept"
        )),
        "the run warns first: {:?}",
        rig.warnings()
    );
    rig.fake.assert_conforms();
}

#[test]
fn the_config_refuses_a_bad_run_duration_or_a_contradicting_spot() {
    let base = "name = \"kg\"\n[instance]\nproject = \"my-project\"\nzones = [\"us-central1-a\"]\nmachine_type = \"g2-standard-8\"\ngpu_type = \"nvidia-l4\"\n";
    let cases = [
        (
            "provisioning = \"flex-start\"\n",
            "instance.max_run_duration",
        ),
        (
            "provisioning = \"flex-start\"\nmax_run_duration = \"8d\"\n",
            "instance.max_run_duration",
        ),
        (
            "provisioning = \"flex-start\"\nmax_run_duration = \"5m\"\n",
            "instance.max_run_duration",
        ),
        (
            "provisioning = \"spot\"\nmax_run_duration = \"8h\"\n",
            "instance.max_run_duration",
        ),
        (
            "provisioning = \"standard\"\nspot = true\n",
            "instance.spot",
        ),
        ("provisioning = \"spot\"\nspot = false\n", "instance.spot"),
        ("provisioning = \"cheap\"\n", "instance.provisioning"),
    ];
    for (extra, field) in cases {
        let e = parse_str(
            &format!("{base}{extra}"),
            Path::new("kgenv.toml"),
            &Overrides::default(),
        )
        .expect_err(extra);
        assert_eq!(e.field.as_deref(), Some(field), "{extra}: {e}");
        assert!(e.line > 1, "points at the line: {e}");
    }
    let n1 = "name = \"kg\"\n[instance]\nproject = \"my-project\"\nzones = [\"us-central1-a\"]\nprovisioning = \"flex-start\"\nmax_run_duration = \"8h\"\n";
    let e = parse_str(n1, Path::new("kgenv.toml"), &Overrides::default()).expect_err("n1");
    assert_eq!(e.field.as_deref(), Some("instance.machine_type"), "{e}");
    let ok = parse_str(
        &format!("{base}provisioning = \"flex-start\"\nmax_run_duration = \"7d\"\n"),
        Path::new("kgenv.toml"),
        &Overrides::default(),
    )
    .expect("7d is GCE's limit");
    assert_eq!(
        ok.instance.expect("instance").provisioning,
        kgenv_core::spec::Provisioning::FlexStart {
            max_run_duration_secs: 604_800
        }
    );
}

/// A preempted spot VM: `status` says when, from GCE's operation; `up` starts the same VM
/// in the same zone with the same boot and data disks and the data on them; a second
/// preemption is brought back by `start`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preempted_spot_vm_shows_when_and_comes_back_with_its_disks_and_data() {
    let rig = rig_with(env(Instance::builder().no_gpu(), |b| b.spot(true)), |_| {}).await;
    rig.up().await.expect("up");
    let before = rig.fake.instance(PROJECT, ZONE, "kg").expect("vm");
    let (boot_id, _) = disk(&rig, "kg");
    let (data_id, users) = disk(&rig, "kg-data");
    assert_eq!(users.len(), 1, "the data disk is attached");
    rig.fake
        .write_disk(PROJECT, ZONE, "kg-data", "the user's notebooks");

    let status = rig.runner.status(rig.sink()).await.expect("status");
    assert_eq!(status.preempted, None, "running: nothing to report");

    let op = rig.fake.preempt(PROJECT, ZONE, "kg");
    rig.fake.finish_operations_now();
    assert_eq!(status_of(&rig), "TERMINATED");
    let when = op_time_utc(&rig, &op);

    rig.events.lock().unwrap_or_else(|p| p.into_inner()).clear();
    let status = rig.runner.status(rig.sink()).await.expect("status");
    let expected = format!(
        "preempted at {when} (spot); `kgenv start` or `kgenv up` brings it back, disks and data intact"
    );
    assert_eq!(
        status.preempted,
        Some(Preempted {
            at: when.clone(),
            provisioning: "spot".into(),
            message: expected.clone(),
        })
    );
    let json = serde_json::to_value(&status).expect("json");
    assert_eq!(json["preempted"]["at"], when.as_str(), "--json carries it");
    assert!(
        instance_diff(&rig)
            .iter()
            .any(|d| d.contains("Terminated → RUNNING") && d.contains(&expected)),
        "{:?}",
        instance_diff(&rig)
    );
    let listed = rig
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.method_id == "compute.zoneOperations.list")
        .count();
    assert!(listed > 0, "asked GCE's operation history");

    rig.fake.clear_requests();
    rig.up().await.expect("up brings it back");
    let after = rig.fake.instance(PROJECT, ZONE, "kg").expect("vm");
    assert_eq!(after["status"], "RUNNING");
    assert_eq!(after["id"], before["id"], "the same VM, in the same zone");
    let mutating: Vec<String> = rig.mutating().into_iter().map(|r| r.method_id).collect();
    assert_eq!(mutating, ["compute.instances.start"], "only a start");
    assert_eq!(disk(&rig, "kg").0, boot_id, "the same boot disk");
    let (data_after, users) = disk(&rig, "kg-data");
    assert_eq!(data_after, data_id, "the same data disk");
    assert_eq!(users.len(), 1, "still attached: {users:?}");
    assert_eq!(
        rig.fake.disk_data(PROJECT, ZONE, "kg-data").as_deref(),
        Some("the user's notebooks")
    );
    let status = rig.runner.status(rig.sink()).await.expect("status");
    assert_eq!(status.preempted, None, "running again");

    // Stopped by the user after the preemption and restart: not a preemption.
    rig.runner.stop(rig.sink()).await.expect("stop");
    let status = rig.runner.status(rig.sink()).await.expect("status");
    assert_eq!(
        status.preempted, None,
        "the user's stop is not a preemption"
    );
    rig.runner.start(rig.sink()).await.expect("start");

    rig.fake.preempt(PROJECT, ZONE, "kg");
    rig.fake.finish_operations_now();
    let status = rig.runner.status(rig.sink()).await.expect("status");
    assert!(status.preempted.is_some(), "the second preemption shows");
    rig.runner
        .start(rig.sink())
        .await
        .expect("start brings it back");
    assert_eq!(status_of(&rig), "RUNNING");
    assert_eq!(
        rig.fake.instance(PROJECT, ZONE, "kg").expect("vm")["id"],
        before["id"]
    );
    assert_eq!(disk(&rig, "kg-data").0, data_id);
    rig.fake.assert_conforms();
}

/// GCE preempts the VM while `up` attaches the data disk (after the instance step, before
/// anything on the host): the next `up` starts it and converges, with no second VM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preemption_during_up_is_converged_by_the_next_up() {
    let rig = rig_with(env(Instance::builder().no_gpu(), |b| b.spot(true)), |c| {
        c.op_latency.insert(
            "compute.instances.attachDisk".into(),
            Duration::from_secs(600),
        );
    })
    .await;
    let runner = rig.runner.clone();
    let sink = rig.sink();
    let run = tokio::spawn(async move { runner.up(gce_and_disk(), sink).await });
    let deadline = Instant::now() + Duration::from_secs(60);
    while !rig
        .fake
        .requests()
        .iter()
        .any(|r| r.method_id == "compute.instances.attachDisk")
    {
        assert!(Instant::now() < deadline, "no attachDisk within 60 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let id = rig.fake.instance(PROJECT, ZONE, "kg").expect("vm")["id"].clone();
    rig.fake.preempt(PROJECT, ZONE, "kg");
    rig.fake.finish_operations_now();
    // The interrupted `up` may finish or fail; what matters is what the next one does.
    let _ = run.await.expect("the run ends");
    assert_eq!(status_of(&rig), "TERMINATED");

    rig.fake.clear_requests();
    rig.up().await.expect("the next up converges");
    assert_eq!(status_of(&rig), "RUNNING");
    let vm = rig.fake.instance(PROJECT, ZONE, "kg").expect("vm");
    assert_eq!(vm["id"], id, "the same VM");
    let mutating: Vec<String> = rig.mutating().into_iter().map(|r| r.method_id).collect();
    assert!(
        !mutating
            .iter()
            .any(|m| m == "compute.instances.insert" || m.ends_with(".delete")),
        "nothing made or deleted: {mutating:?}"
    );
    assert!(
        mutating.iter().any(|m| m == "compute.instances.start"),
        "{mutating:?}"
    );
    let (_, users) = disk(&rig, "kg-data");
    assert_eq!(users.len(), 1, "the data disk is attached: {users:?}");
    let status = rig.runner.status(rig.sink()).await.expect("status");
    assert_eq!(status.preempted, None);
    assert!(
        status.live.outcome("instance").is_some(),
        "the instance step was checked"
    );
    rig.up().await.expect("up again");
    assert!(
        !rig.mutating()
            .iter()
            .any(|r| r.method_id == "compute.instances.insert"),
        "converged: nothing more to make"
    );
    rig.fake.assert_conforms();
}

/// The fake's `zoneOperations.list` as GCE's: an AIP-160 filter (parenthesised terms,
/// ANDed), newest first with `creationTimestamp desc`, pages of `maxResults` linked by
/// `nextPageToken`, `items` left out of an empty page, and a 400 for a filter mixing the
/// AIP-160 and regular-expression forms or an order GCE does not support.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fakes_operation_list_filters_orders_and_pages_as_gce() {
    let rig = rig_with(env(Instance::builder().no_gpu(), |b| b.spot(true)), |_| {}).await;
    rig.up().await.expect("up");
    let id = rig.fake.instance(PROJECT, ZONE, "kg").expect("vm")["id"]
        .as_str()
        .expect("id")
        .to_string();
    let first = rig.fake.preempt(PROJECT, ZONE, "kg");
    rig.fake.finish_operations_now();
    rig.runner.start(rig.sink()).await.expect("start");
    let second = rig.fake.preempt(PROJECT, ZONE, "kg");
    rig.fake.finish_operations_now();

    let http = reqwest::Client::new();
    let url = format!(
        "{}projects/{PROJECT}/zones/{ZONE}/operations",
        with_slash(&rig.fake.base_url())
    );
    let list = |query: Vec<(&'static str, String)>| {
        let http = http.clone();
        let url = url.clone();
        async move {
            let mut url = reqwest::Url::parse(&url).expect("url");
            for (k, v) in &query {
                url.query_pairs_mut().append_pair(k, v);
            }
            let r = http
                .get(url)
                .bearer_auth(gce_fake::TOKEN)
                .send()
                .await
                .expect("sent");
            let status = r.status().as_u16();
            (status, r.json::<serde_json::Value>().await.expect("json"))
        }
    };
    let names = |v: &serde_json::Value| -> Vec<String> {
        v["items"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|o| o["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let filter =
        format!("(operationType = \"compute.instances.preempted\") AND (targetId = \"{id}\")");
    let (status, page) = list(vec![
        ("filter", filter.clone()),
        ("orderBy", "creationTimestamp desc".into()),
        ("maxResults", "1".into()),
    ])
    .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(names(&page), std::slice::from_ref(&second), "newest first");
    let token = page["nextPageToken"]
        .as_str()
        .expect("a next page")
        .to_string();
    let (_, page) = list(vec![
        ("filter", filter.clone()),
        ("orderBy", "creationTimestamp desc".into()),
        ("maxResults", "1".into()),
        ("pageToken", token),
    ])
    .await;
    assert_eq!(names(&page), std::slice::from_ref(&first));
    assert!(page.get("nextPageToken").is_none(), "the last page: {page}");

    let (_, all) = list(vec![]).await;
    assert!(names(&all).len() > 2, "every operation of the zone: {all}");
    let (_, regex) = list(vec![("filter", "operationType eq .*preempted".into())]).await;
    let mut both = names(&regex);
    both.sort();
    let mut want = vec![first, second];
    want.sort();
    assert_eq!(both, want, "the regular-expression form");
    let (_, none) = list(vec![("filter", "(targetId = \"1\")".into())]).await;
    assert!(
        none.get("items").is_none(),
        "an empty page has no items: {none}"
    );

    let (status, err) = list(vec![(
        "filter",
        "(operationType eq .*preempted) (targetId = \"1\")".into(),
    )])
    .await;
    assert_eq!(status, 400, "the two filter forms cannot be mixed: {err}");
    let (status, _) = list(vec![("orderBy", "insertTime".into())]).await;
    assert_eq!(status, 400, "only name or creationTimestamp desc");
}

fn with_slash(s: &str) -> String {
    if s.ends_with('/') {
        s.to_string()
    } else {
        format!("{s}/")
    }
}

/// The fake's timestamps read back as the instants they stand for (the fake formats them
/// itself, in GCE's Pacific offset).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fakes_timestamps_are_rfc3339_in_pacific_time() {
    let rig = rig_with(env(Instance::builder().no_gpu(), |b| b.spot(true)), |_| {}).await;
    let before = chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now());
    rig.up().await.expect("up");
    let op = rig.fake.preempt(PROJECT, ZONE, "kg");
    rig.fake.finish_operations_now();
    let after = chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now());
    let shown = rig.fake.operation(&op).expect("op");
    let vm = rig.fake.instance(PROJECT, ZONE, "kg").expect("vm");
    for t in [
        shown["insertTime"].as_str(),
        shown["endTime"].as_str(),
        vm["lastStartTimestamp"].as_str(),
        vm["lastStopTimestamp"].as_str(),
    ] {
        let t = t.expect("a timestamp");
        assert!(t.ends_with("-08:00"), "{t}");
        let parsed = chrono::DateTime::parse_from_rfc3339(t).expect("RFC 3339");
        let slack = chrono::Duration::seconds(1);
        assert!(
            parsed >= before - slack && parsed <= after + slack,
            "{t} between {before} and {after}"
        );
    }
}

//! kgenv against GCE's instance lifecycle as the Compute fake plays it (issue 18): the
//! real runner and GCE client (other backends from the stateful mock) meet a failed insert
//! whose instance lingers and then vanishes, PROVISIONING → STAGING → RUNNING, calls refused
//! with `resourceNotReady` while an instance is between two states, a start in a zone out of
//! capacity, failed stop and delete operations, a spot preemption, and the boot disk that
//! goes with the VM while the data disk stays.
//!
//! Nothing here waits on time: where a test needs an instance between two states, it gives
//! the operation a long latency, waits for the condition itself (bounded, a deadline is a
//! failure) and ends it with [`FakeGce::finish_operations_now`].

#[path = "support/gce_fake.rs"]
mod gce_fake;
#[path = "support/gce_rig.rs"]
mod gce_rig;

use std::time::{Duration, Instant};

use gce_fake::{FakeGce, Fault, Recorded};
use kgenv_core::backends::compute::{DiskRef, InstanceRef, InstanceRequest};
use kgenv_core::backends::Compute;
use kgenv_core::runner::{Change, Event, Outcome, RunOptions};
use kgenv_core::spec::{Env, Instance, InstanceBuilder};

use gce_rig::{gce_and_disk, Rig, PROJECT};

const ZONE_A: &str = "us-central1-a";
const ZONE_B: &str = "us-central1-b";

/// A CPU-only environment with an SSH rule on `zones`.
fn env_with(zones: &[&str], f: impl FnOnce(InstanceBuilder) -> InstanceBuilder) -> Env {
    gce_rig::env_in(zones, Instance::builder().no_gpu(), true, f)
}

/// A rig on a fake configured by `configure`, whose `up` also makes the data disk.
async fn rig_with(env: Env, configure: impl FnOnce(&mut gce_fake::Config)) -> Rig {
    let mut config = gce_fake::Config::default();
    configure(&mut config);
    Rig::with_fake(FakeGce::start_with(config).await, env).up_steps(gce_and_disk())
}

/// What only this file asks of the rig.
trait Lifecycle {
    /// The instance's status as GCE shows it.
    fn status(&self, zone: &str) -> Option<String>;
    /// Requests of `method_id` (`compute.instances.delete`) on `zone`, in order.
    fn calls(&self, method_id: &str, zone: &str) -> Vec<Recorded>;
}

impl Lifecycle for Rig {
    /// The instance's status as GCE shows it.
    fn status(&self, zone: &str) -> Option<String> {
        self.fake
            .instance(PROJECT, zone, "kg")
            .and_then(|i| i["status"].as_str().map(str::to_string))
    }

    /// Requests of `method_id` (`compute.instances.delete`) on `zone`, in order.
    fn calls(&self, method_id: &str, zone: &str) -> Vec<Recorded> {
        self.fake
            .requests()
            .into_iter()
            .filter(|r| r.method_id == method_id && r.path.contains(&format!("/zones/{zone}/")))
            .collect()
    }
}

fn at(zone: &str) -> InstanceRef {
    InstanceRef {
        project: PROJECT.into(),
        zone: zone.into(),
        name: "kg".into(),
    }
}

/// Polls `cond` until it holds; a deadline bounds the wait and its expiry fails the test
/// with `what`.
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A failed insert's instance lingers after the error and vanishes between kgenv's look
/// and its delete: the delete gets 404, kgenv counts the half-made VM as gone and lands in
/// the next zone. The failed VM's boot disk went with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_made_vm_gone_before_its_delete_is_a_404_kgenv_treats_as_done() {
    let rig = rig_with(env_with(&[ZONE_A, ZONE_B], |b| b), |c| {
        c.stockout_zones.insert(ZONE_A.into());
        // Vanishes right after the first GET shows it: kgenv's look, before its delete.
        c.failed_insert_vanishes_after_gets = Some(1);
    })
    .await;
    rig.up().await.expect("up lands in zone b");

    let gets = rig.calls("compute.instances.get", ZONE_A);
    let deletes = rig.calls("compute.instances.delete", ZONE_A);
    assert_eq!(deletes.len(), 1, "one delete of the half-made VM in zone a");
    assert_eq!(
        deletes[0].status, 404,
        "GCE removed it before the delete arrived"
    );
    assert!(
        gets.iter()
            .any(|g| g.status == 200 && g.end <= deletes[0].start),
        "kgenv saw the lingering instance before deleting it: {:?}",
        gets.iter().map(|g| g.status).collect::<Vec<_>>()
    );
    assert_eq!(
        rig.fake.instances(),
        vec![(ZONE_B.to_string(), "kg".to_string(), "RUNNING".to_string())]
    );
    assert_eq!(rig.state().await.fact("instance", "zone"), Some(ZONE_B));
    let disks = rig.fake.disks();
    assert!(
        !disks.iter().any(|d| d.0 == ZONE_A),
        "nothing of the failed VM is left in zone a: {disks:?}"
    );
    assert!(
        rig.logs().iter().any(|l| l.contains("already gone")),
        "{:?}",
        rig.logs()
    );
    rig.fake.assert_conforms();
}

/// A delete sent while the failed insert's instance lingers is accepted; when GCE removes
/// the instance before that delete runs, its operation ends RESOURCE_NOT_FOUND, which kgenv
/// also counts as deleted. Without that race, the delete simply removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_accepted_while_a_failed_vm_lingers_cleans_up_either_way() {
    // Race: GCE removes the lingering VM while kgenv's delete operation is under way.
    let rig = rig_with(env_with(&[ZONE_A, ZONE_B], |b| b), |c| {
        c.stockout_zones.insert(ZONE_A.into());
        c.failed_insert_linger = Duration::from_secs(600);
        c.op_latency
            .insert("compute.instances.delete".into(), Duration::from_secs(600));
        c.wait_cap = Duration::from_millis(100);
    })
    .await;
    let runner = rig.runner.clone();
    let sink = rig.sink();
    let up = tokio::spawn(async move { runner.up(gce_and_disk(), sink).await });
    wait_until("kgenv's delete of the half-made VM to be accepted", || {
        rig.calls("compute.instances.delete", ZONE_A)
            .iter()
            .any(|r| r.status == 200)
    })
    .await;
    assert_eq!(
        rig.status(ZONE_A).as_deref(),
        Some("STAGING"),
        "lingering after the stockout"
    );
    rig.fake.end_lingering_now();
    rig.fake.configure(|c| {
        c.op_latency.remove("compute.instances.delete");
    });
    rig.fake.finish_operations_now();
    up.await.expect("join").expect("up lands in zone b");
    let failed_deletes: Vec<_> = rig
        .fake
        .operations()
        .into_iter()
        .filter(|o| o.op_type == "delete" && o.target.contains(ZONE_A))
        .collect();
    assert_eq!(failed_deletes.len(), 1, "{failed_deletes:?}");
    assert!(
        failed_deletes[0].failed,
        "the delete ran after GCE had removed the VM: RESOURCE_NOT_FOUND"
    );
    assert_eq!(
        rig.fake.instances(),
        vec![(ZONE_B.to_string(), "kg".to_string(), "RUNNING".to_string())]
    );

    // No race: the delete removes the lingering VM itself.
    let rig = rig_with(env_with(&[ZONE_A, ZONE_B], |b| b), |c| {
        c.stockout_zones.insert(ZONE_A.into());
        c.failed_insert_linger = Duration::from_secs(600);
    })
    .await;
    rig.up().await.expect("up lands in zone b");
    let deletes = rig.calls("compute.instances.delete", ZONE_A);
    assert_eq!(deletes.len(), 1);
    assert_eq!(deletes[0].status, 200);
    assert!(rig
        .fake
        .operations()
        .iter()
        .any(|o| o.op_type == "delete" && o.target.contains(ZONE_A) && !o.failed));
    assert_eq!(rig.status(ZONE_A), None);
    rig.fake.assert_conforms();
}

/// The fake's failed insert as GCE shows it, through kgenv's client: PROVISIONING while it
/// runs, DONE with the stockout, the instance still there (STAGING) for a while, then gone
/// with its boot disk; a delete after that is a 404 the client reports as NotFound. The
/// linger ends by time too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_insert_lingers_then_vanishes_and_a_late_delete_is_not_found() {
    let fake = FakeGce::start_with(gce_fake::Config {
        stockout_zones: [ZONE_A.to_string()].into(),
        failed_insert_linger: Duration::from_secs(600),
        ..Default::default()
    })
    .await;
    let gce = fake.client();
    let e = gce
        .insert_instance(&request(ZONE_A))
        .await
        .expect_err("stockout");
    assert!(e.is_stockout(), "{e:?}");
    assert_eq!(
        fake.status_history(PROJECT, ZONE_A, "kg"),
        ["PROVISIONING", "STAGING"],
        "still shown after the error"
    );
    assert!(gce.get_instance(&at(ZONE_A)).await.expect("get").is_some());
    fake.end_lingering_now();
    assert!(gce.get_instance(&at(ZONE_A)).await.expect("get").is_none());
    assert!(fake.disks().is_empty(), "the boot disk went with it");
    let late = gce
        .delete_instance(&at(ZONE_A))
        .await
        .expect_err("nothing to delete");
    assert!(late.is_not_found(), "{late:?}");
    assert_eq!(fake.requests().last().map(|r| r.status), Some(404));

    // By time: a short linger ends on its own.
    fake.configure(|c| c.failed_insert_linger = Duration::from_millis(50));
    gce.insert_instance(&request(ZONE_A))
        .await
        .expect_err("stockout");
    wait_until("GCE to remove the failed VM", || {
        fake.instances().is_empty()
    })
    .await;
    fake.assert_conforms();
}

/// An insert request for `kg` in `zone`, from the fake's image.
fn request(zone: &str) -> InstanceRequest {
    InstanceRequest {
        at: at(zone),
        machine_type: "n1-standard-8".into(),
        gpu: None,
        source_image: format!(
            "https://www.googleapis.com/compute/v1/projects/{}/global/images/{}-v20261110",
            gce_fake::IMAGE_PROJECT,
            kgenv_core::spec::DEFAULT_IMAGE_FAMILY
        ),
        disk_size_gb: 100,
        disk_type: "pd-balanced".into(),
        provisioning: Default::default(),
        service_account: None,
        scopes: vec!["https://www.googleapis.com/auth/devstorage.read_only".into()],
        tags: vec![],
        labels: Default::default(),
        metadata: Default::default(),
    }
}

/// An insert goes PROVISIONING → STAGING → RUNNING; an instance found PROVISIONING or
/// STAGING (a run killed during its insert) is waited for, never inserted again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insert_goes_provisioning_staging_running_and_up_waits_for_it() {
    let rig = rig_with(env_with(&[ZONE_A], |b| b), |c| {
        c.op_latency
            .insert("compute.instances.insert".into(), Duration::from_secs(600));
    })
    .await;
    // A first run, killed while its insert is under way.
    let runner = rig.runner.clone();
    let sink = rig.sink();
    let killed = tokio::spawn(async move { runner.up(gce_and_disk(), sink).await });
    wait_until("the insert to be accepted", || {
        rig.status(ZONE_A).as_deref() == Some("PROVISIONING")
    })
    .await;
    killed.abort();
    let _ = killed.await;
    // The next run finds it between two states and waits for it.
    rig.events.lock().unwrap_or_else(|p| p.into_inner()).clear();
    let runner = rig.runner.clone();
    let sink = rig.sink();
    let up = tokio::spawn(async move { runner.up(gce_and_disk(), sink).await });
    let events = rig.events.clone();
    wait_until("up to wait for the instance", || {
        events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|e| matches!(e, Event::Log { line, .. } if line.contains("waiting for it")))
    })
    .await;
    rig.fake.finish_operations_now();
    up.await.expect("join").expect("up adopts the instance");
    assert_eq!(
        rig.fake.status_history(PROJECT, ZONE_A, "kg"),
        ["PROVISIONING", "STAGING", "RUNNING"]
    );
    assert_eq!(
        rig.calls("compute.instances.insert", ZONE_A).len(),
        1,
        "the killed run's insert was waited for, not sent again"
    );
    assert!(rig.state().await.fact("instance", "host_keys").is_some());
    rig.fake.assert_conforms();
}

/// Between two states GCE refuses stop, start, machine changes, attachDisk and setMetadata
/// with 400 `resourceNotReady`; start on RUNNING and stop on TERMINATED are accepted and
/// change nothing. kgenv's `stop` and `up` wait such a state out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_between_two_states_are_not_ready_and_kgenv_waits_them_out() {
    // Long-polls answer within 0.1 s, so the waits held open below see their release soon.
    let rig = rig_with(env_with(&[ZONE_A], |b| b), |c| {
        c.wait_cap = Duration::from_millis(100);
    })
    .await;
    rig.up().await.expect("up");
    let gce = rig.fake.client();
    let data = DiskRef {
        project: PROJECT.into(),
        zone: ZONE_A.into(),
        name: "kg-data".into(),
    };

    // A stop under way holds the instance STOPPING.
    rig.fake.configure(|c| {
        c.op_latency
            .insert("compute.instances.stop".into(), Duration::from_secs(600));
    });
    let stopper = rig.fake.client();
    let stop = tokio::spawn(async move { stopper.stop_instance(&at(ZONE_A)).await });
    wait_until("the instance to be STOPPING", || {
        rig.status(ZONE_A).as_deref() == Some("STOPPING")
    })
    .await;
    let refused = [
        gce.start_instance(&at(ZONE_A)).await,
        gce.set_machine_type(&at(ZONE_A), "n1-standard-16").await,
        gce.detach_disk(&at(ZONE_A), "kgenv-data").await,
        gce.attach_disk(&at(ZONE_A), &data, "again").await,
        gce.set_metadata(&at(ZONE_A), &[("k".to_string(), "v".to_string())].into())
            .await,
    ];
    for r in refused {
        let e = r.expect_err("refused while STOPPING");
        assert!(
            e.is_failed_precondition() && e.to_string().contains("is not ready"),
            "{e:?}"
        );
    }
    // Labels and delete are not refused (delete is not tried here: it would end the test).
    let mut labels: std::collections::BTreeMap<String, String> = rig
        .fake
        .instance(PROJECT, ZONE_A, "kg")
        .map(|i| serde_json::from_value(i["labels"].clone()).expect("labels"))
        .unwrap_or_default();
    labels.insert("extra".to_string(), "1".to_string());
    gce.set_instance_labels(&at(ZONE_A), &labels)
        .await
        .expect("labels change in any state");

    // `up` meanwhile waits for the stop to end, then starts the VM again.
    let runner = rig.runner.clone();
    let sink = rig.sink();
    let up = tokio::spawn(async move { runner.up(gce_and_disk(), sink).await });
    let events = rig.events.clone();
    wait_until("up to wait for the stop", || {
        events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|e| matches!(e, Event::Log { line, .. } if line.contains("Stopping") && line.contains("waiting for it")))
    })
    .await;
    rig.fake.configure(|c| {
        c.op_latency.remove("compute.instances.stop");
    });
    rig.fake.finish_operations_now();
    stop.await
        .expect("join")
        .expect("the stop itself succeeded");
    up.await.expect("join").expect("up starts the stopped VM");
    assert_eq!(rig.status(ZONE_A).as_deref(), Some("RUNNING"));
    let refused_by_gce = rig
        .fake
        .requests()
        .iter()
        .filter(|r| r.status == 400)
        .count();
    assert_eq!(refused_by_gce, 5, "only the five direct calls were refused");

    // A start under way holds it PROVISIONING; `kgenv stop` waits, then stops it.
    rig.runner.stop(rig.sink()).await.expect("stop");
    rig.fake.configure(|c| {
        c.op_latency
            .insert("compute.instances.start".into(), Duration::from_secs(600));
    });
    let starter = rig.fake.client();
    let start = tokio::spawn(async move { starter.start_instance(&at(ZONE_A)).await });
    wait_until("the instance to be PROVISIONING", || {
        rig.status(ZONE_A).as_deref() == Some("PROVISIONING")
    })
    .await;
    rig.events.lock().unwrap_or_else(|p| p.into_inner()).clear();
    let runner = rig.runner.clone();
    let sink = rig.sink();
    let stop = tokio::spawn(async move { runner.stop(sink).await });
    wait_until("stop to wait for the start", || {
        events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|e| matches!(e, Event::Log { line, .. } if line.contains("waiting for it")))
    })
    .await;
    rig.fake.configure(|c| {
        c.op_latency.remove("compute.instances.start");
    });
    rig.fake.finish_operations_now();
    start
        .await
        .expect("join")
        .expect("the start itself succeeded");
    let report = stop.await.expect("join").expect("kgenv stop");
    assert_eq!(report.outcome("instance"), Some(&Outcome::Changed));
    assert_eq!(rig.status(ZONE_A).as_deref(), Some("TERMINATED"));
    assert_eq!(
        rig.fake
            .requests()
            .iter()
            .filter(|r| r.status == 400)
            .count(),
        5,
        "kgenv sent nothing GCE had to refuse"
    );

    // No-ops: stop on TERMINATED, start on RUNNING.
    gce.stop_instance(&at(ZONE_A))
        .await
        .expect("stop a stopped VM");
    assert_eq!(rig.status(ZONE_A).as_deref(), Some("TERMINATED"));
    gce.start_instance(&at(ZONE_A)).await.expect("start");
    gce.start_instance(&at(ZONE_A))
        .await
        .expect("start a running VM");
    assert_eq!(rig.status(ZONE_A).as_deref(), Some("RUNNING"));
    let history = rig.fake.status_history(PROJECT, ZONE_A, "kg");
    assert_eq!(
        &history[history.len() - 4..],
        ["TERMINATED", "PROVISIONING", "STAGING", "RUNNING"],
        "{history:?}"
    );
    rig.fake.assert_conforms();
}

/// `kgenv start` and `up` on a stopped VM in a zone out of capacity: a stockout error that
/// names the zone and says what to do; the VM stays TERMINATED, nothing is deleted, both
/// disks are kept attached. Once capacity returns, the same VM starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_in_a_zone_out_of_capacity_keeps_the_vm_and_its_disks() {
    let rig = rig_with(env_with(&[ZONE_A, ZONE_B], |b| b), |_| {}).await;
    rig.up().await.expect("up");
    let id = rig.fake.instance(PROJECT, ZONE_A, "kg").expect("vm")["id"].clone();
    rig.runner.stop(rig.sink()).await.expect("stop");
    rig.fake.configure(|c| {
        c.stockout_zones.insert(ZONE_A.into());
    });
    rig.fake.clear_requests();

    let e = rig.runner.start(rig.sink()).await.expect_err("no capacity");
    let again = rig.up().await.expect_err("no capacity for up either");
    for e in [e, again] {
        assert!(e.is_stockout(), "{e}");
        let msg = kgenv_core::error::error_chain(&e);
        assert!(
            msg.contains(ZONE_A)
                && msg.contains("ZONE_RESOURCE_POOL_EXHAUSTED")
                && msg.contains("stays stopped")
                && msg.contains("kgenv start")
                && msg.contains("kgenv move"),
            "{msg}"
        );
    }
    let starts = rig.calls("compute.instances.start", ZONE_A);
    assert_eq!(starts.len(), 2, "one start each, accepted: {starts:?}");
    assert!(
        !rig.fake
            .requests()
            .iter()
            .any(|r| r.method_id.ends_with(".delete")
                || r.method_id == "compute.instances.insert"
                || r.method_id == "compute.instances.detachDisk"),
        "nothing deleted, detached or made elsewhere"
    );
    assert_eq!(rig.status(ZONE_A).as_deref(), Some("TERMINATED"));
    let disks = rig.fake.disks();
    for name in ["kg", "kg-data"] {
        assert!(
            disks
                .iter()
                .any(|d| d.0 == ZONE_A && d.1 == name && d.3.len() == 1),
            "{name} kept and attached: {disks:?}"
        );
    }

    rig.fake.configure(|c| {
        c.stockout_zones.clear();
    });
    rig.runner.start(rig.sink()).await.expect("start");
    let vm = rig.fake.instance(PROJECT, ZONE_A, "kg").expect("vm");
    assert_eq!(vm["status"], "RUNNING");
    assert_eq!(vm["id"], id, "the same VM");
    rig.fake.assert_conforms();
}

/// A stop or delete whose operation fails leaves the VM RUNNING, not STOPPING for ever;
/// the next `kgenv stop` / `down` then does its job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_stop_or_delete_leaves_the_vm_running() {
    let rig = rig_with(env_with(&[ZONE_A], |b| b), |_| {}).await;
    rig.up().await.expect("up");
    let failure = || Fault::OperationError {
        code: "UNSUPPORTED_OPERATION".into(),
        message: "The operation failed (injected).".into(),
        http_status: 400,
        quota_info: None,
        leave_instance: false,
    };

    rig.fake.inject("compute.instances.stop", 1, failure());
    rig.runner
        .stop(rig.sink())
        .await
        .expect_err("the stop failed");
    assert_eq!(rig.status(ZONE_A).as_deref(), Some("RUNNING"));
    rig.runner.stop(rig.sink()).await.expect("stop again");
    assert_eq!(rig.status(ZONE_A).as_deref(), Some("TERMINATED"));
    rig.runner.start(rig.sink()).await.expect("start");

    rig.fake.inject("compute.instances.delete", 1, failure());
    rig.runner
        .down(RunOptions::default(), rig.sink())
        .await
        .expect_err("the delete failed");
    assert_eq!(rig.status(ZONE_A).as_deref(), Some("RUNNING"));
    assert!(
        rig.state().await.fact("instance", "zone").is_some(),
        "still recorded, so the next down finds it"
    );
    let history = rig.fake.status_history(PROJECT, ZONE_A, "kg");
    assert_eq!(
        &history[history.len() - 2..],
        ["STOPPING", "RUNNING"],
        "rolled back: {history:?}"
    );
    rig.runner
        .down(RunOptions::default(), rig.sink())
        .await
        .expect("down");
    assert_eq!(rig.status(ZONE_A), None);
    assert!(rig.fake.unused_faults().is_empty());
}

/// A spot VM preempted by GCE (STOPPING, then TERMINATED, a `compute.instances.preempted`
/// operation by `system`) keeps its disks; `status` reports it stopped, and `up` starts the
/// same VM again without making a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preempted_spot_vm_is_reported_stopped_and_up_starts_it_again() {
    let rig = rig_with(env_with(&[ZONE_A], |b| b.spot(true)), |c| {
        c.op_latency.insert(
            "compute.instances.preempted".into(),
            Duration::from_secs(600),
        );
    })
    .await;
    rig.up().await.expect("up");
    let before = rig.fake.instance(PROJECT, ZONE_A, "kg").expect("vm");
    assert_eq!(before["scheduling"]["provisioningModel"], "SPOT");
    assert_eq!(before["scheduling"]["instanceTerminationAction"], "STOP");

    let op = rig.fake.preempt(PROJECT, ZONE_A, "kg");
    assert_eq!(rig.status(ZONE_A).as_deref(), Some("STOPPING"));
    rig.fake.finish_operations_now();
    assert_eq!(rig.status(ZONE_A).as_deref(), Some("TERMINATED"));
    let shown = rig.fake.operation(&op).expect("the operation");
    assert_eq!(shown["operationType"], "compute.instances.preempted");
    assert_eq!(shown["status"], "DONE");
    assert_eq!(shown["user"], "system");
    assert_eq!(shown["statusMessage"], "Instance was preempted.");
    assert!(
        shown["targetLink"].as_str().is_some_and(
            |l| l.ends_with(&format!("projects/{PROJECT}/zones/{ZONE_A}/instances/kg"))
        ),
        "{shown}"
    );
    assert!(shown.get("error").is_none(), "{shown}");
    let disks = rig.fake.disks();
    assert!(
        ["kg", "kg-data"]
            .iter()
            .all(|n| disks.iter().any(|d| d.1 == *n && d.3.len() == 1)),
        "disks kept attached: {disks:?}"
    );

    rig.events.lock().unwrap_or_else(|p| p.into_inner()).clear();
    let status = rig.runner.status(rig.sink()).await.expect("status");
    assert_eq!(
        status.live.outcome("instance"),
        Some(&Outcome::Planned {
            change: Change::Update
        })
    );
    let diff: Vec<String> = rig
        .events
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter_map(|e| match e {
            Event::Planned { step, diff, .. } if step == "instance" => Some(diff.join("; ")),
            _ => None,
        })
        .collect();
    assert!(
        diff.iter().any(|d| d.contains("Terminated → RUNNING")),
        "{diff:?}"
    );

    rig.fake.clear_requests();
    rig.up().await.expect("up starts it");
    let after = rig.fake.instance(PROJECT, ZONE_A, "kg").expect("vm");
    assert_eq!(after["status"], "RUNNING");
    assert_eq!(after["id"], before["id"], "the same VM");
    let mutating: Vec<String> = rig
        .fake
        .requests()
        .into_iter()
        .filter(Recorded::is_mutating)
        .map(|r| r.method_id)
        .collect();
    assert_eq!(mutating, ["compute.instances.start"], "only a start");
    assert_eq!(
        rig.state().await.fact("instance", "external_ip"),
        after["networkInterfaces"][0]["accessConfigs"][0]["natIP"].as_str(),
        "the new address is recorded"
    );
    rig.fake.assert_conforms();
}

/// kgenv asks for `autoDelete` on the boot disk (the API's default is false), so `down`
/// deletes the VM and GCE its boot disk, while the data disk stays, detached; kgenv itself
/// sends no disk delete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_takes_the_boot_disk_with_the_vm_and_keeps_the_data_disk() {
    let rig = rig_with(env_with(&[ZONE_A], |b| b), |_| {}).await;
    rig.up().await.expect("up");
    let insert = rig
        .calls("compute.instances.insert", ZONE_A)
        .pop()
        .expect("insert");
    let boot = &insert.body.as_ref().expect("body")["disks"][0];
    assert_eq!(boot["boot"], true);
    assert_eq!(boot["autoDelete"], true, "kgenv asks for it: {boot}");
    let names = |fake: &FakeGce| {
        let mut n: Vec<String> = fake.disks().into_iter().map(|d| d.1).collect();
        n.sort();
        n
    };
    assert_eq!(names(&rig.fake), ["kg", "kg-data"]);

    rig.runner
        .down(RunOptions::default(), rig.sink())
        .await
        .expect("down");
    assert_eq!(
        names(&rig.fake),
        ["kg-data"],
        "the boot disk went with the VM"
    );
    let data = rig
        .fake
        .disk(PROJECT, ZONE_A, "kg-data")
        .expect("data disk");
    assert!(data.get("users").is_none(), "detached: {data}");
    assert!(
        !rig.fake
            .requests()
            .iter()
            .any(|r| r.method_id == "compute.disks.delete"),
        "GCE deleted the boot disk, not kgenv"
    );
    rig.fake.assert_conforms();
}

//! `plan::Runner` with the real GCE client on the fake Compute API (other backends from the
//! stateful mock): creation with Google's GPU recipe, idempotence, faults on every call
//! kind, zone failover, quotas, half-made cleanup, bad input, stop/start and down.

#[path = "support/gce_fake.rs"]
mod gce_fake;
#[path = "support/gce_rig.rs"]
mod gce_rig;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gce_fake::{FakeGce, Fault, Recorded};
use kgenv_core::error::QuotaScope;
use kgenv_core::mock::MockWorld;
use kgenv_core::runner::{Event, Outcome, RunOptions, Runner};
use kgenv_core::spec::{Env, Firewall, Instance};
use kgenv_core::ssh::SshConfigFiles;

use gce_rig::{gce_and_disk, gce_part, gpu_env as env_with, home, FakeHosts, Rig, PROJECT};

fn ids(reqs: &[Recorded]) -> Vec<String> {
    reqs.iter()
        .map(|r| format!("{} {}", r.method_id, r.path))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_creates_the_firewall_and_a_gpu_instance_by_googles_recipe_and_pins_host_keys() {
    let rig = Rig::new(env_with(&["us-central1-a", "us-central1-b"], |b| {
        b.spot(true)
    }))
    .await;
    rig.fake.configure(|c| {
        c.op_latency.insert(
            "compute.instances.insert".into(),
            Duration::from_millis(300),
        );
        c.hostkey_delay = Duration::from_millis(400);
    });
    let report = rig.up().await.expect("up");
    assert_eq!(report.outcome("instance"), Some(&Outcome::Changed));
    assert_eq!(report.outcome("firewall/kg-ssh"), Some(&Outcome::Changed));
    assert_eq!(report.outcome("preflight"), Some(&Outcome::Satisfied));

    assert_eq!(
        rig.fake.instances(),
        vec![(
            "us-central1-a".to_string(),
            "kg".to_string(),
            "RUNNING".to_string()
        )]
    );
    let inst = rig
        .fake
        .instance(PROJECT, "us-central1-a", "kg")
        .expect("instance");
    assert_eq!(inst["scheduling"]["onHostMaintenance"], "TERMINATE");
    assert_eq!(inst["scheduling"]["provisioningModel"], "SPOT");
    assert_eq!(inst["scheduling"]["instanceTerminationAction"], "STOP");
    assert_eq!(inst["scheduling"]["automaticRestart"], false);
    assert_eq!(inst["disks"][0]["diskSizeGb"], "200");
    assert_eq!(inst["disks"][0]["autoDelete"], true);
    // Least privilege: no bucket here, so storage read-only (the image pull), logs, metrics.
    assert_eq!(
        inst["serviceAccounts"][0]["scopes"],
        serde_json::json!([
            "https://www.googleapis.com/auth/devstorage.read_only",
            "https://www.googleapis.com/auth/logging.write",
            "https://www.googleapis.com/auth/monitoring.write"
        ])
    );
    rig.fake.assert_conforms();
    assert_eq!(inst["tags"]["items"][0], "kgenv-kg");
    assert_eq!(inst["labels"]["kgenv-env"], "kg");
    let meta: Vec<(String, String)> = inst["metadata"]["items"]
        .as_array()
        .expect("metadata items")
        .iter()
        .map(|i| {
            (
                i["key"].as_str().unwrap_or_default().to_string(),
                i["value"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert!(
        meta.contains(&("install-nvidia-driver".into(), "True".into())),
        "{meta:?}"
    );
    assert!(
        meta.contains(&("enable-guest-attributes".into(), "TRUE".into())),
        "{meta:?}"
    );
    assert!(
        meta.iter()
            .any(|(k, v)| k == "ssh-keys" && v.starts_with("kgenv:ssh-ed25519 ")),
        "{meta:?}"
    );

    let fw = rig.fake.firewalls();
    assert_eq!(fw.len(), 1);
    assert_eq!(
        fw[0]["sourceRanges"],
        serde_json::json!([format!("{}/32", gce_fake::CALLER_IP)]),
        "SSH from the caller only"
    );
    assert_eq!(fw[0]["targetTags"], serde_json::json!(["kgenv-kg"]));
    assert_eq!(
        fw[0]["allowed"],
        serde_json::json!([{"IPProtocol": "tcp", "ports": ["22"]}])
    );

    let state = rig.state().await;
    assert_eq!(state.fact("instance", "zone"), Some("us-central1-a"));
    assert_eq!(
        state.fact("instance", "host_keys"),
        Some(format!("{} {}", gce_fake::HOST_KEY.0, gce_fake::HOST_KEY.1).as_str())
    );
    let ip = inst["networkInterfaces"][0]["accessConfigs"][0]["natIP"]
        .as_str()
        .expect("external ip");
    assert_eq!(state.fact("instance", "external_ip"), Some(ip));

    let reqs = rig.fake.requests();
    let guest = reqs
        .iter()
        .filter(|r| r.method_id == "compute.instances.getGuestAttributes")
        .count();
    assert!(
        guest >= 2,
        "host keys appear after a delay, so they were polled: {guest}"
    );
    assert!(
        rig.mutating().iter().all(|r| r.request_id().is_some()),
        "every mutating call carries a requestId"
    );
    rig.fake.assert_conforms();
}

/// Conformance is checked in every test of this file without asking: dropping the rig drops
/// its fake, which fails the test for a request that broke the discovery document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[should_panic(
    expected = "dropped with 1 conformance problem(s) the test neither took nor expected:\n- compute.instances.stop: mutating call without requestId"
)]
async fn a_non_conforming_request_fails_the_test_when_the_rig_is_dropped() {
    let rig = Rig::new(env_with(&["us-central1-a"], |b| b)).await;
    rig.up().await.expect("up");
    let status = rig
        .fake
        .send_raw(
            "POST",
            &format!("projects/{PROJECT}/zones/us-central1-a/instances/kg/stop"),
            None,
        )
        .await;
    assert_eq!(status, 400, "refused");
    assert_eq!(rig.fake.instances()[0].2, "RUNNING", "and not stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_up_sends_only_gets() {
    let rig = Rig::new(env_with(&["us-central1-a"], |b| b)).await;
    rig.up().await.expect("first up");
    rig.fake.clear_requests();
    let report = rig.up().await.expect("second up");
    assert_eq!(report.changed(), 0, "{report:?}");
    let reqs = rig.fake.requests();
    assert!(!reqs.is_empty());
    assert!(
        reqs.iter().all(|r| r.http_method == "GET"),
        "only GETs: {:?}",
        ids(&reqs)
    );
    rig.fake.assert_conforms();
}

/// Every Compute method kgenv's runner calls: the reads, the changes and the operation
/// waits. `transient_errors_on_every_call_kind_still_converge_without_duplicates` meets each
/// with a transient error (and each mutating one with "work done, answer lost");
/// `every_method_kgenv_calls_is_a_call_kind` fails when a run calls a method missing here, so
/// a new call kind cannot escape fault injection. (`instances.setMetadata` and `setTags`
/// exist on the client but no step calls them: `gce_client.rs` faults them directly.)
const CALL_KINDS: [&str; 29] = [
    // preflight
    "compute.images.getFromFamily",
    "compute.machineTypes.get",
    "compute.acceleratorTypes.get",
    // firewall rules
    "compute.firewalls.get",
    "compute.firewalls.insert",
    "compute.firewalls.patch",
    "compute.firewalls.delete",
    // the instance
    "compute.instances.get",
    "compute.instances.insert",
    "compute.instances.getGuestAttributes",
    "compute.instances.stop",
    "compute.instances.start",
    "compute.instances.setMachineType",
    "compute.instances.setMachineResources",
    "compute.instances.setServiceAccount",
    "compute.instances.setLabels",
    "compute.instances.delete",
    // disks and the data disk's move
    "compute.disks.get",
    "compute.disks.insert",
    "compute.disks.resize",
    "compute.instances.attachDisk",
    "compute.instances.detachDisk",
    "compute.disks.delete",
    "compute.disks.createSnapshot",
    "compute.snapshots.get",
    "compute.snapshots.delete",
    // operations (`list`: a stopped VM's preemptions, for `status`)
    "compute.zoneOperations.list",
    "compute.zoneOperations.wait",
    "compute.globalOperations.wait",
];

/// The environment [`exercise_every_call_kind`] starts with: a GPU VM with kgenv's SSH rule
/// and the default data disk.
fn lifecycle_env() -> Env {
    Env::builder("kg")
        .instance(
            Instance::builder()
                .project(PROJECT)
                .zone(ZONE_A)
                .gpu("nvidia-tesla-t4", 1),
        )
        .firewall(Firewall::builder("kg-ssh").port(22))
        .build()
        .expect("env")
}

/// [`lifecycle_env`] edited in every way kgenv changes in place: a wider rule (a patch), and
/// machine type, GPUs and scopes (the VM stopped, changed and started again), bigger boot
/// and data disks (grown).
fn lifecycle_env_changed() -> Env {
    Env::builder("kg")
        .instance(
            Instance::builder()
                .project(PROJECT)
                .zone(ZONE_A)
                .machine_type("n1-standard-16")
                .gpu("nvidia-tesla-t4", 2)
                .scope("devstorage.read_write")
                .scope("logging.write")
                .disk_size_gb(250)
                .data_disk(kgenv_core::spec::DataDisk::builder().size_gb(400)),
        )
        .firewall(Firewall::builder("kg-ssh").port(22).port(2222))
        .build()
        .expect("env")
}

/// Instances, firewall rules and disks as (zone or "global", name), sorted: what a run left.
fn resources(fake: &FakeGce) -> Vec<(String, String)> {
    let mut r: Vec<(String, String)> = fake
        .instances()
        .into_iter()
        .map(|(z, n, _)| (z, format!("instance {n}")))
        .chain(fake.firewalls().iter().map(|f| {
            (
                "global".to_string(),
                format!("firewall {}", f["name"].as_str().unwrap_or_default()),
            )
        }))
        .chain(
            fake.disks()
                .into_iter()
                .map(|(z, n, _, _)| (z, format!("disk {n}"))),
        )
        .collect();
    r.sort();
    r
}

/// `[(zone, what)]` as owned strings, for comparing with [`resources`].
fn owned(v: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<_> = v
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    v.sort();
    v
}

/// Runs everything that makes kgenv call every Compute method, checking after each part that
/// exactly the expected resources exist: `up` (VM, rule, data disk); an edited config
/// applied with `--yes` (rule patched; VM stopped, machine type, GPUs and scopes set, started;
/// disks grown); `stop` and `start`; `move` to zone b (snapshot, disk from it, old VM and disk
/// deleted); `down --delete-disk` (disk detached and deleted); then an older kgenv's VM and
/// rule adopted (labelled with the owner id) and removed by `down`.
async fn exercise_every_call_kind(rig: &Rig) {
    let dir = rig.runner.state_path().parent().expect("dir").to_path_buf();
    let made = owned(&[
        (ZONE_A, "instance kg"),
        (ZONE_A, "disk kg"),
        (ZONE_A, "disk kg-data"),
        ("global", "firewall kg-ssh"),
    ]);
    rig.runner
        .up(gce_and_disk(), rig.sink())
        .await
        .expect("up of the VM, its rule and its data disk");
    assert_eq!(resources(&rig.fake), made, "after up");

    let changed = rig.other_runner(lifecycle_env_changed(), &dir);
    changed
        .up(gce_and_disk().yes(), rig.sink())
        .await
        .expect("up --yes of the edited config");
    assert_eq!(
        resources(&rig.fake),
        made,
        "changed in place, nothing remade"
    );
    let inst = rig
        .fake
        .instance(PROJECT, ZONE_A, "kg")
        .expect("the instance");
    assert!(
        inst["machineType"]
            .as_str()
            .unwrap_or_default()
            .ends_with("/n1-standard-16")
            && inst["guestAccelerators"][0]["acceleratorCount"] == 2
            && inst["status"] == "RUNNING",
        "{inst}"
    );
    assert_eq!(
        rig.fake.firewalls()[0]["allowed"],
        serde_json::json!([{"IPProtocol": "tcp", "ports": ["22", "2222"]}])
    );
    let sizes: Vec<u64> = rig.fake.disks().iter().map(|d| d.2).collect();
    assert_eq!(sizes, vec![250, 400], "boot and data disks grown");

    changed.stop(rig.sink()).await.expect("stop");
    assert_eq!(rig.fake.instances()[0].2, "TERMINATED");
    changed.start(rig.sink()).await.expect("start");
    assert_eq!(rig.fake.instances()[0].2, "RUNNING");

    changed
        .move_to(ZONE_B, RunOptions::default().yes(), |_| false, rig.sink())
        .await
        .expect("move to zone b");
    assert_eq!(
        resources(&rig.fake),
        owned(&[
            (ZONE_B, "instance kg"),
            (ZONE_B, "disk kg"),
            (ZONE_B, "disk kg-data"),
            ("global", "firewall kg-ssh"),
        ]),
        "after the move"
    );
    assert!(
        rig.fake.snapshots().is_empty(),
        "{:?}",
        rig.fake.snapshots()
    );

    changed
        .down(RunOptions::default().delete_disk("kg-data"), rig.sink())
        .await
        .expect("down --delete-disk");
    assert_eq!(resources(&rig.fake), Vec::new(), "after down --delete-disk");
    assert!(!rig.runner.state_path().exists());

    // What an older kgenv left: a VM and a rule without owner ids, a state file without one.
    rig.fake.seed_instance(
        PROJECT,
        ZONE_A,
        "kg",
        serde_json::json!({"kgenv-env": "kg"}),
    );
    rig.fake.seed_firewall(PROJECT, serde_json::json!({"name": "kg-ssh", "network": "global/networks/default",
        "description": "managed by kgenv (kgenv-env=kg)", "allowed": [{"IPProtocol": "tcp", "ports": ["22"]}],
        "sourceRanges": ["203.0.113.7/32"], "targetTags": ["kgenv-kg"]}));
    write_v1_state(rig);
    let adopting = rig.other_runner(env_with_ssh_rule("kg"), &dir);
    adopting
        .up(gce_part(), rig.sink())
        .await
        .expect("up adopts the older kgenv's VM");
    let owner = rig.state().await.owner.expect("an owner id now");
    assert_eq!(
        rig.fake.instance(PROJECT, ZONE_A, "kg").expect("instance")["labels"]["kgenv-owner"],
        owner.as_str()
    );
    adopting
        .down(RunOptions::default(), rig.sink())
        .await
        .expect("down of the adopted VM");
    assert_eq!(resources(&rig.fake), Vec::new(), "after the last down");
}

/// A version-1 state file (no owner id) recording the instance `kg` in zone a and the rule
/// `kg-ssh`, as an older kgenv wrote it.
fn write_v1_state(rig: &Rig) {
    let state = serde_json::json!({"version": 1, "env": "kg", "target": "gce", "steps": {
        "instance": {"created": {"instance": format!("projects/{PROJECT}/zones/{ZONE_A}/instances/kg")},
                     "facts": {"zone": ZONE_A}, "spec_hash": null},
        "firewall/kg-ssh": {"created": {"firewall": format!("projects/{PROJECT}/global/firewalls/kg-ssh")},
                     "facts": {}, "spec_hash": null}}});
    let dir = rig.runner.state_path().parent().expect("dir").to_path_buf();
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(rig.runner.state_path(), state.to_string()).expect("old state");
}

/// Whether a call kind asks for a change (not a read such as `get`/`getGuestAttributes`/
/// `getFromFamily`/`list`, not an operation wait).
fn is_change(kind: &str) -> bool {
    let method = kind.rsplit('.').next().unwrap_or_default();
    !method.starts_with("get") && method != "wait" && method != "list"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_kgenv_calls_is_a_call_kind() {
    let rig = Rig::new(lifecycle_env()).await;
    exercise_every_call_kind(&rig).await;
    let seen: BTreeSet<String> = rig
        .fake
        .requests()
        .into_iter()
        .map(|r| r.method_id)
        .collect();
    let kinds: BTreeSet<String> = CALL_KINDS.iter().map(|k| k.to_string()).collect();
    let missing: Vec<_> = seen.difference(&kinds).collect();
    assert!(
        missing.is_empty(),
        "kgenv called methods that CALL_KINDS leaves out, so no fault test meets them; add them: {missing:?}"
    );
    let unused: Vec<_> = kinds.difference(&seen).collect();
    assert!(
        unused.is_empty(),
        "CALL_KINDS lists methods the scenario never calls, so their faults would never be met: {unused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_errors_on_every_call_kind_still_converge_without_duplicates() {
    let rig = Rig::new(lifecycle_env()).await;
    let transient = [
        Fault::unavailable(),
        Fault::too_many(None),
        Fault::rate_limit_403(),
    ];
    for (i, kind) in CALL_KINDS.iter().enumerate() {
        rig.fake
            .inject(kind, 1, transient[i % transient.len()].clone());
        if is_change(kind) {
            // Work done, answer lost: the retry must not do the work again.
            rig.fake.inject(
                kind,
                1,
                Fault::AfterApply {
                    status: [502, 503, 504][i % 3],
                },
            );
        }
    }
    exercise_every_call_kind(&rig).await;
    let unused = rig.fake.unused_faults();
    assert!(
        unused.is_empty(),
        "every call kind met its faults: {unused:?}"
    );

    // Each failed change was retried with its requestId, so the fake answered the retry
    // with the first call's operation instead of doing the work again: GCE's documented
    // contract ("Specify a unique request ID so that if you must retry your request, the
    // server will know to ignore the request if it has already been completed", the
    // `requestId` of every Compute v1 mutating method, e.g. InsertInstanceRequest).
    let reqs = rig.fake.requests();
    let mut faulted_changes = 0;
    for (i, r) in reqs.iter().enumerate() {
        if !r.is_mutating() || r.status == 200 {
            continue;
        }
        faulted_changes += 1;
        let retry = reqs[i + 1..]
            .iter()
            .find(|n| n.method_id == r.method_id && n.path == r.path)
            .unwrap_or_else(|| {
                panic!(
                    "{} {} failed with {} and was never retried",
                    r.method_id, r.path, r.status
                )
            });
        assert_eq!(
            retry.request_id(),
            r.request_id(),
            "{} {}: the retry carries the failed call's requestId",
            r.method_id,
            r.path
        );
    }
    let mutating_kinds = CALL_KINDS.iter().filter(|k| is_change(k)).count();
    assert_eq!(
        faulted_changes,
        2 * mutating_kinds,
        "each mutating kind failed twice: once before the work, once after it"
    );
    // No resource was made twice: one insert operation per resource made.
    let mut inserted = BTreeSet::new();
    for op in rig.fake.operations() {
        if op.op_type == "insert" {
            assert!(
                inserted.insert(op.target.clone()),
                "{} was inserted twice",
                op.target
            );
        }
    }
    assert_eq!(
        inserted.len(),
        5,
        "the VM, rule and data disk, then the VM and data disk in zone b: {inserted:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stockout_in_zone_a_lands_in_zone_b_and_leaves_nothing_in_a() {
    let rig = Rig::new(env_with(&["us-central1-a", "us-central1-b"], |b| b)).await;
    rig.fake.configure(|c| {
        c.stockout_zones.insert("us-central1-a".into());
        c.half_made_on_stockout = true;
    });
    rig.up().await.expect("up");
    assert_eq!(
        rig.fake.instances(),
        vec![(
            "us-central1-b".to_string(),
            "kg".to_string(),
            "RUNNING".to_string()
        )]
    );
    assert_eq!(
        rig.state().await.fact("instance", "zone"),
        Some("us-central1-b")
    );
    let deletes: Vec<_> = rig
        .mutating()
        .into_iter()
        .filter(|r| r.method_id == "compute.instances.delete")
        .collect();
    assert_eq!(
        deletes.len(),
        1,
        "the half-made instance in zone a was deleted"
    );
    assert!(deletes[0].path.contains("us-central1-a"));
    assert!(
        rig.warnings()
            .iter()
            .any(|w| w.contains("us-central1-a") && w.contains("no capacity")),
        "{:?}",
        rig.warnings()
    );
    rig.fake.assert_conforms();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stockout_everywhere_says_which_zones_were_tried() {
    let rig = Rig::new(env_with(&["us-central1-a", "europe-west4-a"], |b| b)).await;
    rig.fake.configure(|c| {
        c.stockout_zones
            .extend(["us-central1-a".to_string(), "europe-west4-a".to_string()]);
    });
    let e = rig.up().await.expect_err("no capacity anywhere");
    assert!(e.is_stockout(), "{e}");
    let msg = kgenv_core::error::error_chain(&e);
    assert!(
        msg.contains("us-central1-a (stockout)")
            && msg.contains("europe-west4-a (stockout)")
            && msg.contains("instance.zones"),
        "{msg}"
    );
    assert!(rig.fake.instances().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_quota_skips_that_region() {
    let rig = Rig::new(env_with(
        &["us-central1-a", "us-central1-b", "europe-west4-a"],
        |b| b,
    ))
    .await;
    rig.fake.inject(
        "compute.instances.insert",
        1,
        Fault::quota("NVIDIA_T4_GPUS", 0.0, Some("us-central1")),
    );
    rig.up().await.expect("up in another region");
    assert_eq!(
        rig.fake.instances(),
        vec![(
            "europe-west4-a".to_string(),
            "kg".to_string(),
            "RUNNING".to_string()
        )]
    );
    let inserts: Vec<_> = rig
        .mutating()
        .into_iter()
        .filter(|r| r.method_id == "compute.instances.insert")
        .collect();
    assert_eq!(
        inserts.len(),
        2,
        "us-central1-b was skipped: {:?}",
        ids(&inserts)
    );
    assert!(
        rig.warnings()
            .iter()
            .any(|w| w.contains("NVIDIA_T4_GPUS") && w.contains("us-central1")),
        "{:?}",
        rig.warnings()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_global_quota_stops_at_once_with_a_clear_error_and_nothing_left_behind() {
    let rig = Rig::new(env_with(&["us-central1-a", "europe-west4-a"], |b| b)).await;
    rig.fake.inject(
        "compute.instances.insert",
        1,
        Fault::quota("GPUS_ALL_REGIONS", 0.0, None),
    );
    let e = rig.up().await.expect_err("no GPU quota at all");
    let q = e.quota().expect("a quota error");
    assert_eq!(
        (q.metric.as_str(), &q.scope, q.limit),
        ("GPUS_ALL_REGIONS", &QuotaScope::Global, Some(0.0))
    );
    let msg = kgenv_core::error::error_chain(&e);
    assert!(
        msg.contains("GPUS_ALL_REGIONS")
            && msg.contains("no other zone will help")
            && msg.contains("quotas"),
        "{msg}"
    );
    let inserts = rig
        .mutating()
        .into_iter()
        .filter(|r| r.method_id == "compute.instances.insert")
        .count();
    assert_eq!(inserts, 1, "no second zone tried");
    assert!(rig.fake.instances().is_empty(), "no instance left");
    // The firewall rule is recorded, so `down` removes it: nothing of kgenv's remains.
    rig.runner
        .down(RunOptions::default(), rig.sink())
        .await
        .expect("down");
    assert!(rig.fake.firewalls().is_empty());
    assert!(!rig.runner.state_path().exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operation_that_fails_after_the_instance_appeared_is_cleaned_up() {
    let rig = Rig::new(env_with(&["us-central1-a", "us-central1-b"], |b| b)).await;
    rig.fake.inject(
        "compute.instances.insert",
        1,
        Fault::fails_after_appearing(),
    );
    let e = rig.up().await.expect_err("the insert failed");
    let msg = kgenv_core::error::error_chain(&e);
    assert!(
        msg.contains("RESOURCE_OPERATION_RATE_EXCEEDED") && msg.contains("Operation rate exceeded"),
        "{msg}"
    );
    assert!(
        rig.fake.instances().is_empty(),
        "the half-made instance was deleted: {:?}",
        rig.fake.instances()
    );
    assert!(rig
        .mutating()
        .iter()
        .any(|r| r.method_id == "compute.instances.delete"));
    // The next up creates it normally.
    rig.up().await.expect("second up");
    assert_eq!(rig.fake.instances().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_fails_before_any_mutating_call() {
    // A GPU type no zone offers.
    let rig = Rig::new(env_with(&["us-central1-a", "us-central1-b"], |b| {
        b.gpu("nvidia-h100-80gb", 1).machine_type("a3-highgpu-1g")
    }))
    .await;
    let e = rig.up().await.expect_err("unknown GPU");
    assert!(e.is_config(), "{e}");
    assert!(
        kgenv_core::error::error_chain(&e).contains("instance.gpu_type"),
        "{e}"
    );
    assert!(
        rig.mutating().is_empty(),
        "no mutating call: {:?}",
        ids(&rig.mutating())
    );

    // A disk below the image's minimum (the image needs more than the spec's rule knows).
    let fake = FakeGce::start().await;
    fake.configure(|c| {
        for v in c.images.values_mut() {
            v.1 = 250;
        }
    });
    let rig = Rig::with_fake(fake, env_with(&["us-central1-a"], |b| b.disk_size_gb(200)));
    let e = rig.up().await.expect_err("disk too small");
    assert!(
        e.is_config() && kgenv_core::error::error_chain(&e).contains("instance.disk_size_gb"),
        "{e}"
    );
    assert!(kgenv_core::error::error_chain(&e).contains("250"), "{e}");
    assert!(
        rig.mutating().is_empty(),
        "no mutating call: {:?}",
        ids(&rig.mutating())
    );

    // A machine type that does not exist.
    let rig = Rig::new(env_with(&["us-central1-a"], |b| {
        // CPU-only: with a GPU the spec itself refuses an unknown family for it.
        b.no_gpu().machine_type("n9-mega-1")
    }))
    .await;
    let e = rig.up().await.expect_err("unknown machine type");
    assert!(
        e.is_config() && kgenv_core::error::error_chain(&e).contains("instance.machine_type"),
        "{e}"
    );
    assert!(rig.mutating().is_empty());

    // A malformed project never reaches the runner (the spec refuses it) nor the API.
    let e = Env::builder("kg")
        .instance(
            Instance::builder()
                .project("My_Project")
                .zone("us-central1-a"),
        )
        .build()
        .expect_err("bad project");
    assert_eq!(e.field, "instance.project");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gpu_missing_in_one_zone_skips_that_zone_with_a_warning() {
    let fake = FakeGce::start().await;
    fake.configure(|c| {
        if let Some(g) = c.zones.get_mut("us-central1-a") {
            g.remove("nvidia-l4");
        }
    });
    let rig = Rig::with_fake(
        fake,
        env_with(&["us-central1-a", "us-central1-b"], |b| {
            b.gpu("nvidia-l4", 1).machine_type("g2-standard-8")
        }),
    );
    rig.up().await.expect("up");
    assert_eq!(rig.fake.instances()[0].0, "us-central1-b");
    assert!(
        !rig.mutating()
            .iter()
            .any(|r| r.path.contains("us-central1-a")),
        "nothing attempted where the GPU is not offered"
    );
    assert!(
        rig.warnings()
            .iter()
            .any(|w| w.contains("us-central1-a") && w.contains("nvidia-l4")),
        "{:?}",
        rig.warnings()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_and_start_keep_the_disk_and_record_the_new_address() {
    let rig = Rig::new(env_with(&["us-central1-a"], |b| b)).await;
    rig.up().await.expect("up");
    let ip1 = rig
        .state()
        .await
        .fact("instance", "external_ip")
        .map(str::to_string)
        .expect("ip");
    let stopped = rig.runner.stop(rig.sink()).await.expect("stop");
    assert_eq!(stopped.outcome("instance"), Some(&Outcome::Changed));
    assert_eq!(
        rig.fake.instances()[0].2,
        "TERMINATED",
        "stopped, not deleted"
    );
    assert_eq!(
        rig.state().await.fact("instance", "external_ip"),
        None,
        "a stopped VM has no address"
    );
    let again = rig
        .runner
        .stop(rig.sink())
        .await
        .expect("stop a stopped VM");
    assert_eq!(
        again.outcome("instance"),
        Some(&Outcome::Nothing),
        "already stopped"
    );
    let started = rig.runner.start(rig.sink()).await.expect("start");
    assert_eq!(started.outcome("instance"), Some(&Outcome::Changed));
    assert_eq!(rig.fake.instances()[0].2, "RUNNING");
    let ip2 = rig
        .state()
        .await
        .fact("instance", "external_ip")
        .map(str::to_string)
        .expect("new ip recorded");
    assert_ne!(ip1, ip2, "an ephemeral address changes on start");
    assert_eq!(
        rig.hosts
            .asked
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .last(),
        Some(&ip2),
        "start logs in to the host at its new address"
    );
    assert_eq!(
        rig.runner.host_addr().await.expect("addr").map(|a| a.host),
        Some(ip2.clone())
    );
    assert!(rig.state().await.fact("instance", "host_keys").is_some());
    // `up` after a stop starts the VM again; the same VM keeps its pinned host keys.
    rig.runner.stop(rig.sink()).await.expect("stop again");
    rig.fake.clear_requests();
    rig.up().await.expect("up restarts");
    assert_eq!(rig.fake.instances()[0].2, "RUNNING");
    let reads = rig
        .fake
        .requests()
        .iter()
        .filter(|r| r.method_id == "compute.instances.getGuestAttributes")
        .count();
    assert_eq!(reads, 0, "host keys of the same VM are not read again");
    rig.fake.assert_conforms();
}

/// The `HostName` the system `ssh` client resolves for `alias` from kgenv's ssh_config file.
fn ssh_host_name(files: &SshConfigFiles, alias: &str) -> String {
    let out = std::process::Command::new("ssh")
        .arg("-G")
        .arg("-F")
        .arg(&files.kgenv_config)
        .arg(alias)
        .output()
        .expect("the OpenSSH client runs (install openssh-client)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("hostname "))
        .expect("a hostname line")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_points_ssh_env_at_the_vms_new_address() {
    home();
    let fake = FakeGce::start().await;
    let dir = tempfile::tempdir().expect("dir");
    let files = SshConfigFiles {
        user_config: dir.path().join("home/.ssh/config"),
        kgenv_config: dir.path().join("config/ssh_config"),
        known_hosts: dir.path().join("config/known_hosts"),
    };
    let mut backends = MockWorld::new().backends();
    backends.compute = Arc::new(fake.client());
    backends.remote = Arc::new(FakeHosts::over(backends.remote.clone()));
    backends.ssh_aliases = Some(Arc::new(files.clone()));
    let runner = Runner::new(env_with(&["us-central1-a"], |b| b), backends)
        .state_dir(dir.path().join("state"))
        .host_ready_within(Duration::from_secs(20));
    let address = || async {
        runner
            .host_addr()
            .await
            .expect("addr")
            .map(|a| a.host)
            .expect("a gce host")
    };
    runner
        .up(RunOptions::default().until("host"), |_| {})
        .await
        .expect("up");
    let ip1 = address().await;
    assert_eq!(ssh_host_name(&files, "kg"), ip1, "`ssh kg` reaches the VM");

    runner.stop(|_| {}).await.expect("stop");
    let started = runner.start(|_| {}).await.expect("start");
    let ip2 = address().await;
    assert_ne!(ip1, ip2, "an ephemeral address changes on start");
    assert_eq!(
        started.outcome("host"),
        Some(&Outcome::Changed),
        "the Host block is rewritten"
    );
    assert_eq!(
        ssh_host_name(&files, "kg"),
        ip2,
        "`ssh kg` follows the VM to its new address"
    );
    let text = std::fs::read_to_string(&files.kgenv_config).expect("ssh_config");
    assert_eq!(text.matches("Host kg\n").count(), 1, "one block: {text}");
    assert!(!text.contains(&ip1), "the old address is gone: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_deletes_the_instance_and_kgenvs_firewall_rules_only() {
    let env = Env::builder("kg")
        .instance(Instance::builder().project(PROJECT).zone("us-central1-a"))
        .firewall(Firewall::builder("kg-ssh").port(22))
        .firewall(
            Firewall::builder("kg-jupyter")
                .port(8888)
                .source_range("203.0.113.0/24"),
        )
        .build()
        .expect("env");
    let rig = Rig::new(env).await;
    rig.fake.seed_firewall(PROJECT, serde_json::json!({"name": "someone-elses", "network": "global/networks/default", "description": "not kgenv"}));
    rig.up().await.expect("up");
    assert_eq!(rig.fake.firewalls().len(), 3);
    let report = rig
        .runner
        .down(RunOptions::default(), rig.sink())
        .await
        .expect("down");
    assert_eq!(report.outcome("instance"), Some(&Outcome::Removed));
    assert!(rig.fake.instances().is_empty());
    let left: Vec<String> = rig
        .fake
        .firewalls()
        .iter()
        .map(|f| f["name"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(left, vec!["someone-elses".to_string()]);
    assert!(
        !rig.runner.state_path().exists(),
        "nothing of kgenv's is left to record"
    );
    rig.fake.assert_conforms();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_that_are_not_kgenvs_are_never_changed() {
    let rig = Rig::new(env_with(&["us-central1-a"], |b| b)).await;
    rig.fake.seed_instance(
        PROJECT,
        "us-central1-a",
        "kg",
        serde_json::json!({"owner": "someone"}),
    );
    rig.fake.seed_firewall(PROJECT, serde_json::json!({"name": "kg-ssh", "network": "global/networks/default", "description": "hand made",
        "allowed": [{"IPProtocol": "tcp", "ports": ["22"]}], "sourceRanges": ["0.0.0.0/0"], "targetTags": ["kgenv-kg"]}));
    let e = rig.up().await.expect_err("name clash");
    assert!(
        kgenv_core::error::error_chain(&e).contains("owner id"),
        "{}",
        kgenv_core::error::error_chain(&e)
    );
    assert!(
        rig.mutating().is_empty(),
        "nothing changed: {:?}",
        ids(&rig.mutating())
    );
    rig.runner
        .down(RunOptions::default(), rig.sink())
        .await
        .expect("down");
    assert_eq!(
        rig.fake.instances().len(),
        1,
        "down leaves someone else's instance"
    );
    assert_eq!(rig.fake.firewalls().len(), 1, "and their rule");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_shows_the_resolved_image_and_changes_nothing() {
    let rig = Rig::new(env_with(&["us-central1-a"], |b| b)).await;
    let report = rig.runner.plan(gce_part(), rig.sink()).await.expect("plan");
    assert_eq!(report.planned_changes(), 2, "{report:?}");
    let actions: Vec<String> = rig
        .events
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter_map(|e| match e {
            Event::Planned { step, actions, .. } if step == "instance" => Some(actions.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert!(
        actions.iter().any(|a| a.contains(&format!(
            "{}-v20261110",
            kgenv_core::spec::DEFAULT_IMAGE_FAMILY
        ))),
        "{actions:?}"
    );
    assert!(rig.mutating().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_recreated_outside_kgenv_gets_its_new_host_keys_read() {
    let rig = Rig::new(env_with(&["us-central1-a"], |b| b.no_gpu())).await;
    rig.up().await.expect("up");
    let id1 = rig
        .state()
        .await
        .fact("instance", "id")
        .map(str::to_string)
        .expect("id recorded");
    // Someone deletes it and makes a new one with the same name and kgenv's labels.
    let owner = rig.state().await.owner.expect("owner id recorded");
    let at = kgenv_core::backends::compute::InstanceRef {
        project: PROJECT.into(),
        zone: "us-central1-a".into(),
        name: "kg".into(),
    };
    kgenv_core::backends::Compute::delete_instance(&rig.fake.client(), &at)
        .await
        .expect("delete");
    rig.fake.seed_instance(
        PROJECT,
        "us-central1-a",
        "kg",
        serde_json::json!({"kgenv-env": "kg", "kgenv-owner": owner}),
    );
    rig.fake.clear_requests();
    rig.up().await.expect("up");
    let id2 = rig
        .state()
        .await
        .fact("instance", "id")
        .map(str::to_string)
        .expect("id recorded");
    assert_ne!(id1, id2);
    assert!(
        rig.fake
            .requests()
            .iter()
            .any(|r| r.method_id == "compute.instances.getGuestAttributes"),
        "host keys read again for the new VM"
    );
    assert!(
        rig.mutating().is_empty(),
        "nothing had to change in GCE: {:?}",
        ids(&rig.mutating())
    );
}

fn env_with_ssh_rule(name: &str) -> Env {
    Env::builder("kg")
        .instance(
            Instance::builder()
                .project(PROJECT)
                .name(name)
                .zone("us-central1-a")
                .no_gpu(),
        )
        .firewall(Firewall::builder("kg-ssh").port(22))
        .build()
        .expect("env")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_state_dir_with_the_same_env_name_adopts_and_deletes_nothing() {
    let rig = Rig::new(env_with_ssh_rule("kg")).await;
    rig.up().await.expect("first person's up");
    let owner = rig.state().await.owner.expect("owner id");
    let inst = rig
        .fake
        .instance(PROJECT, "us-central1-a", "kg")
        .expect("made");
    assert_eq!(inst["labels"]["kgenv-owner"], owner.as_str());
    let rule = rig.fake.firewalls();
    assert!(
        rule[0]["description"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!("kgenv-owner={owner}")),
        "{rule:?}"
    );

    let second_dir = tempfile::tempdir().expect("dir");
    let second = rig.other_runner(env_with_ssh_rule("kg"), second_dir.path());
    rig.fake.clear_requests();
    let e = second
        .up(gce_part(), rig.sink())
        .await
        .expect_err("the second up refuses");
    let chain = kgenv_core::error::error_chain(&e);
    assert!(
        chain.contains("owner id") && chain.contains("kg"),
        "{chain}"
    );
    assert!(rig.mutating().is_empty(), "{:?}", ids(&rig.mutating()));
    // Its `down` (with --only, to reach every resource step) deletes nothing of the first's.
    second
        .down(RunOptions::default(), rig.sink())
        .await
        .expect("down");
    assert!(rig.mutating().is_empty(), "{:?}", ids(&rig.mutating()));
    assert_eq!(rig.fake.instances().len(), 1);
    assert_eq!(rig.fake.firewalls().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renamed_instance_never_redirects_up_or_down() {
    let rig = Rig::new(env_with_ssh_rule("kg")).await;
    rig.up().await.expect("up");
    // Someone else's VM that the user's edited config now names.
    rig.fake
        .seed_instance(PROJECT, "us-central1-a", "precious", serde_json::json!({}));
    let dir = rig.runner.state_path().parent().expect("dir").to_path_buf();
    let renamed = rig.other_runner(env_with_ssh_rule("precious"), &dir);
    rig.fake.clear_requests();
    let e = renamed
        .up(gce_part(), rig.sink())
        .await
        .expect_err("up refuses the rename");
    assert_eq!(e.kind(), "usage", "a usage error, exit 2: {e}");
    let chain = kgenv_core::error::error_chain(&e);
    assert!(
        chain.contains(&format!(
            "this environment's VM is instance {PROJECT}/us-central1-a/kg"
        )),
        "names the recorded VM: {chain}"
    );
    assert!(rig.mutating().is_empty(), "{:?}", ids(&rig.mutating()));

    renamed
        .down(RunOptions::default(), rig.sink())
        .await
        .expect("down");
    let deleted: Vec<String> = rig
        .mutating()
        .iter()
        .filter(|r| r.method_id == "compute.instances.delete")
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(deleted.len(), 1, "{deleted:?}");
    assert!(
        deleted[0].ends_with("/instances/kg"),
        "the recorded VM: {deleted:?}"
    );
    let left = rig.fake.instances();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].1, "precious", "the renamed-to VM is untouched");
}

/// The GCE part with the data disk.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_disk_outlives_down_and_is_attached_again_by_the_next_up() {
    let rig = Rig::new(env_with_ssh_rule("kg")).await;
    rig.runner.up(gce_and_disk(), rig.sink()).await.expect("up");
    let disks = rig.fake.disks();
    let data: Vec<_> = disks.iter().filter(|d| d.1 == "kg-data").collect();
    assert_eq!(data.len(), 1, "{disks:?}");
    assert_eq!(data[0].0, "us-central1-a", "in the VM's zone");
    assert_eq!(data[0].3.len(), 1, "attached: {:?}", data[0].3);
    let disk = rig
        .fake
        .disk(PROJECT, "us-central1-a", "kg-data")
        .expect("disk");
    let owner = rig.state().await.owner.expect("owner id");
    assert_eq!(disk["labels"]["kgenv-owner"], owner.as_str());
    rig.fake
        .write_disk(PROJECT, "us-central1-a", "kg-data", "the user's notebooks");

    // down: the VM and its boot disk go, the data disk stays (recorded in the state).
    let report = rig
        .runner
        .down(RunOptions::default(), rig.sink())
        .await
        .expect("down");
    assert_eq!(report.outcome("instance"), Some(&Outcome::Removed));
    assert!(rig.fake.instances().is_empty());
    let left = rig.fake.disks();
    assert_eq!(left.len(), 1, "only the data disk: {left:?}");
    assert_eq!(
        left[0].1, "kg-data",
        "the disk kept is the data disk: {left:?}"
    );
    assert!(left[0].3.is_empty(), "detached with the VM");
    assert!(
        rig.runner.state_path().exists(),
        "the kept disk is recorded"
    );
    let preview = rig
        .runner
        .down_preview(&RunOptions::default())
        .await
        .expect("preview");
    assert!(preview.deletes_nothing(), "{preview}");
    assert_eq!(preview.disks(), vec!["kg-data".to_string()]);

    // up: same disk, same data, attached to the new VM; no disk is made.
    rig.fake.clear_requests();
    rig.runner
        .up(gce_and_disk(), rig.sink())
        .await
        .expect("up again");
    assert!(
        !rig.fake
            .requests()
            .iter()
            .any(|r| r.method_id == "compute.disks.insert"),
        "{:?}",
        ids(&rig.mutating())
    );
    assert_eq!(
        rig.fake
            .disk_data(PROJECT, "us-central1-a", "kg-data")
            .as_deref(),
        Some("the user's notebooks")
    );
    let attached = rig.fake.disks();
    assert!(
        attached.iter().any(|d| d.1 == "kg-data" && d.3.len() == 1),
        "{attached:?}"
    );

    // Deleted only when named.
    rig.runner
        .down(RunOptions::default().delete_disk("kg-data"), rig.sink())
        .await
        .expect("down --delete-disk");
    assert!(rig.fake.disks().is_empty(), "{:?}", rig.fake.disks());
    assert!(!rig.runner.state_path().exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_disk_pins_the_vm_to_its_zone_and_a_stockout_there_says_move() {
    let env = |zones: &[&str]| {
        let mut i = Instance::builder().project(PROJECT).name("kg").no_gpu();
        for z in zones {
            i = i.zone(*z);
        }
        Env::builder("kg").instance(i).build().expect("env")
    };
    let rig = Rig::new(env(&["us-central1-b", "us-central1-a"])).await;
    rig.runner.up(gce_and_disk(), rig.sink()).await.expect("up");
    rig.runner
        .down(RunOptions::default(), rig.sink())
        .await
        .expect("down");
    // Zone b is out of capacity now; the disk is in b, so a is not an option.
    rig.fake.configure(|c| {
        c.stockout_zones.insert("us-central1-b".into());
    });
    rig.fake.clear_requests();
    let e = rig
        .runner
        .up(gce_and_disk(), rig.sink())
        .await
        .expect_err("stockout where the disk is");
    let chain = kgenv_core::error::error_chain(&e);
    assert!(chain.contains("kgenv move"), "{chain}");
    assert!(e.is_stockout(), "{chain}");
    assert!(
        !rig.fake
            .requests()
            .iter()
            .any(|r| r.method_id == "compute.instances.insert" && r.path.contains("us-central1-a")),
        "never in another zone than the disk's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_machine_type_change_stops_changes_and_starts_the_same_vm_once_confirmed() {
    let rig = Rig::new(env_with(&["us-central1-a"], |b| b)).await;
    rig.up().await.expect("up");
    let id = rig.state().await.fact("instance", "id").map(str::to_string);
    let dir = rig.runner.state_path().parent().expect("dir").to_path_buf();
    let bigger = env_with(&["us-central1-a"], |b| b.machine_type("n1-standard-16"));

    // Without a confirmation: refused, nothing changed.
    rig.fake.clear_requests();
    let e = rig
        .other_runner(bigger.clone(), &dir)
        .up(gce_part(), rig.sink())
        .await
        .expect_err("needs a confirmation");
    assert!(e.is_not_confirmed(), "{e}");
    assert!(
        kgenv_core::error::error_chain(&e).contains("stops and restarts"),
        "{e}"
    );
    assert!(rig.mutating().is_empty(), "{:?}", ids(&rig.mutating()));
    let plan = rig
        .other_runner(bigger.clone(), &dir)
        .plan(gce_part(), rig.sink())
        .await
        .expect("plan");
    assert_eq!(plan.planned_changes(), 1, "{plan:?}");

    // Confirmed: stop, setMachineType, start — the same VM, never a new one.
    rig.other_runner(bigger, &dir)
        .up(gce_part().yes(), rig.sink())
        .await
        .expect("up --yes");
    let calls: Vec<String> = rig.mutating().iter().map(|r| r.method_id.clone()).collect();
    let pos = |m: &str| {
        calls
            .iter()
            .position(|c| c == m)
            .unwrap_or_else(|| panic!("no {m} in {calls:?}"))
    };
    assert!(pos("compute.instances.stop") < pos("compute.instances.setMachineType"));
    assert!(pos("compute.instances.setMachineType") < pos("compute.instances.start"));
    assert!(
        !calls
            .iter()
            .any(|c| c == "compute.instances.insert" || c == "compute.instances.delete"),
        "{calls:?}"
    );
    let inst = rig
        .fake
        .instance(PROJECT, "us-central1-a", "kg")
        .expect("instance");
    assert!(
        inst["machineType"]
            .as_str()
            .unwrap_or_default()
            .ends_with("/n1-standard-16"),
        "{inst}"
    );
    assert_eq!(
        rig.state().await.fact("instance", "id").map(str::to_string),
        id,
        "same VM"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_from_before_owner_ids_adopts_its_resources_once_and_marks_them() {
    let rig = Rig::new(env_with_ssh_rule("kg")).await;
    // What an older kgenv made: labels and description with the environment name only,
    // and a version-1 state file without an owner id.
    rig.fake.seed_instance(
        PROJECT,
        "us-central1-a",
        "kg",
        serde_json::json!({"kgenv-env": "kg"}),
    );
    rig.fake.seed_firewall(PROJECT, serde_json::json!({"name": "kg-ssh", "network": "global/networks/default",
        "description": "managed by kgenv (kgenv-env=kg)", "allowed": [{"IPProtocol": "tcp", "ports": ["22"]}],
        "sourceRanges": ["203.0.113.7/32"], "targetTags": ["kgenv-kg"]}));
    let state = serde_json::json!({"version": 1, "env": "kg", "target": "gce", "steps": {
        "instance": {"created": {"instance": format!("projects/{PROJECT}/zones/us-central1-a/instances/kg")},
                     "facts": {"zone": "us-central1-a"}, "spec_hash": null},
        "firewall/kg-ssh": {"created": {"firewall": format!("projects/{PROJECT}/global/firewalls/kg-ssh")},
                     "facts": {}, "spec_hash": null}}});
    let dir = rig.runner.state_path().parent().expect("dir").to_path_buf();
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(rig.runner.state_path(), state.to_string()).expect("old state");

    rig.up().await.expect("up adopts");
    let owner = rig.state().await.owner.expect("an id now");
    let inst = rig
        .fake
        .instance(PROJECT, "us-central1-a", "kg")
        .expect("instance");
    assert_eq!(
        inst["labels"]["kgenv-owner"],
        owner.as_str(),
        "marked: {inst}"
    );
    let rule = &rig.fake.firewalls()[0];
    assert!(
        rule["description"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!("kgenv-owner={owner}")),
        "{rule}"
    );
    assert_eq!(rig.fake.instances().len(), 1, "adopted, not remade");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_to_a_stopped_vm_needs_no_confirmation_and_start_applies_it() {
    let rig = Rig::new(env_with(&["us-central1-a"], |b| b)).await;
    rig.up().await.expect("up");
    rig.runner.stop(rig.sink()).await.expect("stop");
    let dir = rig.runner.state_path().parent().expect("dir").to_path_buf();
    let bigger = rig.other_runner(
        env_with(&["us-central1-a"], |b| b.machine_type("n1-standard-16")),
        &dir,
    );
    // Nothing runs, so nothing is interrupted: `start` (no terminal, no --yes) applies it.
    rig.fake.clear_requests();
    bigger.start(rig.sink()).await.expect("start");
    let calls: Vec<String> = rig.mutating().iter().map(|r| r.method_id.clone()).collect();
    assert!(
        !calls.iter().any(|c| c == "compute.instances.stop"),
        "{calls:?}"
    );
    let set = calls
        .iter()
        .position(|c| c == "compute.instances.setMachineType")
        .unwrap_or_else(|| panic!("{calls:?}"));
    let start = calls
        .iter()
        .position(|c| c == "compute.instances.start")
        .unwrap_or_else(|| panic!("{calls:?}"));
    assert!(set < start, "{calls:?}");
}

/// The scopes of the instance `kg` in zone a, as the Compute fake holds them.
fn vm_scopes(rig: &Rig) -> serde_json::Value {
    rig.fake
        .instance(PROJECT, "us-central1-a", "kg")
        .expect("instance")["serviceAccounts"][0]["scopes"]
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_platform_is_given_when_asked_with_a_plan_warning() {
    let rig = Rig::new(env_with(&["us-central1-a"], |b| b.scope("cloud-platform"))).await;
    rig.runner.plan(gce_part(), rig.sink()).await.expect("plan");
    let warned = rig.warnings();
    assert!(
        warned
            .iter()
            .any(|w| w.contains("`cloud-platform` scope") && w.contains("devstorage.read_write")),
        "{warned:?}"
    );
    rig.up().await.expect("up");
    assert_eq!(
        vm_scopes(&rig),
        serde_json::json!(["https://www.googleapis.com/auth/cloud-platform"])
    );
    rig.fake.assert_conforms();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_an_older_kgenv_made_with_cloud_platform_is_not_restarted_by_the_narrower_default() {
    // An older kgenv's VM: its default was `cloud-platform`.
    let rig = Rig::new(env_with(&["us-central1-a"], |b| b.scope("cloud-platform"))).await;
    rig.up().await.expect("up");
    let dir = rig.runner.state_path().parent().expect("dir").to_path_buf();

    // This kgenv, the config leaving `scopes` out: nothing to confirm, nothing sent but GETs,
    // and a warning that says how to narrow them.
    rig.fake.clear_requests();
    let report = rig
        .other_runner(env_with(&["us-central1-a"], |b| b), &dir)
        .up(gce_part(), rig.sink())
        .await
        .expect("up without --yes: nothing disruptive");
    assert_eq!(report.outcome("instance"), Some(&Outcome::Satisfied));
    assert!(rig.mutating().is_empty(), "{:?}", ids(&rig.mutating()));
    let warned = rig.warnings();
    assert!(
        warned.iter().any(
            |w| w.contains("keeps the scopes it was made with (cloud-platform)")
                && w.contains("devstorage.read_only")
        ),
        "{warned:?}"
    );

    // Narrowing written out: a disruptive change, refused without confirmation...
    let narrow = env_with(&["us-central1-a"], |b| {
        b.scope("devstorage.read_only")
            .scope("logging.write")
            .scope("monitoring.write")
    });
    let e = rig
        .other_runner(narrow.clone(), &dir)
        .up(gce_part(), rig.sink())
        .await
        .expect_err("needs a confirmation");
    let u = e.unconfirmed().expect("refused for want of a confirmation");
    assert!(
        u.changes.iter().any(|c| c.contains("stops and restarts")),
        "{u:?}"
    );
    assert!(rig.mutating().is_empty(), "{:?}", ids(&rig.mutating()));
    // ...and applied to the same VM once confirmed.
    rig.other_runner(narrow, &dir)
        .up(gce_part().yes(), rig.sink())
        .await
        .expect("up --yes");
    let calls: Vec<String> = rig.mutating().iter().map(|r| r.method_id.clone()).collect();
    assert!(
        calls.contains(&"compute.instances.setServiceAccount".to_string())
            && !calls.contains(&"compute.instances.insert".to_string()),
        "{calls:?}"
    );
    assert_eq!(
        vm_scopes(&rig),
        serde_json::json!([
            "https://www.googleapis.com/auth/devstorage.read_only",
            "https://www.googleapis.com/auth/logging.write",
            "https://www.googleapis.com/auth/monitoring.write"
        ])
    );
    rig.fake.assert_conforms();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_vm_that_lacks_a_needed_scope_is_changed() {
    // Made without a bucket (storage read-only); a bucket is added to the config: gcsfuse
    // needs read-write, so the default no longer is covered and the change is planned.
    let rig = Rig::new(env_with(&["us-central1-a"], |b| b)).await;
    rig.up().await.expect("up");
    let dir = rig.runner.state_path().parent().expect("dir").to_path_buf();
    let with_bucket = Env::builder("kg")
        .instance(
            Instance::builder()
                .project(PROJECT)
                .zone("us-central1-a")
                .gpu("nvidia-tesla-t4", 1),
        )
        .bucket(kgenv_core::spec::BucketMount::builder("gs://kg-data"))
        .build()
        .expect("env");
    let plan = rig
        .other_runner(with_bucket.clone(), &dir)
        .plan(gce_part(), rig.sink())
        .await
        .expect("plan");
    assert_eq!(plan.planned_changes(), 1, "{plan:?}");
    rig.fake.clear_requests();
    rig.other_runner(with_bucket, &dir)
        .up(gce_part().yes(), rig.sink())
        .await
        .expect("up --yes");
    assert_eq!(
        vm_scopes(&rig)[0],
        "https://www.googleapis.com/auth/devstorage.read_write"
    );
    rig.fake.assert_conforms();
}

// ---- `kgenv move ZONE`: the data disk and the VM to another zone ----

const ZONE_A: &str = "us-central1-a";
const ZONE_B: &str = "us-central1-b";

/// The rig after a full `up` in zone A (VM, data disk, host, mount), with the user's work
/// written on the data disk.
async fn moved_rig() -> Rig {
    let rig = Rig::new(env_with(&[ZONE_A], |b| b)).await;
    rig.runner
        .up(RunOptions::default(), rig.sink())
        .await
        .expect("up in zone a");
    assert_eq!(
        rig.state().await.fact("data-disk", "zone"),
        Some(ZONE_A),
        "the data disk is made beside the VM"
    );
    rig.fake
        .write_disk(PROJECT, ZONE_A, "kg-data", "the user's notebooks");
    rig
}

/// Disks as (zone, name), sorted.
fn disk_names(fake: &FakeGce) -> Vec<(String, String)> {
    let mut d: Vec<_> = fake
        .disks()
        .into_iter()
        .map(|(z, n, _, _)| (z, n))
        .collect();
    d.sort();
    d
}

fn assert_moved_to_b(rig: &Rig) {
    assert_eq!(
        rig.fake.instances(),
        vec![(ZONE_B.to_string(), "kg".to_string(), "RUNNING".to_string())],
        "one VM, in zone b"
    );
    assert_eq!(
        disk_names(&rig.fake),
        vec![
            (ZONE_B.to_string(), "kg".to_string()),
            (ZONE_B.to_string(), "kg-data".to_string())
        ],
        "the new VM's boot disk and the moved data disk; nothing left in zone a"
    );
    assert_eq!(
        rig.fake.disk_data(PROJECT, ZONE_B, "kg-data").as_deref(),
        Some("the user's notebooks"),
        "the disk in zone b holds what the disk in zone a held"
    );
    let users = rig
        .fake
        .disks()
        .into_iter()
        .find(|(z, n, _, _)| z == ZONE_B && n == "kg-data")
        .map(|(_, _, _, u)| u)
        .expect("data disk");
    assert_eq!(
        users,
        vec![format!("projects/{PROJECT}/zones/{ZONE_B}/instances/kg")],
        "attached to the new VM"
    );
    assert!(
        rig.fake.snapshots().is_empty(),
        "{:?}",
        rig.fake.snapshots()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn move_takes_the_data_and_the_vm_to_another_zone_and_leaves_nothing_behind() {
    let rig = moved_rig().await;
    let asked = Arc::new(Mutex::new(None));
    let seen = asked.clone();
    let report = rig
        .runner
        .move_to(
            ZONE_B,
            RunOptions::default(),
            move |p| {
                *seen.lock().unwrap_or_else(|e| e.into_inner()) = Some(p.clone());
                true
            },
            rig.sink(),
        )
        .await
        .expect("move");
    assert_eq!(report.operation, "move");
    let preview = asked
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
        .expect("asked before moving");
    assert_eq!(
        (preview.from_zone.as_str(), preview.to_zone.as_str()),
        (ZONE_A, ZONE_B)
    );
    assert!(
        preview.steps.iter().any(|s| s.contains("snapshot")),
        "{preview}"
    );
    assert_moved_to_b(&rig);
    let state = rig.state().await;
    assert_eq!(state.fact("data-disk", "zone"), Some(ZONE_B));
    assert_eq!(state.fact("instance", "zone"), Some(ZONE_B));
    assert!(state.step("move").is_none(), "the move record is dropped");
    // The disk was snapshotted from a stopped VM, and the old disk went last.
    let order: Vec<String> = rig
        .mutating()
        .into_iter()
        .map(|r| r.method_id)
        .filter(|m| {
            [
                "compute.instances.stop",
                "compute.disks.createSnapshot",
                "compute.disks.insert",
                "compute.instances.delete",
                "compute.instances.insert",
                "compute.disks.delete",
                "compute.snapshots.delete",
            ]
            .contains(&m.as_str())
        })
        .collect();
    let tail = &order[order.len() - 7..];
    assert_eq!(
        tail,
        [
            "compute.instances.stop",
            "compute.disks.createSnapshot",
            "compute.disks.insert",
            "compute.instances.delete",
            "compute.instances.insert",
            "compute.disks.delete",
            "compute.snapshots.delete",
        ],
        "{order:?}"
    );
    // And `up` is at rest in the new zone.
    let again = rig
        .runner
        .up(RunOptions::default(), rig.sink())
        .await
        .expect("up after the move");
    assert_eq!(again.changed(), 0, "{again:?}");
    rig.fake.assert_conforms();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_that_fails_after_the_snapshot_keeps_the_old_disk_and_a_rerun_finishes_it() {
    let rig = moved_rig().await;
    rig.fake
        .inject("compute.disks.insert", 1, gce_fake::Fault::forbidden());
    let err = rig
        .runner
        .move_to(ZONE_B, RunOptions::default().yes(), |_| false, rig.sink())
        .await
        .expect_err("the disk insert fails");
    assert_eq!(
        err.backend().map(kgenv_core::BackendError::kind),
        Some("permission_denied"),
        "the injected 403 on disks.insert: {err}"
    );
    // The old disk is whole, the snapshot is there, the move is recorded.
    assert_eq!(
        rig.fake.disk_data(PROJECT, ZONE_A, "kg-data").as_deref(),
        Some("the user's notebooks")
    );
    assert_eq!(rig.fake.snapshots().len(), 1, "{:?}", rig.fake.snapshots());
    let state = rig.state().await;
    assert_eq!(state.fact("move", "phase"), Some("snapshotted"));
    assert_eq!(state.fact("data-disk", "zone"), Some(ZONE_A));
    assert!(
        rig.warnings()
            .iter()
            .any(|w| w.contains(&format!("kgenv move {ZONE_B}"))),
        "{:?}",
        rig.warnings()
    );
    // Meanwhile `up` refuses (it would start the old VM after the snapshot), and `down`
    // lists the old disk and the snapshot as kept and refuses to delete disks.
    rig.fake.clear_requests();
    let up = rig
        .runner
        .up(RunOptions::default(), rig.sink())
        .await
        .expect_err("up mid-move");
    assert!(
        up.is_config() && up.to_string().contains("is incomplete"),
        "{up}"
    );
    assert!(
        up.to_string().contains(&format!("kgenv move {ZONE_B}")),
        "{up}"
    );
    let preview = rig
        .runner
        .down_preview(&RunOptions::default())
        .await
        .expect("preview");
    let keeps = preview.keeps().join("\n");
    assert!(
        keeps.contains("snapshot kg-data-move-") && keeps.contains(ZONE_A),
        "{keeps}"
    );
    let refused = rig
        .runner
        .down(RunOptions::default().delete_disk("kg-data"), rig.sink())
        .await
        .expect_err("no disk deleted mid-move");
    assert!(
        refused.is_config()
            && refused
                .to_string()
                .contains(&format!("finish it with `kgenv move {ZONE_B}` first")),
        "{refused}"
    );
    assert!(rig.mutating().is_empty(), "{:?}", ids(&rig.mutating()));
    // A plain rerun goes on from the snapshot and finishes.
    rig.runner
        .move_to(ZONE_B, RunOptions::default().yes(), |_| false, rig.sink())
        .await
        .expect("move again");
    assert_eq!(
        rig.mutating()
            .iter()
            .filter(|r| r.method_id == "compute.disks.createSnapshot")
            .count(),
        0,
        "the snapshot is not taken twice"
    );
    assert_moved_to_b(&rig);
    rig.fake.assert_conforms();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn down_during_a_move_keeps_the_old_disk_and_the_snapshot_and_move_still_finishes() {
    let rig = moved_rig().await;
    // No capacity in zone b: the move stops after the old VM is deleted.
    rig.fake.configure(|c| {
        c.stockout_zones.insert(ZONE_B.into());
    });
    let e = rig
        .runner
        .move_to(ZONE_B, RunOptions::default().yes(), |_| false, rig.sink())
        .await
        .expect_err("no capacity in zone b");
    assert!(e.is_stockout(), "{e}");
    assert!(
        rig.fake.instances().is_empty(),
        "{:?}",
        rig.fake.instances()
    );
    assert_eq!(
        rig.fake.disk_data(PROJECT, ZONE_A, "kg-data").as_deref(),
        Some("the user's notebooks"),
        "the old disk is kept"
    );
    rig.runner
        .down(RunOptions::default(), rig.sink())
        .await
        .expect("down mid-move");
    assert_eq!(
        disk_names(&rig.fake),
        vec![
            (ZONE_A.to_string(), "kg-data".to_string()),
            (ZONE_B.to_string(), "kg-data".to_string())
        ],
        "both data disks are kept"
    );
    assert_eq!(rig.fake.snapshots().len(), 1, "the snapshot is kept");
    rig.fake.configure(|c| {
        c.stockout_zones.remove(ZONE_B);
    });
    rig.runner
        .move_to(ZONE_B, RunOptions::default().yes(), |_| false, rig.sink())
        .await
        .expect("the move finishes");
    assert_moved_to_b(&rig);
    rig.fake.assert_conforms();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_moves_are_usage_errors_before_any_change() {
    // No data disk yet: nothing to move, and not a single call.
    let fresh = Rig::new(env_with(&[ZONE_A], |b| b)).await;
    let e = fresh
        .runner
        .move_to(ZONE_B, RunOptions::default().yes(), |_| true, fresh.sink())
        .await
        .expect_err("no data disk");
    assert!(
        e.is_config() && e.to_string().contains("no data disk"),
        "{e}"
    );
    assert!(fresh.fake.requests().is_empty());

    let rig = moved_rig().await;
    let before = rig.state().await;
    rig.fake.clear_requests();
    for (zone, says) in [
        (ZONE_A, "already in"),
        ("nowhere", "is not a zone"),
        ("us-central1", "is not a zone"),
    ] {
        let e = rig
            .runner
            .move_to(zone, RunOptions::default().yes(), |_| true, rig.sink())
            .await
            .expect_err(zone);
        assert!(e.is_config() && e.to_string().contains(says), "{zone}: {e}");
    }
    assert!(
        rig.fake.requests().is_empty(),
        "{:?}",
        ids(&rig.fake.requests())
    );
    // A zone without the GPU: found by GETs, still nothing changed.
    rig.fake.configure(|c| {
        c.zones.insert("us-central1-c".into(), BTreeSet::new());
    });
    let e = rig
        .runner
        .move_to(
            "us-central1-c",
            RunOptions::default().yes(),
            |_| true,
            rig.sink(),
        )
        .await
        .expect_err("no GPU there");
    assert!(
        e.is_config() && e.to_string().contains("nvidia-tesla-t4"),
        "{e}"
    );
    // Not confirmed: NotConfirmed with the plan, nothing changed.
    let e = rig
        .runner
        .move_to(ZONE_B, RunOptions::default(), |_| false, rig.sink())
        .await
        .expect_err("not confirmed");
    assert!(e.is_not_confirmed(), "{e}");
    let u = e.unconfirmed().expect("what it would do");
    assert_eq!(u.operation, "move");
    assert!(u.changes.iter().any(|c| c.contains("snapshot")), "{u:?}");
    assert!(rig.mutating().is_empty(), "{:?}", ids(&rig.mutating()));
    assert_eq!(rig.state().await, before);
    assert_eq!(
        rig.fake.disk_data(PROJECT, ZONE_A, "kg-data").as_deref(),
        Some("the user's notebooks")
    );
    rig.fake.assert_conforms();
}

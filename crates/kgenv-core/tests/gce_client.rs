//! The GCE REST client against the fake Compute API: the discovery-document validator
//! itself, retries and request ids, operation waiting, error mapping, the set* calls,
//! disks, snapshots and in-place changes, failed inserts, and caller-IP detection. Pipeline-level behaviour is in `gce_pipeline.rs`.

#[path = "support/gce_fake.rs"]
mod gce_fake;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use gce_fake::{discovery::Discovery, FakeGce, Fault};
use kgenv_core::backends::compute::{
    is_default_compute_account, AttachedDisk, Compute, DiskRef, DiskRequest, FirewallRule,
    InstanceRef, InstanceRequest, InstanceStatus,
};
use kgenv_core::gce::{recipe, GceCompute};
use kgenv_core::http::RetryPolicy;
use kgenv_core::BackendError;
use serde_json::json;

const PROJECT: &str = "my-project";

fn at(zone: &str) -> InstanceRef {
    InstanceRef {
        project: PROJECT.into(),
        zone: zone.into(),
        name: "kg".into(),
    }
}

fn request(zone: &str, spot: bool) -> InstanceRequest {
    InstanceRequest {
        at: at(zone),
        machine_type: "n1-standard-8".into(),
        gpu: Some(("nvidia-tesla-t4".into(), 1)),
        source_image: format!(
            "https://www.googleapis.com/compute/v1/projects/{}/global/images/{}-v20261110",
            gce_fake::IMAGE_PROJECT,
            kgenv_core::spec::DEFAULT_IMAGE_FAMILY
        ),
        disk_size_gb: 200,
        disk_type: "pd-balanced".into(),
        provisioning: if spot {
            kgenv_core::backends::compute::Provisioning::Spot
        } else {
            kgenv_core::backends::compute::Provisioning::Standard
        },
        service_account: None,
        scopes: vec!["https://www.googleapis.com/auth/cloud-platform".into()],
        tags: vec!["kgenv-kg".into()],
        labels: BTreeMap::from([("kgenv-env".to_string(), "kg".to_string())]),
        metadata: BTreeMap::from([
            (
                "ssh-keys".to_string(),
                "kgenv:ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAITestKey kgenv-kg".to_string(),
            ),
            ("enable-guest-attributes".to_string(), "TRUE".to_string()),
            ("install-nvidia-driver".to_string(), "True".to_string()),
        ]),
    }
}

fn rule() -> FirewallRule {
    FirewallRule {
        project: PROJECT.into(),
        name: "kg-ssh".into(),
        network: "default".into(),
        protocol: "tcp".into(),
        ports: vec!["22".into()],
        source_ranges: vec!["198.51.100.23/32".into()],
        target_tags: vec!["kgenv-kg".into()],
        description: "managed by kgenv (kgenv-env=kg)".into(),
    }
}

#[test]
fn the_validator_rejects_unknown_fields_wrong_types_bad_enums_and_output_fields() {
    let d = Discovery::load();
    let good =
        serde_json::to_value(recipe::instance_body(&request("us-central1-a", true))).expect("json");
    assert_eq!(
        d.check_schema("Instance", &good, "compute.instances.insert"),
        Vec::<String>::new(),
        "kgenv's own body conforms"
    );

    let mut unknown = good.clone();
    unknown["scheduling"]["preemptibility"] = json!("SPOT");
    let errs = d.check_schema("Instance", &unknown, "compute.instances.insert");
    assert!(
        errs.iter()
            .any(|e| e.contains("scheduling.preemptibility") && e.contains("unknown field")),
        "{errs:?}"
    );

    let mut wrong_type = good.clone();
    wrong_type["disks"][0]["initializeParams"]["diskSizeGb"] = json!(200);
    let errs = d.check_schema("Instance", &wrong_type, "compute.instances.insert");
    assert!(
        errs.iter()
            .any(|e| e.contains("diskSizeGb") && e.contains("int64")),
        "{errs:?}"
    );

    let mut bad_enum = good.clone();
    bad_enum["scheduling"]["provisioningModel"] = json!("CHEAP");
    let errs = d.check_schema("Instance", &bad_enum, "compute.instances.insert");
    assert!(
        errs.iter()
            .any(|e| e.contains("provisioningModel") && e.contains("not one of")),
        "{errs:?}"
    );

    let mut output_only = good.clone();
    output_only["status"] = json!("RUNNING");
    let errs = d.check_schema("Instance", &output_only, "compute.instances.insert");
    assert!(
        errs.iter()
            .any(|e| e.contains(".status") && e.contains("output-only")),
        "{errs:?}"
    );

    let mut no_name = good.clone();
    no_name.as_object_mut().expect("object").remove("name");
    let errs = d.check_schema("Instance", &no_name, "compute.instances.insert");
    assert!(
        errs.iter()
            .any(|e| e.contains(".name") && e.contains("required")),
        "{errs:?}"
    );

    let mut count_as_text = good;
    count_as_text["guestAccelerators"][0]["acceleratorCount"] = json!("1");
    assert!(
        !d.check_schema("Instance", &count_as_text, "compute.instances.insert")
            .is_empty(),
        "int32 is a JSON number"
    );

    let fw = serde_json::to_value(recipe::firewall_body(&rule())).expect("json");
    assert_eq!(
        d.check_schema("Firewall", &fw, "compute.firewalls.insert"),
        Vec::<String>::new()
    );
}

#[test]
fn the_validator_routes_paths_and_checks_parameters() {
    let d = Discovery::load();
    let (m, p) = d
        .route(
            "POST",
            "projects/my-project/zones/us-central1-a/operations/operation-1-abc/wait",
        )
        .expect("a method");
    assert_eq!(m.id, "compute.zoneOperations.wait");
    assert_eq!(
        p.get("operation").map(String::as_str),
        Some("operation-1-abc")
    );
    let (m, _) = d
        .route("GET", "projects/p-roject/global/images/family/fam")
        .expect("a method");
    assert_eq!(
        m.id, "compute.images.getFromFamily",
        "the more specific template wins over images.get"
    );
    assert!(d.route("GET", "projects/p/zones/z/nonsense/x").is_none());
    let (m, p) = d
        .route(
            "GET",
            "projects/Not_A_Project/zones/us-central1-a/instances/kg",
        )
        .expect("routes");
    assert!(
        d.check_request(m, &p, &[], None)
            .iter()
            .any(|e| e.contains("project")),
        "path pattern checked"
    );
    let (m, p) = d
        .route(
            "GET",
            "projects/my-project/zones/us-central1-a/instances/kg",
        )
        .expect("routes");
    let errs = d.check_request(m, &p, &[("requestIdd".into(), "x".into())], None);
    assert!(
        errs.iter().any(|e| e.contains("unknown query parameter")),
        "{errs:?}"
    );
}

/// Polls `done` until it holds. The deadline only bounds the wait: `what` (the event waited
/// for) is the failure when it has not happened in 30 s.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within 30 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A firewall insert with a field the `Firewall` schema lacks, and without `requestId`.
const BAD_FIREWALL: &str =
    r#"{"name": "kg-ssh", "network": "global/networks/default", "portz": ["22"]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_request_sent_on_purpose_is_taken_or_declared_and_then_passes() {
    let fake = FakeGce::start().await;
    let status = fake
        .send_raw(
            "POST",
            "projects/my-project/global/firewalls",
            Some(BAD_FIREWALL),
        )
        .await;
    assert_eq!(status, 400, "refused as Google refuses a malformed request");
    assert!(fake.firewalls().is_empty(), "nothing was made");
    let v = fake.take_violations();
    assert!(
        v.iter()
            .any(|e| e.contains("portz") && e.contains("unknown field")),
        "{v:?}"
    );
    assert!(
        v.iter()
            .any(|e| e.contains("compute.firewalls.insert: mutating call without requestId")),
        "{v:?}"
    );
    assert!(fake.violations().is_empty(), "taken off the record");

    // Declared up front instead, for a bad request the test cannot catch at a known point.
    fake.expect_violation("unknown query parameter");
    let status = fake
        .send_raw(
            "GET",
            "projects/my-project/global/firewalls/kg-ssh?requestIdd=x",
            None,
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(fake.violations().len(), 1, "{:?}", fake.violations());
    fake.assert_conforms();
    // Dropped here with the declared violation on record: the drop check passes.
}

/// A fake on its own runtime, for the tests that watch what dropping it does.
fn fake_on(rt: &tokio::runtime::Runtime) -> FakeGce {
    rt.block_on(FakeGce::start())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

#[test]
#[should_panic(expected = "the Compute fake was dropped with 2 conformance problem(s)")]
fn a_bad_request_nobody_took_or_declared_fails_the_test_when_the_fake_is_dropped() {
    let rt = runtime();
    let fake = fake_on(&rt);
    let status = rt.block_on(fake.send_raw(
        "POST",
        "projects/my-project/global/firewalls",
        Some(BAD_FIREWALL),
    ));
    assert_eq!(status, 400);
    // No assert_conforms: the drop alone must catch it.
    drop(fake);
}

#[test]
#[should_panic(
    expected = "expected a violation containing \"without requestId\"; none was recorded"
)]
fn a_declared_violation_that_never_came_fails_the_test_when_the_fake_is_dropped() {
    let rt = runtime();
    let fake = fake_on(&rt);
    fake.expect_violation("without requestId");
    drop(fake);
}

#[test]
fn a_test_already_failing_keeps_its_own_failure_when_the_fake_is_dropped() {
    let rt = runtime();
    let fake = fake_on(&rt);
    rt.block_on(fake.send_raw(
        "POST",
        "projects/my-project/global/firewalls",
        Some(BAD_FIREWALL),
    ));
    // A second panic while unwinding would abort the whole test binary.
    let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let _fake = fake;
        panic!("the test's own failure");
    }))
    .expect_err("the test failed");
    assert_eq!(
        failed.downcast_ref::<&str>().copied(),
        Some("the test's own failure"),
        "the first failure is the one reported"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insert_waits_for_the_operation_and_reads_the_instance_back() {
    let fake = FakeGce::start().await;
    // The insert runs until the test releases it; meanwhile each wait ends at the 50 ms cap
    // with the operation still RUNNING, as GCE's does at about two minutes.
    fake.configure(|c| {
        c.op_latency
            .insert("compute.instances.insert".into(), Duration::from_secs(3600));
        c.wait_cap = Duration::from_millis(50);
    });
    let gce = fake.client();
    let inserting = {
        let gce = gce.clone();
        tokio::spawn(async move { gce.insert_instance(&request("us-central1-a", false)).await })
    };
    let waits = || {
        fake.requests()
            .iter()
            .filter(|r| r.method_id == "compute.zoneOperations.wait")
            .count()
    };
    until("three waits answered while the operation runs", || {
        waits() >= 3
    })
    .await;
    assert!(
        !inserting.is_finished(),
        "a wait that ends before DONE is polled again, not taken for the end"
    );
    fake.finish_operations_now();
    let info = inserting.await.expect("task").expect("insert");
    assert_eq!(info.status, InstanceStatus::Running);
    assert!(info.external_ip.is_some());
    assert_eq!(info.gpu, Some(("nvidia-tesla-t4".to_string(), 1)));
    // GCE's `lastStartTimestamp`, which a running VM's cost so far counts from.
    let started = info.last_start.as_deref().expect("lastStartTimestamp");
    assert!(
        chrono::DateTime::parse_from_rfc3339(started).is_ok(),
        "{started}"
    );
    let reqs = fake.requests();
    assert!(
        !reqs
            .iter()
            .any(|r| r.method_id == "compute.zoneOperations.get"),
        "never a sleep-and-get loop"
    );
    let insert = reqs
        .iter()
        .find(|r| r.method_id == "compute.instances.insert")
        .expect("insert sent");
    assert!(
        uuid_like(insert.request_id().expect("requestId")),
        "requestId is a UUID"
    );
    fake.assert_conforms();
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36 && s.chars().filter(|c| *c == '-').count() == 4
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_returns_as_soon_as_the_operation_is_done() {
    let fake = FakeGce::start().await;
    fake.configure(|c| {
        c.op_latency.insert(
            "compute.firewalls.insert".into(),
            Duration::from_millis(300),
        );
        c.wait_cap = Duration::from_secs(60);
    });
    // The 30 s bound only stops a wait that sits out the 60 s cap.
    tokio::time::timeout(
        Duration::from_secs(30),
        fake.client().insert_firewall(&rule()),
    )
    .await
    .expect("the wait returns when the operation is DONE, not at its 60 s cap")
    .expect("insert firewall");
    let waits = fake
        .requests()
        .iter()
        .filter(|r| r.method_id == "compute.globalOperations.wait")
        .count();
    assert_eq!(waits, 1, "one long-poll covers the whole operation");
    fake.assert_conforms();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_answer_to_an_insert_is_retried_with_the_same_request_id() {
    let fake = FakeGce::start().await;
    fake.inject("compute.instances.insert", 1, Fault::unavailable());
    fake.inject(
        "compute.instances.insert",
        1,
        Fault::AfterApply { status: 503 },
    );
    let gce = fake.client();
    gce.insert_instance(&request("us-central1-a", false))
        .await
        .expect("insert succeeds after retries");
    let inserts: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.method_id == "compute.instances.insert")
        .collect();
    assert_eq!(
        inserts.len(),
        3,
        "first 503, second done but its answer lost, third answered with the same operation"
    );
    let ids: std::collections::BTreeSet<_> = inserts
        .iter()
        .map(|r| r.request_id().map(str::to_string))
        .collect();
    assert_eq!(ids.len(), 1, "one requestId across the retries: {ids:?}");
    assert_eq!(fake.instances().len(), 1, "no duplicate instance");
    // A second logical call gets a new id (and is a conflict, as the name is taken).
    let e = gce
        .insert_instance(&request("us-central1-a", false))
        .await
        .expect_err("name taken");
    assert!(matches!(e, BackendError::AlreadyExists { .. }), "{e:?}");
    let ids: std::collections::BTreeSet<_> = fake
        .requests()
        .iter()
        .filter(|r| r.method_id == "compute.instances.insert")
        .map(|r| r.request_id().map(str::to_string))
        .collect();
    assert_eq!(ids.len(), 2);
    fake.assert_conforms();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured_and_rate_limit_403s_are_retried() {
    let fake = FakeGce::start().await;
    fake.inject("compute.images.getFromFamily", 1, Fault::too_many(Some(1)));
    fake.inject("compute.images.getFromFamily", 1, Fault::rate_limit_403());
    let img = fake
        .client()
        .image_from_family(
            gce_fake::IMAGE_PROJECT,
            kgenv_core::spec::DEFAULT_IMAGE_FAMILY,
        )
        .await
        .expect("image");
    assert_eq!(img.disk_size_gb, 50);
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 3);
    // Measured by the fake between the 429 answer and the next request: a floor, not a race.
    assert!(
        reqs[1].start - reqs[0].end >= Duration::from_secs(1),
        "the retry waited out Retry-After: 1 (answered at {:?}, retried at {:?})",
        reqs[0].end,
        reqs[1].start
    );
    fake.assert_conforms();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_stop_within_the_time_budget() {
    let fake = FakeGce::start().await;
    // Every answer asks for a one-second wait (a floor on each wait), and the budget is
    // 2.5 s: retries at 1 s and 2 s fit, one at 3 s would end past it. So the count says
    // the budget, not the 1000 retries allowed, ended the loop, whatever the machine's speed.
    fake.inject("compute.instances.get", 10_000, Fault::too_many(Some(1)));
    let gce = GceCompute::builder()
        .base_url(fake.base_url())
        .static_token(gce_fake::TOKEN)
        .retry_policy(RetryPolicy {
            max_elapsed: Some(Duration::from_millis(2500)),
            max_retries: 1000,
            ..gce_fake::fast_retries()
        })
        .build()
        .expect("client");
    let e = gce
        .get_instance(&at("us-central1-a"))
        .await
        .expect_err("keeps failing");
    assert!(
        e.is_retryable(),
        "the last transient error is returned: {e}"
    );
    let n = fake.requests().len();
    assert!(
        (2..=3).contains(&n),
        "retried, and stopped by the 2.5 s budget: {n} requests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_typed_and_not_retried_when_retrying_cannot_help() {
    let fake = FakeGce::start().await;
    let gce = fake.client();
    fake.inject("compute.instances.insert", 1, Fault::forbidden());
    let e = gce
        .insert_instance(&request("us-central1-a", false))
        .await
        .expect_err("forbidden");
    assert!(matches!(e, BackendError::PermissionDenied { .. }), "{e:?}");
    assert!(
        e.to_string().contains("roles/compute.instanceAdmin.v1"),
        "says what to grant: {e}"
    );
    assert_eq!(
        fake.requests().len(),
        1,
        "a 403 permission error is not retried"
    );

    fake.configure(|c| {
        c.stockout_zones.insert("us-central1-a".into());
    });
    let e = gce
        .insert_instance(&request("us-central1-a", false))
        .await
        .expect_err("stockout");
    assert!(
        matches!(&e, BackendError::Stockout { zone, .. } if zone == "us-central1-a"),
        "{e:?}"
    );

    fake.inject(
        "compute.instances.insert",
        1,
        Fault::quota("GPUS_ALL_REGIONS", 0.0, None),
    );
    let e = gce
        .insert_instance(&request("us-central1-b", false))
        .await
        .expect_err("quota");
    let q = e.quota().expect("a quota error");
    assert_eq!(
        (q.metric.as_str(), q.scope.clone()),
        ("GPUS_ALL_REGIONS", kgenv_core::error::QuotaScope::Global)
    );

    assert!(
        gce.get_instance(&at("us-central1-c"))
            .await
            .expect("get")
            .is_none(),
        "404 on get is None"
    );
    let e = gce
        .guest_attributes(&at("us-central1-c"), "hostkeys/")
        .await
        .expect_err("no instance");
    assert!(e.is_not_found(), "{e:?}");

    let wrong = GceCompute::builder()
        .base_url(fake.base_url())
        .static_token("wrong")
        .retry_policy(gce_fake::fast_retries())
        .build()
        .expect("client");
    let e = wrong
        .get_instance(&at("us-central1-a"))
        .await
        .expect_err("401");
    assert!(matches!(e, BackendError::Unauthenticated { .. }), "{e:?}");
    assert!(
        !format!("{e:?}{e}").contains("wrong"),
        "the token never shows in errors"
    );
    fake.assert_conforms();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_input_is_refused_before_any_request() {
    let fake = FakeGce::start().await;
    let gce = fake.client();
    let bad = InstanceRef {
        project: "My_Project".into(),
        zone: "us-central1-a".into(),
        name: "kg".into(),
    };
    assert!(matches!(
        gce.get_instance(&bad).await,
        Err(BackendError::InvalidArgument { .. })
    ));
    let mut req = request("us-central1-a", false);
    req.at.project = "../../other".into();
    assert!(matches!(
        gce.insert_instance(&req).await,
        Err(BackendError::InvalidArgument { .. })
    ));
    assert!(matches!(
        gce.delete_firewall(PROJECT, "a/b").await,
        Err(BackendError::InvalidArgument { .. })
    ));
    assert!(
        fake.requests().is_empty(),
        "nothing was sent: {:?}",
        fake.requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firewall_and_instance_lifecycle_calls_conform() {
    let fake = FakeGce::start().await;
    let gce = fake.client();
    gce.insert_firewall(&rule()).await.expect("insert");
    let got = gce
        .get_firewall(PROJECT, "kg-ssh")
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(got, rule(), "what kgenv wrote reads back the same");
    let mut wider = rule();
    wider.ports = vec!["22".into(), "8888".into()];
    gce.patch_firewall(&wider).await.expect("patch");
    assert_eq!(
        gce.get_firewall(PROJECT, "kg-ssh")
            .await
            .expect("get")
            .expect("exists")
            .ports,
        wider.ports
    );
    gce.delete_firewall(PROJECT, "kg-ssh")
        .await
        .expect("delete");
    assert!(gce
        .get_firewall(PROJECT, "kg-ssh")
        .await
        .expect("get")
        .is_none());

    gce.insert_instance(&request("us-central1-a", true))
        .await
        .expect("insert spot");
    gce.stop_instance(&at("us-central1-a")).await.expect("stop");
    assert_eq!(
        gce.get_instance(&at("us-central1-a"))
            .await
            .expect("get")
            .expect("exists")
            .status,
        InstanceStatus::Terminated
    );
    gce.start_instance(&at("us-central1-a"))
        .await
        .expect("start");
    gce.set_metadata(
        &at("us-central1-a"),
        &BTreeMap::from([("kgenv-autostop".to_string(), "30".to_string())]),
    )
    .await
    .expect("setMetadata");
    gce.set_tags(
        &at("us-central1-a"),
        &["kgenv-kg".to_string(), "extra".to_string()],
    )
    .await
    .expect("setTags");
    gce.set_labels(
        &at("us-central1-a"),
        &BTreeMap::from([
            ("kgenv-env".to_string(), "kg".to_string()),
            ("team".to_string(), "ml".to_string()),
        ]),
    )
    .await
    .expect("setLabels");
    let v = fake
        .instance(PROJECT, "us-central1-a", "kg")
        .expect("instance");
    let items = v["metadata"]["items"].as_array().expect("items");
    assert!(
        items.iter().any(|i| i["key"] == "kgenv-autostop"),
        "added: {items:?}"
    );
    assert!(
        items.iter().any(|i| i["key"] == "ssh-keys"),
        "kept: {items:?}"
    );
    assert_eq!(v["tags"]["items"], json!(["kgenv-kg", "extra"]));
    assert_eq!(v["labels"]["team"], "ml");
    gce.delete_instance(&at("us-central1-a"))
        .await
        .expect("delete");
    assert!(fake.instances().is_empty());
    fake.assert_conforms();
}

/// `setMetadata` and `setTags` are the client's only calls no step makes, so the pipeline's
/// fault test never meets them: each meets a 503 before the work and a lost answer after it
/// here, and is applied once, under one requestId.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_metadata_and_set_tags_retry_through_faults_under_one_request_id() {
    let fake = FakeGce::start().await;
    let gce = fake.client();
    gce.insert_instance(&request(ZONE, false))
        .await
        .expect("insert");
    for kind in ["compute.instances.setMetadata", "compute.instances.setTags"] {
        fake.inject(kind, 1, Fault::unavailable());
        fake.inject(kind, 1, Fault::AfterApply { status: 502 });
    }
    gce.set_metadata(
        &at(ZONE),
        &BTreeMap::from([("kgenv-autostop".to_string(), "30".to_string())]),
    )
    .await
    .expect("setMetadata through the faults");
    gce.set_tags(&at(ZONE), &["kgenv-kg".to_string(), "extra".to_string()])
        .await
        .expect("setTags through the faults");
    assert!(
        fake.unused_faults().is_empty(),
        "{:?}",
        fake.unused_faults()
    );
    let reqs = fake.requests();
    for kind in ["compute.instances.setMetadata", "compute.instances.setTags"] {
        let sent: Vec<_> = reqs.iter().filter(|r| r.method_id == kind).collect();
        assert_eq!(
            sent.iter().map(|r| r.status).collect::<Vec<_>>(),
            vec![503, 502, 200],
            "{kind}: refused, done with the answer lost, answered"
        );
        assert!(
            sent.iter().all(|r| r.request_id() == sent[0].request_id()),
            "{kind}: one requestId over the retries"
        );
    }
    let ops: Vec<String> = fake
        .operations()
        .into_iter()
        .map(|o| o.op_type)
        .filter(|t| t == "setMetadata" || t == "setTags")
        .collect();
    assert_eq!(ops, ["setMetadata", "setTags"], "each applied once");
    let v = fake.instance(PROJECT, ZONE, "kg").expect("instance");
    assert!(
        v["metadata"]["items"]
            .as_array()
            .expect("items")
            .iter()
            .any(|i| i["key"] == "kgenv-autostop"),
        "{v}"
    );
    assert_eq!(v["tags"]["items"], json!(["kgenv-kg", "extra"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_ip_is_detected_and_failure_says_to_set_source_ranges() {
    let fake = FakeGce::start().await;
    assert_eq!(
        fake.client().caller_ip().await.expect("ip"),
        gce_fake::CALLER_IP
    );
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
    let url = format!("http://{}/ip", closed.local_addr().expect("addr"));
    drop(closed);
    let gce = GceCompute::builder()
        .base_url(fake.base_url())
        .static_token(gce_fake::TOKEN)
        .caller_ip_url(url)
        .build()
        .expect("client");
    let e = gce.caller_ip().await.expect_err("nothing listens there");
    assert!(e.to_string().contains("source_ranges"), "{e}");
}

fn disk(zone: &str, name: &str) -> DiskRef {
    DiskRef {
        project: PROJECT.into(),
        zone: zone.into(),
        name: name.into(),
    }
}

fn disk_request(zone: &str, name: &str, size_gb: u64, snapshot: Option<&str>) -> DiskRequest {
    DiskRequest {
        at: disk(zone, name),
        size_gb,
        disk_type: "pd-balanced".into(),
        labels: BTreeMap::from([("kgenv-env".to_string(), "kg".to_string())]),
        source_snapshot: snapshot.map(|s| format!("projects/{PROJECT}/global/snapshots/{s}")),
    }
}

const ZONE: &str = "us-central1-a";
const INSTANCE_PATH: &str = "projects/my-project/zones/us-central1-a/instances/kg";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disks_attach_resize_and_refuse_what_gce_refuses() {
    let fake = FakeGce::start().await;
    let gce = fake.client();
    let info = gce
        .insert_instance(&request(ZONE, false))
        .await
        .expect("insert");
    assert_eq!(
        info.disks,
        vec![AttachedDisk {
            device_name: "kg".into(),
            source: format!("projects/{PROJECT}/zones/{ZONE}/disks/kg"),
            boot: true
        }],
        "the boot disk is named like the instance"
    );
    assert!(
        is_default_compute_account(info.service_account.as_deref().expect("an account")),
        "`default` reads back as the project's compute account: {:?}",
        info.service_account
    );
    assert_eq!(info.scopes, request(ZONE, false).scopes);

    let data = disk(ZONE, "kg-data");
    let made = gce
        .insert_disk(&disk_request(ZONE, "kg-data", 100, None))
        .await
        .expect("disks.insert");
    assert_eq!(
        (made.size_gb, made.disk_type.as_str(), made.status.as_str()),
        (100, "pd-balanced", "READY")
    );
    assert_eq!(made.labels.get("kgenv-env").map(String::as_str), Some("kg"));
    assert!(made.users.is_empty());
    assert!(gce
        .get_disk(&disk(ZONE, "nothing-here"))
        .await
        .expect("get")
        .is_none());
    let again = gce
        .insert_disk(&disk_request(ZONE, "kg-data", 100, None))
        .await
        .expect_err("same name twice");
    assert!(
        matches!(again, BackendError::AlreadyExists { .. }),
        "{again:?}"
    );

    gce.attach_disk(&at(ZONE), &data, "kgenv-data")
        .await
        .expect("attachDisk");
    let i = gce
        .get_instance(&at(ZONE))
        .await
        .expect("get")
        .expect("there");
    assert_eq!(
        i.disks.last(),
        Some(&AttachedDisk {
            device_name: "kgenv-data".into(),
            source: format!("projects/{PROJECT}/zones/{ZONE}/disks/kg-data"),
            boot: false
        })
    );
    let d = gce.get_disk(&data).await.expect("get").expect("there");
    assert_eq!(d.users, vec![INSTANCE_PATH.to_string()]);

    let in_use = gce.delete_disk(&data).await.expect_err("attached");
    assert!(in_use.is_in_use() && !in_use.is_retryable(), "{in_use:?}");
    assert!(in_use.to_string().contains(INSTANCE_PATH), "{in_use}");

    gce.resize_disk(&data, 150).await.expect("grow");
    assert_eq!(
        gce.get_disk(&data)
            .await
            .expect("get")
            .expect("there")
            .size_gb,
        150
    );
    let shrink = gce.resize_disk(&data, 120).await.expect_err("shrink");
    assert!(
        matches!(shrink, BackendError::InvalidArgument { .. }),
        "{shrink:?}"
    );

    let elsewhere = disk("us-central1-b", "kg-other");
    gce.insert_disk(&disk_request("us-central1-b", "kg-other", 10, None))
        .await
        .expect("disk in another zone");
    let cross = gce
        .attach_disk(&at(ZONE), &elsewhere, "kgenv-other")
        .await
        .expect_err("another zone");
    assert!(
        matches!(cross, BackendError::InvalidArgument { .. }),
        "{cross:?}"
    );

    gce.detach_disk(&at(ZONE), "kgenv-data")
        .await
        .expect("detachDisk");
    assert!(gce
        .get_disk(&data)
        .await
        .expect("get")
        .expect("there")
        .users
        .is_empty());
    assert_eq!(
        gce.get_instance(&at(ZONE))
            .await
            .expect("get")
            .expect("there")
            .disks
            .len(),
        1
    );
    let gone = gce
        .detach_disk(&at(ZONE), "kgenv-data")
        .await
        .expect_err("nothing under that name");
    assert!(
        matches!(gone, BackendError::InvalidArgument { .. }),
        "{gone:?}"
    );
    gce.delete_disk(&data).await.expect("detached: deletable");
    assert!(gce.get_disk(&data).await.expect("get").is_none());

    let ids: Vec<_> = fake
        .requests()
        .into_iter()
        .filter(|r| r.is_mutating())
        .filter_map(|r| r.request_id().map(str::to_string))
        .collect();
    let unique: std::collections::BTreeSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "one requestId per mutating call");
    fake.assert_conforms();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn machine_type_gpus_and_service_account_change_only_when_stopped() {
    let fake = FakeGce::start().await;
    let gce = fake.client();
    gce.insert_instance(&request(ZONE, false))
        .await
        .expect("insert");
    let email = "kgenv-runner@my-project.iam.gserviceaccount.com";
    let scopes = vec!["https://www.googleapis.com/auth/devstorage.read_write".to_string()];

    let e = gce
        .set_machine_type(&at(ZONE), "n1-standard-16")
        .await
        .expect_err("running");
    assert!(e.is_failed_precondition() && !e.is_retryable(), "{e:?}");
    let e = gce
        .set_gpus(&at(ZONE), Some(("nvidia-l4".into(), 2)))
        .await
        .expect_err("running");
    assert!(e.is_failed_precondition(), "{e:?}");
    let e = gce
        .set_service_account(&at(ZONE), Some(email), &scopes)
        .await
        .expect_err("running");
    assert!(e.is_failed_precondition(), "{e:?}");

    gce.stop_instance(&at(ZONE)).await.expect("stop");
    gce.set_machine_type(&at(ZONE), "n1-standard-16")
        .await
        .expect("setMachineType");
    gce.set_gpus(&at(ZONE), Some(("nvidia-l4".into(), 2)))
        .await
        .expect("setMachineResources");
    gce.set_service_account(&at(ZONE), Some(email), &scopes)
        .await
        .expect("setServiceAccount");
    let labels = BTreeMap::from([
        ("kgenv-env".to_string(), "kg".to_string()),
        ("kgenv-owner".to_string(), "abc123".to_string()),
    ]);
    gce.set_instance_labels(&at(ZONE), &labels)
        .await
        .expect("setLabels");
    let i = gce
        .get_instance(&at(ZONE))
        .await
        .expect("get")
        .expect("there");
    assert_eq!(i.machine_type, "n1-standard-16");
    assert_eq!(i.gpu, Some(("nvidia-l4".to_string(), 2)));
    assert_eq!(i.service_account.as_deref(), Some(email));
    assert_eq!(i.scopes, scopes);
    assert_eq!(i.labels, labels);

    let bad = gce
        .set_machine_type(&at(ZONE), "z9-nonexistent-1")
        .await
        .expect_err("unknown machine type");
    assert!(
        matches!(bad, BackendError::InvalidArgument { .. }),
        "{bad:?}"
    );

    gce.set_gpus(&at(ZONE), None).await.expect("remove GPUs");
    gce.set_service_account(&at(ZONE), None, &scopes)
        .await
        .expect("back to the default account");
    let i = gce
        .get_instance(&at(ZONE))
        .await
        .expect("get")
        .expect("there");
    assert_eq!(i.gpu, None);
    assert!(is_default_compute_account(
        i.service_account.as_deref().unwrap_or_default()
    ));
    let removal = fake
        .requests()
        .into_iter()
        .rfind(|r| r.method_id == "compute.instances.setMachineResources")
        .and_then(|r| r.body)
        .expect("a setMachineResources body");
    assert_eq!(
        removal,
        json!({"guestAccelerators": []}),
        "GPUs removed explicitly"
    );
    fake.assert_conforms();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_carry_a_disk_to_another_zone() {
    let fake = FakeGce::start().await;
    // UPLOADING until the test releases it: what the test sees does not depend on timing.
    fake.configure(|c| c.snapshot_ready_delay = Duration::from_secs(3600));
    let gce = fake.client();
    let data = disk(ZONE, "kg-data");
    gce.insert_disk(&disk_request(ZONE, "kg-data", 100, None))
        .await
        .expect("disk");
    fake.write_disk(PROJECT, ZONE, "kg-data", "the user's notebooks");
    let labels = BTreeMap::from([("kgenv-env".to_string(), "kg".to_string())]);
    let snapshotting = {
        let (gce, data, labels) = (gce.clone(), data.clone(), labels.clone());
        tokio::spawn(async move { gce.create_snapshot(&data, "kg-move", &labels).await })
    };
    until("the snapshot UPLOADING after its operation", || {
        fake.snapshots() == vec![("kg-move".to_string(), "UPLOADING".to_string())]
    })
    .await;
    assert!(
        !snapshotting.is_finished(),
        "the operation is DONE but the snapshot is not READY yet"
    );
    fake.finish_operations_now();
    let snap = snapshotting.await.expect("task").expect("createSnapshot");
    assert_eq!(snap.status, "READY", "create_snapshot waits until READY");
    assert_eq!(
        snap.source_disk,
        format!("projects/{PROJECT}/zones/{ZONE}/disks/kg-data")
    );
    assert_eq!(snap.labels, labels);
    assert_eq!(
        gce.get_snapshot(PROJECT, "kg-move").await.expect("get"),
        Some(snap.clone())
    );

    let zone_b = "us-central1-b";
    let too_small = gce
        .insert_disk(&disk_request(zone_b, "kg-data", 50, Some("kg-move")))
        .await
        .expect_err("smaller than the snapshot");
    assert!(
        matches!(too_small, BackendError::InvalidArgument { .. }),
        "{too_small:?}"
    );
    let restored = gce
        .insert_disk(&disk_request(zone_b, "kg-data", 100, Some("kg-move")))
        .await
        .expect("disk from the snapshot");
    assert_eq!((restored.at.zone.as_str(), restored.size_gb), (zone_b, 100));
    gce.insert_disk(&disk_request(zone_b, "kg-blank", 100, None))
        .await
        .expect("blank disk");
    assert_eq!(
        fake.disk_data(PROJECT, zone_b, "kg-data").as_deref(),
        Some("the user's notebooks"),
        "a restored disk holds the source's data"
    );
    assert_ne!(
        fake.disk_data(PROJECT, zone_b, "kg-blank").as_deref(),
        Some("the user's notebooks")
    );

    gce.delete_snapshot(PROJECT, "kg-move")
        .await
        .expect("delete");
    assert_eq!(
        gce.get_snapshot(PROJECT, "kg-move").await.expect("get"),
        None
    );
    let missing = gce
        .insert_disk(&disk_request(zone_b, "kg-late", 100, Some("kg-move")))
        .await
        .expect_err("snapshot gone");
    assert!(missing.is_not_found(), "{missing:?}");
    fake.assert_conforms();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_instance_deletes_its_boot_disk_and_keeps_its_data_disk() {
    let fake = FakeGce::start().await;
    let gce = fake.client();
    gce.insert_instance(&request(ZONE, false))
        .await
        .expect("insert");
    let data = disk(ZONE, "kg-data");
    gce.insert_disk(&disk_request(ZONE, "kg-data", 100, None))
        .await
        .expect("disk");
    fake.write_disk(PROJECT, ZONE, "kg-data", "work");
    gce.attach_disk(&at(ZONE), &data, "kgenv-data")
        .await
        .expect("attach");
    gce.delete_instance(&at(ZONE)).await.expect("delete");

    assert!(gce.get_instance(&at(ZONE)).await.expect("get").is_none());
    assert!(
        gce.get_disk(&disk(ZONE, "kg"))
            .await
            .expect("get")
            .is_none(),
        "the boot disk (autoDelete) went with the instance"
    );
    let kept = gce
        .get_disk(&data)
        .await
        .expect("get")
        .expect("data disk kept");
    assert!(kept.users.is_empty(), "detached: {:?}", kept.users);
    assert_eq!(
        fake.disk_data(PROJECT, ZONE, "kg-data").as_deref(),
        Some("work")
    );

    // The next instance of the same name gets a fresh boot disk and the same data disk.
    gce.insert_instance(&request(ZONE, false))
        .await
        .expect("insert again");
    gce.attach_disk(&at(ZONE), &data, "kgenv-data")
        .await
        .expect("reattach");
    assert_eq!(
        fake.disk_data(PROJECT, ZONE, "kg-data").as_deref(),
        Some("work")
    );
    fake.assert_conforms();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_insert_shows_provisioning_for_a_while_then_nothing() {
    let fake = FakeGce::start().await;
    fake.configure(|c| {
        c.stockout_zones.insert(ZONE.into());
        // Held open until the test releases it: what the test sees does not depend on timing.
        c.failed_insert_window = Duration::from_secs(3600);
        c.wait_cap = Duration::from_millis(50);
    });
    let gce = fake.client();
    let inserting = {
        let gce = gce.clone();
        tokio::spawn(async move { gce.insert_instance(&request(ZONE, false)).await })
    };
    until("the instance showing up while its insert runs", || {
        !fake.instances().is_empty()
    })
    .await;
    let seen = gce
        .get_instance(&at(ZONE))
        .await
        .expect("get")
        .expect("the instance exists while its insert runs");
    assert_eq!(seen.status, InstanceStatus::Provisioning);
    assert!(gce
        .get_disk(&disk(ZONE, "kg"))
        .await
        .expect("get")
        .is_some());
    assert!(!inserting.is_finished(), "the insert is still waiting");

    fake.finish_operations_now();
    let err = inserting
        .await
        .expect("task")
        .expect_err("the insert's operation ends in a stockout");
    assert!(err.is_stockout() && !err.is_retryable(), "{err:?}");
    assert!(
        matches!(&err, BackendError::Stockout { zone, .. } if zone == ZONE),
        "{err:?}"
    );
    // GCE shows the failed instance a while longer, then removes it.
    fake.end_lingering_now();
    assert!(
        gce.get_instance(&at(ZONE)).await.expect("get").is_none(),
        "removed"
    );
    assert!(
        gce.get_disk(&disk(ZONE, "kg"))
            .await
            .expect("get")
            .is_none(),
        "with its boot disk"
    );
    fake.assert_conforms();
}

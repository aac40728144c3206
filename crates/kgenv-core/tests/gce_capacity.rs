//! Getting a GPU when zones are out of capacity, with kgenv's real GCE client on the
//! Compute fake: GPU choices × zones (listed, regions, `"auto"`) tried in order, regional
//! quotas skipped, the final error listing every candidate, a wait for capacity in rounds,
//! Ctrl-C during the wait, a VM on a later choice kept as it is, and a run killed between
//! its insert and its record finding its VM in an auto-chosen zone.

#[path = "support/billing_fake.rs"]
mod billing_fake;
#[path = "support/gce_fake.rs"]
mod gce_fake;
#[path = "support/gce_rig.rs"]
mod gce_rig;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use gce_fake::{Config, FakeGce, Recorded};
use kgenv_core::mock::MockWorld;
use kgenv_core::runner::{Event, RunOptions, Runner};
use kgenv_core::spec::{Env, Instance, InstanceBuilder};
use kgenv_core::state::StateStore;
use tokio_util::sync::CancellationToken;

use gce_rig::{env_in, gce_part, home, Rig};

/// Ten zones over three regions, each offering T4 and L4 (`except` lack L4).
fn ten_zones(except_l4: &[&str]) -> Config {
    let mut c = Config {
        zones: BTreeMap::new(),
        ..Config::default()
    };
    for z in gce_fake::TEN_ZONES {
        let mut gpus: BTreeSet<String> = ["nvidia-tesla-t4".to_string()].into();
        if !except_l4.contains(&z) {
            gpus.insert("nvidia-l4".into());
        }
        c.zones.insert(z.into(), gpus);
    }
    c.half_made_on_stockout = true;
    c
}

fn env(zones: &[&str], f: impl FnOnce(InstanceBuilder) -> InstanceBuilder) -> Env {
    env_in(zones, Instance::builder(), false, f)
}

fn inserts(rig: &Rig) -> Vec<Recorded> {
    rig.mutating()
        .into_iter()
        .filter(|r| r.method_id == "compute.instances.insert")
        .collect()
}

fn zone_of(r: &Recorded) -> String {
    r.path.split('/').nth(3).unwrap_or_default().to_string()
}

fn running(zone: &str) -> Vec<(String, String, String)> {
    vec![(zone.to_string(), "kg".to_string(), "RUNNING".to_string())]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_of_ten_zones_out_lands_in_the_best_remaining_and_leaves_nothing_elsewhere() {
    let mut c = ten_zones(&[]);
    c.stockout_zones = [
        "us-central1-a",
        "us-central1-b",
        "us-central1-c",
        "us-central1-f",
        "us-east1-b",
        "us-east1-c",
        "europe-west4-a",
        "europe-west4-b",
    ]
    .map(String::from)
    .into();
    // Regions in the user's order; the zones of one region by price, then name (no prices
    // here): us-central1 is out, us-east1-b and -c are out, us-east1-d is the best left
    // (europe-west4-c comes after every us-east1 zone).
    let rig = Rig::with_fake(
        FakeGce::start_with(c).await,
        env(&["us-central1", "us-east1", "europe-west4"], |b| b),
    );
    rig.up().await.expect("up");
    assert_eq!(rig.fake.instances(), running("us-east1-d"));
    let disks: Vec<(String, String)> = rig
        .fake
        .disks()
        .into_iter()
        .map(|(z, n, _, _)| (z, n))
        .collect();
    assert_eq!(disks, [("us-east1-d".to_string(), "kg".to_string())]);
    let tried: Vec<String> = inserts(&rig).iter().map(zone_of).collect();
    assert_eq!(
        tried,
        [
            "us-central1-a",
            "us-central1-b",
            "us-central1-c",
            "us-central1-f",
            "us-east1-b",
            "us-east1-c",
            "us-east1-d"
        ]
    );
    let state = rig.state().await;
    assert_eq!(state.fact("instance", "zone"), Some("us-east1-d"));
    assert_eq!(state.fact("instance", "gpu"), Some("1x nvidia-tesla-t4"));
    assert_eq!(state.fact("instance", "inserting_in"), None);
    rig.fake.assert_conforms();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_zones_come_from_the_aggregated_list_and_a_zone_without_the_gpu_is_never_tried() {
    let mut c = ten_zones(&["europe-west4-a", "europe-west4-b", "us-central1-a"]);
    c.stockout_zones = ["europe-west4-c".to_string()].into();
    let env = Env::builder("kg")
        .instance(
            Instance::builder()
                .project(gce_rig::PROJECT)
                .zones_auto()
                .gpu_choice("nvidia-l4", "g2-standard-8"),
        )
        .build()
        .expect("valid");
    let rig = Rig::with_fake(FakeGce::start_with(c).await, env);
    rig.up().await.expect("up");
    // By name (no prices): europe-west4-a/-b lack L4, -c is out, us-central1-a lacks it.
    assert_eq!(rig.fake.instances(), running("us-central1-b"));
    let tried: Vec<String> = inserts(&rig).iter().map(zone_of).collect();
    assert_eq!(tried, ["europe-west4-c", "us-central1-b"]);
    for lacking in ["europe-west4-a", "europe-west4-b", "us-central1-a"] {
        assert!(
            !rig.fake
                .requests()
                .iter()
                .any(|r| r.path.contains(&format!("zones/{lacking}/"))),
            "nothing asked of {lacking}, which lacks the GPU"
        );
    }
    // Ten zones, four a page: every page of both lists was read.
    let pages: Vec<Recorded> = rig
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.method_id.ends_with(".aggregatedList"))
        .collect();
    assert_eq!(pages.len(), 6, "3 pages each: {pages:?}");
    assert!(pages.iter().any(|r| r
        .query
        .iter()
        .any(|(k, v)| k == "pageToken" && v == "page-8")));
    let req = inserts(&rig).pop().expect("insert");
    let body = req.body.expect("body");
    assert!(body["machineType"]
        .as_str()
        .is_some_and(|m| m.ends_with("/machineTypes/g2-standard-8")));
    rig.fake.assert_conforms();
}

/// An n1-standard-8 with a T4 per hour, on demand, in each region: cheapest in us-east1,
/// dearest in europe-west4 — the reverse of the zones' names, so the order cannot come
/// from the names.
fn regional_prices() -> Vec<kgenv_core::backends::billing::Sku> {
    use billing_fake::sku;
    let mut skus = Vec::new();
    for (region, core, ram, t4) in [
        ("us-east1", 30_000_000, 4_000_000, 300_000_000),
        ("us-central1", 31_611_000, 4_237_000, 350_000_000),
        ("europe-west4", 34_773_000, 4_661_000, 385_000_000),
    ] {
        let at = [region];
        skus.push(sku(
            &format!("N1C-{region}"),
            &format!("N1 Predefined Instance Core running in {region}"),
            "Compute",
            "N1Standard",
            "OnDemand",
            &at,
            "h",
            &[(0, "0", core)],
        ));
        skus.push(sku(
            &format!("N1R-{region}"),
            &format!("N1 Predefined Instance Ram running in {region}"),
            "Compute",
            "N1Standard",
            "OnDemand",
            &at,
            "GiBy.h",
            &[(0, "0", ram)],
        ));
        skus.push(sku(
            &format!("T4-{region}"),
            &format!("Nvidia Tesla T4 GPU running in {region}"),
            "Compute",
            "GPU",
            "OnDemand",
            &at,
            "h",
            &[(0, "0", t4)],
        ));
    }
    serde_json::from_value(serde_json::Value::Array(skus)).expect("skus")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_zones_are_tried_cheapest_region_first_when_prices_are_known() {
    // us-east1-b and -c are out: the next cheapest is us-east1-d, then us-central1.
    let mut c = ten_zones(&[]);
    c.stockout_zones = ["us-east1-b".to_string(), "us-east1-c".to_string()].into();
    let env = Env::builder("kg")
        .instance(
            Instance::builder()
                .project(gce_rig::PROJECT)
                .zones_auto()
                .gpu_choice("nvidia-tesla-t4", "n1-standard-8"),
        )
        .build()
        .expect("valid");
    let rig = Rig::with_fake(FakeGce::start_with(c).await, env);
    rig.world.edit(|s| s.billing_skus = Some(regional_prices()));
    rig.up().await.expect("up");
    assert_eq!(rig.fake.instances(), running("us-east1-d"));
    let tried: Vec<String> = inserts(&rig).iter().map(zone_of).collect();
    assert_eq!(tried, ["us-east1-b", "us-east1-c", "us-east1-d"]);
    // 8 × $0.030000 + 30 GiB × $0.004000 + $0.300000 = $0.660000 in us-east1;
    // 8 × $0.031611 + 30 × $0.004237 + $0.35 = $0.729998 in us-central1.
    let order = rig
        .logs()
        .into_iter()
        .find(|l| l.starts_with("zones to try"))
        .expect("the order is shown with its prices");
    assert!(
        order.contains("us-east1-b ($0.6600/h)") && order.contains("us-central1-a ($0.7300/h)"),
        "{order}"
    );
    assert!(
        order.find("us-central1-f").expect("listed")
            < order.find("europe-west4-a").expect("listed"),
        "dearer Europe after every us-central1 zone: {order}"
    );
    rig.fake.assert_conforms();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_regional_quota_skips_that_gpu_in_the_region_and_the_error_lists_every_candidate() {
    let mut c = ten_zones(&[]);
    c.region_quotas
        .insert("us-central1".into(), ("NVIDIA_L4_GPUS".into(), 0.0));
    c.stockout_zones = ["us-central1-a", "us-central1-b", "europe-west4-a"]
        .map(String::from)
        .into();
    let rig = Rig::with_fake(
        FakeGce::start_with(c).await,
        env(&["us-central1-a", "us-central1-b", "europe-west4-a"], |b| {
            b.gpu_choice("nvidia-l4", "g2-standard-8")
                .gpu_choice("nvidia-tesla-t4", "n1-standard-8")
        }),
    );
    let e = rig.up().await.expect_err("nothing anywhere");
    assert!(e.is_stockout(), "{e}");
    let msg = kgenv_core::error::error_chain(&e);
    for want in [
        "us-central1-a 1x nvidia-l4 on g2-standard-8 (quota NVIDIA_L4_GPUS in us-central1)",
        "us-central1-b 1x nvidia-l4 on g2-standard-8 (region quota for nvidia-l4)",
        "europe-west4-a 1x nvidia-l4 on g2-standard-8 (stockout)",
        "us-central1-a 1x nvidia-tesla-t4 on n1-standard-8 (stockout)",
        "us-central1-b 1x nvidia-tesla-t4 on n1-standard-8 (stockout)",
        "europe-west4-a 1x nvidia-tesla-t4 on n1-standard-8 (stockout)",
        "--wait-for-capacity",
    ] {
        assert!(msg.contains(want), "{want} in {msg}");
    }
    assert_eq!(inserts(&rig).len(), 5, "L4 in us-central1-b was skipped");
    assert!(rig.fake.instances().is_empty());
    assert!(rig.fake.disks().is_empty());
    assert_eq!(rig.state().await.fact("instance", "inserting_in"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_out_then_capacity_in_round_three_places_it_and_reports_each_round() {
    let zones = ["us-central1-a", "us-east1-b", "europe-west4-a"];
    let mut c = ten_zones(&[]);
    c.stockout_zones = zones.map(String::from).into();
    // Two full rounds of three stockouts; the third round's first insert lands.
    c.clear_stockouts_after_inserts = Some(6);
    let rig = Rig::with_fake(FakeGce::start_with(c).await, env(&zones, |b| b));
    rig.runner
        .up(gce_part().wait_for_capacity(None), rig.sink())
        .await
        .expect("placed in round 3");
    assert_eq!(rig.fake.instances(), running("us-central1-a"));
    assert_eq!(inserts(&rig).len(), 7);
    let rounds: Vec<String> = rig
        .logs()
        .into_iter()
        .filter(|l| l.starts_with("round "))
        .collect();
    assert_eq!(rounds.len(), 2, "{rounds:?}");
    assert!(
        rounds[0].starts_with("round 1: 3 candidates out of capacity; next try in ")
            && rounds[0].ends_with("waiting until Ctrl-C"),
        "{rounds:?}"
    );
    assert!(rounds[1].starts_with("round 2: "), "{rounds:?}");
    assert_eq!(rig.fake.disks().len(), 1, "only the VM's boot disk");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_with_a_limit_gives_up_with_every_candidate_listed() {
    let zones = ["us-central1-a", "europe-west4-a"];
    let mut c = ten_zones(&[]);
    c.stockout_zones = zones.map(String::from).into();
    let rig = Rig::with_fake(FakeGce::start_with(c).await, env(&zones, |b| b));
    let e = rig
        .runner
        .up(
            gce_part().wait_for_capacity(Some(Duration::from_millis(150))),
            rig.sink(),
        )
        .await
        .expect_err("never any capacity");
    assert!(e.is_stockout(), "{e}");
    let msg = kgenv_core::error::error_chain(&e);
    assert!(
        msg.contains("us-central1-a (stockout)") && msg.contains("rounds in"),
        "{msg}"
    );
    assert!(rig.fake.instances().is_empty() && rig.fake.disks().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_during_the_wait_ends_the_run_cancelled_with_nothing_left() {
    home();
    let zones = ["us-central1-a", "europe-west4-a"];
    let mut c = ten_zones(&[]);
    c.stockout_zones = zones.map(String::from).into();
    let fake = FakeGce::start_with(c).await;
    let state = tempfile::tempdir().expect("state dir");
    let mut backends = MockWorld::new().backends();
    backends.compute = Arc::new(fake.client());
    let token = CancellationToken::new();
    // A long pause: the run is asleep in it when Ctrl-C comes.
    let runner = Runner::new(env(&zones, |b| b), backends)
        .state_dir(state.path())
        .cancel_token(token.clone())
        .capacity_backoff(Duration::from_secs(3600), Duration::from_secs(3600));
    let on_event = move |e: Event| {
        if let Event::Log { line, .. } = &e {
            if line.starts_with("round 1:") {
                token.cancel();
            }
        }
    };
    let e = runner
        .up(gce_part().wait_for_capacity(None), on_event)
        .await
        .expect_err("cancelled");
    assert!(
        matches!(e, kgenv_core::Error::Cancelled),
        "{}",
        kgenv_core::error::error_chain(&e)
    );
    assert!(fake.instances().is_empty(), "{:?}", fake.instances());
    assert!(fake.disks().is_empty(), "{:?}", fake.disks());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_on_the_second_choice_is_kept_as_it_is_by_the_next_up() {
    let zones = ["us-central1-a", "us-central1-b"];
    let mut c = ten_zones(&["us-central1-a", "us-central1-b"]);
    c.stockout_zones = BTreeSet::new();
    let rig = Rig::with_fake(
        FakeGce::start_with(c).await,
        env(&zones, |b| {
            b.gpu_choice("nvidia-l4", "g2-standard-8")
                .gpu_choice("nvidia-tesla-t4", "n1-standard-8")
        }),
    );
    rig.up().await.expect("up on T4: no L4 in these zones");
    let state = rig.state().await;
    assert_eq!(
        state.fact("instance", "machine_type"),
        Some("n1-standard-8")
    );
    assert_eq!(state.fact("instance", "gpu"), Some("1x nvidia-tesla-t4"));
    // L4 is offered now: still no restart to move the VM to the first choice.
    rig.fake.configure(|c| {
        for g in c.zones.values_mut() {
            g.insert("nvidia-l4".into());
        }
    });
    rig.fake.clear_requests();
    let report = rig.up().await.expect("second up");
    assert!(rig.mutating().is_empty(), "{:?}", rig.mutating());
    assert_eq!(report.changed(), 0, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_after_its_insert_finds_the_vm_in_the_auto_chosen_zone() {
    let c = ten_zones(&["asia-east1-a"]);
    let env = Env::builder("kg")
        .instance(
            Instance::builder()
                .project(gce_rig::PROJECT)
                .zones_auto()
                .gpu("nvidia-tesla-t4", 1),
        )
        .build()
        .expect("valid");
    let rig = Rig::with_fake(FakeGce::start_with(c).await, env);
    rig.up().await.expect("up");
    assert_eq!(rig.fake.instances(), running("europe-west4-a"));
    // The state as a run killed between the insert and its record leaves it: the zone
    // the insert went to, and nothing recorded of the VM.
    let store = StateStore::open(rig.runner.state_path().parent().expect("dir"), "kg", "gce")
        .expect("state");
    store
        .update("instance", |r| {
            r.created.clear();
            r.facts.clear();
            r.facts
                .insert("inserting_in".into(), "europe-west4-a".into());
        })
        .await
        .expect("write");
    drop(store);
    rig.fake.clear_requests();
    rig.up().await.expect("up adopts it");
    assert!(
        inserts(&rig).is_empty(),
        "no second VM: {:?}",
        rig.mutating()
    );
    assert_eq!(rig.fake.instances(), running("europe-west4-a"));
    let state = rig.state().await;
    assert_eq!(state.fact("instance", "zone"), Some("europe-west4-a"));
    assert_eq!(state.fact("instance", "inserting_in"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_waits_in_rounds_while_the_vms_zone_has_no_capacity() {
    let rig = Rig::with_fake(
        FakeGce::start_with(ten_zones(&[])).await,
        env(&["us-central1-a"], |b| b),
    );
    rig.up().await.expect("up");
    rig.runner.stop(rig.sink()).await.expect("stop");
    rig.fake.configure(|c| {
        c.stockout_zones = ["us-central1-a".to_string()].into();
        // This start and the wait's first round find no capacity; its second round does.
        c.clear_stockouts_after_inserts = Some(2);
    });
    let e = rig.runner.start(rig.sink()).await.expect_err("no wait");
    assert!(e.is_stockout(), "{e}");
    assert!(
        kgenv_core::error::error_chain(&e).contains("--wait-for-capacity"),
        "{e}"
    );
    assert_eq!(rig.fake.instances()[0].2, "TERMINATED", "kept, stopped");
    rig.runner
        .start_with(RunOptions::default().wait_for_capacity(None), rig.sink())
        .await
        .expect("started in round 2");
    assert_eq!(rig.fake.instances(), running("us-central1-a"));
    let rounds: Vec<String> = rig
        .logs()
        .into_iter()
        .filter(|l| l.starts_with("round "))
        .collect();
    assert_eq!(rounds.len(), 1, "{rounds:?}");
    assert!(
        rounds[0].starts_with("round 1: 1 zone out of capacity; next try in "),
        "{rounds:?}"
    );
}

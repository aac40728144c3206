//! Benchmark: `up` of the GCE part (preflight, firewall, instance — what
//! `up --until instance` means with its firewall) with kgenv's real REST client against
//! the fake Compute API with injected latencies. Prints, per scenario:
//!
//! - wall time ÷ critical-path time, where the critical path is what no client can avoid:
//!   one round trip for the image/type lookups, then for each zone out of capacity one
//!   round trip plus the window GCE shows the failing instance PROVISIONING, and the
//!   deletion of the half-made instance it leaves; then one round trip plus the insert
//!   operation, the guest agent's host-key delay and one read. The firewall rule is off the
//!   critical path: it must overlap with the instance;
//! - HTTP requests per minute of operation time (all requests the run sent ÷ the summed
//!   durations of the operations it started): long-polling keeps this low.
//!
//! Run with `scripts/bench/gce.sh` (it sets `KGENV_COMPUTE_DISCOVERY`). No timing is
//! asserted anywhere; the figures are printed.

#[path = "../tests/support/gce_fake.rs"]
mod gce_fake;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gce_fake::FakeGce;
use kgenv_core::mock::MockWorld;
use kgenv_core::runner::{RunOptions, Runner};
use kgenv_core::spec::{Env, Instance};

const RTT: Duration = Duration::from_millis(30);
const FIREWALL_OP: Duration = Duration::from_millis(800);
const INSERT_OP: Duration = Duration::from_millis(2500);
const DELETE_OP: Duration = Duration::from_millis(600);
/// How long a failing insert shows its instance PROVISIONING before the stockout error.
const FAILED_INSERT_WINDOW: Duration = Duration::from_millis(1000);
const HOSTKEY_DELAY: Duration = Duration::from_millis(1500);
/// The real `wait` returns after about two minutes; scaled like the operations (÷10).
const WAIT_CAP: Duration = Duration::from_secs(12);
const RUNS: usize = 3;

/// Ten zones over three regions (issue 14's scenario), the first eight out of capacity.
const TEN_ZONES: &[&str] = &gce_fake::TEN_ZONES;
const TEN_ZONES_OUT: &[&str] = gce_fake::TEN_ZONES.split_at(8).0;

struct Scenario {
    name: &'static str,
    zones: &'static [&'static str],
    stockout: &'static [&'static str],
}

struct Figures {
    wall: Duration,
    critical: Duration,
    requests: usize,
    op_time: Duration,
    by_method: BTreeMap<String, usize>,
}

async fn run_once(s: &Scenario) -> Figures {
    let fake = FakeGce::start().await;
    fake.configure(|c| {
        c.request_latency = RTT;
        c.op_latency
            .insert("compute.firewalls.insert".into(), FIREWALL_OP);
        c.op_latency
            .insert("compute.instances.insert".into(), INSERT_OP);
        c.op_latency
            .insert("compute.instances.delete".into(), DELETE_OP);
        c.wait_cap = WAIT_CAP;
        c.hostkey_delay = HOSTKEY_DELAY;
        c.stockout_zones = s.stockout.iter().map(|z| z.to_string()).collect();
        c.half_made_on_stockout = true;
        c.failed_insert_window = FAILED_INSERT_WINDOW;
        for z in s.zones {
            c.zones
                .entry(z.to_string())
                .or_default()
                .insert("nvidia-tesla-t4".to_string());
        }
    });
    let mut b = Instance::builder()
        .project("my-project")
        .gpu("nvidia-tesla-t4", 1);
    for z in s.zones {
        b = b.zone(*z);
    }
    let env = Env::builder("kg").instance(b).build().expect("a valid env");
    let mut backends = MockWorld::new().backends();
    backends.compute = Arc::new(fake.client());
    let state = tempfile::tempdir().expect("state dir");
    let runner = Runner::new(env, backends)
        .state_dir(state.path())
        .host_ready_within(Duration::from_secs(60));
    let t = Instant::now();
    runner
        .up(
            RunOptions::default().only(["preflight", "firewall", "instance"]),
            |_| {},
        )
        .await
        .expect("up");
    let wall = t.elapsed();
    fake.assert_conforms();

    let attempts = s
        .zones
        .iter()
        .position(|z| !s.stockout.contains(z))
        .map_or(s.zones.len(), |i| i + 1) as u32;
    let failed = attempts - 1;
    let critical = RTT
        + (RTT + FAILED_INSERT_WINDOW + RTT + DELETE_OP) * failed
        + RTT
        + INSERT_OP
        + HOSTKEY_DELAY
        + RTT;
    let reqs = fake.requests();
    let mut by_method = BTreeMap::new();
    for r in &reqs {
        *by_method
            .entry(r.method_id.trim_start_matches("compute.").to_string())
            .or_insert(0) += 1;
    }
    let op_time = fake.operations().iter().map(|o| o.duration).sum();
    Figures {
        wall,
        critical,
        requests: reqs.len() + 1, /* the caller-IP lookup */
        op_time,
        by_method,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

async fn run() {
    let home = tempfile::tempdir().expect("KGENV_HOME");
    std::env::set_var("KGENV_HOME", home.path());
    println!("gce_up: kgenv's REST client vs the fake Compute API (discovery-validated)");
    println!(
        "injected: round trip {} ms, firewall insert {} ms, instance insert {} ms (a failing one: {} ms PROVISIONING), delete {} ms, host keys {} ms after RUNNING, wait cap {} s; median of {RUNS} runs",
        RTT.as_millis(),
        FIREWALL_OP.as_millis(),
        INSERT_OP.as_millis(),
        FAILED_INSERT_WINDOW.as_millis(),
        DELETE_OP.as_millis(),
        HOSTKEY_DELAY.as_millis(),
        WAIT_CAP.as_secs()
    );
    let scenarios = [
        Scenario {
            name: "one zone",
            zones: &["us-central1-a"],
            stockout: &[],
        },
        Scenario {
            name: "stockout in zone A, zone B",
            zones: &["us-central1-a", "us-central1-b"],
            stockout: &["us-central1-a"],
        },
        Scenario {
            name: "ten zones in three regions, the first eight out",
            zones: TEN_ZONES,
            stockout: TEN_ZONES_OUT,
        },
    ];
    for s in &scenarios {
        let mut runs = Vec::new();
        for _ in 0..RUNS {
            runs.push(run_once(s).await);
        }
        let ratio = median(
            runs.iter()
                .map(|f| f.wall.as_secs_f64() / f.critical.as_secs_f64())
                .collect(),
        );
        let wall = median(runs.iter().map(|f| f.wall.as_secs_f64()).collect());
        let per_op_min = median(
            runs.iter()
                .map(|f| f.requests as f64 / (f.op_time.as_secs_f64() / 60.0))
                .collect(),
        );
        let last = runs.last().expect("runs");
        println!("\n[{}]", s.name);
        println!(
            "  wall {:.2} s, critical path {:.2} s  →  wall / critical path = {ratio:.3}",
            wall,
            last.critical.as_secs_f64()
        );
        println!(
            "  {} HTTP requests over {:.2} s of operations  →  {per_op_min:.1} requests per minute of operation time",
            last.requests,
            last.op_time.as_secs_f64()
        );
        let breakdown: Vec<String> = last
            .by_method
            .iter()
            .map(|(m, n)| format!("{m} {n}"))
            .collect();
        println!("  requests: {}", breakdown.join(", "));
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(run());
}

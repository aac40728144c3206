//! The engine behind kgenv's SSH tunnel survives a `dockerd` restart, as a fresh Deep
//! Learning VM's NVIDIA driver installer does one at the end of first boot.
//!
//! Real peers: this machine's Docker Engine, really stopped and started again by the
//! first-boot simulator (`tests/fixtures/firstboot/install-driver.sh`, the one the
//! end-to-end host uses), reached through a real OpenSSH sshd on 127.0.0.1. A test binary of
//! its own: restarting the engine would disturb other tests of the same binary running in
//! parallel (cargo runs test binaries one after the other).

mod docker_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kgenv_core::backends::container::{ContainerEngine, EngineLocation};
use kgenv_core::docker::DockerConnector;

/// The simulator script.
fn install_driver() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/firstboot/install-driver.sh")
}

/// `(unix time, event)` lines of the simulator's report.
fn report(path: &Path) -> Vec<(f64, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (t, e) = l.split_once(' ')?;
            Some((t.parse().ok()?, e.to_string()))
        })
        .collect()
}

/// Waits (bounded) for `event` in the report.
fn wait_for(path: &Path, event: &str) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let seen = report(path);
        if let Some((t, _)) = seen.iter().find(|(_, e)| e == event) {
            return *t;
        }
        if let Some((_, why)) = seen.iter().find(|(_, e)| e.starts_with("failed")) {
            panic!("the first-boot simulator {why}");
        }
        assert!(
            Instant::now() < deadline,
            "no `{event}` from the simulator within 90s: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_through_the_tunnel_wait_for_a_restarting_engine() {
    docker_support::require_engine().await;
    let sshd = docker_support::start_sshd();
    let remote = docker_support::ssh_session(&sshd).await;
    let engine = DockerConnector::new()
        .open(EngineLocation::Remote(remote))
        .await
        .expect("the engine through the tunnel");
    let before = engine.info().await.expect("the engine answers");

    // dockerd stopped, and kept down for 3 s before it starts again.
    let dir = tempfile::tempdir().expect("tmp");
    let report_file = dir.path().join("report");
    let mut sim = Command::new("bash")
        .arg(install_driver())
        .args(["0", report_file.to_str().expect("UTF-8"), "3"])
        .stdin(Stdio::null())
        .spawn()
        .expect("the simulator starts");
    wait_for(&report_file, "dockerd-stopped");
    let asked = unix_now();
    let during = engine.info().await;
    let answered = unix_now();
    let started = wait_for(&report_file, "dockerd-started");
    let _ = sim.wait();
    assert!(
        report(&report_file).iter().any(|(_, e)| e == "done"),
        "the simulator finished: {:?}",
        report(&report_file)
    );
    let during = during.expect("a call made while dockerd was down waits for it, then answers");
    assert!(
        asked < started && answered >= started,
        "the call was made while the engine was down ({asked} < {started}) and answered after it came back ({answered})"
    );
    assert_eq!(during.version, before.version, "the same engine answered");
    // Later calls reuse the tunnel as before.
    engine
        .info()
        .await
        .expect("the engine answers after the restart");
}

//! The engine behind kgenv's SSH tunnel survives a `dockerd` restart, as a fresh Deep
//! Learning VM's NVIDIA driver installer does one at the end of first boot.
//!
//! Real peers: this machine's Docker Engine, really stopped and started again by the
//! first-boot simulator (`tests/fixtures/firstboot/install-driver.sh`, the one the
//! end-to-end host uses), reached through a real OpenSSH sshd on 127.0.0.1. A test binary of
//! its own: restarting the engine would disturb other tests of the same binary running in
//! parallel (cargo runs test binaries one after the other).

mod docker_support;
#[path = "support/firstboot.rs"]
mod firstboot;

use std::time::Duration;

use firstboot::{unix_now, FirstBoot};
use kgenv_core::backends::container::{ContainerEngine, EngineLocation};
use kgenv_core::docker::DockerConnector;

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

    // No lock held; dockerd stopped, and kept down for 3 s before it starts again.
    let sim = FirstBoot::start_with(Duration::ZERO, Duration::from_secs(3));
    sim.wait_for("dockerd-stopped", Duration::from_secs(90));
    let asked = unix_now();
    let during = engine.info().await;
    let answered = unix_now();
    // `dockerd-starting` is noted just before dockerd is launched again: the engine cannot
    // have answered before it, so a call asked earlier was asked while it was down, and an
    // answer after it is the restarted engine's. (`dockerd-started` is noted when the
    // simulator's own poll sees it answer, which may be after kgenv's call already did.)
    let starting = sim.wait_for("dockerd-starting", Duration::from_secs(90));
    sim.wait_for("dockerd-started", Duration::from_secs(90));
    sim.finish();
    let during = during.expect("a call made while dockerd was down waits for it, then answers");
    assert!(
        asked < starting && answered > starting,
        "the call was made while the engine was down ({asked} < {starting}) and answered by the restarted one ({answered})"
    );
    assert_eq!(during.version, before.version, "the same engine answered");
    // Later calls reuse the tunnel as before.
    engine
        .info()
        .await
        .expect("the engine answers after the restart");
}

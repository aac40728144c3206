//! The first boot of a fresh Deep Learning VM, simulated on this machine (shared by the
//! end-to-end harness and `docker_restart.rs`): runs
//! `tests/fixtures/firstboot/install-driver.sh`, which holds dpkg's locks, then restarts
//! dockerd once, and reports each event with its time.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The installer's stand-in script.
pub fn install_driver() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../kgenv-core/tests/fixtures/firstboot/install-driver.sh")
}

/// The first boot of a fresh Deep Learning VM, simulated on this machine by
/// `kgenv-core/tests/fixtures/firstboot/install-driver.sh`, named and behaving like the
/// image's NVIDIA driver installer: dpkg's locks held for a while (no `nvidia-smi`: this
/// machine has none), then one restart of dockerd, then exit.
///
/// Dropping it waits for the installer to end (never kills it: a kill between stopping and
/// starting dockerd would leave the machine without an engine) and checks dockerd is back.
pub struct FirstBoot {
    child: Option<Child>,
    report: PathBuf,
    _dir: tempfile::TempDir,
}

impl FirstBoot {
    /// Starts the installer; returns once it holds dpkg's locks.
    pub fn start(hold: Duration) -> Self {
        Self::start_with(hold, Duration::ZERO)
    }

    /// Starts the installer holding dpkg's locks for `hold`, then keeping dockerd stopped for
    /// `docker_down` before starting it again; returns once it holds the locks.
    pub fn start_with(hold: Duration, docker_down: Duration) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let report = dir.path().join("report");
        let child = Command::new("bash")
            .arg(install_driver())
            .arg(format!("{:.1}", hold.as_secs_f64()))
            .arg(&report)
            .arg(format!("{:.1}", docker_down.as_secs_f64()))
            .stdin(Stdio::null())
            .spawn()
            .expect("bash runs the first-boot simulator");
        let fb = Self {
            child: Some(child),
            report,
            _dir: dir,
        };
        fb.wait_for("locked", Duration::from_secs(30));
        fb
    }

    /// `(unix time, event)` lines the installer reported so far.
    pub fn events(&self) -> Vec<(f64, String)> {
        std::fs::read_to_string(&self.report)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let (t, e) = l.split_once(' ')?;
                Some((t.parse().ok()?, e.to_string()))
            })
            .collect()
    }

    /// When the installer reported `event`, if it did.
    pub fn time_of(&self, event: &str) -> Option<f64> {
        self.events()
            .into_iter()
            .find(|(_, e)| e == event)
            .map(|(t, _)| t)
    }

    /// Waits (bounded) for `event`; panics on a `failed` report or the deadline.
    pub fn wait_for(&self, event: &str, within: Duration) -> f64 {
        let deadline = Instant::now() + within;
        loop {
            if let Some(t) = self.time_of(event) {
                return t;
            }
            if let Some((_, why)) = self
                .events()
                .into_iter()
                .find(|(_, e)| e.starts_with("failed"))
            {
                panic!("the first-boot simulator {why}");
            }
            assert!(
                Instant::now() < deadline,
                "the first-boot simulator did not report `{event}` within {within:?}: {:?}",
                self.events()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the installer to end and checks it ended well.
    pub fn finish(mut self) -> Vec<(f64, String)> {
        self.reap();
        let events = self.events();
        assert!(
            events.iter().any(|(_, e)| e == "done"),
            "the first-boot simulator did not finish: {events:?}"
        );
        events
    }

    fn reap(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.wait();
        }
    }
}

impl Drop for FirstBoot {
    fn drop(&mut self) {
        self.reap();
    }
}

/// Unix time now, comparable with [`FirstBoot::events`].
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

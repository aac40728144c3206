//! The end-to-end harness: a real OpenSSH sshd on 127.0.0.1 (the SSH layer's fixture) with
//! this machine's Docker Engine behind it, the stand-in Kaggle image built by
//! `scripts/setup/80-e2e.sh`, a temp `HOME` and `KGENV_HOME`, and the real `kgenv` binary.
//!
//! Every kgenv run is `--json`; a failed run panics with the step that failed, its error
//! and its log lines, so a red CI run is diagnosable from the output alone.
//!
//! The host is a fresh Deep Learning VM as GCE delivers it: kgenv logs in (ssh and gce
//! targets alike) as the non-root `kgenv` user with passwordless sudo and the `docker` group
//! (made by `scripts/setup/80-e2e.sh`, as GCE's guest agent makes it), and a scenario can
//! start [`FirstBoot`]: the NVIDIA driver installer's stand-in, holding dpkg's lock and
//! restarting dockerd at its end.
#![allow(dead_code)]

#[path = "../../../kgenv-core/tests/support/sshd.rs"]
pub mod sshd;

#[path = "../../../kgenv-core/tests/support/firstboot.rs"]
pub mod firstboot;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The kgenv binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_kgenv");
/// The Jupyter password the tests use.
pub const PASSWORD: &str = "e2e-Password-9d1f";

/// Serializes the e2e scenarios of one test binary: each drives Docker and an sshd on a
/// shared 2-core machine.
pub static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// The e2e lock: held while a scenario runs, in this process and across test binaries.
pub struct Serial {
    _file: std::fs::File,
    _in_process: std::sync::MutexGuard<'static, ()>,
}

/// The file [`serial`] locks, shared by every e2e test binary on this machine: they log in
/// as the same `kgenv` account, use the same host paths (`/var/lib/kgenv`, `/etc/fstab`,
/// the data-disk link) and the same Docker Engine, so two binaries run at once (cargo
/// nextest, two `cargo test` invocations) must take turns like the tests of one binary.
pub fn serial_lock_path() -> PathBuf {
    std::env::temp_dir().join("kgenv-e2e-serial.lock")
}

/// Takes the e2e lock (a failed scenario does not block the others): the in-process mutex,
/// then an exclusive `flock` on [`serial_lock_path`], released when the process exits even
/// if it crashed.
pub fn serial() -> Serial {
    let in_process = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let path = serial_lock_path();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("the e2e lock file {}: {e}", path.display()));
    file.lock()
        .unwrap_or_else(|e| panic!("locking {}: {e}", path.display()));
    Serial {
        _file: file,
        _in_process: in_process,
    }
}

/// The stand-in image's tag, from `scripts/setup/80-e2e.sh`.
pub fn base_image() -> String {
    let tag = std::env::var("KGENV_E2E_BASE_IMAGE").unwrap_or_else(|_| {
        panic!(
            "KGENV_E2E_BASE_IMAGE is not set: run scripts/test.sh, or \
             `export KGENV_VENV=$PWD/.venv; . scripts/setup/00-base.sh; . scripts/setup/50-docker.sh; . scripts/setup/80-e2e.sh`"
        )
    });
    let ok = Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", &tag])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "the e2e image {tag} is missing from Docker: run scripts/setup/80-e2e.sh (it builds it with debootstrap)"
    );
    tag
}

/// Runs `docker ARGS` and returns trimmed stdout (empty on failure).
pub fn docker(args: &[&str]) -> String {
    Command::new("docker")
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// One kgenv run's output, parsed.
pub struct Run {
    /// The process output.
    pub output: Output,
    /// The JSON event lines (without the final result).
    pub events: Vec<Value>,
    /// The final `{"result": …}` report, when the run finished.
    pub result: Option<Value>,
}

impl Run {
    /// Parses `--json` output.
    pub fn parse(output: Output) -> Self {
        let mut events = Vec::new();
        let mut result = None;
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if let Some(r) = v.get("result") {
                result = Some(r.clone());
            } else {
                events.push(v);
            }
        }
        Self {
            output,
            events,
            result,
        }
    }

    /// Panics with a diagnosis unless the run succeeded.
    pub fn expect_ok(&self, what: &str) -> &Self {
        if !self.output.status.success() || self.result.is_none() {
            panic!("{what} failed:\n{}", self.diagnosis());
        }
        self
    }

    /// Which step failed, its error and its log lines, then kgenv's stderr.
    pub fn diagnosis(&self) -> String {
        let mut out = format!("exit status: {}\n", self.output.status);
        let failed: Vec<&Value> = self
            .events
            .iter()
            .filter(|e| e["event"] == "failed")
            .collect();
        for f in &failed {
            let step = f["step"].as_str().unwrap_or("?");
            out.push_str(&format!(
                "step `{step}` FAILED ({}): {}\n  its log:\n",
                f["kind"], f["message"]
            ));
            for l in self
                .events
                .iter()
                .filter(|e| e["step"] == step && e["event"] == "log")
            {
                out.push_str(&format!("    {}\n", l["line"].as_str().unwrap_or("")));
            }
        }
        if failed.is_empty() {
            out.push_str("no step reported a failure; last events:\n");
            for e in self.events.iter().rev().take(15).rev() {
                out.push_str(&format!("  {e}\n"));
            }
        }
        out.push_str(&format!(
            "stdout (non-event):\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&self.output.stdout)
                .lines()
                .filter(|l| !l.starts_with("{\"event\""))
                .collect::<Vec<_>>()
                .join("\n"),
            String::from_utf8_lossy(&self.output.stderr)
        ));
        out
    }

    /// `step → outcome` from the final report.
    pub fn outcomes(&self) -> Vec<(String, String)> {
        self.result
            .as_ref()
            .and_then(|r| r["steps"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .map(|s| {
                (
                    s["step"].as_str().unwrap_or("").to_string(),
                    s["outcome"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    /// The outcome of `step`.
    pub fn outcome(&self, step: &str) -> Option<String> {
        self.outcomes()
            .into_iter()
            .find(|(s, _)| s == step)
            .map(|(_, o)| o)
    }

    /// Steps that ran their apply phase.
    pub fn applied(&self) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| e["event"] == "started" && e["phase"] == "apply")
            .filter_map(|e| e["step"].as_str().map(str::to_string))
            .collect()
    }

    /// Warnings and log lines of `step`.
    pub fn messages(&self, step: &str) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| e["step"] == step)
            .filter_map(|e| {
                e.get("message")
                    .or_else(|| e.get("line"))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .collect()
    }
}

/// The longest a kill point may take to come (an `up` with an image build to reach).
pub const KILL_POINT_WAIT: Duration = Duration::from_secs(240);

/// Where a SIGKILLed `up` was killed ([`E2e::up_killed_when`]).
#[derive(Debug)]
pub struct Killed {
    /// The point's name.
    pub point: String,
    /// What the run had reached when it was killed (the event, the byte count).
    pub reached: String,
    /// The event lines it printed before it died.
    pub events: Vec<Value>,
}

impl Killed {
    /// Whether an event of `step` with `event` (and, when given, `phase`) came before the kill.
    pub fn saw(&self, step: &str, event: &str, phase: Option<&str>) -> bool {
        self.events.iter().any(|e| {
            e["step"] == step && e["event"] == event && phase.is_none_or(|p| e["phase"] == p)
        })
    }
}

/// What a target section is written from.
pub struct Parts<'a> {
    /// The host's sshd.
    pub sshd: &'a sshd::Sshd,
    /// The environment's name.
    pub name: &'a str,
}

/// One environment on the local sshd: its config file, temp HOME and KGENV_HOME.
pub struct E2e {
    /// The host.
    pub sshd: sshd::Sshd,
    /// Temp dir holding `home/` (HOME) and `kgenv/` (KGENV_HOME) and the config.
    pub dir: tempfile::TempDir,
    /// Environment name (unique per test process and scenario).
    pub name: String,
    /// kgenv.toml.
    pub config: PathBuf,
    /// The host port Jupyter is published on (127.0.0.1).
    pub jupyter_port: u16,
    /// Extra environment for kgenv runs.
    pub env: Vec<(String, String)>,
}

impl E2e {
    /// An ssh-target environment named `e2e<tag><pid>` on a fresh sshd whose host key is
    /// in kgenv's known_hosts (verified, no trust-on-first-use), logging in as the non-root
    /// `kgenv` user, as on a Deep Learning VM.
    pub fn ssh(tag: &str) -> Self {
        assert_login_user();
        let e = Self::new(tag, |p| {
            format!(
                r#"target = "ssh"

[ssh]
host = "{user}@127.0.0.1:{port}"
identity_file = "{key}"
"#,
                user = kgenv_core::keys::GCE_USER,
                port = p.sshd.port,
                key = p.sshd.client_key.display(),
            )
        });
        std::fs::write(
            e.kgenv_home().join("config/known_hosts"),
            format!("[127.0.0.1]:{} {}\n", e.sshd.port, e.sshd.host_pub),
        )
        .expect("known_hosts");
        e
    }

    /// An environment whose target section is `target(&parts)`, with the common image
    /// (extras from the offline apt repository and wheel directory), a container with the
    /// default `gpus = "all"` ("the GPUs the host has, if any": none here) publishing Jupyter on a free port of 127.0.0.1, and Jupyter with a password and
    /// a self-signed certificate.
    pub fn new(tag: &str, target: impl FnOnce(&Parts<'_>) -> String) -> Self {
        let image = base_image();
        let sshd = sshd::Sshd::start_new();
        let dir = tempfile::tempdir().expect("tempdir");
        let name = format!("e2e{tag}{}", std::process::id());
        std::fs::create_dir_all(dir.path().join("home/.ssh")).expect("home/.ssh");
        std::fs::create_dir_all(dir.path().join("kgenv/config")).expect("kgenv config dir");
        let jupyter_port = free_port();
        let target = target(&Parts {
            sshd: &sshd,
            name: &name,
        });
        let config = dir.path().join("kgenv.toml");
        std::fs::write(
            &config,
            format!(
                r#"name = "{name}"
{target}
[image]
base = "{image}"
apt = ["tree"]
pip = ["tabulate"]

[container]
gpus = "all"
ports = [{{ container = 8888, host = {jupyter_port}, bind = "127.0.0.1" }}]

[jupyter]
auth = "password"
password_env = "KGENV_JUPYTER_PASSWORD"
tls = "self-signed"
port = 8888
"#
            ),
        )
        .expect("kgenv.toml");
        let e = Self {
            sshd,
            dir,
            name,
            config,
            jupyter_port,
            env: Vec::new(),
        };
        e.cleanup_host();
        e
    }

    /// The temp HOME.
    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// The temp KGENV_HOME.
    pub fn kgenv_home(&self) -> PathBuf {
        self.dir.path().join("kgenv")
    }

    /// The container's name.
    pub fn container(&self) -> String {
        format!("kgenv-{}", self.name)
    }

    /// kgenv's directory on the host.
    pub fn host_dir(&self) -> PathBuf {
        PathBuf::from(format!("/var/lib/kgenv/{}", self.name))
    }

    /// The state file.
    pub fn state_file(&self) -> PathBuf {
        self.kgenv_home()
            .join("state")
            .join(format!("{}.json", self.name))
    }

    /// A `kgenv` command with this environment's config, HOME and KGENV_HOME.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--config")
            .arg(&self.config)
            .args(args)
            .env("HOME", self.home())
            .env("KGENV_HOME", self.kgenv_home())
            .env("KGENV_JUPYTER_PASSWORD", PASSWORD)
            .env("NO_COLOR", "1")
            .env_remove("KGENV_CONFIG")
            .env_remove("RUST_LOG")
            .env_remove("DOCKER_HOST")
            .stdin(Stdio::null());
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    /// Runs `kgenv --json ARGS` to completion.
    pub fn run(&self, args: &[&str]) -> Run {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        Run::parse(self.command(&all).output().expect("kgenv runs"))
    }

    /// Runs `kgenv --json up` and SIGKILLs it at `point`: right after the first event line
    /// for which `is_point` is true. See [`E2e::up_killed_when`] for what is checked.
    pub fn up_killed_at_event(&self, point: &str, is_point: impl Fn(&Value) -> bool) -> Killed {
        self.up_killed_when(point, |events| {
            events
                .iter()
                .find(|ev| is_point(ev))
                .map(|ev| format!("event {ev}"))
        })
    }

    /// Runs `kgenv --json up` and SIGKILLs it at `point`: as soon as `reached` (given the
    /// event lines printed so far, polled every 10 ms) says what the run reached (an event,
    /// a byte count on the host). Before the kill the process must still be running
    /// (`try_wait()` is `None`), and afterwards it must have died of SIGKILL: a point the
    /// run never reaches, reaches only after it exited, or reaches after printing its final
    /// result fails the test with a message naming the point.
    pub fn up_killed_when(
        &self,
        point: &str,
        mut reached: impl FnMut(&[Value]) -> Option<String>,
    ) -> Killed {
        let mut child = self
            .command(&["--json", "up"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kgenv up starts");
        let stdout = child.stdout.take().expect("stdout piped");
        let stderr = child.stderr.take().expect("stderr piped");
        // Lines are read on their own threads so the wait below can poll the process and
        // host-side conditions too; stderr is drained so a chatty run never blocks on it.
        let (tx, rx) = std::sync::mpsc::channel::<Value>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if tx.send(v).is_err() {
                        break;
                    }
                }
            }
        });
        let err_reader = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut text);
            text
        });
        let deadline = Instant::now() + KILL_POINT_WAIT;
        let mut events: Vec<Value> = Vec::new();
        let mut result: Option<Value> = None;
        let outcome = loop {
            // One line at a time, the point checked after each: the kill comes right after
            // the line that reached it, not after a batch of later ones.
            let mut what = reached(&events);
            while what.is_none() {
                let Ok(v) = rx.try_recv() else { break };
                match v.get("result") {
                    Some(r) => result = Some(r.clone()),
                    None if v.get("event").is_some() => {
                        events.push(v);
                        what = reached(&events);
                    }
                    None => {}
                }
            }
            if let Some(what) = what {
                // The point is reached: the process must still be there to be killed.
                let alive = child.try_wait().expect("try_wait on kgenv up");
                if let Some(status) = alive {
                    break Err(format!(
                        "reached ({what}) only after up had exited ({status})"
                    ));
                }
                if result.is_some() {
                    break Err(format!(
                        "reached ({what}) only after up printed its final result"
                    ));
                }
                child.kill().expect("SIGKILL kgenv up"); // SIGKILL
                break Ok(what);
            }
            if let Some(status) = child.try_wait().expect("try_wait on kgenv up") {
                break Err(format!("never reached: up exited first ({status})"));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                break Err(format!("not reached within {}s", KILL_POINT_WAIT.as_secs()));
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let status = child.wait().expect("wait for kgenv up");
        let _ = reader.join();
        // What is still in the pipe was printed before the kill: a result there means the
        // run had finished its work when it was killed.
        for v in rx.try_iter() {
            match v.get("result") {
                Some(r) => result = Some(r.clone()),
                None if v.get("event").is_some() => events.push(v),
                None => {}
            }
        }
        let outcome = match outcome {
            Ok(what) if result.is_some() => Err(format!(
                "reached ({what}), but up had printed its final result before the SIGKILL"
            )),
            other => other,
        };
        let stderr = err_reader.join().unwrap_or_default();
        let last: Vec<String> = events
            .iter()
            .rev()
            .take(12)
            .rev()
            .map(Value::to_string)
            .collect();
        let reached = outcome.unwrap_or_else(|why| {
            panic!(
                "kill point `{point}` {why}; last events:\n  {}\nstderr:\n{stderr}",
                last.join("\n  ")
            )
        });
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            Some(9),
            "kill point `{point}`: up died of our SIGKILL, not of its own end ({status}); reached {reached}"
        );
        Killed {
            point: point.to_string(),
            reached,
            events,
        }
    }

    /// The container's id, if it exists.
    pub fn container_id(&self) -> Option<String> {
        let id = docker(&["inspect", "--format", "{{.Id}}", &self.container()]);
        (!id.is_empty()).then_some(id)
    }

    /// Containers labelled as this environment's.
    pub fn labelled_containers(&self) -> Vec<String> {
        docker(&[
            "ps",
            "-a",
            "--format",
            "{{.Names}}",
            "--filter",
            &format!("label=kgenv-env={}", self.name),
        ])
        .lines()
        .map(str::to_string)
        .collect()
    }

    /// The container's log tail, for failure messages.
    pub fn container_log(&self) -> String {
        let o = Command::new("docker")
            .args(["logs", "--tail", "40", &self.container()])
            .output();
        o.map(|o| {
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        })
        .unwrap_or_default()
    }

    /// Removes what a crashed test may have left on the host (container, the data disk's
    /// mount and fstab entry, host dir). The mount goes before the directory: removing the
    /// directory with the disk still mounted there would wipe the disk's contents.
    pub fn cleanup_host(&self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.container()])
            .output();
        if let Err(err) = unmount_and_unlist(&self.host_dir()) {
            // Leave the directory: it may still be a mounted disk.
            eprintln!(
                "e2e cleanup: {err}; {} left in place",
                self.host_dir().display()
            );
            return;
        }
        let _ = std::fs::remove_dir_all(self.host_dir());
    }

    /// Opens `kgenv jupyter --port 0` and returns it with the URL it printed.
    pub fn jupyter_tunnel(&self) -> Tunnel {
        let mut child = self
            .command(&["jupyter", "--port", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kgenv jupyter starts");
        let stdout = child.stdout.take().expect("stdout piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut lines = Vec::new();
        let url = loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    if let Some(u) = line.strip_prefix("Jupyter: ") {
                        break u.trim().to_string();
                    }
                    lines.push(line);
                }
                Err(_) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        let mut err = String::new();
                        if let Some(mut e) = child.stderr.take() {
                            let _ = std::io::Read::read_to_string(&mut e, &mut err);
                        }
                        panic!(
                            "kgenv jupyter exited ({status}) before printing its URL:\n{}\n{err}",
                            lines.join("\n")
                        );
                    }
                    assert!(
                        Instant::now() < deadline,
                        "kgenv jupyter printed no URL within 30s: {lines:?}"
                    );
                }
            }
        };
        Tunnel { child, url }
    }
}

impl Drop for E2e {
    fn drop(&mut self) {
        self.cleanup_host();
    }
}

/// Panics unless the local account kgenv logs in as exists (non-root, sudo, docker group).
pub fn assert_login_user() {
    let user = kgenv_core::keys::GCE_USER;
    let groups = Command::new("id")
        .args(["-nG", user])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string());
    let groups = groups.unwrap_or_else(|| {
        panic!("the local account `{user}` is missing: run scripts/setup/80-e2e.sh (it creates it, as GCE's guest agent would)")
    });
    assert!(
        groups.split_whitespace().any(|g| g == "docker"),
        "`{user}` is not in the docker group ({groups}): run scripts/setup/80-e2e.sh"
    );
    let sudo = Command::new("runuser")
        .args(["-u", user, "--", "sudo", "-n", "true"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        sudo,
        "`{user}` has no passwordless sudo: run scripts/setup/80-e2e.sh"
    );
}

/// `(owner name, mode)` of `path` on this machine (the host), from `stat`.
pub fn owner_and_mode(path: &Path) -> (String, u32) {
    let out = Command::new("stat")
        .args(["-c", "%U %a"])
        .arg(path)
        .output()
        .expect("stat runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace();
    let owner = words.next().unwrap_or_default().to_string();
    let mode = words
        .next()
        .and_then(|m| u32::from_str_radix(m, 8).ok())
        .unwrap_or_else(|| panic!("stat {}: {text}", path.display()));
    (owner, mode)
}

/// Runs `sh -c SCRIPT` as the login user on this machine (the host); whether it succeeded.
pub fn as_login_user(script: &str) -> bool {
    Command::new("runuser")
        .args(["-u", kgenv_core::keys::GCE_USER, "--", "sh", "-c", script])
        .status()
        .is_ok_and(|s| s.success())
}

#[allow(unused_imports)] // not every e2e binary starts the first-boot simulator
pub use firstboot::FirstBoot;

/// Asserts a finished `up` waited out `boot` (the first-boot simulator's events): the host
/// step said it waited for the driver install, and `container` was created after the
/// installer's dockerd restart (so the restart did not kill it).
pub fn assert_waited_out_first_boot(up: &Run, boot: &[(f64, String)], container: &str) {
    let host_log = up.messages("host").join("\n");
    assert!(
        host_log.contains("waiting for the NVIDIA driver install"),
        "the host step said what it waited for: {host_log}"
    );
    let restarted = boot
        .iter()
        .find(|(_, ev)| ev == "dockerd-started")
        .map(|(t, _)| *t)
        .expect("the simulator restarted dockerd");
    assert!(
        container_created(container) > restarted,
        "the container was created after the installer's dockerd restart, not killed by it: {boot:?}"
    );
}

/// When Docker created `container`, as unix time (`docker inspect .Created`).
pub fn container_created(container: &str) -> f64 {
    let created = docker(&["inspect", "--format", "{{.Created}}", container]);
    let out = Command::new("date")
        .args(["-d", &created, "+%s.%N"])
        .output()
        .expect("date runs");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("the creation time of {container}: {created:?}"))
}

/// Undoes on this machine what kgenv's `disk-mount` step does on a VM, where it goes with
/// the VM: unmounts every file system mounted at `root` (lazily when one is busy) and
/// removes `root`'s entries from `/etc/fstab`, with the step's own `fstab_set` (the same
/// atomic rewrite, the same escaping of the mount point). A no-op when neither is there.
pub fn unmount_and_unlist(root: &Path) -> Result<(), String> {
    let is_mounted = || {
        Command::new("mountpoint")
            .arg("-q")
            .arg(root)
            .status()
            .is_ok_and(|s| s.success())
    };
    // Mounts can be stacked (a run killed between two mounts): one umount per layer.
    for _ in 0..8 {
        if !is_mounted() {
            break;
        }
        let plain = Command::new("umount").arg(root).output();
        if !plain.is_ok_and(|o| o.status.success()) {
            let lazy = Command::new("umount")
                .arg("-l")
                .arg(root)
                .output()
                .map_err(|e| format!("umount -l {}: {e}", root.display()))?;
            if !lazy.status.success() {
                return Err(format!(
                    "umount -l {}: {}",
                    root.display(),
                    String::from_utf8_lossy(&lazy.stderr).trim()
                ));
            }
        }
    }
    if is_mounted() {
        return Err(format!("{} is still a mount point", root.display()));
    }
    let root = root
        .to_str()
        .ok_or_else(|| format!("{} is not UTF-8", root.display()))?;
    let script = format!(
        "set -eu\n{}\nfstab_set /etc/fstab \"$1\" '' ''\n",
        kgenv_core::steps::script::FSTAB_SET_FN
    );
    let out = Command::new("sh")
        .args(["-c", &script, "sh"])
        .arg(kgenv_core::steps::bucket_mount::fstab_escape(root))
        .output()
        .map_err(|e| format!("sh (fstab_set): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "removing {root} from /etc/fstab: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// A running `kgenv jupyter`.
pub struct Tunnel {
    child: Child,
    /// The URL it printed (`https://127.0.0.1:PORT/`).
    pub url: String,
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTPS client that trusts only the certificate at `cert` and keeps cookies.
pub fn client_trusting(cert: &Path) -> reqwest::Client {
    let pem = std::fs::read(cert)
        .unwrap_or_else(|e| panic!("kgenv's certificate {}: {e}", cert.display()));
    kgenv_core::http::client_builder("https://127.0.0.1/")
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .tls_certs_only([reqwest::Certificate::from_pem(&pem).expect("a PEM certificate")])
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// GET /login for the `_xsrf` cookie, then POST the password with it; retries while
/// Jupyter is (re)starting, up to `wait`. Returns the login response's status.
pub async fn login(
    client: &reqwest::Client,
    base: &str,
    password: &str,
    wait: Duration,
) -> Result<reqwest::StatusCode, String> {
    let deadline = Instant::now() + wait;
    loop {
        let last = match try_login(client, base, password).await {
            Ok(s) => return Ok(s),
            Err(e) => e,
        };
        if Instant::now() > deadline {
            return Err(last);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn try_login(
    client: &reqwest::Client,
    base: &str,
    password: &str,
) -> Result<reqwest::StatusCode, String> {
    let page = client
        .get(format!("{base}login"))
        .send()
        .await
        .map_err(|e| format!("GET /login: {e:?}"))?;
    let xsrf = page
        .cookies()
        .find(|c| c.name() == "_xsrf")
        .map(|c| c.value().to_string())
        .ok_or_else(|| {
            format!(
                "GET /login answered {} without an _xsrf cookie",
                page.status()
            )
        })?;
    let resp = client
        .post(format!("{base}login"))
        .form(&[("_xsrf", xsrf.as_str()), ("password", password)])
        .send()
        .await
        .map_err(|e| format!("POST /login: {e:?}"))?;
    Ok(resp.status())
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Asserts every step of a finished `up` is `satisfied` and nothing was applied.
pub fn assert_noop(run: &Run, what: &str) {
    let changed: Vec<_> = run
        .outcomes()
        .into_iter()
        .filter(|(_, o)| o != "satisfied")
        .collect();
    assert!(
        changed.is_empty() && run.applied().is_empty(),
        "{what}: expected no change, got outcomes {changed:?}, applied {:?}\n{}",
        run.applied(),
        run.diagnosis()
    );
}

/// Logs in through `kgenv jupyter`'s tunnel with TLS verified against kgenv's certificate
/// and lists `file` in Jupyter's directory `dir` via the contents API.
pub fn login_and_list(e: &E2e, dir: &str, file: &str) {
    let tunnel = e.jupyter_tunnel();
    assert!(
        tunnel.url.starts_with("https://127.0.0.1:"),
        "kgenv jupyter prints an https URL on the tunnel's local end: {}",
        tunnel.url
    );
    let cert = e
        .kgenv_home()
        .join("config/keys")
        .join(&e.name)
        .join("jupyter-cert.pem");
    let base = if tunnel.url.ends_with('/') {
        tunnel.url.clone()
    } else {
        format!("{}/", tunnel.url)
    };
    runtime().block_on(async {
        // Nothing without a login.
        let anon = client_trusting(&cert);
        let wrong = login(&anon, &base, "not-the-password", Duration::from_secs(60))
            .await
            .unwrap_or_else(|err| {
                panic!(
                    "Jupyter did not answer through the tunnel within 60s: {err}\ncontainer log:\n{}",
                    e.container_log()
                )
            });
        assert!(
            !wrong.is_redirection(),
            "a wrong password must not log in (got {wrong})"
        );
        let refused = anon
            .get(format!("{base}api/contents"))
            .send()
            .await
            .expect("contents API answers");
        assert_eq!(refused.status(), reqwest::StatusCode::FORBIDDEN);

        let user = client_trusting(&cert);
        let st = login(&user, &base, PASSWORD, Duration::from_secs(30))
            .await
            .expect("login page answers");
        assert!(
            st.is_redirection(),
            "the password logs in (302), got {st}"
        );
        let listing: serde_json::Value = user
            .get(format!("{base}api/contents/{dir}"))
            .send()
            .await
            .expect("contents API answers")
            .error_for_status()
            .expect("contents API after login")
            .json()
            .await
            .expect("contents JSON");
        let names: Vec<&str> = listing["content"]
            .as_array()
            .map(|a| a.iter().filter_map(|f| f["name"].as_str()).collect())
            .unwrap_or_default();
        assert!(
            names.contains(&file),
            "{dir}/{file} listed by Jupyter's contents API: {names:?}"
        );
    });
}

// ---- For the verb tests (`e2e_verbs.rs`): one kgenv command as a user runs it. ----

/// One plain (not `--json`) kgenv run: exit code, stdout and stderr as text.
pub struct Plain {
    /// The exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
}

impl Plain {
    /// Runs `command` to completion.
    pub fn of(command: &mut Command) -> Self {
        let o = command.output().expect("kgenv runs");
        Self {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// Panics with the run's output unless it exited with `code`.
    pub fn expect_code(&self, code: i32, what: &str) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "{what}: exit code\nstdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}

impl E2e {
    /// Runs `kgenv ARGS` (no `--json`) to completion.
    pub fn plain(&self, args: &[&str]) -> Plain {
        Plain::of(&mut self.command(args))
    }

    /// Starts `kgenv ARGS` (a `jupyter` command: `extra` global flags, `--port 0`, the
    /// command's flags) and returns it once it said the tunnel is open, with every line it
    /// printed until then (stdout and stderr through one pipe, in the order written, so
    /// everything `kgenv jupyter` prints before "tunnel open" is there).
    pub fn jupyter_printing(&self, args: &[&str]) -> (Tunnel, Vec<String>) {
        let (reader, writer) = std::io::pipe().expect("a pipe");
        let mut child = self
            .command(args)
            .stdout(writer.try_clone().expect("pipe clone"))
            .stderr(writer)
            .spawn()
            .expect("kgenv jupyter starts");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(reader).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // The command above holds the write ends now; ours closed with `writer`.
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut lines = Vec::new();
        loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    let open = line.starts_with("tunnel open");
                    lines.push(line);
                    if open {
                        break;
                    }
                }
                Err(_) => {
                    if let Ok(Some(status)) = child.try_wait() {
                        panic!(
                            "kgenv {args:?} exited ({status}) before opening its tunnel:\n{}",
                            lines.join("\n")
                        );
                    }
                    assert!(
                        Instant::now() < deadline,
                        "kgenv {args:?} opened no tunnel within 60s: {lines:?}"
                    );
                }
            }
        }
        let url = lines
            .iter()
            .find_map(|l| l.strip_prefix("Jupyter: "))
            .unwrap_or_else(|| panic!("kgenv {args:?} printed no `Jupyter: URL` line: {lines:?}"))
            .trim()
            .to_string();
        (Tunnel { child, url }, lines)
    }
}

//! A real OpenSSH `sshd` for tests, on 127.0.0.1 and a free port, as the current user.
//!
//! Every [`Sshd`] has its own temp dir with a fresh ed25519 host key, a fresh client key in
//! `authorized_keys`, a config (`PermitRootLogin prohibit-password`, `StrictModes no`,
//! `UsePAM no`, default `MaxSessions`), and runs `/usr/sbin/sshd -D -e -f CONFIG` as a child.
//! `SetEnv SHLVL=1` keeps the login user's `~/.bashrc` out of every command (bash sources it
//! for ssh commands only below level 2): a developer's rc file (pyenv's rehash on this
//! machine's root) would otherwise add seconds and lock contention to each command.
//! [`Sshd::stop`] (and drop) kills it together with its per-connection processes, so
//! established sessions really break; [`Sshd::start`] brings it back on the same port with
//! the same keys.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kgenv_core::backends::remote::HostAddr;

/// Where Debian's openssh-server puts the daemon.
pub const SSHD: &str = "/usr/sbin/sshd";

const INSTALL_HINT: &str = "the SSH tests need OpenSSH: run scripts/test.sh (scripts/setup/20-ssh.sh) or `apt-get install openssh-server openssh-client`";

/// A running (or stopped) test sshd.
pub struct Sshd {
    dir: tempfile::TempDir,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// `ssh-ed25519 AAAA…` of its host key.
    pub host_pub: String,
    /// An authorized client key (unencrypted, OpenSSH format).
    pub client_key: PathBuf,
    /// The login user (the current user).
    pub user: String,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// Runs `ssh-keygen` to make an ed25519 key at `path` with `passphrase`; returns the
/// public key line.
pub fn keygen(path: &Path, passphrase: &str) -> String {
    let status = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-C",
            "kgenv-test",
            "-N",
            passphrase,
            "-f",
        ])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("ssh-keygen: {e}; {INSTALL_HINT}"));
    assert!(status.success(), "ssh-keygen failed for {}", path.display());
    std::fs::read_to_string(path.with_extension("pub"))
        .expect("public key written")
        .trim()
        .to_string()
}

fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().expect("id -un runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// PIDs of the live descendants of `root` (zombies excluded).
fn descendants(root: u32) -> Vec<u32> {
    let mut parent_of = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for e in entries.flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
                continue;
            };
            // `pid (comm) state ppid …`; comm may contain spaces and parentheses.
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
                continue;
            };
            let mut fields = rest.split_whitespace();
            let state = fields.next().unwrap_or("Z");
            let ppid = fields
                .next()
                .and_then(|p| p.parse::<u32>().ok())
                .unwrap_or(0);
            if state != "Z" {
                parent_of.push((pid, ppid));
            }
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(parent_of.iter().filter(|(_, pp)| *pp == p).map(|(c, _)| *c));
        i += 1;
    }
    found.remove(0);
    found
}

fn signal(sig: &str, pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .args(pids.iter().map(u32::to_string))
        .stderr(Stdio::null())
        .status();
}

impl Sshd {
    /// A started sshd with the default config.
    pub fn start_new() -> Self {
        Self::with_config(&[])
    }

    /// A started sshd with `extra` config lines appended.
    pub fn with_config(extra: &[&str]) -> Self {
        let mut s = Self::prepare(extra);
        s.start();
        s
    }

    /// Keys and config, not started yet (see [`Sshd::start`]).
    pub fn prepare(extra: &[&str]) -> Self {
        assert!(
            Path::new(SSHD).exists(),
            "{SSHD} is missing; {INSTALL_HINT}"
        );
        // sshd refuses to start as root without its privilege-separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        let dir = tempfile::tempdir().expect("tempdir");
        let host_key = dir.path().join("host_ed25519");
        let host_pub = keygen(&host_key, "");
        let client_key = dir.path().join("client_ed25519");
        let client_pub = keygen(&client_key, "");
        std::fs::write(
            dir.path().join("authorized_keys"),
            format!("{client_pub}\n"),
        )
        .expect("authorized_keys");
        let port = free_port();
        let d = dir.path().display();
        let mut config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_ed25519\nPidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\nPermitRootLogin prohibit-password\nStrictModes no\n\
             UsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
             AllowTcpForwarding yes\nAllowStreamLocalForwarding yes\nPrintMotd no\nLogLevel VERBOSE\n\
             SetEnv SHLVL=1\n"
        );
        for line in extra {
            config.push_str(line);
            config.push('\n');
        }
        let config_path = dir.path().join("sshd_config");
        std::fs::write(&config_path, config).expect("sshd_config");
        let log = dir.path().join("sshd.log");
        Self {
            port,
            host_pub,
            client_key,
            user: current_user(),
            config: config_path,
            log,
            child: None,
            dir,
        }
    }

    /// The temp dir of this sshd (keys, config, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Starts sshd (again) on its port and waits until it listens.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "sshd already running");
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("sshd log");
        let _ = writeln!(log, "---- kgenv test: starting sshd");
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {SSHD}: {e}; {INSTALL_HINT}"));
        self.child = Some(child);
        let marker = format!("Server listening on 127.0.0.1 port {}", self.port);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let text = self.log();
            let current = text
                .rsplit("---- kgenv test: starting sshd")
                .next()
                .unwrap_or("");
            if current.contains(&marker) {
                return;
            }
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    panic!("sshd exited ({status}) before listening:\n{text}");
                }
            }
            assert!(
                Instant::now() < deadline,
                "sshd did not listen within 15s:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills sshd and every connection it serves.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let root = child.id();
        signal("STOP", &[root]); // accept no new connection while the tree is killed
        for _ in 0..10 {
            let tree = descendants(root);
            if tree.is_empty() {
                break;
            }
            signal("KILL", &tree);
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Whether sshd is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Everything sshd logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many logins sshd accepted so far.
    pub fn accepted_logins(&self) -> usize {
        self.log().matches("Accepted publickey").count()
    }

    /// Authorizes another public key line.
    pub fn authorize(&self, public: &str) {
        let path = self.dir.path().join("authorized_keys");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .expect("authorized_keys");
        writeln!(f, "{public}").expect("append key");
    }

    /// How to reach it: its host key pinned, the authorized client key.
    pub fn addr(&self) -> HostAddr {
        HostAddr {
            user: self.user.clone(),
            host: "127.0.0.1".into(),
            port: self.port,
            identity_file: Some(self.client_key.clone()),
            pinned_host_keys: vec![self.host_pub.clone()],
            trust_on_first_use: false,
        }
    }

    /// A known_hosts path for the client side of a test (not created).
    pub fn client_known_hosts(&self) -> PathBuf {
        self.dir.path().join("client_known_hosts")
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.stop();
    }
}

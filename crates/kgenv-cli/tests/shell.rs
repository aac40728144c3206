//! `kgenv shell` on the local target, driven through a real pseudo-terminal (portable-pty:
//! kgenv gets it as its controlling terminal, as in a terminal emulator) against this
//! machine's Docker Engine and a container of a small locally built busybox image: typed
//! commands run and print, Ctrl-C reaches the container rather than kgenv, a resize of the
//! window is what `stty size` then says in the container, and `exit 3` makes kgenv exit 3.

mod support;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portable_pty::{native_pty_system, CommandBuilder, PtySize};
use support::{isolated, stderr, BIN};

/// How long one expected output may take (the container is local; this only bounds the wait).
const WITHIN: Duration = Duration::from_secs(20);

fn docker(args: &[&str]) -> std::process::Output {
    Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("the shell test needs the docker CLI and a running engine ({e}); scripts/setup/50-docker.sh installs both"))
}

/// A busybox image built from this machine's static busybox (no registry, no network).
fn busybox_image() -> String {
    let busybox_path =
        std::env::var("KGENV_TEST_BUSYBOX").unwrap_or_else(|_| "/bin/busybox".into());
    let busybox = std::fs::read(&busybox_path).unwrap_or_else(|e| {
        panic!("{busybox_path} is missing ({e}): install Debian's busybox-static (scripts/setup/50-docker.sh does)")
    });
    let tag = {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        busybox.hash(&mut h);
        format!("kgenv-test/shell:{:016x}", h.finish())
    };
    if docker(&["image", "inspect", &tag]).status.success() {
        return tag;
    }
    let dir = tempfile::tempdir().expect("build context");
    let binary = dir.path().join("busybox");
    std::fs::write(&binary, &busybox).expect("busybox");
    // COPY keeps the mode: executable, as in the image's /bin.
    std::fs::set_permissions(&binary, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    std::fs::write(
        dir.path().join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nENV PATH=/bin\nCMD [\"sh\"]\n",
    )
    .expect("Dockerfile");
    let built = docker(&["build", "-q", "-t", &tag, &dir.path().display().to_string()]);
    assert!(
        built.status.success(),
        "docker build: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    tag
}

/// A running container named as kgenv names the environment's, removed on drop.
struct Container(String);

impl Container {
    fn start(env_name: &str) -> Self {
        let name = format!("kgenv-{env_name}");
        let _ = docker(&["rm", "-f", &name]);
        let image = busybox_image();
        let run = docker(&["run", "-d", "--name", &name, &image, "sleep", "3600"]);
        assert!(
            run.status.success(),
            "docker run: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        Self(name)
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.0])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A local-target config for environment `name`.
fn config(dir: &Path, name: &str) -> String {
    let path = dir.join("kgenv.toml");
    std::fs::write(
        &path,
        format!("name = \"{name}\"\ntarget = \"local\"\n[image]\n[container]\ngpus = \"none\"\n"),
    )
    .expect("config");
    path.display().to_string()
}

/// What the terminal showed so far, filled by a reader thread.
#[derive(Clone, Default)]
struct Screen(Arc<Mutex<Vec<u8>>>);

impl Screen {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned()
    }
    /// Waits until the terminal has shown `needle` after byte `from`; the new end.
    fn wait_for(&self, needle: &str, from: usize, within: Duration) -> Option<usize> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let text = self.text();
            if let Some(i) = text.get(from..).and_then(|t| t.find(needle)) {
                return Some(from + i + needle.len());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

#[test]
fn shell_runs_commands_on_a_terminal_follows_resizes_and_passes_the_exit_status() {
    let home = tempfile::tempdir().expect("home");
    let env_name = format!("shtest-{}", std::process::id());
    let _container = Container::start(&env_name);
    let cfg = config(home.path(), &env_name);

    let pty = native_pty_system()
        .openpty(PtySize {
            rows: 24,
            cols: 80,
            pixel_width: 0,
            pixel_height: 0,
        })
        .expect("a pseudo-terminal");
    let mut cmd = CommandBuilder::new(BIN);
    cmd.args(["--config", &cfg, "shell"]);
    cmd.env("KGENV_HOME", home.path());
    cmd.env("TERM", "xterm");
    cmd.env("NO_COLOR", "1");
    for var in [
        "CLOUDSDK_CORE_PROJECT",
        "CLOUDSDK_COMPUTE_ZONE",
        "KGENV_CONFIG",
    ] {
        cmd.env_remove(var);
    }
    let mut child = pty.slave.spawn_command(cmd).expect("kgenv shell starts");
    drop(pty.slave);
    let screen = Screen::default();
    let mut reader = pty.master.try_clone_reader().expect("reader");
    let filled = screen.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            filled.0.lock().expect("lock").extend_from_slice(&buf[..n]);
        }
    });
    let mut keys = pty.master.take_writer().expect("writer");
    let mut send = |bytes: &[u8]| {
        keys.write_all(bytes).expect("type");
        keys.flush().expect("flush");
    };
    let shown = |what: &str| format!("{what}; the terminal showed:\n{}", screen.text());

    // A typed command runs in the container: only its output has `42` (the echo of the
    // typed line has `$((6*7))`).
    send(b"echo kg-$((6*7))-ok\r");
    let at = screen
        .wait_for("kg-42-ok", 0, WITHIN)
        .unwrap_or_else(|| panic!("{}", shown("no command output")));

    send(b"stty size\r");
    let at = screen
        .wait_for("24 80", at, WITHIN)
        .unwrap_or_else(|| panic!("{}", shown("the terminal starts at 24x80")));

    // Ctrl-C reaches the container's foreground program, not kgenv: the 60 s sleep ends at
    // once and the shell takes the next line.
    send(b"sh -c 'echo sl$((1))eeping; sleep 60'\r");
    let at = screen
        .wait_for("sl1eeping", at, WITHIN)
        .unwrap_or_else(|| panic!("{}", shown("the sleep did not start")));
    send(b"\x03");
    send(b"echo int-$((1+1))\r");
    let at = screen
        .wait_for("int-2", at, WITHIN)
        .unwrap_or_else(|| panic!("{}", shown("Ctrl-C did not interrupt the sleep")));

    // The window grows: kgenv gets SIGWINCH from its terminal and resizes the container's.
    pty.master
        .resize(PtySize {
            rows: 40,
            cols: 120,
            pixel_width: 0,
            pixel_height: 0,
        })
        .expect("resize");
    let deadline = Instant::now() + WITHIN;
    let mut at = at;
    loop {
        send(b"stty size\r");
        if let Some(end) = screen.wait_for("40 120", at, Duration::from_secs(1)) {
            at = end;
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{}",
            shown("the container's terminal never became 40x120")
        );
        at = screen.text().len();
    }
    let _ = at;

    // The shell's exit status is kgenv's.
    send(b"exit 3\r");
    let deadline = Instant::now() + WITHIN;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < deadline, "{}", shown("kgenv did not exit"));
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.exit_code(), 3, "{}", shown("exit 3"));
}

#[test]
fn shell_without_a_terminal_is_a_usage_error() {
    let home = tempfile::tempdir().expect("home");
    let cfg = config(home.path(), "shtest-noterm");
    let o = isolated(
        Command::new(BIN).args(["--config", &cfg, "shell"]),
        home.path(),
    )
    .stdin(Stdio::null())
    .output()
    .expect("kgenv runs");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("kgenv exec -- CMD"), "{}", stderr(&o));
}

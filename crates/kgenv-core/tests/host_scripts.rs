//! Every host script kgenv renders passes the system `shellcheck` (Debian's package), with
//! nasty values in every field; the scripts that are safe to run here run for real in a
//! sandbox: github-key writes into a temp host dir (modes, owner, known_hosts, an ssh config
//! that `ssh -G` resolves; re-run is a no-op), autostop with a recording `systemctl` stand-in,
//! and the pure shell functions (bucket mount state) with made-up inputs (the idle and
//! budget decisions have theirs in `autostop_agent.rs`).
//! Google's apt repository is unreachable here, so the gcsfuse install is tested by shape.

#[path = "support/peers.rs"]
mod peers;
use peers::shellcheck;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use kgenv_core::jupyter::supervisor_command;
use kgenv_core::mock::GITHUB_HOST_KEYS;
use kgenv_core::spec::BucketMount;
use kgenv_core::steps::autostop::{AutostopScript, BudgetLimit, JupyterProbe};
use kgenv_core::steps::bucket_mount::{fstab_escape, BucketScript, BUCKET_STATE_FN, CONFIG_FNS};
use kgenv_core::steps::disk_mount::{gcsfuse_cache_dir, DiskMountScript};
use kgenv_core::steps::github_key::GithubKeyScript;
use kgenv_core::steps::script::FSTAB_SET_FN;

const NASTY: &str = "it's \"x\" $(touch /tmp/kgenv-pwned) `id` \\ ; | & *";

fn run_script(text: &str, action: &str, path_prefix: Option<&Path>) -> Output {
    use std::io::Write;
    let mut cmd = Command::new("sh");
    cmd.args(["-s", "--", action])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(p) = path_prefix {
        cmd.env(
            "PATH",
            format!(
                "{}:{}",
                p.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        );
    }
    cmd.env_remove("SUDO_USER");
    let mut child = cmd.spawn().expect("sh");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write");
    child.wait_with_output().expect("sh runs")
}

fn github_script(root: &Path) -> GithubKeyScript {
    GithubKeyScript {
        key_dir: root
            .join("var lib/kgenv/env one/github")
            .display()
            .to_string(),
        title: NASTY.into(),
        ssh_host: "github.com".into(),
        host_keys: GITHUB_HOST_KEYS.iter().map(|k| k.to_string()).collect(),
        ssh_config: root
            .join("etc/ssh/ssh_config.d/kgenv-env-github.conf")
            .display()
            .to_string(),
    }
}

fn autostop_script(root: &Path, jupyter: bool) -> AutostopScript {
    AutostopScript {
        idle_minutes: Some(30),
        warn_minutes: 5,
        gpu_util_percent: 10,
        cpu_percent: 20,
        cpu_sample_seconds: 1,
        budget: jupyter.then(|| BudgetLimit {
            seconds: 36_000,
            set_for: "max_hours=10".into(),
        }),
        jupyter: jupyter.then(|| JupyterProbe {
            url: "https://127.0.0.1:8888/api/status".into(),
            kernels_url: "https://127.0.0.1:8888/api/kernels?no_track_activity=1".into(),
            cacert: Some(root.join("jupyter dir/cert.pem").display().to_string()),
            token_file: root.join("jupyter dir/agent-token").display().to_string(),
        }),
        container: jupyter.then(|| NASTY.into()),
        agent_path: root.join("usr local/sbin/kgenv-idle").display().to_string(),
        unit_dir: root.join("etc/systemd/system").display().to_string(),
        state_dir: root.join("var/lib/kgenv").display().to_string(),
        poweroff: "systemctl poweroff".into(),
        clock: "date +%s".into(),
        uptime_file: "/proc/uptime".into(),
        boot_id_file: "/proc/sys/kernel/random/boot_id".into(),
    }
}

fn bucket_script() -> BucketScript {
    let spec = BucketMount::builder("gs://my-bucket_1.data")
        .mount_point(format!("/mnt/{NASTY}"))
        .option("noatime")
        .gcsfuse("file-system.file-mode", "644")
        .build()
        .expect("spec");
    BucketScript::for_spec(&spec, &gcsfuse_cache_dir("/var/lib/kgenv/env"), 61_440)
}

fn disk_script(root: &Path) -> DiskMountScript {
    DiskMountScript {
        device: root.join(format!("dev/{NASTY}")).display().to_string(),
        data_root: root.join(format!("var lib/{NASTY}")).display().to_string(),
        fstab: root.join(format!("etc/{NASTY}")).display().to_string(),
        label: NASTY.into(),
        wait_secs: 7,
    }
}

#[test]
fn every_host_script_passes_shellcheck() {
    let root = Path::new("/tmp/kgenv test's root");
    shellcheck("bucket-mount", &bucket_script().render().text);
    shellcheck("github-key", &github_script(root).render().text);
    shellcheck("disk-mount", &disk_script(root).render().text);
    shellcheck(
        "autostop (with Jupyter)",
        &autostop_script(root, true).render().text,
    );
    shellcheck(
        "autostop (no Jupyter)",
        &autostop_script(root, false).render().text,
    );
    shellcheck(
        "kgenv-idle agent",
        &autostop_script(root, true).agent_text(),
    );
    shellcheck(
        "kgenv-idle agent (no Jupyter)",
        &autostop_script(root, false).agent_text(),
    );
    shellcheck(
        "container supervisor",
        &format!(
            "#!/bin/sh\n{}\n",
            supervisor_command("/etc/kgenv/jupyter dir's")
        ),
    );
}

#[test]
fn github_key_script_runs_in_a_sandbox() {
    let tmp = tempfile::tempdir().expect("tmp");
    let s = github_script(tmp.path());
    let script = s.render();
    assert_eq!(
        run_script(&script.text, "check", None).status.code(),
        Some(1),
        "not converged before apply"
    );
    let out = run_script(&script.text, "apply", None);
    assert!(
        out.status.success(),
        "apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !Path::new("/tmp/kgenv-pwned").exists(),
        "a value was interpreted by the shell"
    );

    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &str| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    let key = s.key_file();
    assert_eq!(mode(&key), 0o600);
    assert_eq!(mode(&s.key_dir), 0o700);
    let public = std::fs::read_to_string(format!("{key}.pub")).expect("pub");
    assert!(public.starts_with("ssh-ed25519 "), "{public}");
    assert_eq!(
        public.trim().splitn(3, ' ').nth(2),
        Some(NASTY),
        "the title is the key's comment, byte for byte"
    );
    let known = std::fs::read_to_string(format!("{}/known_hosts", s.key_dir)).expect("known_hosts");
    assert_eq!(known.trim(), s.known_hosts());
    assert!(known.lines().all(|l| l.starts_with("github.com ")));

    // OpenSSH itself resolves the stanza: the key, the pinned known_hosts, strict checking.
    let g = Command::new("ssh")
        .args(["-G", "-F", &s.ssh_config, "github.com"])
        .output()
        .expect("ssh -G (openssh-client)");
    let resolved = String::from_utf8_lossy(&g.stdout).to_lowercase();
    assert!(g.status.success(), "{}", String::from_utf8_lossy(&g.stderr));
    assert!(
        resolved.contains(&format!("identityfile {}", key.to_lowercase())),
        "{resolved}"
    );
    assert!(
        resolved.contains(&format!(
            "userknownhostsfile {}/known_hosts",
            s.key_dir.to_lowercase()
        )),
        "{resolved}"
    );
    assert!(
        resolved.contains("stricthostkeychecking true") && resolved.contains("user git"),
        "{resolved}"
    );
    let found = Command::new("ssh-keygen")
        .args([
            "-F",
            "github.com",
            "-f",
            &format!("{}/known_hosts", s.key_dir),
        ])
        .output()
        .expect("ssh-keygen -F");
    assert!(found.status.success(), "github.com is in known_hosts");

    assert_eq!(
        run_script(&script.text, "check", None).status.code(),
        Some(0),
        "converged after apply"
    );
    let again = run_script(&script.text, "apply", None);
    assert!(again.status.success());
    assert_eq!(
        std::fs::read_to_string(format!("{key}.pub")).expect("pub"),
        public,
        "re-run keeps the key"
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    assert_eq!(
        run_script(&script.text, "check", None).status.code(),
        Some(1),
        "a loosened key mode is drift"
    );
    assert!(run_script(&script.text, "apply", None).status.success());
    assert_eq!(mode(&key), 0o600, "apply tightens it again");

    // GitHub rotates its host keys: known_hosts differs, apply rewrites it.
    let rotated = GithubKeyScript {
        host_keys: vec![GITHUB_HOST_KEYS[0].to_string()],
        ..s.clone()
    }
    .render();
    assert_eq!(
        run_script(&rotated.text, "check", None).status.code(),
        Some(1)
    );
    assert!(run_script(&rotated.text, "apply", None).status.success());
    assert_eq!(
        std::fs::read_to_string(format!("{}/known_hosts", s.key_dir))
            .expect("kh")
            .lines()
            .count(),
        1
    );

    assert!(run_script(&script.text, "destroy", None).status.success());
    assert!(!Path::new(&key).exists() && !Path::new(&s.ssh_config).exists());
    assert_eq!(
        run_script(&script.text, "check", None).status.code(),
        Some(1)
    );
}

/// A `systemctl` stand-in recording its calls; `enable --now` and `disable --now` flip a
/// marker `is-enabled` / `is-active` answer from.
fn fake_systemctl(bin: &Path) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(bin).expect("bin");
    let log = bin.join("systemctl.log");
    let marker = bin.join("timer-on");
    let text = format!(
        "#!/bin/sh\nprintf '%s\\n' \"$*\" >> '{log}'\ncase \"$1\" in\n  enable) : > '{m}' ;;\n  disable) rm -f '{m}' ;;\n  is-enabled|is-active) [ -f '{m}' ] ;;\nesac\n",
        log = log.display(),
        m = marker.display()
    );
    let p = bin.join("systemctl");
    std::fs::write(&p, text).expect("write");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    log
}

#[test]
fn autostop_script_runs_with_a_systemctl_stand_in() {
    let tmp = tempfile::tempdir().expect("tmp");
    let bin = tmp.path().join("bin");
    let log = fake_systemctl(&bin);
    let s = autostop_script(tmp.path(), true);
    let script = s.render();
    assert_eq!(
        run_script(&script.text, "check", Some(&bin)).status.code(),
        Some(1)
    );
    let out = run_script(&script.text, "apply", Some(&bin));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&s.agent_path)
            .expect("agent")
            .permissions()
            .mode()
            & 0o777,
        0o755
    );
    assert_eq!(
        std::fs::read_to_string(&s.agent_path)
            .expect("agent")
            .trim_end(),
        s.agent_text()
    );
    assert!(
        std::fs::read_to_string(format!("{}/kgenv-idle.timer", s.unit_dir))
            .expect("timer")
            .contains("OnUnitActiveSec=1min")
    );
    let stamp: u64 = std::fs::read_to_string(format!("{}/idle-stamp", s.state_dir))
        .expect("stamp")
        .trim()
        .parse()
        .expect("epoch");
    assert!(stamp > 1_600_000_000, "apply re-arms the idle clock");
    assert_eq!(
        run_script(&script.text, "check", Some(&bin)).status.code(),
        Some(0),
        "converged"
    );
    // A different idle time is drift.
    let longer = AutostopScript {
        idle_minutes: Some(90),
        ..s.clone()
    }
    .render();
    assert_eq!(
        run_script(&longer.text, "check", Some(&bin)).status.code(),
        Some(1)
    );
    assert!(run_script(&script.text, "destroy", Some(&bin))
        .status
        .success());
    assert!(!Path::new(&s.agent_path).exists());
    assert_eq!(
        run_script(&script.text, "check", Some(&bin)).status.code(),
        Some(1)
    );
    let calls = std::fs::read_to_string(log).expect("log");
    assert!(
        calls.contains("enable --now kgenv-idle.timer")
            && calls.contains("disable --now kgenv-idle.timer")
            && calls.contains("daemon-reload"),
        "{calls}"
    );
}

fn bucket_state(table: &str, mp: &str, bucket: &str, dir: &Path) -> String {
    let tmp = tempfile::NamedTempFile::new().expect("tmp");
    std::fs::write(tmp.path(), table).expect("table");
    let line = format!("{BUCKET_STATE_FN}\nbucket_state \"$@\"\n");
    let out = Command::new("sh")
        .args([
            "-c",
            &line,
            "sh",
            &tmp.path().display().to_string(),
            &fstab_escape(mp),
            bucket,
            &dir.display().to_string(),
        ])
        .output()
        .expect("sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn bucket_check_tells_healthy_from_stale() {
    let tmp = tempfile::tempdir().expect("tmp");
    let healthy = tmp.path().join("a dir");
    std::fs::create_dir_all(&healthy).expect("dir");
    let gone = tmp.path().join("endpoint not connected");
    let mp = "/mnt/my data";
    let table = format!("proc /proc proc rw 0 0\nmy-bucket {} fuse.gcsfuse rw,nosuid,nodev,relatime,user_id=0 0 0\n", fstab_escape(mp));
    assert_eq!(
        bucket_state(&table, mp, "my-bucket", &healthy),
        "ok",
        "mounted and listing"
    );
    assert_eq!(
        bucket_state(&table, mp, "my-bucket", &gone),
        "stale",
        "mounted but listing fails"
    );
    assert_eq!(
        bucket_state("proc /proc proc rw 0 0\n", mp, "my-bucket", &healthy),
        "missing"
    );
    assert_eq!(
        bucket_state(&table, "/mnt/my", "my-bucket", &healthy),
        "missing",
        "a prefix is not the mount point"
    );
    assert_eq!(
        bucket_state(&table, mp, "other-bucket", &healthy),
        "other my-bucket fuse.gcsfuse"
    );
    let tmpfs = format!("tmpfs {} tmpfs rw 0 0\n", fstab_escape(mp));
    assert_eq!(
        bucket_state(&tmpfs, mp, "my-bucket", &healthy),
        "other tmpfs tmpfs"
    );
}

#[test]
fn gcsfuse_install_and_fstab_shape() {
    // Google's apt repository is unreachable from the test machine: the install is checked
    // by shape (signed-by keyring, no apt-key, per-codename repository).
    let s = bucket_script();
    let text = s.render().text;
    assert!(
        text.contains(
            "deb [signed-by=$KEYRING] https://packages.cloud.google.com/apt gcsfuse-$codename main"
        ),
        "{text}"
    );
    assert!(text.contains("KEYRING=/usr/share/keyrings/cloud.google.asc"));
    assert!(!text.contains("apt-key add"), "apt-key is deprecated");
    let line = s.fstab_line();
    assert!(line.starts_with("my-bucket_1.data /mnt/it"), "{line}");
    assert!(
        line.contains("\\040")
            && !line["my-bucket_1.data ".len()..]
                .split(" gcsfuse ")
                .next()
                .expect("mp")
                .contains(' '),
        "spaces escaped: {line}"
    );
    let opts: Vec<&str> = line
        .rsplit_once(" gcsfuse ")
        .expect("type")
        .1
        .trim_end_matches(" 0 0")
        .split(',')
        .collect();
    assert_eq!(
        opts,
        [
            "rw",
            "_netdev",
            "allow_other",
            "x-systemd.requires-mounts-for=/var/lib/kgenv/env/gcsfuse-cache",
            &format!("config_file={}", s.config_path),
            "noatime",
        ],
        "mount(8) options only; gcsfuse's settings are in the config file"
    );
    assert!(s
        .config_path
        .starts_with("/etc/kgenv/gcsfuse-my-bucket_1.data-"));
    assert!(line.ends_with(" 0 0"));
}

#[test]
fn the_gcsfuse_config_turns_the_file_cache_on_under_the_data_root() {
    let s = bucket_script();
    let text = s.config_text();
    assert!(text.starts_with("# "), "a YAML comment first: {text}");
    // The rest is JSON, which YAML 1.2 reads as it is.
    let body = text.split_once('\n').expect("two parts").1;
    let config: serde_json::Value = serde_json::from_str(body).expect("JSON (so YAML)");
    assert_eq!(config["cache-dir"], "/var/lib/kgenv/env/gcsfuse-cache");
    // `cache-dir` alone leaves gcsfuse's file cache off: the size turns it on.
    assert_eq!(config["file-cache"]["max-size-mb"], 61_440);
    assert_eq!(config["file-cache"]["enable-parallel-downloads"], true);
    assert_eq!(config["file-cache"]["cache-file-for-range-read"], true);
    assert_eq!(config["metadata-cache"]["ttl-secs"], 300);
    assert_eq!(config["implicit-dirs"], true);
    assert_eq!(config["file-system"]["dir-mode"], "775");
    assert_eq!(
        config["file-system"]["file-mode"], "644",
        "the user's option wins over kgenv's 664"
    );
    // The script writes exactly that text and checks it back.
    let script = s.render().text;
    assert!(
        script.contains("CONFIG_FILE=/etc/kgenv/gcsfuse-my-bucket_1.data-"),
        "{script}"
    );
    assert!(script.contains("if ! config_current; then echo missing; exit 1; fi"));
}

#[test]
fn the_config_file_is_written_atomically_and_read_back_the_same() {
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("etc kgenv/gcsfuse.yaml");
    let text = bucket_script().config_text();
    let run = |f: &str| {
        Command::new("sh")
            .args([
                "-c",
                &format!(
                    "set -eu\n{}\n{CONFIG_FNS}\n{f}",
                    kgenv_core::steps::script::FILE_PUT_FN
                ),
                "sh",
            ])
            .env("CONFIG_FILE", &file)
            .env("CONFIG_TEXT", &text)
            .output()
            .expect("sh")
    };
    assert!(!run("config_current").status.success(), "no file yet");
    let out = run("config_write");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(&file).expect("written"),
        format!("{text}\n")
    );
    assert!(run("config_current").status.success());
    std::fs::write(&file, "stale").expect("edit");
    assert!(
        !run("config_current").status.success(),
        "a changed file is noticed"
    );
    let leftovers: Vec<_> = std::fs::read_dir(file.parent().expect("dir"))
        .expect("dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .filter(|n| n.to_string_lossy().starts_with(".gcsfuse"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Runs `fstab_set ARGS` on its own against `fstab`.
fn fstab_set(fstab: &Path, mp: &str, fs_type: &str, line: &str) -> Output {
    let text = format!("{FSTAB_SET_FN}\nfstab_set \"$@\"\n");
    Command::new("sh")
        .args(["-c", &text, "sh"])
        .arg(fstab)
        .args([&fstab_escape(mp), fs_type, line])
        .output()
        .expect("sh")
}

#[test]
fn fstab_set_replaces_only_the_entries_it_names() {
    let tmp = tempfile::tempdir().expect("tmp");
    let fstab = tmp.path().join("fstab");
    let old = "# comment /mnt/my\\040data gcsfuse\nproc /proc proc defaults 0 0\nold-bucket /mnt/my\\040data gcsfuse rw 0 0\n/dev/sdb1 /mnt/my\\040data ext4 defaults 0 2\n\n";
    std::fs::write(&fstab, old).expect("fstab");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fstab, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    let line = "new-bucket /mnt/my\\040data gcsfuse rw,_netdev 0 0";
    let out = fstab_set(&fstab, "/mnt/my data", "gcsfuse", line);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&fstab).expect("fstab"),
        format!("# comment /mnt/my\\040data gcsfuse\nproc /proc proc defaults 0 0\n/dev/sdb1 /mnt/my\\040data ext4 defaults 0 2\n\n{line}\n"),
        "only the gcsfuse entry for that mount point went; comments, blanks and the rest kept"
    );
    assert_eq!(
        std::fs::metadata(&fstab)
            .expect("stat")
            .permissions()
            .mode()
            & 0o777,
        0o640,
        "mode kept"
    );
    // Any type, and no new line: every entry for the mount point goes.
    let out = fstab_set(&fstab, "/mnt/my data", "", "");
    assert!(out.status.success());
    assert_eq!(
        std::fs::read_to_string(&fstab).expect("fstab"),
        "# comment /mnt/my\\040data gcsfuse\nproc /proc proc defaults 0 0\n\n"
    );
    let names: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    assert_eq!(names.len(), 1, "no temp file left: {names:?}");
}

/// A tmpfs of `kib` KiB mounted on a temp dir, unmounted on drop: a file system that fills
/// up for real.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    fn new(kib: u32) -> Self {
        let dir = tempfile::tempdir().expect("tmp");
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={kib}k,mode=0755"),
                "kgenv-test",
            ])
            .arg(dir.path())
            .output()
            .expect("mount runs");
        assert!(
            out.status.success(),
            "mounting a tmpfs (the tests run as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the file system to the last block (the filler file stays).
    fn fill(&self) {
        let out = Command::new("dd")
            .args(["if=/dev/zero", "bs=4096"])
            .arg(format!("of={}", self.path().join("filler").display()))
            .output()
            .expect("dd runs");
        assert!(
            !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("No space"),
            "dd stopped on a full file system: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// Files in `dir` other than `keep`.
fn others(dir: &Path, keep: &[&str]) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !keep.contains(&n.as_str()))
        .collect()
}

#[test]
fn system_files_survive_a_full_file_system() {
    use kgenv_core::steps::script::FILE_PUT_FN;
    let fs = SmallFs::new(64);
    let fstab = fs.path().join("fstab");
    let old_fstab = "proc /proc proc defaults 0 0\nUUID=1234 /data ext4 defaults,nofail 0 2\n";
    std::fs::write(&fstab, old_fstab).expect("fstab");
    let unit = fs.path().join("kgenv-idle.service");
    std::fs::write(&unit, "[Unit]\nDescription=old\n").expect("unit");
    fs.fill();
    // A new fstab line far longer than anything left: the write fails, the old file stays.
    let long = format!("bucket /mnt/b gcsfuse rw,{} 0 0", "x".repeat(16 * 1024));
    let out = fstab_set(&fstab, "/mnt/b", "gcsfuse", &long);
    assert!(!out.status.success(), "fstab_set reports the failed write");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is unchanged"),
        "and says the file is unchanged: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read_to_string(&fstab).expect("fstab"), old_fstab);
    let put = |path: &Path, text: &str| {
        Command::new("sh")
            .args(["-c", &format!("{FILE_PUT_FN}\nfile_put \"$@\"\n"), "sh"])
            .arg(path)
            .args(["0644", text])
            .output()
            .expect("sh")
    };
    let out = put(&unit, &"y".repeat(16 * 1024));
    assert!(!out.status.success(), "file_put reports the failed write");
    assert_eq!(
        std::fs::read_to_string(&unit).expect("unit"),
        "[Unit]\nDescription=old\n"
    );
    assert!(
        others(fs.path(), &["fstab", "kgenv-idle.service", "filler"]).is_empty(),
        "no temp file left: {:?}",
        others(fs.path(), &[])
    );
    // With room again, the same calls go through, and a second one changes nothing.
    std::fs::remove_file(fs.path().join("filler")).expect("rm filler");
    let out = put(&unit, "[Unit]\nDescription=new");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&unit).expect("unit"),
        "[Unit]\nDescription=new\n"
    );
    let before = std::fs::metadata(&unit).and_then(|m| m.modified()).ok();
    let again = put(&unit, "[Unit]\nDescription=new");
    assert!(again.status.success());
    assert_eq!(
        std::fs::metadata(&unit).and_then(|m| m.modified()).ok(),
        before,
        "an unchanged file is not rewritten"
    );
}

/// A child holding dpkg's locks (POSIX record locks, as apt and dpkg take them) until it is
/// killed; returns once it holds them.
struct DpkgLockHolder(std::process::Child);

impl DpkgLockHolder {
    fn hold(secs: u32) -> Self {
        use std::io::BufRead;
        let mut child = Command::new("python3")
            .args([
                "-c",
                "import fcntl, sys, time\n\
                 fs = [open(p, 'a') for p in ('/var/lib/dpkg/lock-frontend', '/var/lib/dpkg/lock')]\n\
                 [fcntl.lockf(f, fcntl.LOCK_EX) for f in fs]\n\
                 print('locked', flush=True)\n\
                 time.sleep(float(sys.argv[1]))\n",
                &secs.to_string(),
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the holder reports");
        assert_eq!(line.trim(), "locked", "the holder got dpkg's locks");
        Self(child)
    }

    fn running(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }
}

impl Drop for DpkgLockHolder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn apt_get_waits_for_the_dpkg_lock_instead_of_failing() {
    use kgenv_core::steps::script::APT_GET_FN;
    shellcheck(
        "apt_get",
        &format!("{APT_GET_FN}\napt_get install -y sudo\n"),
    );
    // `sudo` is installed here: installing it again takes the lock and changes nothing.
    let mut holder = DpkgLockHolder::hold(4);
    let plain = Command::new("apt-get")
        .args(["install", "-y", "-q", "sudo"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .expect("apt-get runs");
    assert!(
        !plain.status.success() && String::from_utf8_lossy(&plain.stderr).contains("lock"),
        "a plain apt-get fails at once while the lock is held: {}",
        String::from_utf8_lossy(&plain.stderr)
    );
    assert!(
        holder.running(),
        "the lock was still held when apt-get failed"
    );
    let waited = Command::new("sh")
        .args(["-c", &format!("{APT_GET_FN}\napt_get install -y sudo\n")])
        .output()
        .expect("sh runs");
    assert!(
        waited.status.success(),
        "kgenv's apt_get waited for the lock: {}",
        String::from_utf8_lossy(&waited.stderr)
    );
    assert!(
        !holder.running(),
        "apt_get finished only after the holder let the lock go"
    );
}

#[test]
fn first_boot_probe_sees_the_installer_and_the_dpkg_lock() {
    use kgenv_core::steps::host::first_boot::{parse, Busy, PROBE};
    shellcheck("first-boot probe", PROBE);
    let probe = || {
        let out = Command::new("sh")
            .args(["-c", PROBE])
            .output()
            .expect("sh runs the probe");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        parse(&String::from_utf8_lossy(&out.stdout))
    };
    assert!(
        !probe().iter().any(|b| matches!(b, Busy::Installer { .. })),
        "no installer runs yet (the probe does not see itself): {:?}",
        probe()
    );
    let mut installer = Command::new("bash")
        .args(["-c", "exec -a /opt/deeplearning/install-driver.sh sleep 60"])
        .spawn()
        .expect("a stand-in installer");
    let holder = DpkgLockHolder::hold(60);
    let busy = probe();
    let _ = installer.kill();
    let _ = installer.wait();
    let holder_pid = holder.0.id();
    assert!(
        busy.iter()
            .any(|b| matches!(b, Busy::Installer { pid, command }
            if *pid == installer.id() && command.contains("install-driver.sh"))),
        "the installer is seen: {busy:?}"
    );
    assert!(
        busy.iter()
            .any(|b| matches!(b, Busy::PackageManager { pid, .. } if *pid == holder_pid)),
        "the lock holder is seen: {busy:?}"
    );
    assert!(
        matches!(busy[0], Busy::Installer { .. }),
        "the installer comes first"
    );
    drop(holder);
    assert!(
        !probe()
            .iter()
            .any(|b| matches!(b, Busy::PackageManager { pid, .. } if *pid == holder_pid)),
        "the lock is free again"
    );
}

//! End to end on a real host (issue 9): the `kgenv` binary against a real OpenSSH sshd on
//! 127.0.0.1 with this machine's Docker Engine behind it, and the stand-in Kaggle image
//! (Debian rootfs + jupyter_server) from `scripts/setup/80-e2e.sh`.
//!
//! `up` runs host → image (extras built on the local base, offline) → container → GPU
//! check → Jupyter (password, self-signed TLS); `kgenv jupyter` opens the SSH tunnel and an
//! HTTPS client that trusts only kgenv's certificate logs in with the password and lists a
//! file through the contents API. A second `up` changes nothing; `down` removes the
//! container and the ssh config entry and keeps the data. Then: `up` SIGKILLed at several
//! points, each followed by an `up` that converges and a `down` that leaves nothing.
//!
//! The main scenario also has a `[[data]]` section: a competition served by the Kaggle fake
//! (`kgenv-core/tests/support/kaggle_fake.rs`) on 127.0.0.1. On the ssh target the data step
//! runs on the host — kgenv copies itself there over SSH and runs `kgenv data agent` — and
//! the file lands in `<host dir>/input/<competition>`, which the container mounts at
//! `/kaggle/input`: Jupyter lists it through the tunnel, the second `up` downloads nothing,
//! and `down` keeps it.

mod e2e_support;

#[path = "../../kgenv-core/tests/support/kaggle_fake.rs"]
mod kaggle_fake;

use std::sync::atomic::Ordering;
use std::time::Instant;

use kaggle_fake::{sha256_file, FakeAuth, FakeKaggle};

use e2e_support::{
    as_login_user, assert_noop, docker, login_and_list, owner_and_mode, serial, E2e, FirstBoot,
};

/// The competition the Kaggle fake serves to the main scenario.
const COMPETITION: &str = "e2e-titanic";
/// The Kaggle API token the fake accepts.
const KAGGLE_TOKEN: &str = "e2e-kaggle-token-5c7e";

/// Removes the extras images built on the e2e base image (only those: other tests' images
/// are left alone), so the next `up` builds the extras layer again.
fn remove_extras_images() {
    let base = e2e_support::base_image();
    let label = format!("label=kgenv.base={base}");
    for id in docker(&["images", "--quiet", "--filter", &label]).lines() {
        let _ = docker(&["rmi", "-f", id]);
    }
}

#[test]
fn ssh_target_up_login_noop_down() {
    let _serial = serial();
    let mut e = E2e::ssh("s");
    // Build the extras layer every run (the base stays cached): the image step is tested,
    // not a leftover.
    remove_extras_images();

    // The Kaggle fake, serving one small file of one competition to a bearer token; kgenv
    // finds it through the variables the Kaggle client reads.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime for the Kaggle fake");
    let fake = rt.block_on(FakeKaggle::start(FakeAuth::Token(KAGGLE_TOKEN.into())));
    let source = e.dir.path().join("kaggle-src/train.csv");
    std::fs::create_dir_all(source.parent().expect("parent")).expect("fake's source dir");
    std::fs::write(&source, "PassengerId,Survived\n1,0\n2,1\n3,1\n").expect("fake's file");
    let served = fake.add_file(COMPETITION, "train.csv", &source);
    let mut config = std::fs::read_to_string(&e.config).expect("kgenv.toml");
    config.push_str(&format!("\n[[data]]\ncompetition = \"{COMPETITION}\"\n"));
    std::fs::write(&e.config, config).expect("kgenv.toml with [[data]]");
    e.env.extend([
        ("KGENV_KAGGLE_ENDPOINT".to_string(), fake.endpoint()),
        ("KAGGLE_API_TOKEN".to_string(), KAGGLE_TOKEN.to_string()),
    ]);
    let data_step = format!("data/{COMPETITION}");
    let pulled = e
        .host_dir()
        .join("input")
        .join(COMPETITION)
        .join("train.csv");

    // The host is a fresh VM at first boot: the driver installer holds dpkg's lock, then
    // restarts dockerd. `up` must wait it out, not fail on it or race the restart.
    let first_boot = FirstBoot::start(std::time::Duration::from_secs(12));
    let t0 = Instant::now();
    let up = e.run(&["up"]);
    up.expect_ok("first kgenv up");
    let boot = first_boot.finish();
    e2e_support::assert_waited_out_first_boot(&up, &boot, &e.container());
    for step in ["host", "image", "container", "jupyter", data_step.as_str()] {
        assert_eq!(
            up.outcome(step).as_deref(),
            Some("changed"),
            "step {step} changed on the first up\n{}",
            up.diagnosis()
        );
    }
    // `gpus = "all"` on a host without GPU: the container runs on CPU and the GPU check
    // probes it and says so plainly — a warning, not a failure (no GPU was required).
    assert_eq!(
        up.outcome("gpu").as_deref(),
        Some("satisfied"),
        "{}",
        up.diagnosis()
    );
    let gpu = up.messages("gpu").join("\n");
    assert!(
        gpu.contains("no GPU visible") && gpu.contains("runs on CPU"),
        "the GPU check reports no GPU plainly: {gpu:?}"
    );
    // The extras really went in, offline, with apt and pip.
    let id = e.container_id().expect("the container exists after up");
    let probe = docker(&[
        "exec",
        &e.container(),
        "sh",
        "-c",
        "command -v tree && python3 -c 'import tabulate; print(tabulate.__version__)'",
    ]);
    assert!(
        probe.contains("/usr/bin/tree") && probe.contains("0.9.0"),
        "apt `tree` and pip `tabulate` are installed in the container: {probe:?}"
    );
    // A file in the notebook directory, as a user's work would be.
    let working = e.host_dir().join("working");
    // Non-root host: working/ and the pulled data are the login user's, writable by that
    // user (over SSH, without sudo) and by the container; what kgenv put in the user's home
    // (the data agent) belongs to the user.
    let login = kgenv_core::keys::GCE_USER;
    assert_eq!(
        owner_and_mode(&working).0,
        login,
        "working/ is the login user's"
    );
    assert!(
        as_login_user(&format!("touch '{}/by-login-user'", working.display())),
        "the login user can write into working/"
    );
    let in_container = docker(&[
        "exec",
        &e.container(),
        "sh",
        "-c",
        "touch /kaggle/working/by-container && echo ok",
    ]);
    assert_eq!(
        in_container, "ok",
        "the container can write into /kaggle/working"
    );
    let cache = format!("/home/{login}/.cache/kgenv");
    let not_ours = std::process::Command::new("find")
        .args([cache.as_str(), "!", "-user", login])
        .output()
        .expect("find runs");
    assert!(
        not_ours.status.success() && not_ours.stdout.is_empty(),
        "everything kgenv left in {cache} is the login user's: {}",
        String::from_utf8_lossy(&not_ours.stdout)
    );
    std::fs::write(working.join("train.csv"), "id,label\n1,0\n").expect("write into working/");
    login_and_list(&e, "working", "train.csv");
    eprintln!(
        "e2e: up to logged-in Jupyter in {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    // The data step pulled the competition's file, byte for byte, into the directory the
    // container mounts, and Jupyter (root `/kaggle`) lists it under `input/`.
    assert!(
        pulled.exists(),
        "the data step put {} on the host\n{}",
        pulled.display(),
        up.diagnosis()
    );
    assert_eq!(
        sha256_file(&pulled),
        sha256_file(&served.path),
        "the pulled file has the served bytes"
    );
    assert_eq!(
        owner_and_mode(&pulled).0,
        login,
        "the data agent ran as the login user"
    );
    login_and_list(&e, &format!("input/{COMPETITION}"), "train.csv");
    let signed_urls = fake.state.signed_urls.load(Ordering::SeqCst);
    let bytes_served = fake.served();
    assert!(
        signed_urls >= 1 && bytes_served >= served.size,
        "the first up downloaded from the fake ({signed_urls} URLs, {bytes_served} bytes)"
    );
    let data_mtime = std::fs::metadata(&pulled).and_then(|m| m.modified()).ok();

    // The Host block is in the temp HOME's ssh config.
    let include =
        std::fs::read_to_string(e.home().join(".ssh/config")).expect("~/.ssh/config written");
    let kgenv_ssh = e.kgenv_home().join("config/ssh_config");
    assert!(
        include.contains("Include"),
        "~/.ssh/config includes kgenv's file: {include}"
    );
    let block = std::fs::read_to_string(&kgenv_ssh).expect("kgenv ssh_config");
    assert!(
        block.contains(&format!("Host {}", e.name)),
        "Host block: {block}"
    );

    // Second up: nothing changes — no apply, same container, no file rewritten.
    let config_file = e.host_dir().join("jupyter/jupyter_server_config.json");
    let mtime = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let (config_before, state_before) = (mtime(&config_file), mtime(&e.state_file()));
    assert!(
        config_before.is_some(),
        "Jupyter config at {}",
        config_file.display()
    );
    let again = e.run(&["up"]);
    again.expect_ok("second kgenv up");
    assert_noop(&again, "second up");
    assert_eq!(
        e.container_id(),
        Some(id),
        "the container was not recreated"
    );
    assert_eq!(
        mtime(&config_file),
        config_before,
        "the Jupyter config was not rewritten"
    );
    assert_eq!(
        mtime(&e.state_file()),
        state_before,
        "the state file was not rewritten"
    );
    assert_eq!(
        (fake.state.signed_urls.load(Ordering::SeqCst), fake.served()),
        (signed_urls, bytes_served),
        "the second up downloaded nothing: the data step is satisfied"
    );
    assert_eq!(
        mtime(&pulled),
        data_mtime,
        "the pulled file was not rewritten"
    );

    // down: container and ssh entry gone, data kept.
    let down = e.run(&["down", "--yes"]);
    down.expect_ok("kgenv down");
    assert!(e.container_id().is_none(), "down removed the container");
    assert!(
        e.labelled_containers().is_empty(),
        "no container of the env is left"
    );
    let block = std::fs::read_to_string(&kgenv_ssh).unwrap_or_default();
    assert!(
        !block.contains(&format!("Host {}", e.name)),
        "down removed the Host block: {block}"
    );
    assert!(
        working.join("train.csv").exists(),
        "down keeps the user's data in {}",
        working.display()
    );
    assert_eq!(
        std::fs::read(&pulled).ok(),
        std::fs::read(&served.path).ok(),
        "down keeps the competition data in {}",
        pulled.display()
    );
    // A second down finds nothing of kgenv's: every step reports nothing to remove (each
    // still looks: its destroy phase starts and ends with "nothing"), and the kept data
    // is untouched.
    let after = e.run(&["down", "--yes"]);
    after.expect_ok("second kgenv down");
    let outcomes = after.outcomes();
    assert!(
        !outcomes.is_empty() && outcomes.iter().all(|(_, o)| o == "nothing"),
        "second down: every step has nothing to remove: {outcomes:?}\n{}",
        after.diagnosis()
    );
    assert!(e.labelled_containers().is_empty());
    assert_eq!(
        mtime(&pulled),
        data_mtime,
        "the second down left the pulled file alone"
    );
    assert!(working.join("train.csv").exists());
}

/// Files in `dir` (recursively) whose name looks like a temp file of an atomic write.
fn temp_files(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(temp_files(&p));
        } else if e.file_name().to_string_lossy().contains(".kgenv-tmp-")
            || e.file_name().to_string_lossy().starts_with(".tmp")
        {
            out.push(p.display().to_string());
        }
    }
    out
}

/// After a `down`: nothing of kgenv's is left — no container, no state file, no Host block,
/// no temp file of an interrupted write.
fn assert_nothing_left(e: &E2e, when: &str) {
    assert!(
        e.labelled_containers().is_empty(),
        "{when}: containers left: {:?}",
        e.labelled_containers()
    );
    assert!(
        !e.state_file().exists(),
        "{when}: the state file is left after down"
    );
    let block =
        std::fs::read_to_string(e.kgenv_home().join("config/ssh_config")).unwrap_or_default();
    assert!(
        !block.contains(&format!("Host {}", e.name)),
        "{when}: Host block left: {block}"
    );
    let temps = temp_files(&e.kgenv_home());
    assert!(
        temps.is_empty(),
        "{when}: half-written files left: {temps:?}"
    );
}

/// Whether `ev` is `event` of `step` (in `phase`, when given).
fn is(ev: &serde_json::Value, step: &str, event: &str, phase: Option<&str>) -> bool {
    ev["step"] == step && ev["event"] == event && phase.is_none_or(|p| ev["phase"] == p)
}

/// Whether `ev` says `step` is finished: found satisfied, or its apply done.
fn finished(ev: &serde_json::Value, step: &str) -> bool {
    is(ev, step, "satisfied", None) || is(ev, step, "done", Some("apply"))
}

/// A named point of `up` to SIGKILL it at.
struct KillPoint {
    /// What the point is, for messages.
    name: &'static str,
    /// The extras image is removed first, so the image step builds.
    rebuild: bool,
    /// The event line right after which the kill comes.
    at: fn(&serde_json::Value) -> bool,
    /// What must have been printed before the kill (`up` reached it)...
    after: fn(&serde_json::Value) -> bool,
    /// ...and what must not (`up` had not reached it when it died).
    before: fn(&serde_json::Value) -> bool,
}

/// The ssh target's kill points, in the order `up` reaches them. Each names an event of a
/// step, so the set stays the same however many lines a run prints; every one is reached on
/// each run after a `down` (the container is always created again), and none is the last
/// line before the result, where the process could be gone before the kill.
const KILL_POINTS: &[KillPoint] = &[
    KillPoint {
        name: "image build, after its first log line",
        rebuild: true,
        at: |ev| is(ev, "image", "log", None),
        after: |ev| is(ev, "image", "started", Some("apply")),
        before: |ev| finished(ev, "image") || is(ev, "container", "started", Some("apply")),
    },
    KillPoint {
        name: "host check started",
        rebuild: false,
        at: |ev| is(ev, "host", "started", Some("check")),
        after: |ev| is(ev, "host", "started", Some("check")),
        before: |ev| finished(ev, "host"),
    },
    KillPoint {
        name: "host finished",
        rebuild: false,
        at: |ev| finished(ev, "host"),
        after: |ev| finished(ev, "host"),
        // Not "before the container's apply starts": that follows the host's end within a
        // few milliseconds, a window a loaded machine's scheduler can miss. Creating and
        // starting the container takes engine round trips through the tunnel.
        before: |ev| finished(ev, "container"),
    },
    KillPoint {
        name: "container create started",
        rebuild: false,
        at: |ev| is(ev, "container", "started", Some("apply")),
        after: |ev| finished(ev, "image"),
        before: |ev| finished(ev, "container"),
    },
    KillPoint {
        name: "container created",
        rebuild: false,
        at: |ev| is(ev, "container", "done", Some("apply")),
        after: |ev| is(ev, "container", "done", Some("apply")),
        before: |ev| finished(ev, "gpu"),
    },
    KillPoint {
        name: "GPU probe started",
        rebuild: false,
        at: |ev| is(ev, "gpu", "started", Some("check")),
        after: |ev| is(ev, "container", "done", Some("apply")),
        before: |ev| finished(ev, "gpu"),
    },
];

/// `up` SIGKILLed at each of [`KILL_POINTS`]; each kill is checked to have come at its
/// point while `up` still ran, and is followed by a plain `up` that converges (exactly one
/// container), a second `up` that changes nothing and a `down` that leaves nothing.
#[test]
fn ssh_target_survives_sigkill_during_up() {
    let _serial = serial();
    let e = E2e::ssh("k");
    for point in KILL_POINTS {
        if point.rebuild {
            remove_extras_images();
        }
        let killed = e.up_killed_at_event(point.name, point.at);
        let when = format!(
            "kill at `{}` (reached {}, {} events printed)",
            point.name,
            killed.reached,
            killed.events.len()
        );
        eprintln!("e2e crash: {when}");
        assert!(
            killed.events.iter().any(point.after),
            "{when}: up had not yet reached what the point comes after: {:?}",
            killed.events
        );
        let early: Vec<_> = killed
            .events
            .iter()
            .filter(|ev| (point.before)(ev))
            .collect();
        assert!(
            early.is_empty(),
            "{when}: up had gone past the point before it died: {early:?}"
        );
        let up = e.run(&["up"]);
        up.expect_ok(&format!("up after {when}"));
        let failed: Vec<_> = up
            .outcomes()
            .into_iter()
            .filter(|(_, o)| o != "changed" && o != "satisfied")
            .collect();
        assert!(failed.is_empty(), "{when}: {failed:?}");
        assert_eq!(
            e.labelled_containers(),
            vec![e.container()],
            "{when}: exactly one container"
        );
        let noop = e.run(&["up"]);
        noop.expect_ok(&format!("second up after {when}"));
        assert_noop(&noop, &format!("second up after {when}"));
        e.run(&["down", "--yes"])
            .expect_ok(&format!("down after {when}"));
        assert_nothing_left(&e, &when);
    }
}

/// The competition of the data kill scenario.
const BIG_COMPETITION: &str = "e2e-bigdata";
/// Its one file: four of the downloader's 8 MiB chunks, one stream each.
const BIG_SIZE: u64 = 32 << 20;
/// The fake's rate per response while a kill is due (about 8 s a chunk): the write is in
/// progress for seconds, and the agent could not finish it in the time it has to stop.
const BIG_THROTTLE: u64 = 1 << 20;
/// Bytes written on the host at which the kill comes.
const KILL_AT: u64 = 2 << 20;

/// Bytes `path` holds on disk: its allocated blocks (a partial download is made at its full
/// length, sparse, so its length says nothing of what was written). 0 when it is missing.
fn written(path: &std::path::Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .map(|m| (m.blocks() * 512).min(m.len()))
        .unwrap_or(0)
}

/// `(pid, command line)` of every process on this machine (the host) with a file under
/// `dir` open, from `/proc/*/fd` (the tests run as root and see every user's processes).
fn holders(dir: &std::path::Path) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        let open = fds
            .flatten()
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .any(|t| t.starts_with(dir));
        if open {
            let cmdline = std::fs::read(p.path().join("cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            out.push((pid, cmdline.trim().to_string()));
        }
    }
    out
}

/// Whether `cmdline` is kgenv's data agent (the copy in the login user's cache).
fn is_agent(cmdline: &str) -> bool {
    cmdline.contains("/.cache/kgenv/bin/kgenv-") && cmdline.ends_with("data agent")
}

/// Waits, up to `limit`, for `done`; whether it came.
fn wait_for(limit: std::time::Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !done() {
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    true
}

/// Files under `dir` that an unfinished download leaves: the partial file, its record and
/// its lock.
fn download_leftovers(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if e.path().is_dir() {
            out.extend(download_leftovers(&e.path()));
        } else if name.contains(".kgenv-partial") || name.contains(".kgenv-tmp-") {
            out.push(e.path().display().to_string());
        }
    }
    out
}

/// SIGKILLs during the remote data agent's write (issue 18): the `[[data]]` file is being
/// written on the host (the partial file has `KILL_AT` bytes on disk, the fake throttled so
/// the write lasts seconds) when
/// 1. `kgenv up`, the local process, is SIGKILLed: the agent on the host, whose caller is
///    gone, stops on its own without finishing the file (so it is not left writing while the
///    next `up` starts another); the next `up` lands the exact bytes, no partial file, record
///    or lock is left and no agent is left running;
/// 2. the agent itself is SIGKILLed on the host: that `up` fails in the data step, naming
///    it, and the next `up` lands the exact bytes with nothing left over;
///
/// then `down` keeps the data.
#[test]
fn ssh_target_data_write_killed_then_up_lands_the_exact_bytes() {
    let _serial = serial();
    let mut e = E2e::ssh("w");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime for the Kaggle fake");
    let fake = rt.block_on(FakeKaggle::start(FakeAuth::Token(KAGGLE_TOKEN.into())));
    let source = e.dir.path().join("kaggle-src/big.bin");
    let want = kaggle_fake::generate(&source, BIG_SIZE, 18);
    fake.add_file(BIG_COMPETITION, "big.bin", &source);
    let mut config = std::fs::read_to_string(&e.config).expect("kgenv.toml");
    config.push_str(&format!(
        "\n[[data]]\ncompetition = \"{BIG_COMPETITION}\"\n"
    ));
    std::fs::write(&e.config, config).expect("kgenv.toml with [[data]]");
    e.env.extend([
        ("KGENV_KAGGLE_ENDPOINT".to_string(), fake.endpoint()),
        ("KAGGLE_API_TOKEN".to_string(), KAGGLE_TOKEN.to_string()),
    ]);
    let step = format!("data/{BIG_COMPETITION}");
    let dest = e.host_dir().join("input").join(BIG_COMPETITION);
    let target = dest.join("big.bin");
    let partial = dest.join("big.bin.kgenv-partial");
    let throttle = |bps: u64| fake.state.throttle_bps.store(bps, Ordering::SeqCst);

    let t0 = Instant::now();
    // 1. `up` SIGKILLed while the agent writes.
    throttle(BIG_THROTTLE);
    let mut agents = Vec::new();
    let killed = e.up_killed_when("the data agent's write on the host", |_| {
        let n = written(&partial);
        if n < KILL_AT {
            return None;
        }
        agents = holders(&dest);
        Some(format!("{n} bytes of {} on disk", partial.display()))
    });
    let when = format!("up killed at {}", killed.reached);
    assert!(
        killed.saw(&step, "started", Some("apply")),
        "{when}: the kill came after the data step started: {:?}",
        killed.events
    );
    assert!(
        !killed.events.iter().any(|ev| finished(ev, &step)),
        "{when}: the kill came before the data step finished"
    );
    assert!(
        !agents.is_empty() && agents.iter().all(|(_, c)| is_agent(c)),
        "{when}: the data agent (and only it) was writing on the host: {agents:?}"
    );
    // Its caller gone, the agent stops at its next progress line (every 250 ms); 30 s is
    // far more than that and far less than the rest of the file needs at this rate.
    let stopped = wait_for(std::time::Duration::from_secs(30), || {
        agents
            .iter()
            .all(|(pid, _)| !std::path::Path::new(&format!("/proc/{pid}")).exists())
    });
    assert!(
        stopped,
        "{when}: the data agent was still running 30 s after its caller died: {:?}",
        holders(&dest)
    );
    assert!(
        !target.exists(),
        "{when}: the orphaned agent stopped, it did not go on to finish the file"
    );
    let kept = written(&partial);
    assert!(
        kept >= KILL_AT,
        "{when}: the partial file stays for the next up ({kept} bytes)"
    );

    let served = fake.served();
    throttle(0);
    let up = e.run(&["up"]);
    up.expect_ok(&format!("up after {when}"));
    assert_eq!(
        up.outcome(&step).as_deref(),
        Some("changed"),
        "{when}: the next up fetched the rest\n{}",
        up.diagnosis()
    );
    assert_eq!(
        sha256_file(&target),
        want,
        "{when}: the next up landed the exact bytes"
    );
    let left = download_leftovers(&dest);
    assert!(left.is_empty(), "{when}: left behind: {left:?}");
    assert!(
        holders(&dest).is_empty(),
        "{when}: no agent is left on the host: {:?}",
        holders(&dest)
    );
    eprintln!(
        "e2e data kill 1: {when}; {kept} bytes kept, the next up fetched {} bytes ({:.1}s)",
        fake.served() - served,
        secs(t0)
    );

    // 2. The agent itself SIGKILLed on the host mid-write (the data gone from the host, so
    // the next `up` fetches it again; every other step is satisfied).
    std::fs::remove_dir_all(&dest).expect("remove the pulled data");
    throttle(BIG_THROTTLE);
    let out = e.dir.path().join("up-agent-killed.out");
    let mut child = e
        .command(&["--json", "up"])
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("kgenv up starts");
    let reached = wait_for(e2e_support::KILL_POINT_WAIT, || {
        written(&partial) >= KILL_AT || child.try_wait().ok().flatten().is_some()
    });
    let at = written(&partial);
    assert!(
        reached && at >= KILL_AT,
        "the agent never wrote {KILL_AT} bytes of {} (up exited: {:?})",
        partial.display(),
        child.try_wait().ok().flatten()
    );
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "up is still running when its agent is killed"
    );
    let writing = holders(&dest);
    let [(pid, cmdline)] = writing.as_slice() else {
        panic!("exactly one process writes {}: {writing:?}", dest.display());
    };
    assert!(is_agent(cmdline), "the writer is the data agent: {cmdline}");
    let kill = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(kill.success(), "SIGKILL the agent ({pid})");
    let ended = wait_for(std::time::Duration::from_secs(120), || {
        child.try_wait().ok().flatten().is_some()
    });
    if !ended {
        let _ = child.kill();
    }
    let status = child.wait().expect("wait for up");
    assert!(ended, "up ended after its agent was killed");
    let failed = e2e_support::Run::parse(std::process::Output {
        status,
        stdout: std::fs::read(&out).unwrap_or_default(),
        stderr: Vec::new(),
    });
    assert!(
        !failed.output.status.success(),
        "up fails when its data agent is killed (killed at {at} bytes)"
    );
    let failures: Vec<_> = failed
        .events
        .iter()
        .filter(|ev| ev["event"] == "failed")
        .filter_map(|ev| ev["step"].as_str())
        .collect();
    assert_eq!(
        failures,
        vec![step.as_str()],
        "only the data step failed\n{}",
        failed.diagnosis()
    );
    assert!(!target.exists(), "the killed agent did not finish the file");
    eprintln!(
        "e2e data kill 2: the agent killed at {at} bytes ({:.1}s)",
        secs(t0)
    );

    throttle(0);
    let up = e.run(&["up"]);
    up.expect_ok("up after the agent was killed");
    assert_eq!(
        sha256_file(&target),
        want,
        "the up after the agent's kill landed the exact bytes"
    );
    let left = download_leftovers(&dest);
    assert!(
        left.is_empty(),
        "after the agent's kill, left behind: {left:?}"
    );
    assert!(
        holders(&dest).is_empty(),
        "no agent is left on the host: {:?}",
        holders(&dest)
    );
    e.run(&["down", "--yes"])
        .expect_ok("down after the data kills");
    assert!(
        e.labelled_containers().is_empty(),
        "down removed the container"
    );
    assert_eq!(
        sha256_file(&target),
        want,
        "down keeps the competition data"
    );
    eprintln!("e2e data kills: {:.1}s in all", secs(t0));
}

/// Seconds since `t`.
fn secs(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

/// Benchmark (run by `scripts/bench/e2e.sh`, ignored in `cargo test`): time from `kgenv up`
/// to a logged-in Jupyter on the ssh target with the image cached, the no-op `up`, each
/// step's share, and side by side the bare floor — `docker run` of the same image with the
/// same Jupyter config, logged in to directly. Prints; asserts nothing about time.
#[test]
#[ignore = "benchmark: scripts/bench/e2e.sh"]
fn bench_ssh_up_to_login() {
    let _serial = serial();
    let rounds: usize = std::env::var("KGENV_E2E_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let e = E2e::ssh("b");
    // Warm: the extras image is built once before timing.
    e.run(&["up"]).expect_ok("warm-up up");
    let jupyter_copy = e.dir.path().join("jupyter-copy");
    std::fs::create_dir_all(&jupyter_copy).expect("copy dir");
    for f in std::fs::read_dir(e.host_dir().join("jupyter"))
        .expect("jupyter dir")
        .flatten()
    {
        std::fs::copy(f.path(), jupyter_copy.join(f.file_name())).expect("copy jupyter file");
    }
    let image = docker(&["inspect", "--format", "{{.Config.Image}}", &e.container()]);
    e.run(&["down", "--yes"]).expect_ok("warm-up down");

    let mut warm = Vec::new();
    let mut noop = Vec::new();
    let mut shares: std::collections::BTreeMap<String, u64> = Default::default();
    let mut up_ms_total = 0;
    for _ in 0..rounds {
        let t = Instant::now();
        let up = e.run(&["up"]);
        up.expect_ok("bench up");
        let up_s = secs(t);
        std::fs::write(e.host_dir().join("working/bench.csv"), "a\n").expect("write a file");
        login_and_list(&e, "working", "bench.csv");
        warm.push((up_s, secs(t)));
        let r = up.result.clone().unwrap_or_default();
        up_ms_total += r["elapsed_ms"].as_u64().unwrap_or(0);
        for s in r["steps"].as_array().into_iter().flatten() {
            *shares
                .entry(s["step"].as_str().unwrap_or("?").to_string())
                .or_default() += s["elapsed_ms"].as_u64().unwrap_or(0);
        }
        let t = Instant::now();
        let again = e.run(&["up"]);
        again.expect_ok("bench no-op up");
        assert_noop(&again, "bench no-op up");
        noop.push(secs(t));
        e.run(&["down", "--yes"]).expect_ok("bench down");
    }

    // The floor: the same image and Jupyter config, started by hand with `docker run`.
    let bare = format!("kgenv-bench-bare-{}", std::process::id());
    let work = e.dir.path().join("bare-work");
    std::fs::create_dir_all(&work).expect("bare work dir");
    let mut floor = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        let id = docker(&[
            "run",
            "-d",
            "--name",
            &bare,
            "-p",
            &format!("127.0.0.1:{}:8888", e.jupyter_port),
            "-v",
            &format!("{}:/etc/kgenv/jupyter:ro", jupyter_copy.display()),
            "-v",
            &format!("{}:/kaggle/working", work.display()),
            &image,
            "jupyter",
            "server",
            "--config=/etc/kgenv/jupyter/jupyter_server_config.json",
        ]);
        assert!(!id.is_empty(), "docker run {image}");
        let cert = e
            .kgenv_home()
            .join("config/keys")
            .join(&e.name)
            .join("jupyter-cert.pem");
        let base = format!("https://127.0.0.1:{}/", e.jupyter_port);
        let ok = e2e_support::runtime().block_on(async {
            let client = e2e_support::client_trusting(&cert);
            e2e_support::login(
                &client,
                &base,
                e2e_support::PASSWORD,
                std::time::Duration::from_secs(60),
            )
            .await
        });
        let elapsed = secs(t);
        let _ = docker(&["rm", "-f", &bare]);
        assert!(ok.is_ok_and(|s| s.is_redirection()), "bare login");
        floor.push(elapsed);
    }

    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mut up_only: Vec<f64> = warm.iter().map(|w| w.0).collect();
    let mut to_login: Vec<f64> = warm.iter().map(|w| w.1).collect();
    let (up_m, login_m, noop_m, floor_m) = (
        median(&mut up_only),
        median(&mut to_login),
        median(&mut noop),
        median(&mut floor),
    );
    println!("kgenv e2e benchmark, ssh target on 127.0.0.1, image cached, median of {rounds}:");
    println!("  A  kgenv up (returns)                       {up_m:6.2}s");
    println!("  B  kgenv up → logged in through the tunnel  {login_m:6.2}s");
    println!("  C  kgenv up, everything already up (no-op)  {noop_m:6.2}s");
    println!("  D  bare docker run → logged in (floor)      {floor_m:6.2}s");
    println!(
        "  ratios: B/D = {:.2}   C/B = {:.3}",
        login_m / floor_m,
        noop_m / login_m
    );
    println!("  share of each step in up (sum of step elapsed_ms / sum of run elapsed_ms; steps overlap when independent):");
    for (step, ms) in &shares {
        println!(
            "    {step:<12} {:5.1}%  ({:.2}s per run)",
            *ms as f64 * 100.0 / up_ms_total.max(1) as f64,
            *ms as f64 / 1000.0 / rounds as f64
        );
    }
}

//! Every verb and global flag of the `kgenv` binary, run as a user runs them against the
//! real peers or the fakes (issue 18): not `--mock`, but the e2e host (a real OpenSSH sshd
//! on 127.0.0.1 with this machine's Docker Engine behind it, logged in to as the non-root
//! `kgenv` account), the Compute fake for the gce-only verbs, fake-gcs-server for the
//! bucket, and the Kaggle fake for `data`. Each command's exit code and the content of
//! what it prints are checked, not just "exit 0".
//!
//! One `up` per target, then the verbs on the running environment:
//!
//! - [`verbs_on_an_ssh_host_chosen_by_flag`]: a config whose target is `gce`, run with
//!   `--target ssh --host kgenv@127.0.0.1:PORT --state-dir DIR`: `status` before and after
//!   `up` (the live check of each step), `steps`, `ssh -- CMD` (remote output and exit
//!   status), `exec`, `logs`, `gpu` (no NVIDIA runtime here), `jupyter` in token mode with
//!   and without `--show-token`, the gce-only verbs refused on an ssh host, and `down`.
//! - [`verbs_on_the_gce_target`]: the Compute fake's VM (this machine): `stop` (TERMINATED,
//!   disks kept, `status` says so), `start` (the same instance RUNNING, the work still
//!   there), `autostop`, `move`'s checks, and `down --delete-bucket` (a wrong name refused
//!   with exit 2 and nothing deleted; the right one deletes the bucket in fake-gcs-server).
//! - [`data_list_and_pull_from_the_kaggle_fake`]: `data list` and `data pull`.
//! - [`every_verb_and_global_flag_runs_in_a_test_against_real_peers`]: the self-check that
//!   keeps this true: the verbs and global flags `kgenv --help` lists, each mapped in
//!   [`COVERAGE`] to a test that runs it without `--mock`.
//!
//! What e2e_ssh.rs and e2e_gce.rs already prove (the first `up`'s steps, the no-op second
//! `up`, the data disk, first boot) is not repeated: no first-boot simulator here.

#[path = "e2e_support/gce.rs"]
mod e2e_gce_support;
mod e2e_support;
#[path = "../../kgenv-core/tests/support/fake_gcs.rs"]
mod fake_gcs;
#[path = "../../kgenv-core/tests/support/gce_fake.rs"]
mod gce_fake;
#[path = "../../kgenv-core/tests/support/kaggle_fake.rs"]
mod kaggle_fake;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use e2e_support::{serial, E2e, Plain, BIN};
use kgenv_core::backends::Storage;
use serde_json::Value;

/// Which test runs each verb and global flag of `kgenv --help` against real peers or the
/// fakes: `(verb or --flag, test file, test function)`. The self-check fails when `--help`
/// lists one that is not here, or when the function is not a `#[test]` of that file that
/// names it and never passes `--mock`.
const COVERAGE: &[(&str, &str, &str)] = &[
    // Verbs.
    (
        "init",
        "cli.rs",
        "init_force_overwrites_and_without_it_refuses",
    ),
    ("plan", "cli.rs", "plan_works_without_credentials"),
    ("up", "e2e_ssh.rs", "ssh_target_up_login_noop_down"),
    (
        "status",
        "e2e_verbs.rs",
        "verbs_on_an_ssh_host_chosen_by_flag",
    ),
    ("down", "e2e_verbs.rs", "verbs_on_the_gce_target"),
    (
        "steps",
        "e2e_verbs.rs",
        "verbs_on_an_ssh_host_chosen_by_flag",
    ),
    ("ssh", "e2e_verbs.rs", "verbs_on_an_ssh_host_chosen_by_flag"),
    (
        "data",
        "e2e_verbs.rs",
        "data_list_and_pull_from_the_kaggle_fake",
    ),
    (
        "logs",
        "e2e_verbs.rs",
        "verbs_on_an_ssh_host_chosen_by_flag",
    ),
    (
        "exec",
        "e2e_verbs.rs",
        "verbs_on_an_ssh_host_chosen_by_flag",
    ),
    (
        "shell",
        "shell.rs",
        "shell_runs_commands_on_a_terminal_follows_resizes_and_passes_the_exit_status",
    ),
    ("gpu", "e2e_verbs.rs", "verbs_on_an_ssh_host_chosen_by_flag"),
    ("stop", "e2e_verbs.rs", "verbs_on_the_gce_target"),
    ("start", "e2e_verbs.rs", "verbs_on_the_gce_target"),
    ("autostop", "e2e_verbs.rs", "verbs_on_the_gce_target"),
    // Only its checks and refusal (no data disk here); the move itself runs on the mock
    // (cli.rs) and through the runner on the Compute fake (kgenv-core's tests).
    ("move", "e2e_verbs.rs", "verbs_on_the_gce_target"),
    (
        "hash-password",
        "cli.rs",
        "hash_password_reads_stdin_and_matches_the_core",
    ),
    (
        "jupyter",
        "e2e_verbs.rs",
        "verbs_on_an_ssh_host_chosen_by_flag",
    ),
    // Global flags.
    ("--config", "e2e_verbs.rs", "verbs_on_the_gce_target"),
    (
        "--target",
        "e2e_verbs.rs",
        "verbs_on_an_ssh_host_chosen_by_flag",
    ),
    (
        "--host",
        "e2e_verbs.rs",
        "verbs_on_an_ssh_host_chosen_by_flag",
    ),
    ("--json", "e2e_verbs.rs", "verbs_on_the_gce_target"),
    // `--mock` is the in-memory world itself: its test is the mock lifecycle.
    ("--mock", "cli.rs", "mock_lifecycle_up_again_status_down"),
    (
        "--state-dir",
        "e2e_verbs.rs",
        "verbs_on_an_ssh_host_chosen_by_flag",
    ),
    ("--verbose", "e2e_verbs.rs", "verbs_on_the_gce_target"),
    (
        "--version",
        "e2e_verbs.rs",
        "every_verb_and_global_flag_runs_in_a_test_against_real_peers",
    ),
];

/// The flag of the in-memory backends, which no entry of [`COVERAGE`] but its own may pass.
const MOCK: &str = "--mock";

/// The Compute fake's project and zone.
use e2e_gce_support::{PROJECT, ZONE};

/// The sorted non-empty lines of `text`.
fn sorted_lines(text: &str) -> Vec<String> {
    let mut v: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

/// Files named `name` anywhere under `dir`.
fn find_named(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() && !p.is_symlink() {
            out.extend(find_named(&p, name));
        } else if e.file_name() == name {
            out.push(p);
        }
    }
    out
}

/// `docker logs CONTAINER`, stdout and stderr together.
fn docker_logs(container: &str) -> String {
    let o = Command::new("docker")
        .args(["logs", container])
        .output()
        .expect("docker logs runs");
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// GETs Jupyter's contents API through the tunnel at `base` with `token` (none: no
/// `Authorization` header), retrying only while the connection itself fails (Jupyter
/// starting), up to 60 s; the HTTP status.
fn contents_status(cert: &Path, base: &str, token: Option<&str>) -> reqwest::StatusCode {
    e2e_support::runtime().block_on(async {
        let client = e2e_support::client_trusting(cert);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let mut req = client.get(format!("{base}api/contents"));
            if let Some(t) = token {
                req = req.header("Authorization", format!("token {t}"));
            }
            match req.send().await {
                Ok(resp) => return resp.status(),
                Err(err) => {
                    assert!(
                        Instant::now() < deadline,
                        "Jupyter did not answer through the tunnel within 60s: {err:?}"
                    );
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    })
}

/// The ssh target chosen on the command line: the config says `target = "gce"` (with an
/// `[instance]` and an `[ssh]` section whose host is a documentation address never
/// reached), and every command runs with `--target ssh --host kgenv@127.0.0.1:PORT
/// --state-dir DIR`. Jupyter is in token mode.
#[test]
fn verbs_on_an_ssh_host_chosen_by_flag() {
    let _serial = serial();
    e2e_support::assert_login_user();
    let e = E2e::new("vs", |p| {
        format!(
            r#"target = "gce"

[instance]
project = "{PROJECT}"
zones = ["{ZONE}"]
machine_type = "n1-standard-8"
gpu_type = "none"

[ssh]
host = "nobody@192.0.2.1:22"
identity_file = "{key}"
"#,
            key = p.sshd.client_key.display()
        )
    });
    let config = std::fs::read_to_string(&e.config).expect("kgenv.toml");
    let password_mode = "auth = \"password\"\npassword_env = \"KGENV_JUPYTER_PASSWORD\"\n";
    assert!(config.contains(password_mode), "{config}");
    std::fs::write(
        &e.config,
        config.replace(password_mode, "auth = \"token\"\n"),
    )
    .expect("kgenv.toml in token mode");
    std::fs::write(
        e.kgenv_home().join("config/known_hosts"),
        format!("[127.0.0.1]:{} {}\n", e.sshd.port, e.sshd.host_pub),
    )
    .expect("known_hosts");
    let host = format!("{}@127.0.0.1:{}", kgenv_core::keys::GCE_USER, e.sshd.port);
    let state_dir = e.dir.path().join("elsewhere/state");
    let state_dir_s = state_dir.to_str().expect("UTF-8 temp path").to_string();
    let flags = [
        "--target",
        "ssh",
        "--host",
        host.as_str(),
        "--state-dir",
        state_dir_s.as_str(),
    ];
    let k = |args: &[&str]| {
        let all: Vec<&str> = flags.iter().chain(args).copied().collect();
        e.plain(&all)
    };
    let kj = |args: &[&str]| {
        let all: Vec<&str> = flags.iter().chain(args).copied().collect();
        e.run(&all)
    };
    let state_name = format!("{}.json", e.name);

    // Before `up`: status reads no state and checks each step live; no `ssh` alias yet.
    let before = k(&["status"]);
    before.expect_code(0, "status before up");
    assert!(
        before.stdout.contains(&format!(
            "environment {} (state: {state_dir_s}/{state_name})",
            e.name
        )) && before.stdout.contains("kgenv has created nothing yet")
            && before.stdout.contains("live:"),
        "status names the state file under --state-dir and says nothing exists:\n{}",
        before.stdout
    );
    let plan_line = before
        .stdout
        .lines()
        .find(|l| l.starts_with("plan: "))
        .unwrap_or_else(|| panic!("status ends with the live counts:\n{}", before.stdout));
    assert!(
        !plan_line.starts_with("plan: 0 to create"),
        "before up the live check finds steps to create: {plan_line}"
    );
    let no_alias = k(&["ssh", "--", "true"]);
    no_alias.expect_code(2, "ssh before up");
    assert!(
        no_alias
            .stderr
            .contains(&format!("no `ssh {}` alias yet", e.name))
            && no_alias.stderr.contains("kgenv up"),
        "ssh before up says to run up first: {}",
        no_alias.stderr
    );

    // The one `up`, on the host --host names (the [ssh] section's host is never tried).
    let up = kj(&["up"]);
    up.expect_ok("kgenv --target ssh --host … --state-dir … up");
    assert!(
        up.outcome("instance").is_none(),
        "the gce-only [instance] is ignored under --target ssh: {:?}",
        up.outcomes()
    );
    assert!(
        e.sshd.log().contains(&format!(
            "Accepted publickey for {}",
            kgenv_core::keys::GCE_USER
        )),
        "kgenv logged in to the --host sshd:\n{}",
        e.sshd.log()
    );
    let container_id = e.container_id().expect("up made the container");
    // --state-dir: the state file is there and nowhere else (not in KGENV_HOME/state).
    let state_file = state_dir.join(&state_name);
    assert!(
        state_file.is_file(),
        "the state file is in --state-dir: {}",
        state_file.display()
    );
    assert_eq!(
        find_named(e.dir.path(), &state_name),
        vec![state_file.clone()],
        "the state file is nowhere else under the test's HOME and KGENV_HOME"
    );
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(&state_file).expect("state")).expect("json");
    assert_eq!(
        state["target"], "ssh",
        "the state is the ssh target's: {state}"
    );
    // Without --target the same config is the gce environment: it refuses the ssh state.
    let as_gce = e.plain(&["--state-dir", &state_dir_s, "status"]);
    as_gce.expect_code(2, "status of the same config without --target");
    assert!(
        as_gce.stderr.contains(&format!(
            "state file {} is for target `ssh`, but this run is for target `gce`",
            state_file.display()
        )),
        "{}",
        as_gce.stderr
    );
    let state_bytes = std::fs::read(&state_file).expect("state");

    // status: what kgenv recorded, then every step checked live and satisfied.
    let status = k(&["status"]);
    status.expect_code(0, "status after up");
    let recorded = format!("  {:<20} container: {}", "container", e.container());
    assert!(
        status.stdout.lines().any(|l| l == recorded),
        "status lists the recorded container ({recorded:?}):\n{}",
        status.stdout
    );
    let status_json = kj(&["status"]);
    assert!(
        status_json.output.status.success(),
        "{}",
        status_json.diagnosis()
    );
    let report: Value = serde_json::from_str(
        String::from_utf8_lossy(&status_json.output.stdout)
            .lines()
            .last()
            .expect("status JSON line"),
    )
    .expect("status JSON");
    let live = live_changes(&report);
    assert!(
        !live.is_empty() && live.iter().all(|(_, c)| c == "none"),
        "the live check finds every step as up left it: {live:?}"
    );
    let n = live.len();
    assert!(
        status.stdout.contains(&format!(
            "plan: 0 to create, 0 to update, {n} unchanged, 0 unknown ({n} steps)"
        )),
        "status's live part counts every step unchanged:\n{}",
        status.stdout
    );
    assert_eq!(
        std::fs::read(&state_file).ok(),
        Some(state_bytes),
        "status (and the refused run) left the state file as it was"
    );

    // steps: one line per step, in the same ids as --json, with what each runs after.
    let steps = k(&["steps"]);
    steps.expect_code(0, "steps");
    let steps_json = kj(&["steps"]);
    let listed: Vec<Value> = serde_json::from_slice::<Value>(&steps_json.output.stdout)
        .expect("steps --json is one JSON array")
        .as_array()
        .cloned()
        .expect("an array");
    let ids: Vec<&str> = listed.iter().filter_map(|s| s["id"].as_str()).collect();
    let mut live_ids: Vec<&str> = live.iter().map(|(s, _)| s.as_str()).collect();
    live_ids.sort();
    let mut sorted_ids = ids.clone();
    sorted_ids.sort();
    assert_eq!(sorted_ids, live_ids, "steps lists the steps status checks");
    let text_ids: Vec<&str> = steps
        .stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        text_ids, ids,
        "steps prints one line per step:\n{}",
        steps.stdout
    );
    for s in &listed {
        let id = s["id"].as_str().unwrap_or("");
        let line = steps
            .stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(id))
            .unwrap_or_default();
        let deps: Vec<&str> = s["deps"]
            .as_array()
            .map(|d| d.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if deps.is_empty() {
            assert!(!line.contains("(after "), "{id} runs first: {line}");
        } else {
            assert!(
                line.ends_with(&format!("(after {})", deps.join(", "))),
                "{id}'s line says what it runs after ({deps:?}): {line}"
            );
        }
    }
    assert!(
        ["host", "image", "container", "gpu", "jupyter"]
            .iter()
            .all(|s| ids.contains(s)),
        "{ids:?}"
    );

    // ssh -- CMD: the system ssh through the Host block; the remote shell's output (it
    // computes 6*7, so the line was run there) and its exit status come through. As with
    // ssh, the words after `--` form one remote shell line.
    let remote = k(&[
        "ssh",
        "--",
        "echo out-$((6*7)); id -un; echo err-line >&2; exit 3",
    ]);
    remote.expect_code(3, "ssh -- CMD that exits 3");
    assert_eq!(
        remote.stdout,
        format!("out-42\n{}\n", kgenv_core::keys::GCE_USER),
        "the remote command's stdout, as the login user"
    );
    assert!(
        remote.stderr.contains("err-line"),
        "the remote command's stderr: {}",
        remote.stderr
    );
    k(&["ssh", "--", "true"]).expect_code(0, "ssh -- true");

    // exec: in the container (its hostname is the container id's prefix), stdout and
    // stderr apart, a failure exits 1 naming the command's exit code.
    let exec = k(&[
        "exec",
        "--",
        "sh",
        "-c",
        "cat /etc/hostname; echo oops >&2; exit 4",
    ]);
    exec.expect_code(1, "exec of a command that exits 4");
    assert_eq!(
        exec.stdout.trim(),
        &container_id[..12],
        "exec ran in the container"
    );
    assert!(
        exec.stderr.contains("oops") && exec.stderr.contains("exited with 4"),
        "exec's stderr has the command's and the exit code: {}",
        exec.stderr
    );
    let ok = k(&["exec", "--", "python3", "-c", "print(6*7)"]);
    ok.expect_code(0, "exec python3");
    assert_eq!(ok.stdout, "42\n");

    // gpu: no NVIDIA runtime on this machine: a report that says why, not usable, exit 0
    // (the report itself worked; `up` treats a missing GPU the same way, as a warning).
    let gpu = k(&["gpu"]);
    gpu.expect_code(0, "gpu");
    assert!(
        gpu.stdout.contains("no GPU: ") && gpu.stdout.trim_end().ends_with("usable: no"),
        "gpu says there is no GPU and it is not usable:\n{}",
        gpu.stdout
    );
    let gpu_json = kj(&["gpu"]);
    let report: Value =
        serde_json::from_slice(&gpu_json.output.stdout).expect("gpu --json is one JSON value");
    assert_eq!(report["gpus"], serde_json::json!([]), "{report}");
    assert!(report["problem"].is_string(), "{report}");

    // jupyter in token mode: without --show-token the URL has no token and the hint says
    // how to see it; with it, the URL's token is the one Jupyter accepts.
    let cert = e
        .kgenv_home()
        .join("config/keys")
        .join(&e.name)
        .join("jupyter-cert.pem");
    let jupyter = |extra: &[&str]| {
        let all: Vec<&str> = flags
            .iter()
            .chain(&["jupyter", "--port", "0"])
            .chain(extra)
            .copied()
            .collect();
        e.jupyter_printing(&all)
    };
    let (plain_tunnel, plain_lines) = jupyter(&[]);
    assert!(
        !plain_tunnel.url.contains("token"),
        "no token without --show-token: {}",
        plain_tunnel.url
    );
    assert!(
        plain_lines
            .iter()
            .any(|l| l == "token mode: pass --show-token to print the URL with its token"),
        "{plain_lines:?}"
    );
    assert!(
        plain_lines
            .iter()
            .any(|l| l.starts_with("certificate SHA-256: ")),
        "{plain_lines:?}"
    );
    let base = format!("{}/", plain_tunnel.url.trim_end_matches('/'));
    assert_eq!(
        contents_status(&cert, &base, None),
        reqwest::StatusCode::FORBIDDEN,
        "no token, no contents"
    );
    drop(plain_tunnel);
    let (tunnel, lines) = jupyter(&["--show-token"]);
    let (base, token) = tunnel
        .url
        .split_once("?token=")
        .unwrap_or_else(|| panic!("--show-token prints the URL with ?token=: {}", tunnel.url));
    assert!(token.len() >= 32, "a long random token: {token:?}");
    assert!(
        !plain_lines.iter().any(|l| l.contains(token)),
        "the token is printed only with --show-token: {plain_lines:?}"
    );
    assert!(
        !lines.iter().any(|l| l.starts_with("token mode:")),
        "{lines:?}"
    );
    let base = format!("{}/", base.trim_end_matches('/'));
    assert_eq!(
        contents_status(&cert, &base, Some(token)),
        reqwest::StatusCode::OK,
        "the printed token logs in"
    );
    assert_eq!(
        contents_status(&cert, &base, Some("not-the-token")),
        reqwest::StatusCode::FORBIDDEN,
        "another token does not"
    );
    drop(tunnel);

    // logs: the container's log (Jupyter's: its start, and the requests above, so it is
    // written by now), the lines Docker has (read before and after, as Jupyter may still
    // be writing one), and --tail.
    let docker_before = sorted_lines(&docker_logs(&e.container()));
    let logs = k(&["logs"]);
    logs.expect_code(0, "logs");
    let docker_after = docker_logs(&e.container());
    assert!(
        logs.stdout.contains("Jupyter Server") && logs.stdout.contains("is running at"),
        "kgenv logs shows Jupyter's start:\n{}",
        logs.stdout
    );
    let shown = sorted_lines(&logs.stdout);
    assert!(
        shown.len() >= docker_before.len()
            && shown.iter().all(|l| docker_after.lines().any(|d| d == l)),
        "kgenv logs prints the lines `docker logs` has:\n{}\n---\n{docker_after}",
        logs.stdout
    );
    let tail = k(&["logs", "--tail", "2"]);
    tail.expect_code(0, "logs --tail 2");
    let tail_lines: Vec<&str> = tail.stdout.lines().collect();
    assert_eq!(tail_lines.len(), 2, "--tail 2: {tail_lines:?}");
    let docker_now = docker_logs(&e.container());
    assert!(
        tail_lines
            .iter()
            .all(|l| docker_now.lines().any(|d| d == *l)),
        "the tail is the log's: {tail_lines:?}"
    );

    // The gce-only verbs on an ssh host: refused as usage (exit 2), nothing sent.
    for verb in [vec!["autostop", "30"], vec!["stop"], vec!["start"]] {
        let r = k(&verb);
        r.expect_code(2, &format!("{verb:?} on an ssh host"));
        assert!(
            r.stderr
                .contains(&format!("`kgenv {}` needs a GCE instance", verb[0]))
                && r.stderr.contains("target is `ssh`"),
            "{verb:?}: {}",
            r.stderr
        );
    }
    assert_eq!(
        e.container_id(),
        Some(container_id),
        "the container is untouched"
    );

    // down: without a terminal it needs --yes (exit 2, nothing removed); with it, the
    // container and the state file in --state-dir go.
    let unconfirmed = k(&["down"]);
    unconfirmed.expect_code(2, "down without --yes");
    assert!(
        e.container_id().is_some(),
        "an unconfirmed down removed nothing"
    );
    let down = k(&["down", "--yes"]);
    down.expect_code(0, "down --yes");
    assert!(
        down.stdout.contains("down: removed"),
        "down says what it did:\n{}",
        down.stdout
    );
    assert!(e.container_id().is_none(), "down removed the container");
    assert!(
        !state_file.exists(),
        "down removed the state file from --state-dir"
    );
}

/// The gce target on the Compute fake, whose VM is this machine (as in e2e_gce.rs: it
/// reports 127.0.0.1, publishes the sshd's host key and installs the `ssh-keys` metadata
/// as the guest agent would), without a data disk (e2e_gce.rs covers that one), with
/// fake-gcs-server as GCS.
struct GceVerbs {
    e: E2e,
    fake: gce_fake::FakeGce,
    gcs: fake_gcs::FakeGcs,
    rt: tokio::runtime::Runtime,
}

fn gce_verbs() -> GceVerbs {
    let rt = e2e_gce_support::runtime();
    let mut e = E2e::new("vg", |_| {
        e2e_gce_support::config("\n[instance.data_disk]\nenabled = false\n")
    });
    e2e_support::assert_login_user();
    let fake = e2e_gce_support::start_fake(&e, &rt, None, |_| {});
    let gcs = fake_gcs::FakeGcs::start();
    e.env = e2e_gce_support::env(&e, &fake);
    e.env
        .push(("STORAGE_EMULATOR_HOST".into(), gcs.host.clone()));
    GceVerbs { e, fake, gcs, rt }
}

/// The last stdout line of a `--json` run, parsed (the result of `status`, `gpu`, …).
fn last_json(run: &e2e_support::Run) -> Value {
    let text = String::from_utf8_lossy(&run.output.stdout);
    serde_json::from_str(text.lines().last().unwrap_or_default())
        .unwrap_or_else(|err| panic!("not JSON ({err}):\n{}", run.diagnosis()))
}

/// `step → change` of a `status --json` report's live check (`none`: as specified).
fn live_changes(report: &Value) -> Vec<(String, String)> {
    report["live"]["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            (
                s["step"].as_str().unwrap_or("").to_string(),
                s["change"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn verbs_on_the_gce_target() {
    let _serial = serial();
    let GceVerbs { e, fake, gcs, rt } = gce_verbs();
    let up = e.run(&["up"]);
    up.expect_ok("kgenv up (gce on the Compute fake)");
    let inst = fake
        .instance(PROJECT, ZONE, &e.name)
        .expect("the instance exists on the fake");
    let (id, disks) = (inst["id"].clone(), inst["disks"].clone());
    assert!(
        disks.as_array().is_some_and(|d| !d.is_empty()),
        "the instance has its boot disk: {inst}"
    );
    let container_id = e.container_id().expect("up made the container");

    // status (no --mock): the instance recorded, every step live and satisfied.
    let status = e.plain(&["status"]);
    status.expect_code(0, "status");
    assert!(
        status.stdout.contains("instance") && status.stdout.contains(ZONE),
        "status shows the recorded instance and its zone:\n{}",
        status.stdout
    );
    let live = live_changes(&last_json(&e.run(&["status"])));
    assert!(
        !live.is_empty() && live.iter().all(|(_, c)| c == "none"),
        "{live:?}"
    );

    // Work in the container, to find after stop and start.
    e.plain(&[
        "exec",
        "--",
        "sh",
        "-c",
        "echo kept-across-stop > /kaggle/working/stop-start.txt",
    ])
    .expect_code(0, "exec writing a file");

    // autostop: minutes out of range are refused before anything is sent; a real setting
    // installs the agent and enables its systemd timer, which this machine cannot (no
    // systemd as PID 1): exit 1 with systemctl's own words. `off` removes the agent.
    let short = e.plain(&["autostop", "2"]);
    short.expect_code(2, "autostop 2");
    assert!(
        short.stderr.contains("autostop.idle_minutes"),
        "{}",
        short.stderr
    );
    let on = e.plain(&["autostop", "30"]);
    on.expect_code(1, "autostop 30 on a host without systemd");
    assert!(
        on.stderr.contains("autostop") && on.stderr.contains("systemd"),
        "autostop names what failed: {}",
        on.stderr
    );
    let off = e.plain(&["autostop", "off"]);
    off.expect_code(0, "autostop off");
    assert_eq!(
        off.stdout.trim(),
        format!(
            "autostop: off for `{}` (until the next `kgenv up` applies kgenv.toml)",
            e.name
        )
    );
    assert!(
        !Path::new("/usr/local/sbin/kgenv-idle").exists(),
        "autostop off removed the agent"
    );

    // stop, with -v: the step's log is shown; the instance is TERMINATED with its disks.
    let stop = e.plain(&["-v", "stop"]);
    stop.expect_code(0, "stop");
    assert!(
        stop.stdout
            .contains(&format!("stop: `{}` stopped, its disks kept", e.name)),
        "{}",
        stop.stdout
    );
    assert!(
        format!("{}{}", stop.stdout, stop.stderr).contains("(the disk is kept)"),
        "-v shows the step's log line:\n{}{}",
        stop.stdout,
        stop.stderr
    );
    let stopped = fake.instance(PROJECT, ZONE, &e.name).expect("still there");
    assert_eq!(stopped["status"], "TERMINATED", "{stopped}");
    assert_eq!(stopped["disks"], disks, "stop keeps the disks");
    let again = e.plain(&["stop"]);
    again.expect_code(0, "stop when stopped");
    assert!(
        again.stdout.contains("was already stopped")
            && !again.stderr.contains("is already stopped"),
        "without -v no step log: {}{}",
        again.stdout,
        again.stderr
    );
    // status says it is stopped: the instance step's live check wants it started.
    let status = e.run(&["status"]);
    let live = live_changes(&last_json(&status));
    let instance_live = live
        .iter()
        .find(|(s, _)| s == "instance")
        .map(|(_, o)| o.clone());
    assert_ne!(
        instance_live.as_deref(),
        Some("none"),
        "status sees the stopped instance: {live:?}"
    );
    let plain_status = e.plain(&["status"]);
    plain_status.expect_code(0, "status of a stopped VM");
    // The instance's live entry: its line and the indented lines under it.
    let instance_block: Vec<&str> = plain_status
        .stdout
        .lines()
        .skip_while(|l| *l != "live:")
        .skip_while(|l| !l.starts_with("~ instance: "))
        .enumerate()
        .take_while(|(i, l)| *i == 0 || l.starts_with("      "))
        .map(|(_, l)| l)
        .collect();
    assert!(
        instance_block.contains(&"      status: Terminated → RUNNING"),
        "status says the instance is stopped and would start it: {instance_block:?}\n{}",
        plain_status.stdout
    );

    // start: the same instance RUNNING again; the work is where it was.
    let start = e.plain(&["start"]);
    start.expect_code(0, "start");
    assert!(
        start
            .stdout
            .contains(&format!("start: `{}` is running at", e.name)),
        "{}",
        start.stdout
    );
    let started = fake.instance(PROJECT, ZONE, &e.name).expect("still there");
    assert_eq!(
        (&started["status"], &started["id"], &started["disks"]),
        (&Value::from("RUNNING"), &id, &disks),
        "start resumed the same instance with the same disks"
    );
    let kept = e.plain(&["exec", "--", "cat", "/kaggle/working/stop-start.txt"]);
    kept.expect_code(0, "exec after start");
    assert_eq!(kept.stdout, "kept-across-stop\n");
    assert_eq!(e.container_id(), Some(container_id.clone()));

    // move: this environment has no data disk to move: refused before any call.
    fake.clear_requests();
    let mv = e.plain(&["move", "us-central1-b", "--yes"]);
    mv.expect_code(2, "move without a data disk");
    assert!(mv.stderr.contains("data disk"), "{}", mv.stderr);
    assert!(
        fake.requests().iter().all(|r| !r.is_mutating()),
        "a refused move changes nothing"
    );

    // down --delete-bucket: the bucket this environment mounts (the user's own, so
    // `create = false`; gcsfuse cannot be installed here, so the mount is never made: see
    // docs/testing.md) is deleted only when named, and a name that is not its bucket is
    // refused with exit 2 before anything is deleted.
    let storage = kgenv_core::gcs::GcsClient::emulator(&gcs.host).expect("GCS client");
    let bucket = format!("{}-bkt", e.name);
    let other = format!("{}-other", e.name);
    for b in [&bucket, &other] {
        rt.block_on(storage.create_bucket(PROJECT, b, "US-CENTRAL1"))
            .unwrap_or_else(|err| panic!("create gs://{b} in fake-gcs-server: {err}"));
    }
    let mut config = std::fs::read_to_string(&e.config).expect("kgenv.toml");
    config.push_str(&format!(
        "\n[bucket]\nbucket = \"{bucket}\"\ncreate = false\n"
    ));
    std::fs::write(&e.config, config).expect("kgenv.toml with [bucket]");
    let exists = |b: &str| {
        rt.block_on(storage.get_bucket(b))
            .expect("GET bucket")
            .is_some()
    };
    let wrong = e.plain(&["down", "--yes", "--delete-bucket", &other]);
    wrong.expect_code(2, "down --delete-bucket of another bucket");
    assert!(
        wrong.stderr.contains(&format!(
            "bucket `{other}` is not this environment's bucket ({bucket})"
        )),
        "{}",
        wrong.stderr
    );
    assert!(exists(&bucket) && exists(&other), "no bucket was deleted");
    assert!(
        fake.instance(PROJECT, ZONE, &e.name).is_some() && e.container_id().is_some(),
        "a refused down deleted nothing"
    );
    let down = e.run(&["down", "--yes", "--delete-bucket", &bucket]);
    down.expect_ok("down --delete-bucket");
    assert!(
        !exists(&bucket),
        "down --delete-bucket deleted gs://{bucket}"
    );
    assert!(exists(&other), "the other bucket is kept");
    assert!(
        down.messages("bucket")
            .iter()
            .any(|m| m == &format!("deleted bucket gs://{bucket} as asked")),
        "{:?}",
        down.messages("bucket")
    );
    assert!(fake.instances().is_empty(), "down deleted the instance");
    assert!(e.container_id().is_none(), "down removed the container");
    assert!(!e.state_file().exists(), "down removed the state file");
    fake.assert_conforms();
}

/// `data list` and `data pull` (no environment needed) against the Kaggle fake, with the
/// credentials the official client reads (`KAGGLE_API_TOKEN`), in a temp HOME.
#[test]
fn data_list_and_pull_from_the_kaggle_fake() {
    const TOKEN: &str = "verbs-kaggle-token-41ab";
    const COMP: &str = "verbs-comp";
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime for the Kaggle fake");
    let fake = rt.block_on(kaggle_fake::FakeKaggle::start(
        kaggle_fake::FakeAuth::Token(TOKEN.into()),
    ));
    let dir = tempfile::tempdir().expect("tempdir");
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).expect("src dir");
    let mut served = Vec::new();
    for (name, size, seed) in [
        ("train.csv", 70_000, 1),
        ("test.csv", 3_000, 2),
        ("notes.txt", 500, 3),
    ] {
        let p = src.join(name);
        kaggle_fake::generate(&p, size, seed);
        served.push(fake.add_file(COMP, name, &p));
    }
    let data = |token: &str, args: &[&str]| {
        Plain::of(
            Command::new(BIN)
                .args(args)
                .current_dir(dir.path())
                .env("HOME", dir.path().join("home"))
                .env("KGENV_HOME", dir.path().join("kgenv"))
                .env("KGENV_KAGGLE_ENDPOINT", fake.endpoint())
                .env("KAGGLE_API_TOKEN", token)
                .env("NO_COLOR", "1")
                .env_remove("KAGGLE_USERNAME")
                .env_remove("KAGGLE_KEY")
                .env_remove("KGENV_CONFIG")
                .env_remove("RUST_LOG")
                .stdin(std::process::Stdio::null()),
        )
    };

    let list = data(TOKEN, &["data", "list", COMP]);
    list.expect_code(0, "data list");
    for f in &served {
        assert!(
            list.stdout
                .lines()
                .any(|l| l.split_whitespace().collect::<Vec<_>>()
                    == [f.size.to_string().as_str(), f.name.as_str()]),
            "data list shows {} with its size {}:\n{}",
            f.name,
            f.size,
            list.stdout
        );
    }
    let total: u64 = served.iter().map(|f| f.size).sum();
    assert_eq!(
        list.stdout.lines().last(),
        Some(format!("3 file(s), {total} bytes").as_str())
    );
    let refused = data("not-the-token", &["data", "list", COMP]);
    // A rejected token: exit 1, which variable held it and what to do, never the token.
    refused.expect_code(1, "data list with a token Kaggle rejects");
    assert!(
        refused
            .stderr
            .contains("Kaggle rejected the token from KAGGLE_API_TOKEN")
            && !refused.stderr.contains("not-the-token")
            && refused.stdout.is_empty(),
        "{}",
        refused.stderr
    );

    // pull --files: only the CSVs, byte for byte; a second pull downloads nothing.
    let dest = dir.path().join("pulled");
    let dest_s = dest.to_str().expect("UTF-8 temp path");
    let pull = data(
        TOKEN,
        &["data", "pull", COMP, "--dest", dest_s, "--files", "*.csv"],
    );
    pull.expect_code(0, "data pull --files '*.csv'");
    assert!(
        pull.stdout.contains("pulled 2 file(s), 0 already complete"),
        "{}",
        pull.stdout
    );
    for f in &served {
        let got = dest.join(&f.name);
        if f.name.ends_with(".csv") {
            assert_eq!(
                kaggle_fake::sha256_file(&got),
                kaggle_fake::sha256_file(&f.path),
                "{} pulled byte for byte",
                f.name
            );
        } else {
            assert!(!got.exists(), "{} is not a *.csv: not pulled", f.name);
        }
    }
    let served_bytes = fake.served();
    let urls = fake.state.signed_urls.load(Ordering::SeqCst);
    let again = data(
        TOKEN,
        &["data", "pull", COMP, "--dest", dest_s, "--files", "*.csv"],
    );
    again.expect_code(0, "second data pull");
    assert!(
        again
            .stdout
            .contains("pulled 0 file(s), 2 already complete"),
        "{}",
        again.stdout
    );
    assert_eq!(
        (fake.served(), fake.state.signed_urls.load(Ordering::SeqCst)),
        (served_bytes, urls),
        "the second pull downloaded nothing"
    );
    drop(rt);
}

/// The verbs and global flags `kgenv -h` lists (one line per item: `  init  Write …`,
/// `  -c, --config <CONFIG>  The …`, `      --json  Machine-readable …`).
fn help_items() -> (Vec<String>, Vec<String>) {
    let help = Command::new(BIN).arg("-h").output().expect("kgenv -h");
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout).into_owned();
    let section = |title: &str| -> Vec<&str> {
        text.lines()
            .skip_while(|l| l.trim_end() != title)
            .skip(1)
            .take_while(|l| l.starts_with(' '))
            .collect()
    };
    let verbs = section("Commands:")
        .into_iter()
        .filter(|l| l.starts_with("  ") && !l[2..].starts_with(' '))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    let flags = section("Options:")
        .into_iter()
        .filter_map(|l| {
            l.split([' ', ','])
                .find(|w| w.starts_with("--"))
                .map(|w| w.trim_end_matches("...").to_string())
        })
        .collect();
    (verbs, flags)
}

/// The text of `#[test] fn name` in `source`, from its name to the next top-level `}`.
fn test_body<'a>(source: &'a str, name: &str) -> Option<&'a str> {
    let start = source.find(&format!("#[test]\nfn {name}("))?;
    let rest = &source[start..];
    let end = rest.find("\n}\n")?;
    Some(&rest[..end])
}

/// Keeps every verb and global flag run by a test against real peers or the fakes: each
/// one `kgenv --help` lists must be in [`COVERAGE`], whose test must be a `#[test]` (not
/// ignored) of that file, name the verb or flag, and not pass `--mock` (except the entry
/// for `--mock` itself).
#[test]
fn every_verb_and_global_flag_runs_in_a_test_against_real_peers() {
    let (verbs, flags) = help_items();
    assert!(
        verbs.contains(&"up".to_string()) && flags.contains(&"--json".to_string()),
        "the help was parsed: {verbs:?} {flags:?}"
    );
    let tests_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut problems = Vec::new();
    for item in verbs.iter().chain(&flags) {
        if item == "help" || item == "--help" {
            continue; // clap's own, and this test reads it
        }
        let Some((_, file, func)) = COVERAGE.iter().find(|(v, _, _)| v == item) else {
            problems.push(format!("`{item}` is in `kgenv --help` but not in COVERAGE"));
            continue;
        };
        let source = std::fs::read_to_string(tests_dir.join(file))
            .unwrap_or_else(|err| panic!("tests/{file}: {err}"));
        let Some(body) = test_body(&source, func) else {
            problems.push(format!("`{item}`: no `#[test] fn {func}` in tests/{file}"));
            continue;
        };
        // The verb or flag as an argument (`&["stop"]`, `"--target"`; `-v` for --verbose).
        // `--config` and `--json` are passed by the harness: `E2e::command` always gives
        // `--config`, `E2e::run` adds `--json`.
        let named = body.contains(&format!("\"{item}\""))
            || (item == "--verbose" && body.contains("\"-v\""))
            || (item == "--config" && body.contains("e.plain(&["))
            || (item == "--json" && body.contains("e.run(&["));
        if !named {
            problems.push(format!("`{item}`: tests/{file} {func} does not run it"));
        }
        if item != MOCK && body.contains(&format!("\"{MOCK}\"")) {
            problems.push(format!("`{item}`: tests/{file} {func} runs with --mock"));
        }
    }
    for (item, file, func) in COVERAGE {
        if !verbs.iter().chain(&flags).any(|v| v == item) {
            problems.push(format!(
                "COVERAGE has `{item}` ({file} {func}), which `kgenv --help` no longer lists"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "verb coverage:\n  {}",
        problems.join("\n  ")
    );

    // --version: the crate's version.
    let v = Command::new(BIN)
        .arg("--version")
        .output()
        .expect("kgenv --version");
    assert_eq!(
        String::from_utf8_lossy(&v.stdout).trim(),
        format!("kgenv {}", env!("CARGO_PKG_VERSION"))
    );
}

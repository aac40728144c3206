//! The `kgenv` binary end to end on the simulated backends: the commands, `--json`, exit
//! codes and config errors.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::{example, isolated, kgenv, stderr, stdout, BIN, PASSWORD};

fn json_lines(o: &Output) -> Vec<serde_json::Value> {
    stdout(o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn plan_works_without_credentials() {
    let home = tempfile::tempdir().expect("home");
    let cfg = example();
    let o = kgenv(
        home.path(),
        &["--config", cfg.to_str().expect("utf8"), "plan"],
    );
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("? instance"), "{out}");
    assert!(out.contains("cannot observe"), "{out}");
    assert!(out.contains("plan: "), "{out}");
    // No credentials, no catalog: the price is unknown, and no dollar amount is made up.
    let cost = &out[out
        .find("cost in us-central1 (prices unknown)")
        .expect("a cost section")..];
    assert!(
        cost.contains("(prices unknown: billing backend unavailable"),
        "{cost}"
    );
    assert!(cost.contains("unknown on demand, unknown spot"), "{cost}");
    assert!(!cost.contains("/h") && !cost.contains("/month"), "{cost}");

    let o = kgenv(
        home.path(),
        &["--config", cfg.to_str().expect("utf8"), "--json", "plan"],
    );
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let lines = json_lines(&o);
    let prices = &lines.last().expect("result line")["result"]["prices"];
    assert_eq!(prices["vm"]["machine_type"], "n1-standard-8", "{prices}");
    assert!(
        prices["total_on_demand"]["unknown"]
            .as_str()
            .is_some_and(|why| why.contains("billing")),
        "{prices}"
    );
    assert!(prices["source"]["date"].is_null(), "{prices}");
}

#[test]
fn mock_lifecycle_up_again_status_down() {
    let home = tempfile::tempdir().expect("home");
    let cfg = example();
    let c = cfg.to_str().expect("utf8");

    let up = kgenv(home.path(), &["--config", c, "--mock", "--json", "up"]);
    assert!(up.status.success(), "{}", stderr(&up));
    assert!(
        stderr(&up).contains("SIMULATED"),
        "the run is labelled as simulated"
    );
    let lines = json_lines(&up);
    let result = lines.last().expect("result line");
    let changed = result["result"]["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter(|s| s["outcome"] == "changed")
        .count();
    assert!(changed >= 8, "{result}");
    assert!(
        lines.iter().any(|l| l["event"] == "started"),
        "events are streamed"
    );

    let again = kgenv(home.path(), &["--config", c, "--mock", "up"]);
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(
        stdout(&again).contains("up: 0 step(s) changed"),
        "{}",
        stdout(&again)
    );

    let status = kgenv(home.path(), &["--config", c, "--mock", "--json", "status"]);
    assert!(status.status.success(), "{}", stderr(&status));
    let s: serde_json::Value =
        serde_json::from_str(stdout(&status).lines().last().expect("status line")).expect("json");
    assert_eq!(
        s["state"]["steps"]["instance"]["facts"]["zone"],
        "us-central1-a"
    );
    assert!(!stdout(&status).contains(PASSWORD));
    // The simulated world has no price catalog: the VM runs, its cost is unknown.
    assert!(
        s["prices"]["total_on_demand"]["unknown"].is_string(),
        "{}",
        s["prices"]
    );
    assert!(s["running"]["since"].is_string(), "{}", s["running"]);
    assert!(
        s["running"]["so_far"]["unknown"].is_string(),
        "{}",
        s["running"]
    );

    let down = kgenv(home.path(), &["--config", c, "--mock", "down", "--yes"]);
    assert!(down.status.success(), "{}", stderr(&down));
    assert_down_kept_only_the_bucket(home.path(), "down --yes");
}

#[test]
fn bad_config_exits_2_with_position_and_makes_no_call() {
    let home = tempfile::tempdir().expect("home");
    let cfg = home.path().join("kgenv.toml");
    std::fs::write(&cfg, "name = \"kg\"\n[instance]\nproject = \"my-project\"\nzones = [\"us-central1-a\"]\ngpu_count = 3\n").expect("write");
    let o = kgenv(
        home.path(),
        &["--config", cfg.to_str().expect("utf8"), "--mock", "up"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("kgenv.toml:5:13") && err.contains("instance.gpu_count"),
        "{err}"
    );
    assert!(
        !home.path().join("state/mock-world.json").exists(),
        "no backend call was made"
    );

    let j = kgenv(
        home.path(),
        &["--config", cfg.to_str().expect("utf8"), "--json", "plan"],
    );
    assert_eq!(j.status.code(), Some(2));
    let v: serde_json::Value = serde_json::from_str(stdout(&j).trim()).expect("json error");
    assert_eq!(
        (v["error"]["kind"].as_str(), v["error"]["line"].as_u64()),
        (Some("config"), Some(5))
    );
}

#[test]
fn a_bucket_name_gcs_would_refuse_exits_2_before_any_call() {
    let home = tempfile::tempdir().expect("home");
    let cfg = home.path().join("kgenv.toml");
    for (name, says) in [
        ("my-g00gle-data", "`google`"),
        ("192.168.5.4", "IP address"),
        ("goog-data", "`goog`"),
    ] {
        std::fs::write(
            &cfg,
            format!("name = \"kg\"\n[instance]\nproject = \"my-project\"\nzones = [\"us-central1-a\"]\n[bucket]\nbucket = \"{name}\"\n"),
        )
        .expect("write");
        let o = kgenv(
            home.path(),
            &["--config", cfg.to_str().expect("utf8"), "--mock", "up"],
        );
        assert_eq!(o.status.code(), Some(2), "{name}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains("kgenv.toml:6:") && err.contains("bucket.bucket") && err.contains(says),
            "{name}: {err}"
        );
        assert!(
            !home.path().join("state/mock-world.json").exists(),
            "{name}: no backend call was made"
        );
    }
}

#[test]
fn usage_errors_exit_2() {
    let home = tempfile::tempdir().expect("home");
    let o = kgenv(home.path(), &["frobnicate"]);
    assert_eq!(o.status.code(), Some(2));
    let cfg = example();
    let o = kgenv(
        home.path(),
        &[
            "--config",
            cfg.to_str().expect("utf8"),
            "--mock",
            "up",
            "--only",
            "nope",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("steps are:"), "{}", stderr(&o));
    let missing = kgenv(
        home.path(),
        &["--config", "/nonexistent/kgenv.toml", "plan"],
    );
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        stderr(&missing).contains("kgenv init"),
        "{}",
        stderr(&missing)
    );
}

#[test]
fn init_writes_a_template_that_plans() {
    let home = tempfile::tempdir().expect("home");
    let cfg = home.path().join("kgenv.toml");
    let c = cfg.to_str().expect("utf8");
    let o = kgenv(home.path(), &["--config", c, "init"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let again = kgenv(home.path(), &["--config", c, "init"]);
    assert_eq!(again.status.code(), Some(2), "refuses to overwrite");
    let plan = kgenv(home.path(), &["--config", c, "--mock", "plan"]);
    assert!(plan.status.success(), "{}", stderr(&plan));
}

/// `init` never overwrites a file by itself; `init --force` replaces it with the template
/// (the user's own edits gone, as asked). No peer: `init` writes one local file.
#[test]
fn init_force_overwrites_and_without_it_refuses() {
    let home = tempfile::tempdir().expect("home");
    let cfg = home.path().join("kgenv.toml");
    let c = cfg.to_str().expect("utf8");
    let mine = "name = \"mine\"\n# my own edits\n";
    std::fs::write(&cfg, mine).expect("write");
    let refused = kgenv(home.path(), &["--config", c, "init"]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains(&format!("{c} exists; pass --force to overwrite it")),
        "{}",
        stderr(&refused)
    );
    assert_eq!(
        std::fs::read_to_string(&cfg).expect("read"),
        mine,
        "the file is untouched"
    );
    let forced = kgenv(home.path(), &["--config", c, "init", "--force"]);
    assert!(forced.status.success(), "{}", stderr(&forced));
    assert_eq!(
        stdout(&forced).trim(),
        format!("wrote {c}: set `instance.project` and `zones`, then run `kgenv plan`")
    );
    assert_eq!(
        std::fs::read_to_string(&cfg).expect("read"),
        kgenv_core::config::TEMPLATE,
        "--force wrote the template over the user's file"
    );
}

#[test]
fn a_failing_step_exits_1() {
    let home = tempfile::tempdir().expect("home");
    let cfg = home.path().join("kgenv.toml");
    // A competition the simulated Kaggle does not have.
    std::fs::write(
        &cfg,
        "name = \"kg\"\ntarget = \"local\"\n[[data]]\ncompetition = \"no-such-competition\"\n",
    )
    .expect("write");
    let o = kgenv(
        home.path(),
        &["--config", cfg.to_str().expect("utf8"), "--mock", "up"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("data/no-such-competition"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn a_bad_timeouts_entry_exits_2_naming_the_key() {
    let home = tempfile::tempdir().expect("home");
    let cfg = home.path().join("kgenv.toml");
    std::fs::write(
        &cfg,
        "name = \"kg\"\ntarget = \"local\"\n[timeouts]\ndata = \"2h\"\nbukket = \"1m\"\n",
    )
    .expect("write");
    let o = kgenv(
        home.path(),
        &["--config", cfg.to_str().expect("utf8"), "--mock", "up"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("kgenv.toml:5:1")
            && err.contains("`timeouts.bukket`")
            && err.contains("bucket"),
        "{err}"
    );
}

/// The subcommand words `--help` lists for `args` (clap's "Commands:" section).
fn subcommands(home: &Path, args: &[&str]) -> Vec<String> {
    let mut a = args.to_vec();
    a.push("--help");
    let o = kgenv(home, &a);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let section = out
        .split("Commands:")
        .nth(1)
        .expect("a Commands section")
        .split("\n\n")
        .next()
        .unwrap_or_default()
        .to_string();
    // "  name  about"; wrapped descriptions continue further right.
    section
        .lines()
        .filter(|l| l.starts_with("  ") && !l[2..].starts_with(' '))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|w| *w != "help")
        .map(str::to_string)
        .collect()
}

#[test]
fn every_core_verb_is_a_command_and_every_command_a_verb() {
    let home = tempfile::tempdir().expect("home");
    let mut offered: Vec<String> = subcommands(home.path(), &[]);
    // Command groups: `data list`, `data pull`.
    offered.extend(
        subcommands(home.path(), &["data"])
            .into_iter()
            .map(|s| format!("data {s}")),
    );
    for v in kgenv_core::runner::VERBS {
        assert!(
            offered.iter().any(|o| o == v.cli),
            "the core's verb {:?} has no `kgenv {}` command (offered: {offered:?})",
            v.verb,
            v.cli
        );
        let mut args: Vec<&str> = v.cli.split(' ').collect();
        args.push("--help");
        assert!(
            kgenv(home.path(), &args).status.success(),
            "kgenv {} --help",
            v.cli
        );
    }
    // Commands of the CLI alone: files and listings on this machine, and `shell`, which
    // hands this terminal to the container (`Runner::shell` in Rust; Python has no terminal
    // to hand over).
    let cli_only = ["init", "steps", "data", "shell"];
    for o in &offered {
        assert!(
            cli_only.contains(&o.as_str()) || kgenv_core::runner::VERBS.iter().any(|v| v.cli == o),
            "`kgenv {o}` is not a verb of the core: add it to runner::VERBS (and to Python) or to the CLI-only list"
        );
    }
}

/// `up` on the simulated world, for the commands that work on a running environment.
fn mock_up(home: &Path) -> String {
    let cfg = example();
    let c = cfg.to_str().expect("utf8").to_string();
    let up = kgenv(home, &["--config", &c, "--mock", "up"]);
    assert!(up.status.success(), "{}", stderr(&up));
    c
}

fn world(home: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(home.join("state/mock-world.json")).expect("world"))
        .expect("json")
}

/// After a `down` (`what`) of the example: no instance or container is left in the
/// simulated world, and its one bucket is.
fn assert_down_kept_only_the_bucket(home: &Path, what: &str) {
    let w = world(home);
    assert_eq!(w["instances"], serde_json::json!({}), "{what}: {w}");
    assert_eq!(w["containers"], serde_json::json!({}), "{what}: {w}");
    assert_eq!(
        w["buckets"].as_object().map(|b| b.len()),
        Some(1),
        "{what}: the bucket is kept: {w}"
    );
}

#[test]
fn stop_keeps_the_disk_and_start_brings_the_vm_back() {
    let home = tempfile::tempdir().expect("home");
    let c = mock_up(home.path());
    let status_of = |w: &serde_json::Value| {
        w["instances"]
            .as_object()
            .and_then(|m| m.values().next())
            .map(|i| i["status"].clone())
    };
    let stop = kgenv(home.path(), &["--config", &c, "--mock", "stop"]);
    assert!(stop.status.success(), "{}", stderr(&stop));
    assert!(stdout(&stop).contains("stopped"), "{}", stdout(&stop));
    assert_eq!(
        status_of(&world(home.path())),
        Some(serde_json::json!("TERMINATED"))
    );
    let again = kgenv(home.path(), &["--config", &c, "--mock", "stop"]);
    assert!(
        stdout(&again).contains("already stopped"),
        "{}",
        stdout(&again)
    );
    let start = kgenv(home.path(), &["--config", &c, "--mock", "--json", "start"]);
    assert!(start.status.success(), "{}", stderr(&start));
    let result = json_lines(&start).pop().expect("result");
    assert_eq!(result["result"]["operation"], "start");
    assert_eq!(
        status_of(&world(home.path())),
        Some(serde_json::json!("RUNNING"))
    );
    let local = tempfile::tempdir().expect("cfg");
    let cfg = local.path().join("kgenv.toml");
    std::fs::write(&cfg, "name = \"kg\"\ntarget = \"local\"\n").expect("write");
    let o = kgenv(
        home.path(),
        &["--config", cfg.to_str().expect("utf8"), "--mock", "stop"],
    );
    assert_eq!(o.status.code(), Some(2), "no VM to stop: {}", stderr(&o));
}

/// A spot VM GCE preempted (stopped, its address gone, the preemption on record, as the
/// simulated world's `preempt` leaves it): `status` says when, in text and in `--json`, and
/// `start` brings it back.
#[test]
fn status_says_when_a_spot_vm_was_preempted_and_start_brings_it_back() {
    let home = tempfile::tempdir().expect("home");
    let local = tempfile::tempdir().expect("cfg");
    let cfg = local.path().join("kgenv.toml");
    let text = std::fs::read_to_string(example()).expect("example");
    assert!(
        text.contains("provisioning = \"standard\""),
        "the example sets it"
    );
    std::fs::write(
        &cfg,
        text.replace("provisioning = \"standard\"", "provisioning = \"spot\""),
    )
    .expect("write");
    let c = cfg.to_str().expect("utf8");
    let up = kgenv(home.path(), &["--config", c, "--mock", "up"]);
    assert!(up.status.success(), "{}", stderr(&up));

    let path = home.path().join("state/mock-world.json");
    let mut w = world(home.path());
    let (id, at) = {
        let vm = w["instances"]
            .as_object_mut()
            .and_then(|m| m.values_mut().next())
            .expect("the VM");
        vm["status"] = serde_json::json!("TERMINATED");
        vm["external_ip"] = serde_json::Value::Null;
        let at = vm["last_start"].as_str().expect("started").to_string();
        (vm["id"].as_str().expect("id").to_string(), at)
    };
    w["preemptions"] = serde_json::json!({ id: [{"at": at, "operation": "operation-1"}] });
    std::fs::write(&path, w.to_string()).expect("world");

    let status = kgenv(home.path(), &["--config", c, "--mock", "--json", "status"]);
    assert!(status.status.success(), "{}", stderr(&status));
    let last = json_lines(&status).pop().expect("the status");
    let shown = &last["preempted"];
    assert_eq!(shown["provisioning"], "spot", "{last}");
    let when = shown["at"].as_str().expect("at");
    assert!(
        at.starts_with(when.trim_end_matches('Z')),
        "{when} from {at}"
    );
    let text = kgenv(home.path(), &["--config", c, "--mock", "status"]);
    assert!(
        stdout(&text).contains(&format!(
            "instance: preempted at {when} (spot); `kgenv start` or `kgenv up` brings it back"
        )),
        "{}",
        stdout(&text)
    );

    let start = kgenv(home.path(), &["--config", c, "--mock", "start"]);
    assert!(start.status.success(), "{}", stderr(&start));
    let status = kgenv(home.path(), &["--config", c, "--mock", "--json", "status"]);
    let last = json_lines(&status).pop().expect("the status");
    assert!(last["preempted"].is_null(), "running again: {last}");
}

#[test]
fn container_commands_exec_logs_and_gpu() {
    let home = tempfile::tempdir().expect("home");
    let c = mock_up(home.path());
    let exec = kgenv(
        home.path(),
        &[
            "--config",
            &c,
            "--mock",
            "exec",
            "--",
            "echo",
            "hello from the container",
        ],
    );
    assert!(exec.status.success(), "{}", stderr(&exec));
    assert!(
        stdout(&exec).contains("hello from the container"),
        "{}",
        stdout(&exec)
    );
    let gpu = kgenv(home.path(), &["--config", &c, "--mock", "--json", "gpu"]);
    assert!(gpu.status.success(), "{}", stderr(&gpu));
    let report: serde_json::Value =
        serde_json::from_str(stdout(&gpu).trim()).expect("a GPU report");
    assert!(
        report["gpus"].as_array().is_some_and(|g| !g.is_empty()),
        "{report}"
    );
    let text = kgenv(home.path(), &["--config", &c, "--mock", "gpu"]);
    assert!(stdout(&text).contains("GPU: "), "{}", stdout(&text));
    let logs = kgenv(
        home.path(),
        &["--config", &c, "--mock", "logs", "--tail", "5"],
    );
    assert!(logs.status.success(), "{}", stderr(&logs));
}

#[test]
fn autostop_changes_the_agent_in_place() {
    let home = tempfile::tempdir().expect("home");
    let c = mock_up(home.path());
    let state = home.path().join("state/kaggle-gpu.json");
    let minutes = || -> serde_json::Value {
        let s: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&state).expect("state")).expect("json");
        s["steps"]["autostop"]["facts"]["idle_minutes"].clone()
    };
    assert_eq!(minutes(), "60", "from kgenv.toml");
    let on = kgenv(home.path(), &["--config", &c, "--mock", "autostop", "15"]);
    assert!(on.status.success(), "{}", stderr(&on));
    assert_eq!(minutes(), "15");
    let off = kgenv(home.path(), &["--config", &c, "--mock", "autostop", "off"]);
    assert!(off.status.success(), "{}", stderr(&off));
    assert_eq!(minutes(), serde_json::Value::Null);
    let bad = kgenv(home.path(), &["--config", &c, "--mock", "autostop", "2"]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("idle_minutes"), "{}", stderr(&bad));
    let junk = kgenv(home.path(), &["--config", &c, "--mock", "autostop", "soon"]);
    assert_eq!(junk.status.code(), Some(2));
}

#[test]
fn hash_password_reads_stdin_and_matches_the_core() {
    use std::io::Write as _;
    let home = tempfile::tempdir().expect("home");
    let mut child = Command::new(BIN)
        .arg("hash-password")
        .env("KGENV_HOME", home.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kgenv runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"correct horse\n")
        .expect("write");
    let o = child.wait_with_output().expect("exits");
    assert!(o.status.success(), "{}", stderr(&o));
    let hashed = stdout(&o).trim().to_string();
    assert!(hashed.starts_with("argon2:$argon2id$"), "{hashed}");
    assert!(kgenv_core::runner::verify_password(
        "correct horse",
        &hashed
    ));
    assert!(!kgenv_core::runner::verify_password(
        "correct horse\n",
        &hashed
    ));
    let empty = Command::new(BIN)
        .arg("hash-password")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("kgenv runs");
    assert_eq!(empty.status.code(), Some(2), "an empty password is refused");
}

#[test]
fn ssh_without_an_alias_says_what_to_do() {
    let home = tempfile::tempdir().expect("home");
    let c = mock_up(home.path());
    let o = kgenv(
        home.path(),
        &["--config", &c, "--mock", "ssh", "--", "true"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("--mock"), "{}", stderr(&o));
}

#[test]
fn a_state_for_another_target_exits_2_and_changes_nothing() {
    let home = tempfile::tempdir().expect("home");
    let c = mock_up(home.path());
    let state = home.path().join("state/kaggle-gpu.json");
    let backup = home.path().join("state/kaggle-gpu.json.bak");
    let files = || {
        [&state, &backup, &home.path().join("state/mock-world.json")]
            .map(|p| std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
    };
    let before = files();
    for verb in ["down", "up", "status"] {
        let o = kgenv(
            home.path(),
            &[
                "--config",
                &c,
                "--mock",
                "--target",
                "ssh",
                "--host",
                "kgenv@192.0.2.1",
                verb,
            ],
        );
        assert_eq!(o.status.code(), Some(2), "{verb}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains(&state.display().to_string())
                && err.contains("target `gce`")
                && err.contains("target `ssh`")
                && err.contains("--target gce"),
            "{verb}: {err}"
        );
        assert_eq!(files(), before, "{verb} changed the state or the world");
    }
    // The environment is still whole on its own target.
    let down = kgenv(home.path(), &["--config", &c, "--mock", "down", "--yes"]);
    assert!(down.status.success(), "{}", stderr(&down));
    assert_eq!(world(home.path())["instances"], serde_json::json!({}));
}

fn world_bytes(home: &Path) -> Vec<u8> {
    std::fs::read(home.join("state/mock-world.json")).expect("world")
}

fn state_bytes(home: &Path) -> Vec<u8> {
    std::fs::read(home.join("state/kaggle-gpu.json")).expect("state")
}

#[test]
fn down_without_a_terminal_needs_yes_and_changes_nothing() {
    let home = tempfile::tempdir().expect("home");
    let c = mock_up(home.path());
    let (world0, state0) = (world_bytes(home.path()), state_bytes(home.path()));

    // stdin is not a terminal here (`output()` gives the child no stdin).
    let o = kgenv(home.path(), &["--config", &c, "--mock", "down"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains(
            "instance projects/my-kaggle-project/zones/us-central1-a/instances/kaggle-gpu"
        ),
        "the preview lists what it would delete: {out}"
    );
    assert!(
        out.contains("keeps:") && out.contains("bucket gs://my-kaggle-project-data"),
        "and the bucket it keeps: {out}"
    );
    assert!(stderr(&o).contains("--yes"), "{}", stderr(&o));
    assert_eq!(
        world_bytes(home.path()),
        world0,
        "the simulated world is unchanged"
    );
    assert_eq!(
        state_bytes(home.path()),
        state0,
        "the state file is unchanged"
    );

    // --json: the same refusal, the preview in the JSON error, nothing else on stdout.
    let j = kgenv(home.path(), &["--config", &c, "--mock", "--json", "down"]);
    assert_eq!(j.status.code(), Some(2), "{}", stderr(&j));
    let lines = json_lines(&j);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let err = &lines[0]["error"];
    assert_eq!(err["kind"], "not_confirmed");
    assert_eq!(err["operation"], "down");
    let listed = |key: &str, prefix: &str| {
        err[key].as_array().is_some_and(|a| {
            a.iter()
                .any(|l| l.as_str().is_some_and(|l| l.starts_with(prefix)))
        })
    };
    assert!(listed("changes", "instance projects/"), "{err}");
    assert!(listed("changes", "container kgenv-kaggle-gpu"), "{err}");
    assert!(
        listed("keeps", "bucket gs://my-kaggle-project-data"),
        "{err}"
    );
    assert!(
        !listed("changes", "bucket gs://"),
        "the bucket is not deleted: {err}"
    );
    assert_eq!(world_bytes(home.path()), world0);

    // A disk the environment does not keep: refused before anything, --yes or not.
    let d = kgenv(
        home.path(),
        &[
            "--config",
            &c,
            "--mock",
            "down",
            "--yes",
            "--delete-disk",
            "unknown",
        ],
    );
    assert_eq!(d.status.code(), Some(2), "{}", stderr(&d));
    assert!(stderr(&d).contains("disk `unknown`"), "{}", stderr(&d));
    assert_eq!(world_bytes(home.path()), world0);
    assert_eq!(state_bytes(home.path()), state0);

    // --yes: removed, bucket kept, the preview still printed for the log.
    let y = kgenv(home.path(), &["--config", &c, "--mock", "down", "--yes"]);
    assert!(y.status.success(), "{}", stderr(&y));
    assert!(stdout(&y).contains("down: deletes"), "{}", stdout(&y));
    assert_down_kept_only_the_bucket(home.path(), "down --yes");

    // Nothing left: a plain `down` has nothing to ask about.
    let again = kgenv(home.path(), &["--config", &c, "--mock", "down"]);
    assert!(again.status.success(), "{}", stderr(&again));
}

#[test]
fn down_and_up_help_teach_the_confirmation_and_delete_disk() {
    let home = tempfile::tempdir().expect("home");
    let down = stdout(&kgenv(home.path(), &["down", "--help"]));
    for want in [
        "--yes",
        "--delete-disk",
        "--delete-bucket",
        "[y/N]",
        "exits 2",
    ] {
        assert!(down.contains(want), "`down --help` lacks {want}: {down}");
    }
    let up = stdout(&kgenv(home.path(), &["up", "--help"]));
    for want in ["--yes", "restarts the VM"] {
        assert!(up.contains(want), "`up --help` lacks {want}: {up}");
    }
}

/// Runs kgenv on a pseudo-terminal with script(1) (util-linux), typing `answer` and Enter.
fn kgenv_on_a_terminal(home: &Path, args: &[&str], answer: &str) -> Output {
    use std::io::Write as _;
    let quote = |a: &str| format!("'{}'", a.replace('\'', r"'\''"));
    let line = std::iter::once(BIN)
        .chain(args.iter().copied())
        .map(quote)
        .collect::<Vec<_>>()
        .join(" ");
    let mut child = isolated(
        Command::new("script").args(["--quiet", "--return", "--command", &line, "/dev/null"]),
        home,
    )
    .env("SHELL", "/bin/sh")
    .env("TERM", "dumb")
    .stdin(std::process::Stdio::piped())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .expect("script(1) runs (util-linux's `script` is needed for this test)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{answer}\n").as_bytes())
        .expect("type the answer");
    child.wait_with_output().expect("script exits")
}

#[test]
fn down_on_a_terminal_asks_and_honours_the_answer() {
    let home = tempfile::tempdir().expect("home");
    let c = mock_up(home.path());
    let world0 = world_bytes(home.path());

    let no = kgenv_on_a_terminal(home.path(), &["--config", &c, "--mock", "down"], "n");
    let text = stdout(&no);
    assert_eq!(no.status.code(), Some(2), "{text}{}", stderr(&no));
    assert!(text.contains("Delete these 8 resources? [y/N]"), "{text}");
    assert!(text.contains("keeps:"), "{text}");
    assert_eq!(
        world_bytes(home.path()),
        world0,
        "answered n: nothing changed"
    );

    let yes = kgenv_on_a_terminal(home.path(), &["--config", &c, "--mock", "down"], "y");
    let text = stdout(&yes);
    assert_eq!(yes.status.code(), Some(0), "{text}{}", stderr(&yes));
    assert!(text.contains("Delete these 8 resources? [y/N]"), "{text}");
    assert_down_kept_only_the_bucket(home.path(), "answered y");
}

#[test]
fn down_keeps_the_data_disk_and_status_lists_it_until_it_is_named() {
    let home = tempfile::tempdir().expect("home");
    let c = mock_up(home.path());
    let down = kgenv(home.path(), &["--config", &c, "--mock", "down", "--yes"]);
    assert!(down.status.success(), "{}", stderr(&down));
    assert!(
        stdout(&down).contains("keeps:") && stdout(&down).contains("data disk kaggle-gpu-data"),
        "{}",
        stdout(&down)
    );
    assert_eq!(world(home.path())["instances"], serde_json::json!({}));
    let disks = world(home.path())["disks"].clone();
    assert_eq!(
        disks.as_object().map(|d| d.len()),
        Some(1),
        "only the data disk is left: {disks}"
    );
    let status = kgenv(home.path(), &["--config", &c, "--mock", "status"]);
    assert!(status.status.success(), "{}", stderr(&status));
    let out = stdout(&status);
    assert!(out.contains("kept by `down`"), "{out}");
    assert!(
        out.contains("data disk kaggle-gpu-data") && out.contains("GB"),
        "with its size: {out}"
    );
    let gone = kgenv(
        home.path(),
        &[
            "--config",
            &c,
            "--mock",
            "down",
            "--yes",
            "--delete-disk",
            "kaggle-gpu-data",
        ],
    );
    assert!(gone.status.success(), "{}", stderr(&gone));
    assert_eq!(world(home.path())["disks"], serde_json::json!({}));
}

#[test]
fn move_asks_first_then_moves_the_data_disk_and_the_vm() {
    let home = tempfile::tempdir().expect("home");
    let c = mock_up(home.path());
    let (world_before, state_before) = (world_bytes(home.path()), state_bytes(home.path()));
    // No terminal, no --yes: the plan is shown, nothing changes, exit 2.
    let refused = kgenv(
        home.path(),
        &["--config", &c, "--mock", "move", "us-west1-b"],
    );
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    assert!(
        stdout(&refused).contains("snapshot") && stderr(&refused).contains("not confirmed"),
        "{}\n{}",
        stdout(&refused),
        stderr(&refused)
    );
    assert_eq!(world_bytes(home.path()), world_before);
    assert_eq!(state_bytes(home.path()), state_before);
    // A bad zone is a usage error before anything.
    let bad = kgenv(
        home.path(),
        &["--config", &c, "--mock", "move", "nowhere", "--yes"],
    );
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("is not a zone"), "{}", stderr(&bad));
    let moved = kgenv(
        home.path(),
        &["--config", &c, "--mock", "move", "us-west1-b", "--yes"],
    );
    assert!(moved.status.success(), "{}", stderr(&moved));
    assert!(stdout(&moved).contains("us-west1-b"), "{}", stdout(&moved));
    let w = world(home.path());
    let instances: Vec<&String> = w["instances"]
        .as_object()
        .expect("instances")
        .keys()
        .collect();
    assert_eq!(instances.len(), 1, "{instances:?}");
    assert!(instances[0].contains("us-west1-b"), "{instances:?}");
    let disks: Vec<&String> = w["disks"].as_object().expect("disks").keys().collect();
    assert!(
        disks.iter().all(|d| d.contains("/us-west1-b/"))
            && disks.iter().any(|d| d.ends_with("-data")),
        "the new VM's boot disk and the moved data disk, nothing in the old zone: {disks:?}"
    );
    assert_eq!(
        w["snapshots"],
        serde_json::json!({}),
        "the snapshot is deleted"
    );
    let help = kgenv(home.path(), &["move", "--help"]);
    let text = stdout(&help);
    assert!(
        text.contains("snapshot") && text.contains("old disk") && text.contains("--yes"),
        "{text}"
    );
}

#[test]
fn wait_for_capacity_is_explained_and_a_bad_duration_exits_2() {
    let home = tempfile::tempdir().expect("home");
    for verb in ["up", "start"] {
        let help = stdout(&kgenv(home.path(), &[verb, "--help"]));
        for want in [
            "--wait-for-capacity[=<DURATION>]",
            "rounds",
            "Ctrl-C",
            "\"2h\"",
        ] {
            assert!(help.contains(want), "`{verb} --help` lacks {want}: {help}");
        }
    }
    let cfg = example();
    let c = cfg.to_str().expect("utf8");
    let o = kgenv(
        home.path(),
        &["--config", c, "--mock", "up", "--wait-for-capacity=soon"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("not a duration"), "{}", stderr(&o));
    assert!(
        !home.path().join("state/mock-world.json").exists(),
        "nothing ran"
    );
}

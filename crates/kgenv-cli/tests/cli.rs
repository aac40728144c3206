//! The `kgenv` binary end to end on the simulated backends: the commands, `--json`, exit
//! codes and config errors.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_kgenv");

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/kgenv.toml")
}

/// Runs kgenv with an isolated KGENV_HOME and no cloud variables.
fn kgenv(home: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("KGENV_HOME", home)
        .env("KGENV_JUPYTER_PASSWORD", "cli-test-password")
        .env_remove("CLOUDSDK_CORE_PROJECT")
        .env_remove("CLOUDSDK_COMPUTE_ZONE")
        .env_remove("KGENV_CONFIG")
        .env("NO_COLOR", "1")
        .output()
        .expect("kgenv runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

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
    assert!(!stdout(&status).contains("cli-test-password"));

    let down = kgenv(home.path(), &["--config", c, "--mock", "down"]);
    assert!(down.status.success(), "{}", stderr(&down));
    let world: serde_json::Value = serde_json::from_slice(
        &std::fs::read(home.path().join("state/mock-world.json")).expect("world"),
    )
    .expect("json");
    assert_eq!(world["instances"], serde_json::json!({}));
    assert_eq!(world["containers"], serde_json::json!({}));
    assert_eq!(
        world["buckets"].as_object().map(|b| b.len()),
        Some(1),
        "bucket kept"
    );
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

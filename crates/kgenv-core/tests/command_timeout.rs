//! Every remote command of a step has a time limit (issue 13): run through the real step
//! engine against a real OpenSSH sshd on 127.0.0.1. A command that hangs is killed with
//! what it started and fails its step with a typed timeout naming the step, the command
//! and its last lines; a `[timeouts]` entry replaces the step's default; a command that
//! keeps printing outlives an inactivity limit shorter than its running time, and one
//! that goes silent does not.
//!
//! The sshd runs on this machine, so "the remote process is gone" is checked here with
//! `pgrep`. No assertion waits by sleeping: waits poll a condition under a deadline.
//!
//! The last test runs kgenv's own data step through the runner: its data agent on the
//! host stands in as a script that prints and then hangs.

mod support;

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use kgenv_core::backends::remote::{CommandTimeout, ExecRequest};
use kgenv_core::download::DownloadOptions;
use kgenv_core::error::{error_chain, Error, Result};
use kgenv_core::kaggle::credentials::Secret;
use kgenv_core::kaggle::{Credentials, KaggleClient, KaggleData, KaggleEndpoint};
use kgenv_core::mock::MockWorld;
use kgenv_core::plan::{drive, CheckOutcome, Destroyed, Event, EventSink, Step, StepCtx};
use kgenv_core::runner::{RunOptions, Runner};
use kgenv_core::spec::{Data, Env, SshHost, Target, Timeouts};
use kgenv_core::ssh::SshConnector;
use kgenv_core::state::StateStore;
use support::sshd::Sshd;

/// A step whose `apply` runs `command` on the host, with `limit` as its default.
struct RemoteStep {
    id: String,
    command: String,
    limit: CommandTimeout,
}

#[async_trait]
impl Step for RemoteStep {
    fn id(&self) -> &str {
        &self.id
    }
    fn deps(&self) -> &[String] {
        &[]
    }
    fn summary(&self) -> String {
        format!("runs `{}`", self.command)
    }
    fn planned_actions(&self) -> Vec<String> {
        vec![self.command.clone()]
    }
    fn command_timeout(&self) -> CommandTimeout {
        self.limit
    }
    async fn check(&self, _: &StepCtx) -> Result<CheckOutcome> {
        Ok(CheckOutcome::missing(self.planned_actions()))
    }
    async fn apply(&self, ctx: &StepCtx) -> Result<()> {
        let remote = ctx.require_remote().await?;
        let req = ExecRequest::new(&self.command).label(format!("{} apply", self.id));
        let out = remote.exec(req, &|p| ctx.progress(p)).await?;
        assert!(out.success(), "{}: {}", self.command, out.stderr_tail());
        Ok(())
    }
    async fn destroy(&self, _: &StepCtx) -> Result<Destroyed> {
        Ok(Destroyed::Nothing)
    }
}

/// The sshd's host as an ssh target, its host key known to the connector it returns.
fn ssh_target(sshd: &Sshd) -> (Target, SshConnector) {
    // The host key is known, as `up` would find it after a first trusted connection.
    std::fs::write(
        sshd.client_known_hosts(),
        format!(
            "{} {}\n",
            kgenv_core::ssh::verify::host_pattern("127.0.0.1", sshd.port),
            sshd.host_pub
        ),
    )
    .expect("known_hosts");
    let host = SshHost::parse(&format!("{}@127.0.0.1:{}", sshd.user, sshd.port))
        .expect("ssh host")
        .identity_file(sshd.client_key.display().to_string());
    (
        Target::Ssh(host),
        SshConnector::new().known_hosts(sshd.client_known_hosts()),
    )
}

/// Runs `up` of `step` on the sshd's host with `timeouts`; returns the result and the
/// events it emitted.
async fn up(
    sshd: &Sshd,
    state_dir: &std::path::Path,
    timeouts: kgenv_core::spec::TimeoutsBuilder,
    step: RemoteStep,
) -> (Result<drive::Report>, Vec<Event>) {
    let (target, connector) = ssh_target(sshd);
    let env = Env::builder("kgto")
        .target(target)
        .timeouts(timeouts)
        .build()
        .expect("valid env");
    let mut backends = MockWorld::new().backends();
    backends.remote = Arc::new(connector);
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = {
        let events = events.clone();
        EventSink::new(move |e| events.lock().expect("events").push(e))
    };
    let store = StateStore::open(state_dir, &env.name, env.target.kind()).expect("state");
    let ctx = StepCtx::new(
        Arc::new(env),
        backends,
        store,
        sink,
        kgenv_core::steps::host::addr_for,
    )
    .with_host_ready_within(Duration::from_secs(20));
    let selected: BTreeSet<String> = [step.id.clone()].into();
    let steps: Vec<Arc<dyn Step>> = vec![Arc::new(step)];
    let res = drive::up(&steps, &selected, &ctx, "up").await;
    let seen = events.lock().expect("events").clone();
    (res, seen)
}

/// Whether a process whose command line contains `pattern` runs on this machine (where
/// the test sshd runs its commands). Write the pattern with a bracket (`sleep 43[2]1.25`)
/// so it does not match pgrep's own command line.
fn running(pattern: &str) -> bool {
    Command::new("pgrep")
        .args(["-f", pattern])
        .output()
        .expect("pgrep runs (procps)")
        .status
        .success()
}

/// Waits until no process matches `pattern`, for at most `within`.
async fn gone_within(pattern: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if !running(pattern) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    !running(pattern)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_command_is_killed_and_fails_its_step_naming_it() {
    let sshd = Sshd::start_new();
    let state = tempfile::tempdir().expect("state dir");
    // The step's own default is ten minutes; kgenv.toml's `default` entry makes it 1s.
    let step = RemoteStep {
        id: "hang".into(),
        command: "for i in 1 2 3 4 5 6 7 8 9 10 11 12; do echo line $i; done; echo to stderr >&2; sleep 4321.25".into(),
        limit: CommandTimeout::total(Duration::from_secs(600)),
    };
    let t0 = Instant::now();
    let (res, events) = up(
        &sshd,
        state.path(),
        Timeouts::builder().set("default", "1s"),
        step,
    )
    .await;
    let waited = t0.elapsed();
    let err = res.expect_err("the step times out");
    assert!(err.is_timeout() && err.kind() == "timeout", "{err:?}");
    assert!(matches!(err, Error::RunFailed { ref failed, .. } if failed == &["hang"]));
    let t = err.command_timeout().expect("a command timeout");
    assert_eq!(t.step.as_deref(), Some("hang"));
    assert_eq!(t.command, "hang apply", "the label, not the script");
    assert_eq!(
        t.after,
        Duration::from_secs(1),
        "the config's limit, not the step's"
    );
    assert!(!t.inactivity);
    assert_eq!(t.host, format!("{}@127.0.0.1:{}", sshd.user, sshd.port));
    let want: Vec<String> = (4..=12)
        .map(|i| format!("line {i}"))
        .chain(["to stderr".to_string()])
        .collect();
    assert_eq!(t.last_lines, want, "the last 10 lines, stdout and stderr");
    let text = error_chain(&err);
    assert!(
        text.contains("`hang apply`") && text.contains("line 12") && text.contains("1s"),
        "{text}"
    );
    // The run's failure event carries the kind scripts match on.
    assert!(
        events.iter().any(
            |e| matches!(e, Event::Failed { step, kind, .. } if step == "hang" && kind == "timeout")
        ),
        "{events:?}"
    );
    assert!(
        waited < Duration::from_secs(30),
        "the limit ended the wait: {waited:?}"
    );
    assert!(
        gone_within("sleep 43[2]1.25", Duration::from_secs(10)).await,
        "the timed-out command still runs on the host"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inactivity_limit_spares_a_busy_command_and_kills_a_silent_one() {
    let sshd = Sshd::start_new();
    let state = tempfile::tempdir().expect("state dir");
    // Prints every 0.1s for about 5s: more than twice the 2s limit on silence, in all. The
    // limit is 20 ticks wide, so a loaded machine's scheduling pauses cannot reach it.
    let busy = RemoteStep {
        id: "data/busy".into(),
        command: "i=0; while [ $i -lt 50 ]; do echo tick $i; sleep 0.1; i=$((i+1)); done".into(),
        limit: CommandTimeout::inactivity(Duration::from_secs(600)),
    };
    let t0 = Instant::now();
    let (res, _) = up(
        &sshd,
        state.path(),
        Timeouts::builder().set("data", "2s"),
        busy,
    )
    .await;
    res.expect("a command that keeps printing is not killed");
    assert!(
        t0.elapsed() > Duration::from_secs(4),
        "it ran longer than the limit"
    );

    let silent = RemoteStep {
        id: "data/silent".into(),
        command: "echo started; sleep 4322.25".into(),
        limit: CommandTimeout::inactivity(Duration::from_secs(600)),
    };
    let (res, _) = up(
        &sshd,
        state.path(),
        Timeouts::builder()
            .set("data/silent", "2s")
            .set("data", "1h"),
        silent,
    )
    .await;
    let err = res.expect_err("a silent command times out");
    let t = err.command_timeout().expect("a command timeout");
    assert_eq!(
        (t.step.as_deref(), t.after, t.inactivity),
        (Some("data/silent"), Duration::from_secs(2), true),
        "the step's own entry wins over its family's, and the kind stays the step's"
    );
    assert_eq!(t.last_lines, vec!["started".to_string()]);
    let text = error_chain(&err);
    assert!(text.contains("printed nothing for 2s"), "{text}");
    assert!(
        gone_within("sleep 43[2]2.25", Duration::from_secs(10)).await,
        "the silent command still runs on the host"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_step_stops_a_stalled_agent_after_its_silence_limit() {
    let sshd = Sshd::start_new();
    let work = tempfile::tempdir().expect("work dir");
    // The "agent" kgenv copies to the host and runs: it says three things, then stalls
    // (a hung file system, a dead download) without another word.
    let agent = work.path().join("stalled-agent.sh");
    std::fs::write(
        &agent,
        "#!/bin/sh\necho resolving; echo connecting; echo waiting for data\nexec sleep 4323.25\n",
    )
    .expect("agent script");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    // Only this test in this file runs the data agent: setting the variable is safe here.
    std::env::set_var("KGENV_REMOTE_BINARY", &agent);
    // Where kgenv copies it on the "host" (this machine, as the sshd's user): removed at
    // the end, so the test leaves nothing in the home directory.
    let copied = {
        use sha2::Digest;
        let hash = hex::encode(sha2::Sha256::digest(std::fs::read(&agent).expect("agent")));
        let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
        std::path::PathBuf::from(home).join(format!(".cache/kgenv/bin/kgenv-{}", &hash[..16]))
    };

    let (target, connector) = ssh_target(&sshd);
    let dest = work.path().join("comp");
    let env = Env::builder("kgtodata")
        .target(target)
        .data(Data::builder("stallcomp").dest(dest.display().to_string()))
        .timeouts(Timeouts::builder().set("data", "2s"))
        .build()
        .expect("valid env");
    let client = KaggleClient::new(
        KaggleEndpoint::custom("http://127.0.0.1:9").expect("endpoint"),
        Credentials::Token {
            token: Secret::new("kgat_never_sent"),
            source: "test".into(),
        },
    )
    .expect("client");
    let mut backends = MockWorld::new().backends();
    backends.remote = Arc::new(connector);
    backends.kaggle =
        Arc::new(KaggleData::new(client, DownloadOptions::default()).expect("kaggle"));
    let runner = Runner::new(env, backends)
        .state_dir(work.path().join("state"))
        .host_ready_within(Duration::from_secs(20));

    let err = runner
        .up(
            RunOptions::default().only(["host", "data/stallcomp"]),
            |_| {},
        )
        .await
        .expect_err("the stalled agent times out");
    let t = err
        .command_timeout()
        .unwrap_or_else(|| panic!("a command timeout: {err:?}"));
    assert_eq!(t.step.as_deref(), Some("data/stallcomp"));
    assert!(
        t.command.starts_with("kgenv data agent: "),
        "named by its operation, not its path: {}",
        t.command
    );
    assert_eq!(
        (t.after, t.inactivity),
        (Duration::from_secs(2), true),
        "the data step limits silence, and the `data` family entry sets it"
    );
    assert_eq!(
        t.last_lines,
        ["resolving", "connecting", "waiting for data"]
    );
    assert!(
        gone_within("sleep 43[2]3.25", Duration::from_secs(10)).await,
        "the stalled agent still runs on the host"
    );
    assert!(
        copied.exists(),
        "the agent was copied to {}",
        copied.display()
    );
    std::fs::remove_file(&copied).expect("remove the copied agent");
}

/// The host step waits for a fresh VM's first boot, but not for ever: with `[timeouts]
/// first-boot = "2s"` and the driver installer still running on the host, `up` fails with a
/// timeout naming what it waited for, after saying so; once the installer is gone, the same
/// `up` goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_boot_wait_is_bounded_and_names_what_it_waited_for() {
    let sshd = Sshd::start_new();
    let work = tempfile::tempdir().expect("work dir");
    // A process named like the Deep Learning image's driver installer, on the "host".
    let mut installer = Command::new("bash")
        .args([
            "-c",
            "exec -a /opt/deeplearning/install-driver.sh sleep 4327.25",
        ])
        .spawn()
        .expect("a stand-in installer");
    let (target, connector) = ssh_target(&sshd);
    let env = Env::builder("kgtoboot")
        .target(target)
        .timeouts(Timeouts::builder().set("first-boot", "2s"))
        .build()
        .expect("valid env");
    let mut backends = MockWorld::new().backends();
    backends.remote = Arc::new(connector);
    let runner = Runner::new(env, backends)
        .state_dir(work.path().join("state"))
        .host_ready_within(Duration::from_secs(20));
    let logs = Arc::new(Mutex::new(Vec::new()));
    let seen = logs.clone();
    let res = runner
        .up(RunOptions::default().only(["host"]), move |e| {
            if let Event::Log { line, .. } = e {
                seen.lock().expect("logs").push(line);
            }
        })
        .await;
    let _ = installer.kill();
    let _ = installer.wait();
    let err = res.expect_err("the installer outlives the first-boot limit");
    assert!(err.is_timeout(), "a timeout: {err}");
    let text = error_chain(&err);
    assert!(
        text.contains("NVIDIA driver install") && text.contains("install-driver.sh"),
        "names what it waited for: {text}"
    );
    let logs = logs.lock().expect("logs").clone();
    assert!(
        logs.iter()
            .any(|l| l.starts_with("waiting for the NVIDIA driver install (pid ")),
        "progress said what it waited for: {logs:?}"
    );
    // The installer is gone: the same `up` passes the host step.
    runner
        .up(RunOptions::default().only(["host"]), |_| {})
        .await
        .expect("a host whose first boot is over is ready");
}

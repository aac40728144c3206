//! Crash convergence (issue 12, item 5): the real `kgenv` binary, SIGKILLed at many points
//! of `up`, then a plain `up` converges to exactly one RUNNING instance, one rule per
//! configured firewall rule and one data disk; `down` then leaves only the kept data disk,
//! and `down --delete-disk` nothing.
//!
//! kgenv talks to the Compute fake (`kgenv-core/tests/support/gce_fake.rs`, every request
//! checked against Google's discovery document). The fake is set up so that a kill finds
//! work in flight: operations take hundreds of milliseconds, the first zone is out of stock
//! (its insert shows the instance PROVISIONING for a while, then fails and GCE removes the
//! instance, as GCE does), and a few calls meet transient 503/429 answers or lose their
//! answer after the work was done. The runs are scoped to the GCE part of the pipeline
//! (`--only preflight firewall instance data-disk`), so no SSH host is needed.

#[path = "../../kgenv-core/tests/support/gce_fake.rs"]
mod gce_fake;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use gce_fake::{FakeGce, Fault};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_kgenv");
const PROJECT: &str = "kgenv-crash";
/// Out of stock: every insert there fails after its PROVISIONING window.
const ZONE_A: &str = "us-central1-a";
/// Where the instance lands.
const ZONE_B: &str = "us-central1-b";
/// The GCE part of `up`: no step here needs an SSH host.
const GCE_STEPS: [&str; 4] = ["preflight", "firewall", "instance", "data-disk"];

/// The runtime the fakes run on (shared by every scenario of this test binary).
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime for the Compute fakes")
    })
}

/// One kgenv run's output, parsed.
struct Run {
    output: Output,
    events: Vec<Value>,
    result: Option<Value>,
}

impl Run {
    fn parse(output: Output) -> Self {
        let mut events = Vec::new();
        let mut result = None;
        for line in String::from_utf8_lossy(&output.stdout).lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            match v.get("result") {
                Some(r) => result = Some(r.clone()),
                None => events.push(v),
            }
        }
        Self {
            output,
            events,
            result,
        }
    }

    fn ok(&self) -> bool {
        self.output.status.success() && self.result.is_some()
    }

    /// Exit status, failed steps, the last events and stderr: enough to diagnose a red run.
    fn diagnosis(&self) -> String {
        let mut out = format!("exit status: {}\n", self.output.status);
        for e in self.events.iter().filter(|e| e["event"] == "failed") {
            out.push_str(&format!(
                "step `{}` FAILED ({}): {}\n",
                e["step"].as_str().unwrap_or("?"),
                e["kind"],
                e["message"]
            ));
        }
        out.push_str("events:\n");
        for e in &self.events {
            out.push_str(&format!("  {e}\n"));
        }
        out.push_str(&format!(
            "stderr:\n{}",
            String::from_utf8_lossy(&self.output.stderr)
        ));
        out
    }

    /// The log lines and warnings of `step`.
    fn messages(&self, step: &str) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| e["step"] == step)
            .filter_map(|e| {
                e.get("line")
                    .or_else(|| e.get("message"))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .collect()
    }

    /// Steps that ran their apply phase.
    fn applied(&self) -> Vec<String> {
        self.events
            .iter()
            .filter(|e| e["event"] == "started" && e["phase"] == "apply")
            .filter_map(|e| e["step"].as_str().map(str::to_string))
            .collect()
    }
}

/// When to SIGKILL a `kgenv up`.
#[derive(Debug, Clone, Copy)]
enum Kill {
    /// Right after its k-th JSON event line (1-based).
    AfterLine(usize),
    /// This long after it started.
    AfterDelay(Duration),
    /// As soon as the fake has answered a call of this method, whose path contains the
    /// second string, with this status (an accepted create: its operation still running).
    OnCall(&'static str, &'static str, u16),
}

/// What a killed `up` had reached ([`Scenario::up_killed`]).
#[derive(Debug)]
struct Reached {
    /// The point, as reached: the event line, the delay, the call answered.
    what: String,
    /// Event lines it printed before it died.
    events: usize,
}

/// One environment: a fresh Compute fake, a temp HOME/KGENV_HOME and a config.
struct Scenario {
    fake: FakeGce,
    dir: tempfile::TempDir,
    name: String,
    config: PathBuf,
}

impl Scenario {
    /// A gce environment in zones A (out of stock) then B, with two firewall rules and a
    /// data disk; the fake's operations are slow enough to be caught in flight, and a few
    /// calls meet transient faults (consumed by whichever run meets them first).
    fn new(tag: &str) -> Self {
        let fake = runtime().block_on(FakeGce::start_with(gce_fake::Config {
            stockout_zones: BTreeSet::from([ZONE_A.to_string()]),
            failed_insert_window: Duration::from_millis(600),
            op_latency: [
                ("compute.instances.insert", 500),
                ("compute.firewalls.insert", 250),
                ("compute.disks.insert", 300),
                ("compute.instances.attachDisk", 250),
            ]
            .into_iter()
            .map(|(m, ms)| (m.to_string(), Duration::from_millis(ms)))
            .collect(),
            default_op_latency: Duration::from_millis(80),
            hostkey_delay: Duration::from_millis(150),
            ..gce_fake::Config::default()
        }));
        // Transient faults: refused before the work, or done with the answer lost (the
        // retry, with the same requestId, must get the first call's operation).
        fake.inject("compute.firewalls.insert", 1, Fault::unavailable());
        fake.inject("compute.instances.insert", 1, Fault::too_many(None));
        fake.inject("compute.disks.insert", 1, Fault::AfterApply { status: 503 });
        fake.inject("compute.instances.get", 1, Fault::unavailable());
        fake.inject("compute.instances.attachDisk", 1, Fault::too_many(Some(0)));
        let dir = tempfile::tempdir().expect("tempdir");
        let name = format!("kc{tag}");
        std::fs::create_dir_all(dir.path().join("home")).expect("home");
        std::fs::create_dir_all(dir.path().join("kgenv/config")).expect("kgenv config dir");
        let config = dir.path().join("kgenv.toml");
        std::fs::write(
            &config,
            format!(
                r#"name = "{name}"
target = "gce"

[instance]
project = "{PROJECT}"
zones = ["{ZONE_A}", "{ZONE_B}"]
machine_type = "n1-standard-8"
gpu_type = "none"
disk_size_gb = 60

[instance.data_disk]
size_gb = 120

[[firewall]]
name = "{name}-ssh"
ports = [22]

[[firewall]]
name = "{name}-web"
ports = [8888]
source_ranges = ["10.8.0.0/16"]
"#
            ),
        )
        .expect("kgenv.toml");
        Self {
            fake,
            dir,
            name,
            config,
        }
    }

    fn rules(&self) -> BTreeSet<String> {
        BTreeSet::from([format!("{}-ssh", self.name), format!("{}-web", self.name)])
    }

    fn data_disk(&self) -> String {
        format!("{}-data", self.name)
    }

    fn state_file(&self) -> PathBuf {
        self.dir
            .path()
            .join("kgenv/state")
            .join(format!("{}.json", self.name))
    }

    fn state(&self) -> Option<Value> {
        let bytes = std::fs::read(self.state_file()).ok()?;
        Some(serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "the state file {} does not parse: {e}\n{}",
                self.state_file().display(),
                String::from_utf8_lossy(&bytes)
            )
        }))
    }

    /// `kgenv --json ARGS` with this environment's config, HOME, KGENV_HOME and fake.
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--json")
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env("HOME", self.dir.path().join("home"))
            .env("KGENV_HOME", self.dir.path().join("kgenv"))
            .env(
                "CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE",
                self.fake.base_url(),
            )
            .env("GOOGLE_OAUTH_ACCESS_TOKEN", gce_fake::TOKEN)
            .env("KGENV_CALLER_IP_URL", self.fake.caller_ip_url())
            .env("NO_COLOR", "1")
            .env_remove("KGENV_CONFIG")
            .env_remove("RUST_LOG")
            .env_remove("CLOUDSDK_CORE_PROJECT")
            .env_remove("CLOUDSDK_COMPUTE_ZONE")
            .env_remove("GOOGLE_APPLICATION_CREDENTIALS")
            .stdin(Stdio::null());
        c
    }

    fn up_args() -> Vec<&'static str> {
        let mut a = vec!["up", "--yes", "--only"];
        a.extend(GCE_STEPS);
        a
    }

    fn run(&self, args: &[&str]) -> Run {
        Run::parse(self.command(args).output().expect("kgenv runs"))
    }

    /// The plain `up` of the GCE part.
    fn up(&self) -> Run {
        self.run(&Self::up_args())
    }

    /// Runs `up` and SIGKILLs it at `kill`, and returns what it reached. The point must be
    /// reached while the process still runs (`try_wait()` is `None` right before the
    /// SIGKILL, no final result printed) and the process must die of that SIGKILL: a point
    /// never reached, or reached only once `up` had finished, fails with its name.
    fn up_killed(&self, kill: Kill) -> Reached {
        let mut child = self
            .command(&Self::up_args())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("kgenv up starts");
        let stdout = child.stdout.take().expect("stdout piped");
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
        let started = Instant::now();
        let deadline = started + Duration::from_secs(60);
        let mut events: Vec<Value> = Vec::new();
        let mut finished = false;
        // Polls every 5 ms: the point, then whether the run ended first. A line point reads
        // no further than its line, so the point is exactly that line.
        let outcome: Result<String, String> = loop {
            while !matches!(kill, Kill::AfterLine(k) if events.len() >= k) {
                let Ok(v) = rx.try_recv() else { break };
                if v.get("event").is_some() {
                    events.push(v);
                } else if v.get("result").is_some() {
                    finished = true;
                }
            }
            let reached = match kill {
                Kill::AfterLine(k) => (events.len() >= k).then(|| {
                    let ev = &events[k - 1];
                    format!("event line {k}: {ev}")
                }),
                Kill::AfterDelay(d) => (started.elapsed() >= d)
                    .then(|| format!("{} ms after the start", started.elapsed().as_millis())),
                Kill::OnCall(method, path, status) => self
                    .fake
                    .requests()
                    .iter()
                    .find(|r| r.method_id == method && r.path.contains(path) && r.status == status)
                    .map(|r| format!("{method} {} answered {}", r.path, r.status)),
            };
            if let Some(what) = reached {
                if let Some(st) = child.try_wait().expect("try_wait on kgenv up") {
                    break Err(format!("reached ({what}) only after up had exited ({st})"));
                }
                if finished {
                    break Err(format!("reached ({what}) only after up printed its result"));
                }
                child.kill().expect("SIGKILL kgenv up"); // SIGKILL
                break Ok(what);
            }
            if let Some(st) = child.try_wait().expect("try_wait on kgenv up") {
                break Err(format!("never reached: up exited first ({st})"));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                break Err("not reached within 60 s".to_string());
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let status = child.wait().expect("wait for kgenv up");
        let _ = reader.join();
        // What was still in the pipe was printed before the kill: a result there means the
        // run had finished its work when it was killed.
        for v in rx.try_iter() {
            if v.get("event").is_some() {
                events.push(v);
            } else if v.get("result").is_some() {
                finished = true;
            }
        }
        let outcome = match outcome {
            Ok(what) if finished => Err(format!(
                "reached ({what}), but up had printed its final result before the SIGKILL"
            )),
            other => other,
        };
        let what = outcome.unwrap_or_else(|why| {
            panic!(
                "kill point {kill:?} {why}; its events:\n  {}",
                events
                    .iter()
                    .map(Value::to_string)
                    .collect::<Vec<_>>()
                    .join("\n  ")
            )
        });
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            status.signal(),
            Some(9),
            "kill point {kill:?}: up died of the SIGKILL, not of its own end ({status}); reached {what}"
        );
        Reached {
            what,
            events: events.len(),
        }
    }

    /// Asserts the environment converged: one RUNNING instance (in zone B: A is out of
    /// stock), one rule per configured rule, one data disk attached to the instance in its
    /// zone, nothing else; the state records each of them with the owner id they carry.
    fn assert_converged(&self, what: &str) {
        let instances = self.fake.instances();
        assert_eq!(
            instances,
            vec![(ZONE_B.to_string(), self.name.clone(), "RUNNING".to_string())],
            "{what}: exactly one RUNNING instance, in {ZONE_B} (none in the stockout zone {ZONE_A})"
        );
        let rules: Vec<String> = self
            .fake
            .firewalls()
            .iter()
            .filter_map(|f| f["name"].as_str().map(str::to_string))
            .collect();
        assert_eq!(
            rules,
            self.rules().into_iter().collect::<Vec<_>>(),
            "{what}: exactly one rule per configured firewall rule"
        );
        let user = format!("projects/{PROJECT}/zones/{ZONE_B}/instances/{}", self.name);
        let mut disks = self.fake.disks();
        disks.sort();
        assert_eq!(
            disks,
            vec![
                (
                    ZONE_B.to_string(),
                    self.name.clone(),
                    60,
                    vec![user.clone()]
                ),
                (
                    ZONE_B.to_string(),
                    self.data_disk(),
                    120,
                    vec![user.clone()]
                ),
            ],
            "{what}: the boot disk and exactly one data disk, both in the instance's zone and attached to it"
        );
        let state = self
            .state()
            .unwrap_or_else(|| panic!("{what}: no state file after a converged up"));
        let owner = state["owner"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: the state has no owner id: {state:#}"));
        let steps = &state["steps"];
        assert_eq!(
            steps["instance"]["created"]["instance"].as_str(),
            Some(user.as_str()),
            "{what}: the state records the instance: {state:#}"
        );
        assert_eq!(
            steps["data-disk"]["created"]["disk"].as_str(),
            Some(
                format!(
                    "projects/{PROJECT}/zones/{ZONE_B}/disks/{}",
                    self.data_disk()
                )
                .as_str()
            ),
            "{what}: the state records the data disk: {state:#}"
        );
        for rule in self.rules() {
            assert_eq!(
                steps[format!("firewall/{rule}")]["created"]["firewall"].as_str(),
                Some(format!("projects/{PROJECT}/global/firewalls/{rule}").as_str()),
                "{what}: the state records firewall rule {rule}: {state:#}"
            );
        }
        let inst = self
            .fake
            .instance(PROJECT, ZONE_B, &self.name)
            .expect("the instance");
        assert_eq!(
            inst["labels"]["kgenv-owner"].as_str(),
            Some(owner),
            "{what}: the instance carries the state's owner id"
        );
        assert_eq!(
            steps["instance"]["facts"]["id"].as_str(),
            inst["id"].as_str(),
            "{what}: the state records the instance's GCE id"
        );
        let disk = self
            .fake
            .disk(PROJECT, ZONE_B, &self.data_disk())
            .expect("the data disk");
        assert_eq!(
            disk["labels"]["kgenv-owner"].as_str(),
            Some(owner),
            "{what}: the data disk carries the state's owner id"
        );
        for f in self.fake.firewalls() {
            let d = f["description"].as_str().unwrap_or_default();
            assert!(
                d.contains(&format!("kgenv-owner={owner}")),
                "{what}: firewall rule {} carries the state's owner id: {d}",
                f["name"]
            );
        }
        self.fake.assert_conforms();
    }

    /// `down --yes` leaves only the data disk (detached, still recorded); `down --yes
    /// --delete-disk NAME` then leaves nothing, and no state file.
    fn assert_down_keeps_only_the_disk(&self, what: &str) {
        let down = self.run(&["down", "--yes"]);
        assert!(down.ok(), "{what}: down failed:\n{}", down.diagnosis());
        assert!(
            self.fake.instances().is_empty(),
            "{what}: down deleted the instance: {:?}",
            self.fake.instances()
        );
        assert!(
            self.fake.firewalls().is_empty(),
            "{what}: down deleted the firewall rules: {:?}",
            self.fake.firewalls()
        );
        assert_eq!(
            self.fake.disks(),
            vec![(ZONE_B.to_string(), self.data_disk(), 120, Vec::new())],
            "{what}: down keeps only the data disk, detached (the boot disk went with the VM)"
        );
        let state = self
            .state()
            .unwrap_or_else(|| panic!("{what}: down dropped the state file of the kept disk"));
        let created: Vec<(String, String)> = state["steps"]
            .as_object()
            .into_iter()
            .flatten()
            .flat_map(|(step, r)| {
                r["created"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(move |(_, link)| (step.clone(), link.as_str().unwrap_or("").into()))
            })
            .collect();
        assert_eq!(
            created,
            vec![(
                "data-disk".to_string(),
                format!(
                    "projects/{PROJECT}/zones/{ZONE_B}/disks/{}",
                    self.data_disk()
                )
            )],
            "{what}: after down the state records only the kept data disk: {state:#}"
        );
        let data_disk = self.data_disk();
        let gone = self.run(&["down", "--yes", "--delete-disk", &data_disk]);
        assert!(
            gone.ok(),
            "{what}: down --delete-disk failed:\n{}",
            gone.diagnosis()
        );
        assert!(
            self.fake.disks().is_empty() && self.fake.instances().is_empty(),
            "{what}: down --delete-disk leaves nothing: disks {:?}, instances {:?}",
            self.fake.disks(),
            self.fake.instances()
        );
        assert!(
            self.state().is_none(),
            "{what}: nothing is left, so no state file is left: {:?}",
            self.state()
        );
        self.fake.assert_conforms();
    }
}

/// Kill, converge, check, tear down, check: one kill point.
fn kill_then_converge(tag: &str, kill: Kill) -> usize {
    let sc = Scenario::new(tag);
    let reached = sc.up_killed(kill);
    let seen = reached.events;
    let what = format!(
        "killed at {kill:?}, having reached {} ({seen} event lines printed)",
        reached.what
    );
    let up = sc.up();
    assert!(
        up.ok(),
        "{what}: the plain up after the kill failed:\n{}",
        up.diagnosis()
    );
    sc.assert_converged(&what);
    sc.assert_down_keeps_only_the_disk(&what);
    seen
}

/// The undisturbed run: that a second `up` changes nothing, and the line at which the last
/// step's apply starts (the line kill points cover every line up to it).
fn baseline() -> usize {
    let sc = Scenario::new("base");
    let up = sc.up();
    assert!(up.ok(), "the uninterrupted up failed:\n{}", up.diagnosis());
    assert!(
        sc.fake.unused_faults().is_empty(),
        "every injected fault was met: {:?}",
        sc.fake.unused_faults()
    );
    sc.assert_converged("uninterrupted up");
    let again = sc.up();
    assert!(again.ok(), "second up failed:\n{}", again.diagnosis());
    assert!(
        again.applied().is_empty(),
        "a second up applies nothing: {:?}\n{}",
        again.applied(),
        again.diagnosis()
    );
    sc.assert_down_keeps_only_the_disk("uninterrupted up");
    // Line points end where the last step's apply starts. After its last line (the step's
    // end) only the state save and the result follow, no call to wait on, so a kill there
    // would race the process's exit (and a kill of a finished process proves nothing). A run
    // can print a line or two fewer than this one (retry messages come and go), so the
    // points stop before the data disk's two logged calls (create, attach) rather than
    // right before its end; the calls themselves have their own points (`Kill::OnCall`).
    let last = up.events.last().cloned().unwrap_or_default();
    assert!(
        last["step"] == "data-disk" && last["event"] == "done" && last["phase"] == "apply",
        "the uninterrupted up ends with the data disk's apply done: {last}"
    );
    up.events
        .iter()
        .position(|e| e["step"] == "data-disk" && e["event"] == "started" && e["phase"] == "apply")
        .map(|i| i + 1)
        .unwrap_or_else(|| {
            panic!(
                "the uninterrupted up applied the data disk:\n{}",
                up.diagnosis()
            )
        })
}

/// The Compute fake checks conformance when it is dropped, and here it is dropped inside a
/// [`Scenario`] (inside `catch_unwind` in the kill points): a request that broke the
/// discovery document still fails the test.
#[test]
#[should_panic(
    expected = "dropped with 1 conformance problem(s) the test neither took nor expected:\n- compute.instances.stop: mutating call without requestId"
)]
fn a_non_conforming_request_fails_the_test_when_the_scenario_is_dropped() {
    let sc = Scenario::new("conf");
    let status = runtime().block_on(sc.fake.send_raw(
        "POST",
        &format!(
            "projects/{PROJECT}/zones/{ZONE_B}/instances/{}/stop",
            sc.name
        ),
        None,
    ));
    assert_eq!(status, 400, "refused");
    drop(sc);
}

#[test]
fn sigkill_anywhere_in_up_then_up_converges() {
    let lines = baseline();
    assert!(
        lines >= 10,
        "a whole up prints its events ({lines} lines): the kill points need them"
    );
    // Every line up to the data disk's apply start (see `baseline`).
    let mut points: Vec<Kill> = (1..=lines).map(Kill::AfterLine).collect();
    points.extend(
        [150, 400, 700, 1000, 1500]
            .into_iter()
            .map(|ms| Kill::AfterDelay(Duration::from_millis(ms))),
    );
    // With a create call answered and its operation still running: the resource exists
    // (or, in the stockout zone, is about to vanish) and nothing has recorded it yet.
    points.extend([
        Kill::OnCall("compute.firewalls.insert", "/global/firewalls", 200),
        Kill::OnCall("compute.instances.insert", ZONE_A, 200),
        Kill::OnCall("compute.instances.insert", ZONE_B, 200),
        Kill::OnCall("compute.instances.getGuestAttributes", ZONE_B, 200),
        // The disk made, its answer lost (the injected 503), killed before the retry.
        Kill::OnCall("compute.disks.insert", ZONE_B, 503),
        Kill::OnCall("compute.disks.insert", ZONE_B, 200),
        Kill::OnCall("compute.instances.attachDisk", ZONE_B, 200),
    ]);
    // The kill points are independent (one fake and one state each): a few at a time.
    let started = Instant::now();
    let queue = std::sync::Mutex::new(points.into_iter().enumerate());
    let failures = std::sync::Mutex::new(Vec::<String>::new());
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| loop {
                let next = queue.lock().unwrap_or_else(|p| p.into_inner()).next();
                let Some((i, kill)) = next else { break };
                let r = std::panic::catch_unwind(|| kill_then_converge(&i.to_string(), kill));
                if let Err(p) = r {
                    let msg = p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    failures.lock().unwrap_or_else(|p| p.into_inner()).push(msg);
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap_or_else(|p| p.into_inner());
    assert!(
        failures.is_empty(),
        "{} kill point(s) did not converge:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    eprintln!(
        "{lines} line kill points, 5 timed and 7 on calls in {:?}",
        started.elapsed()
    );
}

#[test]
fn killed_while_provisioning_in_the_stockout_zone_then_up_waits_and_moves_on() {
    let sc = Scenario::new("prov");
    // A long PROVISIONING window: the kill surely lands inside it.
    sc.fake
        .configure(|c| c.failed_insert_window = Duration::from_secs(3));
    let mut child = sc
        .command(&Scenario::up_args())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("kgenv up starts");
    let provisioning_in_a = || {
        sc.fake.instances().contains(&(
            ZONE_A.to_string(),
            sc.name.clone(),
            "PROVISIONING".to_string(),
        ))
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !provisioning_in_a() {
        assert!(
            child.try_wait().ok().flatten().is_none(),
            "up ended before its insert in {ZONE_A} showed the instance PROVISIONING"
        );
        assert!(
            Instant::now() < deadline,
            "the instance never showed PROVISIONING in {ZONE_A}: {:?}",
            sc.fake.instances()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        child.try_wait().expect("try_wait on kgenv up").is_none(),
        "up is still running when the instance shows PROVISIONING in {ZONE_A}"
    );
    child.kill().expect("SIGKILL kgenv up"); // with the failing insert under way
    let status = child.wait().expect("wait for kgenv up");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "up died of the SIGKILL ({status})"
    );
    assert!(
        provisioning_in_a(),
        "right after the kill the instance is still PROVISIONING in {ZONE_A}: {:?}",
        sc.fake.instances()
    );

    let up = sc.up();
    assert!(up.ok(), "the up after the kill failed:\n{}", up.diagnosis());
    let log = up.messages("instance").join("\n");
    assert!(
        log.contains("waiting for it"),
        "up waited on the PROVISIONING instance instead of adopting it:\n{log}"
    );
    assert!(
        log.contains("is gone"),
        "up saw the failed insert's instance vanish:\n{log}"
    );
    assert!(
        log.contains(&format!("in {ZONE_B}")),
        "up created the instance in the next zone:\n{log}"
    );
    sc.assert_converged("killed while PROVISIONING in the stockout zone");
    sc.assert_down_keeps_only_the_disk("killed while PROVISIONING in the stockout zone");
}

//! The idle and budget agent (`kgenv-idle`): its pure decisions as tables (sessions,
//! Jupyter times, busy kernels, GPU and CPU readings, the warning window, budget used and
//! remaining, clocks that jump), the rendered agent through `shellcheck`, and the agent
//! itself run here against the real jupyter_server from PyPI with a kernel busy in a cell
//! that prints nothing, stand-ins for `nvidia-smi`, `docker`, `wall` and `ss` on PATH, a
//! clock and an uptime the test moves, and a marker file in place of `systemctl poweroff`.

#[path = "support/peers.rs"]
mod peers;
use peers::{free_port, shellcheck, venv_python, Proc};

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kgenv_core::steps::autostop::{
    AutostopScript, BudgetLimit, JupyterProbe, BUDGET_DECIDE_FN, IDLE_DECIDE_FN,
};

// -- the pure decisions ------------------------------------------------------------------

fn sh_fn(text: &str, name: &str, args: &[String]) -> String {
    let line = format!("{text}\n{name} \"$@\"\n");
    let out = Command::new("sh")
        .args(["-c", &line, "sh"])
        .args(args)
        .output()
        .expect("sh");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// One idle reading; `None`/empty fields are unknown.
#[derive(Clone)]
struct Idle {
    now: u64,
    boot: u64,
    last: String,
    minutes: u32,
    warn: u32,
    warned_for: String,
    warned_at: String,
    sessions: String,
    jupyter: String,
    busy: String,
    gpu: String,
    cpu: String,
}

const NOW: u64 = 1_700_000_000;

fn idle() -> Idle {
    Idle {
        now: NOW,
        boot: NOW - 86_400,
        last: (NOW - 3600).to_string(),
        minutes: 30,
        warn: 5,
        warned_for: String::new(),
        warned_at: String::new(),
        sessions: "0".into(),
        jupyter: String::new(),
        busy: "0".into(),
        gpu: String::new(),
        cpu: String::new(),
    }
}

fn decide(i: &Idle) -> String {
    let args = [
        i.now.to_string(),
        i.boot.to_string(),
        i.last.clone(),
        i.minutes.to_string(),
        i.warn.to_string(),
        i.warned_for.clone(),
        i.warned_at.clone(),
        i.sessions.clone(),
        i.jupyter.clone(),
        i.busy.clone(),
        i.gpu.clone(),
        "10".into(),
        i.cpu.clone(),
        "20".into(),
    ];
    sh_fn(IDLE_DECIDE_FN, "kgenv_idle_decide", &args)
}

#[test]
fn idle_decision_table() {
    let ago = |m: u64| (NOW - m * 60).to_string();
    let base = idle();
    let warned = |last: &str, at: u64| Idle {
        warned_for: last.to_string(),
        warned_at: at.to_string(),
        last: last.to_string(),
        ..idle()
    };
    let cases: Vec<(&str, Idle, String)> = vec![
        (
            "an hour idle, never warned: warn first, never stop unannounced",
            base.clone(),
            format!("warn {} {}", NOW - 3600, NOW + 300),
        ),
        (
            "idle and warned 5 minutes ago for this stretch: stop",
            warned(&ago(60), NOW - 300),
            "stop".into(),
        ),
        (
            "warned only 4 minutes ago: keep until the warning is 5 minutes old",
            warned(&ago(60), NOW - 240),
            format!("keep {}", NOW - 3600),
        ),
        (
            "a warning for an earlier idle stretch does not count",
            Idle {
                warned_for: ago(90),
                warned_at: (NOW - 600).to_string(),
                ..base.clone()
            },
            format!("warn {} {}", NOW - 3600, NOW + 300),
        ),
        (
            "24 minutes idle: before the warning window",
            Idle {
                last: ago(24),
                ..idle()
            },
            format!("keep {}", NOW - 24 * 60),
        ),
        (
            "26 minutes idle: in the window; the stop comes a full lead after the warning",
            Idle {
                last: ago(26),
                ..idle()
            },
            format!("warn {} {}", NOW - 26 * 60, NOW + 5 * 60),
        ),
        (
            "an SSH session is activity now",
            Idle {
                sessions: "1".into(),
                ..idle()
            },
            format!("keep {NOW}"),
        ),
        (
            "a busy kernel (a cell that prints nothing) is activity now",
            Idle {
                busy: "1".into(),
                ..idle()
            },
            format!("keep {NOW}"),
        ),
        (
            "a GPU at 80% is activity",
            Idle {
                gpu: "80".into(),
                ..idle()
            },
            format!("keep {NOW}"),
        ),
        (
            "a GPU at the threshold is activity",
            Idle {
                gpu: "10".into(),
                ..idle()
            },
            format!("keep {NOW}"),
        ),
        (
            "a GPU at 9% is not",
            Idle {
                gpu: "9".into(),
                ..warned(&ago(60), NOW - 300)
            },
            "stop".into(),
        ),
        (
            "a process at 35% CPU is activity",
            Idle {
                cpu: "35".into(),
                ..idle()
            },
            format!("keep {NOW}"),
        ),
        (
            "a process at 19% CPU is not",
            Idle {
                cpu: "19".into(),
                ..warned(&ago(60), NOW - 300)
            },
            "stop".into(),
        ),
        (
            "Jupyter's last_activity newer than the stamp wins",
            Idle {
                jupyter: ago(1),
                ..idle()
            },
            format!("keep {}", NOW - 60),
        ),
        (
            "an old Jupyter activity does not keep it alive",
            Idle {
                jupyter: ago(50),
                ..warned(&ago(40), NOW - 600)
            },
            "stop".into(),
        ),
        (
            "a fresh boot counts as activity",
            Idle {
                boot: NOW - 120,
                last: (NOW - 10 * 3600).to_string(),
                ..idle()
            },
            format!("keep {}", NOW - 120),
        ),
        (
            "unknown readings (no nvidia-smi, no Jupyter, garbage) are ignored",
            Idle {
                sessions: "x".into(),
                busy: String::new(),
                gpu: "N/A".into(),
                cpu: String::new(),
                jupyter: "garbage".into(),
                ..warned(&ago(60), NOW - 300)
            },
            "stop".into(),
        ),
        (
            "no stamp yet: the boot is the last activity",
            Idle {
                last: String::new(),
                boot: NOW - 60,
                ..idle()
            },
            format!("keep {}", NOW - 60),
        ),
        (
            "a clock that went backwards: never a negative idle time",
            Idle {
                last: (NOW + 500).to_string(),
                ..idle()
            },
            format!("keep {NOW}"),
        ),
        (
            "a warning stamped in the future (clock went back): the full lead again",
            warned(&ago(60), NOW + 900),
            format!("keep {}", NOW - 3600),
        ),
        (
            "warn_minutes = 0: stop at the idle time without a warning",
            Idle { warn: 0, ..idle() },
            "stop".into(),
        ),
        (
            "warn_minutes = 0, 29 minutes: keep",
            Idle {
                warn: 0,
                last: ago(29),
                ..idle()
            },
            format!("keep {}", NOW - 29 * 60),
        ),
    ];
    for (why, input, want) in cases {
        assert_eq!(decide(&input), want, "{why}");
    }
}

/// `kgenv_budget_decide` with the budget 600 s set for `max_hours=…`, warning 5 minutes.
fn budget(
    rfor: &str,
    boot_id: &str,
    up: u64,
    rboot: &str,
    rup: &str,
    used: &str,
    wused: &str,
) -> String {
    let args = [
        "max_hours=0.1".to_string(),
        rfor.into(),
        boot_id.into(),
        up.to_string(),
        rboot.into(),
        rup.into(),
        used.into(),
        wused.into(),
        "600".into(),
        "5".into(),
    ];
    sh_fn(BUDGET_DECIDE_FN, "kgenv_budget_decide", &args)
}

#[test]
fn budget_decision_table() {
    let f = "max_hours=0.1";
    let cases = [
        (
            "first tick: nothing used yet",
            budget("", "A", 900, "", "", "", ""),
            "keep 0 -",
        ),
        (
            "a budget set for something else starts again from 0",
            budget("max_hours=5", "A", 900, "A", "100", "17000", "16000"),
            "keep 0 -",
        ),
        (
            "same boot: the time since the last tick",
            budget(f, "A", 160, "A", "100", "40", "-"),
            "keep 100 -",
        ),
        (
            "a new boot: its whole uptime (the stopped time never counts)",
            budget(f, "B", 30, "A", "5000", "100", "-"),
            "keep 130 -",
        ),
        (
            "reaching limit minus the lead: warn",
            budget(f, "A", 400, "A", "200", "100", "-"),
            "warn 300 300",
        ),
        (
            "used up but the warning only 280 s old: keep",
            budget(f, "A", 580, "A", "400", "400", "300"),
            "keep 580 300",
        ),
        (
            "used up and warned 5 minutes ago: stop",
            budget(f, "A", 600, "A", "400", "400", "300"),
            "stop 600 300",
        ),
        (
            "used up without a warning (ticks missed): warn first",
            budget(f, "A", 2000, "A", "100", "100", "-"),
            "warn 2000 2000",
        ),
        (
            "started again after the budget stop: warned again, not stopped at once",
            budget(f, "C", 300, "A", "5000", "700", "300"),
            "warn 1000 1000",
        ),
        (
            "uptime that went backwards in one boot adds nothing",
            budget(f, "A", 50, "A", "100", "120", "-"),
            "keep 120 -",
        ),
        (
            "a garbled record counts from 0, never fails",
            budget(f, "A", 50, "A", "x", "y", "z"),
            "keep 50 -",
        ),
    ];
    for (why, got, want) in cases {
        assert_eq!(got, want, "{why}");
    }
}

// -- the rendered agent ------------------------------------------------------------------

/// A temp dir with stand-ins on PATH, a clock and an uptime the test sets, and a marker
/// in place of `systemctl poweroff`.
struct Rig {
    dir: tempfile::TempDir,
}

const STANDINS: &[(&str, &str)] = &[
    // No SSH session on this machine's port 22 counts.
    ("ss", "#!/bin/sh\nexit 0\n"),
    (
        "wall",
        "#!/bin/sh\ncat >> \"$RIG/wall.log\"\n",
    ),
    (
        "logger",
        "#!/bin/sh\nprintf '%s\\n' \"$*\" >> \"$RIG/logger.log\"\n",
    ),
    // nvidia-smi prints the utilisation the test chose, one line per GPU.
    (
        "nvidia-smi",
        "#!/bin/sh\ncase \"$*\" in *utilization.gpu*) exec cat \"$RIG/gpu\" ;; esac\nexit 9\n",
    ),
    // docker top lists the pids the test chose; docker exec records the notice.
    (
        "docker",
        "#!/bin/sh\ncase $1 in\n  top) echo PID; cat \"$RIG/pids\" ;;\n  exec) shift; printf '%s\\n' \"$*\" >> \"$RIG/docker-exec.log\" ;;\n  *) exit 1 ;;\nesac\n",
    ),
    (
        "mark-poweroff",
        "#!/bin/sh\ndate +%s >> \"$RIG/poweroff\"\n",
    ),
];

impl Rig {
    fn new() -> Self {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tmp");
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).expect("bin");
        for (name, text) in STANDINS {
            let p = bin.join(name);
            std::fs::write(&p, text).expect("stand-in");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        let rig = Rig { dir };
        rig.write("boot_id", "boot-a\n");
        rig.set_uptime(600);
        rig.set_clock(unix_now());
        rig
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.path(name), text).expect("write");
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }

    fn set_clock(&self, epoch: u64) {
        self.write("now", &format!("{epoch}\n"));
    }

    fn set_uptime(&self, secs: u64) {
        self.write("uptime", &format!("{secs}.42 1234.00\n"));
    }

    fn script(&self, idle_minutes: Option<u32>, budget: Option<BudgetLimit>) -> AutostopScript {
        let p = |n: &str| self.path(n).display().to_string();
        AutostopScript {
            idle_minutes,
            warn_minutes: 5,
            gpu_util_percent: 10,
            // Low, so a busy loop counts even on a loaded machine; an idle process is at 0.
            cpu_percent: 5,
            cpu_sample_seconds: 1,
            budget,
            jupyter: None,
            container: None,
            agent_path: p("agent"),
            unit_dir: p("units"),
            state_dir: p("state"),
            poweroff: format!("'{}'", p("bin/mark-poweroff")),
            clock: format!("cat '{}'", p("now")),
            uptime_file: p("uptime"),
            boot_id_file: p("boot_id"),
        }
    }

    /// One run of the agent, as the timer starts it.
    fn tick(&self, script: &AutostopScript) -> String {
        std::fs::create_dir_all(self.path("state")).expect("state dir");
        std::fs::write(self.path("agent"), script.agent_text()).expect("agent");
        let out: Output = Command::new("sh")
            .arg(self.path("agent"))
            .env("RIG", self.dir.path())
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    self.path("bin").display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .stdin(Stdio::null())
            .output()
            .expect("sh");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "the agent failed: {}\n{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stderr.is_empty(),
            "the agent wrote to stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    fn powered_off(&self) -> bool {
        self.path("poweroff").exists()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

#[test]
fn the_agent_passes_shellcheck() {
    let nasty = "it's \"x\" $(touch /tmp/kgenv-pwned) `id` \\ ; | & *";
    let rig = Rig::new();
    let full = AutostopScript {
        budget: Some(BudgetLimit {
            seconds: 36_000,
            set_for: "max_hours=10,max_cost=25.5".into(),
        }),
        jupyter: Some(JupyterProbe {
            url: "https://127.0.0.1:8888/api/status".into(),
            kernels_url: "https://127.0.0.1:8888/api/kernels?no_track_activity=1".into(),
            cacert: Some(format!("/var/lib/kgenv/{nasty}/cert.pem")),
            token_file: format!("/var/lib/kgenv/{nasty}/agent-token"),
        }),
        container: Some(nasty.into()),
        state_dir: format!("/var/lib/{nasty}"),
        ..rig.script(Some(30), None)
    };
    shellcheck(
        "agent (idle, budget, Jupyter, container)",
        &full.agent_text(),
    );
    shellcheck("agent script", &full.render().text);
    let bare = AutostopScript {
        idle_minutes: None,
        ..full.clone()
    };
    shellcheck("agent (budget only)", &bare.agent_text());
    shellcheck(
        "agent (idle only)",
        &rig.script(Some(30), None).agent_text(),
    );
}

#[test]
fn budget_stop_fires_when_the_running_time_is_used() {
    let rig = Rig::new();
    let limit = BudgetLimit {
        seconds: 600,
        set_for: "max_hours=0.1666".into(),
    };
    let s = rig.script(None, Some(limit.clone()));
    // First tick: the budget starts from nothing (the time before it was set is not its).
    rig.set_uptime(1000);
    assert!(rig.tick(&s).contains("budget: keep, 0 of 600"));
    rig.set_uptime(1200);
    assert!(rig.tick(&s).contains("budget: keep, 200 of 600"));
    // The VM is stopped and started: the time it was off never counts, its new uptime does.
    rig.write("boot_id", "boot-b\n");
    rig.set_uptime(50);
    assert!(rig.tick(&s).contains("budget: keep, 250 of 600"));
    assert!(!rig.path("wall.log").exists(), "no warning yet");
    // Five minutes before the end: the warning, to logged-in users and the journal.
    rig.set_uptime(100);
    assert!(rig.tick(&s).contains("budget: warn, 300 of 600"));
    let wall = rig.read("wall.log");
    assert!(
        wall.contains("budget (max_hours=0.1666) is used up")
            && wall.contains("in about 5 minutes")
            && wall.contains("kgenv up"),
        "{wall}"
    );
    assert!(!rig.powered_off());
    // A later tick does not warn again.
    rig.set_uptime(250);
    assert!(rig.tick(&s).contains("budget: keep, 450 of 600"));
    assert_eq!(rig.read("wall.log"), wall, "warned once");
    assert!(!rig.powered_off());
    // Used up: powered off.
    rig.set_uptime(400);
    let out = rig.tick(&s);
    assert!(out.contains("budget: stop, 600 of 600"), "{out}");
    assert!(rig.powered_off(), "{out}");

    // A changed budget starts from 0 again; the same budget re-rendered does not.
    std::fs::remove_file(rig.path("poweroff")).expect("rm");
    rig.set_uptime(460);
    let same = rig.tick(&s);
    assert!(same.contains("budget: stop, 660 of 600"), "{same}");
    std::fs::remove_file(rig.path("poweroff")).expect("rm");
    let raised = rig.script(
        None,
        Some(BudgetLimit {
            seconds: 3600,
            set_for: "max_hours=1".into(),
        }),
    );
    rig.set_uptime(520);
    assert!(rig.tick(&raised).contains("budget: keep, 0 of 3600"));
    assert!(!rig.powered_off());
}

#[test]
fn a_container_process_at_work_keeps_the_vm() {
    let rig = Rig::new();
    let s = AutostopScript {
        container: Some("kgenv-test".into()),
        ..rig.script(Some(30), None)
    };
    // An hour since the last activity, an hour of uptime.
    let now = unix_now();
    rig.set_clock(now);
    rig.set_uptime(7200);
    std::fs::create_dir_all(rig.path("state")).expect("state");
    rig.write("state/idle-stamp", &format!("{}\n", now - 3600));
    let mut busy = Command::new("sh")
        .args(["-c", "while :; do :; done"])
        .spawn()
        .expect("busy loop");
    let mut quiet = Command::new("sleep").arg("600").spawn().expect("sleep");
    rig.write("pids", &format!("{}\n{}\n", quiet.id(), busy.id()));
    let out = rig.tick(&s);
    let _ = busy.kill();
    let _ = busy.wait();
    assert_eq!(out.trim(), "idle: keep", "a busy process is work");
    assert!(!rig.path("wall.log").exists());
    // Only the sleeping process left: idle; warned first (wall and the container's ptys).
    rig.write("pids", &format!("{}\n", quiet.id()));
    rig.set_clock(now + 26 * 60);
    let out = rig.tick(&s);
    let _ = quiet.kill();
    let _ = quiet.wait();
    assert_eq!(out.trim(), "idle: warn", "{out}");
    let notice = rig.read("docker-exec.log");
    assert!(
        notice.starts_with("kgenv-test sh -c ") && notice.contains("kgenv autostop off"),
        "{notice}"
    );
    assert!(!rig.powered_off());
}

// -- against the real jupyter_server ------------------------------------------------------

const TOKEN: &str = "agent-token-0123456789abcdef";

/// Sends `code` to kernel `id` over the server's websocket (tornado's client, which the
/// server's own dependencies bring) and returns once the kernel reports `busy`.
const EXECUTE_PY: &str = r#"
import json, sys, uuid
from tornado import ioloop, websocket

async def main(url, code):
    ws = await websocket.websocket_connect(url)
    msg_id = uuid.uuid4().hex
    ws.write_message(json.dumps({
        "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": "t",
                   "session": uuid.uuid4().hex, "version": "5.3", "date": ""},
        "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
        "content": {"code": code, "silent": False, "store_history": False,
                    "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
    }))
    while True:
        m = await ws.read_message()
        if m is None:
            sys.exit("the websocket closed")
        m = json.loads(m)
        if (m.get("msg_type") == "status" and m["parent_header"].get("msg_id") == msg_id
                and m["content"]["execution_state"] == "busy"):
            return

ioloop.IOLoop.current().run_sync(lambda: main(sys.argv[1], sys.argv[2]), timeout=120)
"#;

async fn api(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<serde_json::Value>,
) -> serde_json::Value {
    let mut req = client
        .request(method, url)
        .header("Authorization", format!("token {TOKEN}"));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request");
    assert!(resp.status().is_success(), "{url}: {}", resp.status());
    let text = resp.text().await.expect("body");
    if text.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_str(&text).expect("json")
    }
}

async fn execution_state(client: &reqwest::Client, base: &str, id: &str) -> String {
    let k = api(
        client,
        reqwest::Method::GET,
        &format!("{base}/api/kernels/{id}"),
        None,
    )
    .await;
    k["execution_state"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn the_agent_never_stops_a_busy_kernel_or_gpu_and_stops_an_idle_vm() {
    let py = venv_python(
        "import jupyter_server, ipykernel, tornado.websocket",
        "jupyter_server with ipykernel",
    );
    let rig = Rig::new();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    std::fs::create_dir_all(rig.path("nb")).expect("root dir");
    let mut cmd = Command::new(&py);
    cmd.args([
        "-m",
        "jupyter_server",
        "--no-browser",
        "--allow-root",
        "--ip=127.0.0.1",
        &format!("--port={port}"),
        "--ServerApp.port_retries=0",
        &format!("--IdentityProvider.token={TOKEN}"),
        &format!("--ServerApp.root_dir={}", rig.path("nb").display()),
    ]);
    let mut server = Proc::spawn(cmd, rig.dir.path());
    kgenv_core::http::ensure_crypto_provider();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    let t0 = Instant::now();
    loop {
        let up = client
            .get(format!("{base}/api/status"))
            .header("Authorization", format!("token {TOKEN}"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if up {
            break;
        }
        let exited = server.child.try_wait().expect("wait");
        assert!(
            exited.is_none() && t0.elapsed() < Duration::from_secs(120),
            "jupyter_server did not come up ({exited:?}); its log:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // A kernel busy in a cell that prints nothing.
    let kernel = api(
        &client,
        reqwest::Method::POST,
        &format!("{base}/api/kernels"),
        Some(serde_json::json!({ "name": "python3" })),
    )
    .await;
    let id = kernel["id"].as_str().expect("kernel id").to_string();
    let ws = format!("ws://127.0.0.1:{port}/api/kernels/{id}/channels?token={TOKEN}");
    let exec = Command::new(&py)
        .args(["-c", EXECUTE_PY, &ws, "import time\ntime.sleep(900)"])
        .output()
        .expect("python");
    assert!(
        exec.status.success(),
        "execute: {}\n{}",
        String::from_utf8_lossy(&exec.stderr),
        server.log()
    );
    let t0 = Instant::now();
    while execution_state(&client, &base, &id).await != "busy" {
        assert!(t0.elapsed() < Duration::from_secs(60), "never busy");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    rig.write("agent-token", TOKEN);
    let s = AutostopScript {
        jupyter: Some(JupyterProbe {
            url: format!("{base}/api/status"),
            kernels_url: format!("{base}/api/kernels?no_track_activity=1"),
            cacert: None,
            token_file: rig.path("agent-token").display().to_string(),
        }),
        ..rig.script(Some(30), None)
    };
    // The clock an hour ahead: Jupyter's last activity and the stamp are an hour old.
    let mut now = unix_now() + 3600;
    rig.set_clock(now);
    rig.set_uptime(86_400);
    std::fs::create_dir_all(rig.path("state")).expect("state");
    rig.write("state/idle-stamp", &format!("{}\n", now - 3600));

    // Busy kernel: kept, no warning.
    assert_eq!(rig.tick(&s).trim(), "idle: keep");
    assert_eq!(rig.read("state/idle-stamp").trim(), now.to_string());
    assert!(!rig.path("wall.log").exists() && !rig.powered_off());

    // The cell interrupted, the kernel idle; the GPU at 80% on one of two GPUs: kept.
    api(
        &client,
        reqwest::Method::POST,
        &format!("{base}/api/kernels/{id}/interrupt"),
        None,
    )
    .await;
    let t0 = Instant::now();
    while execution_state(&client, &base, &id).await != "idle" {
        assert!(t0.elapsed() < Duration::from_secs(60), "never idle again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    rig.write("gpu", "3\n80\n");
    now += 40 * 60;
    rig.set_clock(now);
    assert_eq!(rig.tick(&s).trim(), "idle: keep", "the GPU works");
    assert!(!rig.path("wall.log").exists() && !rig.powered_off());

    // GPUs quiet. 26 idle minutes: the warning, once, saying when and how to keep the VM;
    // the agent's own requests are not Jupyter activity.
    rig.write("gpu", "3\n0\n");
    let status = |v: serde_json::Value| v["last_activity"].as_str().unwrap_or("").to_string();
    let before = status(
        api(
            &client,
            reqwest::Method::GET,
            &format!("{base}/api/status"),
            None,
        )
        .await,
    );
    let idle_since = now;
    now += 26 * 60;
    rig.set_clock(now);
    assert_eq!(rig.tick(&s).trim(), "idle: warn");
    let wall = rig.read("wall.log");
    assert!(
        wall.contains("powers off at")
            && wall.contains("in about 5 minutes")
            && wall.contains("kgenv autostop off"),
        "{wall}"
    );
    assert!(!rig.powered_off());
    let after = status(
        api(
            &client,
            reqwest::Method::GET,
            &format!("{base}/api/status"),
            None,
        )
        .await,
    );
    assert_eq!(before, after, "the agent's probes are not activity");
    now += 60;
    rig.set_clock(now);
    assert_eq!(rig.tick(&s).trim(), "idle: keep", "warned 1 minute ago");
    assert_eq!(rig.read("wall.log"), wall, "warned once per idle stretch");
    assert_eq!(
        rig.read("state/idle-stamp").trim(),
        idle_since.to_string(),
        "the idle stretch is kept"
    );

    // 31 idle minutes, warned 5 minutes ago: powered off.
    now += 4 * 60;
    rig.set_clock(now);
    let out = rig.tick(&s);
    assert!(
        out.contains("idle: stop") && out.contains("powering off"),
        "{out}"
    );
    assert!(rig.powered_off());
    assert!(rig
        .read("logger.log")
        .contains("no activity for 30 minutes"));
    api(
        &client,
        reqwest::Method::DELETE,
        &format!("{base}/api/kernels/{id}"),
        None,
    )
    .await;
    drop(server);
}

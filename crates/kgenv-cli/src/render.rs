//! Everything the CLI prints. Run events: progress bars on a TTY, plain timestamped lines
//! otherwise, JSON lines with `--json` ([`Renderer`]); progress goes to stderr so stdout
//! stays for results. Results: the plan, status, reports and the other commands' answers,
//! as text or (with `--json`) one JSON line.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use kgenv_core::error::CommandTimedOut;
use kgenv_core::runner::{
    Change, Disruption, DownPreview, Estimate, Event, GpuReport, HostAddr, JupyterTunnel,
    MovePreview, Outcome, Phase, Prices, Report, StatusReport, StepInfo,
};

/// Prints a line on stdout; a closed pipe (`kgenv plan | head`) ends the program quietly
/// instead of panicking.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if writeln!(std::io::stdout().lock(), $($arg)*).is_err() {
            std::process::exit(0);
        }
    }};
}

/// How events are shown.
pub enum Renderer {
    /// JSON lines on stdout.
    Json,
    /// Timestamped lines on stderr; a transfer's progress at most once a second per step.
    Plain {
        start: Instant,
        verbose: bool,
        last_progress: Mutex<HashMap<String, Instant>>,
    },
    /// One bar per running step on stderr.
    Bars {
        multi: MultiProgress,
        bars: Mutex<HashMap<String, ProgressBar>>,
        color: bool,
        verbose: bool,
    },
}

impl Renderer {
    /// Chooses bars on a terminal, plain lines elsewhere, JSON when asked.
    pub fn new(json: bool, verbose: bool) -> Self {
        if json {
            return Self::Json;
        }
        if std::io::stderr().is_terminal() && std::env::var_os("TERM").is_some_and(|t| t != "dumb")
        {
            let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            return Self::Bars {
                multi,
                bars: Mutex::default(),
                color,
                verbose,
            };
        }
        Self::Plain {
            start: Instant::now(),
            verbose,
            last_progress: Mutex::default(),
        }
    }

    /// Shows one event.
    pub fn event(&self, e: &Event) {
        match self {
            Self::Json => {
                if let Ok(line) = serde_json::to_string(e) {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(out, "{line}");
                }
            }
            Self::Plain {
                start,
                verbose,
                last_progress,
            } => {
                if let Event::Progress { step, .. } = e {
                    // A line a second is plenty on a log; bars need a terminal.
                    let mut last = last_progress.lock().unwrap_or_else(|p| p.into_inner());
                    if last
                        .get(step)
                        .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
                    {
                        return;
                    }
                    last.insert(step.clone(), Instant::now());
                }
                if !verbose
                    && matches!(
                        e,
                        Event::Log { .. }
                            | Event::Started {
                                phase: Phase::Check,
                                ..
                            }
                    )
                {
                    return;
                }
                if matches!(e, Event::Planned { .. }) {
                    return; // printed as the plan itself
                }
                eprintln!("[{:>6.1}s] {e}", start.elapsed().as_secs_f64());
            }
            Self::Bars {
                multi,
                bars,
                color,
                verbose,
            } => self.bar_event(multi, bars, *color, *verbose, e),
        }
    }

    fn bar_event(
        &self,
        multi: &MultiProgress,
        bars: &Mutex<HashMap<String, ProgressBar>>,
        color: bool,
        verbose: bool,
        e: &Event,
    ) {
        let mut bars = bars.lock().unwrap_or_else(|p| p.into_inner());
        let step = e.step().to_string();
        let spinner = || {
            let pb = multi.add(ProgressBar::new_spinner());
            let t = if color {
                "{spinner:.cyan} {prefix:.bold} {wide_msg}"
            } else {
                "{spinner} {prefix} {wide_msg}"
            };
            pb.set_style(
                ProgressStyle::with_template(t)
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            pb.set_prefix(step.clone());
            pb.enable_steady_tick(Duration::from_millis(120));
            pb
        };
        match e {
            Event::Started { phase, .. } => {
                let pb = bars.entry(step.clone()).or_insert_with(spinner);
                pb.set_message(match phase {
                    Phase::Check => "checking",
                    Phase::Apply => "applying",
                    Phase::Destroy => "removing",
                    Phase::Stop => "stopping",
                });
            }
            Event::Progress {
                item, done, total, ..
            } => {
                let pb = bars.entry(step.clone()).or_insert_with(spinner);
                if let Some(t) = total {
                    if pb.length() != Some(*t) {
                        pb.set_length(*t);
                        let tpl = if color {
                            "{prefix:.bold} [{bar:30.cyan/blue}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {wide_msg}"
                        } else {
                            "{prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {wide_msg}"
                        };
                        pb.set_style(
                            ProgressStyle::with_template(tpl)
                                .unwrap_or_else(|_| ProgressStyle::default_bar()),
                        );
                    }
                }
                pb.set_position(*done);
                pb.set_message(item.clone());
            }
            Event::Log { line, .. } => {
                if let Some(pb) = bars.get(&step) {
                    pb.set_message(line.clone());
                }
                if verbose {
                    let _ = multi.println(format!("  {step}| {line}"));
                }
            }
            Event::Warning { .. } | Event::Skipped { .. } => {
                let _ = multi.println(e.to_string());
            }
            Event::Satisfied { .. } | Event::Done { .. } | Event::Failed { .. } => {
                let mark = match e {
                    Event::Failed { .. } => "✗",
                    _ => "✓",
                };
                if let Some(pb) = bars.remove(&step) {
                    pb.finish_and_clear();
                }
                let _ = multi.println(format!("{mark} {e}"));
            }
            Event::Planned { .. } => {}
        }
    }

    /// Runs `f` with the bars hidden (a question on the terminal must not be drawn over).
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match self {
            Self::Bars { multi, .. } => multi.suspend(f),
            _ => f(),
        }
    }

    /// Clears bars before the final output.
    pub fn finish(&self) {
        if let Self::Bars { bars, .. } = self {
            for (_, pb) in bars.lock().unwrap_or_else(|p| p.into_inner()).drain() {
                pb.finish_and_clear();
            }
        }
    }
}

/// Any serializable answer as one JSON line.
pub fn json(value: &impl serde::Serialize) {
    if let Ok(s) = serde_json::to_string(value) {
        out!("{s}");
    }
}

/// A run's final JSON line: `{"result": …}` after the event lines.
pub fn json_result(value: &impl serde::Serialize) {
    json(&serde_json::json!({ "result": value }));
}

/// `plan` (and the live part of `status`): each step's verdict in the DAG's declared order,
/// then the counts.
pub fn plan(order: &[String], planned: &[Event], report: &Report) {
    // The DAG's declared order reads top to bottom; completion order would not.
    let pos = |e: &Event| {
        order
            .iter()
            .position(|id| id == e.step())
            .unwrap_or(usize::MAX)
    };
    let mut planned: Vec<&Event> = planned.iter().collect();
    planned.sort_by_key(|e| pos(e));
    for e in &planned {
        out!("{e}");
    }
    let count = |c: Change| {
        planned
            .iter()
            .filter(|e| matches!(e, Event::Planned { change, .. } if *change == c))
            .count()
    };
    out!(
        "plan: {} to create, {} to update, {} unchanged, {} unknown ({} steps)",
        count(Change::Create),
        count(Change::Update),
        count(Change::None),
        count(Change::Unknown),
        report.steps.len()
    );
    if count(Change::Unknown) > 0 {
        out!("      (unknown: kgenv could not observe them — no credentials or unreachable; see the reasons above)");
    }
    if let Some(p) = &report.prices {
        prices(p);
    }
}

/// `12.3 GB` (decimal units, as GCS bills them), `512 B` under a kilobyte.
fn bytes_text(n: u64) -> String {
    const UNITS: [&str; 5] = ["kB", "MB", "GB", "TB", "PB"];
    if n < 1000 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1000.0;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// `$0.7300/h`, or `unknown`.
fn per_hour(e: &Estimate) -> String {
    e.total()
        .map_or_else(|| "unknown".into(), |t| format!("{}/h", t.display(4)))
}

/// What the environment costs: the VM (on demand and spot), each disk, the total; with
/// the prices' date, and the reason when a price is unknown.
pub fn prices(p: &Prices) {
    let Some(vm) = &p.vm else {
        return;
    };
    let when = p.source.date.as_ref().map_or_else(
        || "prices unknown".to_string(),
        |d| format!("prices of {d}"),
    );
    out!("cost in {} ({when}):", vm.region);
    let gpu = vm
        .gpu
        .as_ref()
        .map(|(t, n)| format!(" + {n} × {t}"))
        .unwrap_or_default();
    let chosen = |spot: bool| {
        if spot == p.spot && !p.flex_start {
            " ←"
        } else {
            ""
        }
    };
    out!(
        "  {:<44} {} on demand{}, {} spot{}",
        format!("VM {}{gpu}", vm.machine_type),
        per_hour(&vm.on_demand),
        chosen(false),
        per_hour(&vm.spot),
        chosen(true)
    );
    for d in &p.disks {
        let price = match (d.per_month.total(), d.per_hour.total()) {
            (Some(m), Some(h)) => format!("{}/month ({}/h)", m.display(2), h.display(4)),
            _ => "unknown".into(),
        };
        out!(
            "  {:<44} {price}",
            format!("{} disk {} GB {}", d.role, d.size_gb, d.disk_type)
        );
    }
    out!(
        "  {:<44} {} on demand, {} spot",
        "total",
        per_hour(&p.total_on_demand),
        per_hour(&p.total_spot)
    );
    if let Some(note) = &p.source.note {
        out!("  ({note})");
    }
    if p.flex_start {
        out!("  ({})", kgenv_core::pricing::FLEX_START_UNPRICED);
    }
    // Each distinct reason once: a part without a SKU, or no catalog at all.
    let mut reasons: Vec<&str> = Vec::new();
    let all = [&vm.on_demand, &vm.spot]
        .into_iter()
        .chain(p.disks.iter().map(|d| &d.per_month));
    for e in all {
        if let Estimate::Unknown(why) = e {
            if !reasons.contains(&why.as_str()) && Some(why) != p.source.note.as_ref() {
                reasons.push(why);
            }
        }
    }
    for r in reasons {
        out!("  (unknown: {r})");
    }
}

fn secs(report: &Report) -> f64 {
    report.elapsed_ms as f64 / 1000.0
}

/// `up`'s closing line.
pub fn up(report: &Report) {
    let satisfied = report
        .steps
        .iter()
        .filter(|s| s.outcome == Outcome::Satisfied)
        .count();
    out!(
        "up: {} step(s) changed, {satisfied} already as specified ({:.1}s)",
        report.changed(),
        secs(report)
    );
}

/// `down`'s closing line.
pub fn down(report: &Report) {
    out!(
        "down: removed {} step(s)' resources ({:.1}s); buckets and data disks are kept unless named with --delete-bucket / --delete-disk",
        report.changed(),
        secs(report)
    );
}

/// What `down` deletes and keeps, before it does.
pub fn down_preview(preview: &DownPreview) {
    out!("{preview}");
}

/// Asks `question` on the terminal (stderr) and reads the answer from stdin: only `y` or
/// `yes` agrees; an empty line, anything else or end of input refuses. `false` at once
/// when stdin is not a terminal: nobody is there to answer.
fn ask(question: &str) -> bool {
    if !std::io::stdin().is_terminal() {
        return false;
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    match std::io::stdin().read_line(&mut line) {
        Ok(n) if n > 0 => matches!(line.trim().to_ascii_lowercase().as_str(), "y" | "yes"),
        _ => false,
    }
}

/// `down`'s question: the preview (on stdout, or stderr with `--json` so stdout stays
/// JSON), then "Delete these N resources?" on a terminal. Without one, `false`: the
/// runner then refuses and nothing changes.
pub fn confirm_down(preview: &DownPreview, json: bool) -> bool {
    let terminal = std::io::stdin().is_terminal();
    if !json {
        down_preview(preview);
    } else if terminal {
        eprintln!("{preview}");
    }
    ask(&format!(
        "Delete these {} resources?",
        preview.deletes().len()
    ))
}

/// What `move` will do, before it does.
pub fn move_preview(preview: &MovePreview) {
    out!("{preview}");
}

/// `move`'s question: the plan (on stdout, or stderr with `--json`), then "Move?" on a
/// terminal. Without one, `false`: the runner then refuses and nothing changes.
pub fn confirm_move(preview: &MovePreview, json: bool) -> bool {
    let terminal = std::io::stdin().is_terminal();
    if !json {
        move_preview(preview);
    } else if terminal {
        eprintln!("{preview}");
    }
    ask(&format!(
        "Move the data disk and the VM to {}?",
        preview.to_zone
    ))
}

/// `move`'s closing line.
pub fn moved(env: &str, zone: &str, report: &Report) {
    out!(
        "move: `{env}` and its data disk are in {zone} ({:.1}s); the old disk and the snapshot are deleted",
        secs(report)
    );
}

/// `up`'s question before a change that stops or restarts the VM.
pub fn confirm_disruption(d: &Disruption) -> bool {
    eprintln!("{d}");
    ask("Apply this change now?")
}

/// `stop`'s closing line.
pub fn stopped(env: &str, report: &Report) {
    if report.changed() == 0 {
        out!("stop: `{env}` was already stopped; its disks are kept");
    } else {
        out!(
            "stop: `{env}` stopped, its disks kept ({:.1}s); `kgenv start` or `kgenv up` resumes",
            secs(report)
        );
    }
}

/// `start`'s closing line, with where the host is now.
pub fn started(env: &str, report: &Report, addr: Option<&HostAddr>) {
    let at = addr.map(|a| format!(" at {a}")).unwrap_or_default();
    out!(
        "start: `{env}` is running{at} ({:.1}s); `ssh {env}` and `kgenv jupyter` reach it",
        secs(report)
    );
}

/// `status`: what kgenv recorded, then the live check.
pub fn status(env: &str, order: &[String], planned: &[Event], status: &StatusReport) {
    out!("environment {env} (state: {})", status.state_file.display());
    if status.state.is_empty() {
        out!("  kgenv has created nothing yet");
    }
    for (step, rec) in &status.state.steps {
        for (role, id) in &rec.created {
            out!("  {step:<20} {role}: {id}");
        }
        for (k, v) in &rec.facts {
            let v = if k == "host_keys" {
                format!("{} key(s) pinned", v.lines().count())
            } else {
                v.clone()
            };
            out!("  {step:<20} {k} = {v}");
        }
    }
    if let Some(p) = &status.preempted {
        out!("  instance: {}", p.message);
    }
    if !status.kept.is_empty() {
        out!("kept by `down` (still billed, holds your work):");
        for k in &status.kept {
            out!("  {k}");
        }
    }
    for b in &status.buckets {
        match (&b.usage, &b.note) {
            (Some(u), _) => out!(
                "  bucket gs://{} holds {} in {} object(s)",
                b.name,
                bytes_text(u.bytes),
                u.objects
            ),
            (None, note) => out!(
                "  bucket gs://{}: size unknown ({})",
                b.name,
                note.as_deref().unwrap_or("not listed")
            ),
        }
    }
    out!("live:");
    plan(order, planned, &status.live);
    if let Some(p) = &status.prices {
        prices(p);
    }
    if let Some(r) = &status.running {
        let hours = r.seconds as f64 / 3600.0;
        out!(
            "running since {} ({hours:.1} h): {} so far at {}",
            r.since,
            r.so_far.display(2),
            per_hour(&r.per_hour)
        );
    }
}

/// `steps`.
pub fn steps(steps: &[StepInfo]) {
    for s in steps {
        let deps = if s.deps.is_empty() {
            String::new()
        } else {
            format!("  (after {})", s.deps.join(", "))
        };
        out!("{:<22} {}{deps}", s.id, s.summary);
    }
}

/// `gpu`: one line per finding.
pub fn gpu(report: &GpuReport) {
    for l in report.lines() {
        out!("{l}");
    }
    if report.usable() {
        out!("usable: yes");
    } else {
        out!("usable: no");
    }
}

/// `jupyter`: where to point the browser.
pub fn jupyter(t: &JupyterTunnel, show_token: bool, json: bool) {
    let url = if show_token {
        t.browser_url()
    } else {
        t.url().to_string()
    };
    if json {
        self::json(&serde_json::json!({ "result": {
            "url": url, "port": t.port(), "tunnelled": t.tunnelled(),
            "cert_sha256": t.cert_sha256(), "self_signed": t.self_signed(),
        }}));
        return;
    }
    out!("Jupyter: {url}");
    if let Some(fp) = t.cert_sha256() {
        out!(
            "certificate SHA-256: {fp}{}",
            if t.self_signed() {
                " (self-signed by kgenv: your browser will warn; compare this fingerprint)"
            } else {
                ""
            }
        );
    }
    if t.token_mode() && !show_token {
        out!("token mode: pass --show-token to print the URL with its token");
    }
}

/// `autostop`'s answer; `budget` is what the environment's `[budget]` was set for, which
/// stays in force either way.
pub fn autostop(env: &str, minutes: Option<u32>, budget: Option<&str>, json: bool) {
    if json {
        json_result(&serde_json::json!({ "idle_minutes": minutes, "budget": budget }));
        return;
    }
    match minutes {
        Some(m) => out!("autostop: `{env}` stops after {m} idle minutes (until the next `kgenv up` applies kgenv.toml)"),
        None => out!("autostop: off for `{env}` (until the next `kgenv up` applies kgenv.toml)"),
    }
    if let Some(b) = budget {
        out!("budget: still in force ({b}); change it in kgenv.toml and run `kgenv up`");
    }
}

/// `data list`: size and name per file, then the total.
pub fn data_files(files: &[kgenv_core::runner::data::DataFile]) {
    let total: u64 = files.iter().map(|f| f.size).sum();
    for f in files {
        out!("{:>14}  {}", f.size, f.name);
    }
    out!("{} file(s), {total} bytes", files.len());
}

/// `data pull`'s closing line.
pub fn pulled(r: &kgenv_core::runner::data::PullReport) {
    out!(
        "pulled {} file(s), {} already complete, {} bytes in {:.1}s → {}",
        r.fetched.len(),
        r.skipped.len(),
        r.bytes,
        r.elapsed_ms as f64 / 1000.0,
        r.dest
    );
}

/// A remote command that was killed for running too long, for a person: which step, which
/// command where, the limit it hit, the last lines it printed (what it was stuck on), and
/// the `[timeouts]` entry that gives it longer.
pub fn command_timeout(t: &CommandTimedOut) -> String {
    let limit = humantime::format_duration(t.after);
    let step = t
        .step
        .as_deref()
        .map(|s| format!("step `{s}`: "))
        .unwrap_or_default();
    let why = if t.inactivity {
        format!("printed nothing for {limit}")
    } else {
        format!("ran longer than {limit}")
    };
    let mut text = format!(
        "{step}`{}` on {} {why}; it was killed with everything it started",
        t.command, t.host
    );
    if t.last_lines.is_empty() {
        text.push_str("\n  it printed nothing before that");
    } else {
        text.push_str("\n  its last output:");
        for line in &t.last_lines {
            text.push_str("\n    | ");
            text.push_str(line);
        }
    }
    if let Some(s) = &t.step {
        let more = Duration::from_secs((t.after.as_secs() * 3).max(60));
        text.push_str(&format!(
            "\n  if it only needs longer, raise its limit in kgenv.toml:\n    [timeouts]\n    \"{s}\" = \"{}\"",
            humantime::format_duration(more)
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_timeout_names_step_command_limit_and_last_lines() {
        let t = CommandTimedOut {
            step: Some("disk-mount".into()),
            command: "disk-mount apply".into(),
            host: "kgenv@10.0.0.2:22".into(),
            after: Duration::from_secs(600),
            inactivity: false,
            last_lines: vec!["formatting".into(), "mounting /dev/sdb".into()],
        };
        let text = command_timeout(&t);
        assert_eq!(
            text,
            "step `disk-mount`: `disk-mount apply` on kgenv@10.0.0.2:22 ran longer than 10m; it was killed with everything it started\n  its last output:\n    | formatting\n    | mounting /dev/sdb\n  if it only needs longer, raise its limit in kgenv.toml:\n    [timeouts]\n    \"disk-mount\" = \"30m\""
        );
        let quiet = CommandTimedOut {
            step: None,
            inactivity: true,
            last_lines: Vec::new(),
            ..t
        };
        let text = command_timeout(&quiet);
        assert!(
            text.starts_with("`disk-mount apply` on kgenv@10.0.0.2:22 printed nothing for 10m;"),
            "{text}"
        );
        assert!(
            !text.contains("[timeouts]"),
            "no step, no entry to raise: {text}"
        );
    }
}

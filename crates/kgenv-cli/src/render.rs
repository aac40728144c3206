//! Renders run events: progress bars on a TTY, plain timestamped lines otherwise, JSON
//! lines with `--json`. Human output goes to stderr so stdout stays for results.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use kgenv_core::plan::{Event, Phase};

/// How events are shown.
pub enum Renderer {
    /// JSON lines on stdout.
    Json,
    /// Timestamped lines on stderr.
    Plain { start: Instant, verbose: bool },
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
            Self::Plain { start, verbose } => {
                if matches!(e, Event::Progress { .. })
                    || (!verbose
                        && matches!(
                            e,
                            Event::Log { .. }
                                | Event::Started {
                                    phase: Phase::Check,
                                    ..
                                }
                        ))
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

    /// Clears bars before the final output.
    pub fn finish(&self) {
        if let Self::Bars { bars, .. } = self {
            for (_, pb) in bars.lock().unwrap_or_else(|p| p.into_inner()).drain() {
                pb.finish_and_clear();
            }
        }
    }
}

//! Typed events a run streams while it works; the CLI renders them as progress bars or
//! JSON lines, Python as event objects.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::backends::{Progress, Stream};

/// Which operation a step is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Observing the real state.
    Check,
    /// Changing it.
    Apply,
    /// Removing what kgenv created.
    Destroy,
    /// Stopping what bills by the hour (`kgenv stop`), keeping everything else.
    Stop,
}

/// What `plan` expects a step to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// Already as specified.
    None,
    /// Will be created.
    Create,
    /// Exists but differs; will be updated or recreated.
    Update,
    /// Will be removed (by `down`).
    Delete,
    /// Cannot be observed now (no credentials, host not reachable yet).
    Unknown,
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "no change",
            Self::Create => "create",
            Self::Update => "update",
            Self::Delete => "delete",
            Self::Unknown => "unknown",
        })
    }
}

/// One thing that happened during a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// `plan`'s verdict for a step.
    Planned {
        /// Step id.
        step: String,
        /// What the step manages.
        summary: String,
        /// The expected change.
        change: Change,
        /// Readable differences (for updates) or why the state is unknown.
        diff: Vec<String>,
        /// The API calls and host commands the change would make.
        actions: Vec<String>,
        /// What the change stops or restarts (`"stops and restarts the VM"`), when it
        /// does: `up` asks before applying it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        disruption: Option<String>,
    },
    /// A step began a phase.
    Started {
        /// Step id.
        step: String,
        /// The phase.
        phase: Phase,
    },
    /// Bytes of a transfer.
    Progress {
        /// Step id.
        step: String,
        /// What is transferred (a layer, a file).
        item: String,
        /// Bytes done.
        done: u64,
        /// Total bytes, when known.
        total: Option<u64>,
        /// Recent rate in bytes per second, for transfers that measure it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        bytes_per_sec: Option<u64>,
        /// Seconds left at the recent rate, when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        eta_secs: Option<u64>,
    },
    /// A line of output from a command the step runs.
    Log {
        /// Step id.
        step: String,
        /// Which stream.
        stream: Stream,
        /// The line.
        line: String,
    },
    /// Something the user should know (a world-open firewall, no GPU seen).
    Warning {
        /// Step id.
        step: String,
        /// The warning.
        message: String,
    },
    /// The step found nothing to do: already as specified (`up`), or nothing of kgenv's to
    /// remove (`down`).
    Satisfied {
        /// Step id.
        step: String,
    },
    /// The step finished a phase.
    Done {
        /// Step id.
        step: String,
        /// The phase.
        phase: Phase,
        /// Wall time in milliseconds.
        elapsed_ms: u64,
    },
    /// The step failed.
    Failed {
        /// Step id.
        step: String,
        /// Error kind (see [`crate::Error::kind`]).
        kind: String,
        /// The error message, with its causes.
        message: String,
    },
    /// The step did not run.
    Skipped {
        /// Step id.
        step: String,
        /// Why.
        reason: String,
    },
}

impl Event {
    /// The event a backend's [`Progress`] report becomes for `step`.
    pub fn from_progress(step: &str, p: Progress) -> Self {
        let step = step.to_string();
        match p {
            Progress::Bytes { item, done, total } => Self::Progress {
                step,
                item,
                done,
                total,
                bytes_per_sec: None,
                eta_secs: None,
            },
            Progress::Transfer {
                item,
                done,
                total,
                bytes_per_sec,
                eta_secs,
            } => Self::Progress {
                step,
                item,
                done,
                total,
                bytes_per_sec: Some(bytes_per_sec),
                eta_secs,
            },
            Progress::Line { stream, line } => Self::Log { step, stream, line },
        }
    }

    /// The step the event is about.
    pub fn step(&self) -> &str {
        match self {
            Self::Planned { step, .. }
            | Self::Started { step, .. }
            | Self::Progress { step, .. }
            | Self::Log { step, .. }
            | Self::Warning { step, .. }
            | Self::Satisfied { step }
            | Self::Done { step, .. }
            | Self::Failed { step, .. }
            | Self::Skipped { step, .. } => step,
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Planned {
                step,
                summary,
                change,
                diff,
                actions,
                disruption,
            } => {
                let sign = match change {
                    Change::None => " ",
                    Change::Create => "+",
                    Change::Update => "~",
                    Change::Delete => "-",
                    Change::Unknown => "?",
                };
                match disruption {
                    // On the step's own line, so it is not missed among the actions.
                    Some(what) => write!(f, "{sign} {step}: {summary} ({change}; {what})")?,
                    None => write!(f, "{sign} {step}: {summary} ({change})")?,
                }
                for d in diff {
                    write!(f, "\n      {d}")?;
                }
                for a in actions {
                    write!(f, "\n      > {a}")?;
                }
                Ok(())
            }
            Self::Started { step, phase } => write!(
                f,
                "{step}: {}",
                match phase {
                    Phase::Check => "checking",
                    Phase::Apply => "applying",
                    Phase::Destroy => "removing",
                    Phase::Stop => "stopping",
                }
            ),
            Self::Progress {
                step,
                item,
                done,
                total,
                bytes_per_sec,
                eta_secs,
            } => {
                match total {
                    Some(t) => write!(f, "{step}: {item} {done}/{t} bytes")?,
                    None => write!(f, "{step}: {item} {done} bytes")?,
                }
                if let Some(rate) = bytes_per_sec {
                    write!(f, ", {:.1} MB/s", *rate as f64 / 1e6)?;
                }
                if let Some(eta) = eta_secs {
                    write!(f, ", {}m{:02}s left", eta / 60, eta % 60)?;
                }
                Ok(())
            }
            Self::Log { step, line, .. } => write!(f, "{step}| {line}"),
            Self::Warning { step, message } => write!(f, "warning: {step}: {message}"),
            Self::Satisfied { step } => write!(f, "{step}: nothing to do"),
            Self::Done {
                step,
                phase,
                elapsed_ms,
            } => {
                write!(
                    f,
                    "{step}: {} in {:.1}s",
                    match phase {
                        Phase::Check => "checked",
                        Phase::Apply => "done",
                        Phase::Destroy => "removed",
                        Phase::Stop => "stopped",
                    },
                    *elapsed_ms as f64 / 1000.0
                )
            }
            Self::Failed { step, message, .. } => write!(f, "{step}: FAILED: {message}"),
            Self::Skipped { step, reason } => write!(f, "{step}: skipped ({reason})"),
        }
    }
}

/// Where events go. Cheap to clone; callbacks must not block.
#[derive(Clone)]
pub struct EventSink(std::sync::Arc<dyn Fn(Event) + Send + Sync>);

impl EventSink {
    /// A sink calling `f` for every event.
    pub fn new(f: impl Fn(Event) + Send + Sync + 'static) -> Self {
        Self(std::sync::Arc::new(f))
    }

    /// Sends one event.
    pub fn emit(&self, e: Event) {
        (self.0)(e);
    }
}

impl fmt::Debug for EventSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EventSink")
    }
}

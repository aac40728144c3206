//! The DAG executor: runs steps as soon as their prerequisites are done, independent steps
//! concurrently, and stops launching new ones when cancelled.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use futures::stream::{FuturesUnordered, StreamExt};
use tokio_util::sync::CancellationToken;

use super::events::{Event, EventSink};
use super::step::Step;
use crate::error::{error_chain, Error};

/// How a step ended in a run.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// `up`: already as specified.
    Satisfied,
    /// `up`: changed to match the spec.
    Changed,
    /// `down`: removed what kgenv created.
    Removed,
    /// `down`: nothing of kgenv's was there.
    Nothing,
    /// `plan`: the expected change.
    Planned {
        /// The change.
        change: super::events::Change,
    },
    /// The step failed.
    Failed {
        /// Error kind.
        kind: String,
        /// Message.
        message: String,
    },
    /// The step did not run.
    Skipped {
        /// Why.
        reason: String,
    },
}

/// One step's outcome.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StepOutcome {
    /// Step id.
    pub step: String,
    /// How it ended.
    #[serde(flatten)]
    pub outcome: Outcome,
    /// Wall time in milliseconds.
    pub elapsed_ms: u64,
}

/// Which way prerequisites point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Direction {
    /// A step waits for its dependencies (`plan`, `up`).
    Forward,
    /// A step waits for its dependents (`down`).
    Reverse,
}

/// Runs `f` on every selected step in dependency order. Returns the outcomes in the order
/// steps finished, and the errors of failed steps.
pub(crate) async fn run_dag<F, Fut>(
    steps: &[Arc<dyn Step>],
    selected: &BTreeSet<String>,
    direction: Direction,
    cancel: &CancellationToken,
    events: &EventSink,
    f: F,
) -> (Vec<StepOutcome>, Vec<(String, Error)>)
where
    F: Fn(Arc<dyn Step>) -> Fut,
    Fut: Future<Output = Result<Outcome, Error>>,
{
    let mut prereqs: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for s in steps.iter().filter(|s| selected.contains(s.id())) {
        prereqs.entry(s.id().to_string()).or_default();
        for d in s.deps().iter().filter(|d| selected.contains(*d)) {
            match direction {
                Direction::Forward => prereqs
                    .entry(s.id().to_string())
                    .or_default()
                    .push(d.clone()),
                Direction::Reverse => prereqs
                    .entry(d.clone())
                    .or_default()
                    .push(s.id().to_string()),
            }
        }
    }
    let by_id: BTreeMap<&str, &Arc<dyn Step>> = steps.iter().map(|s| (s.id(), s)).collect();
    // Launch order follows the declared order of steps, so runs are reproducible.
    let mut pending: Vec<String> = steps
        .iter()
        .map(|s| s.id().to_string())
        .filter(|id| prereqs.contains_key(id))
        .collect();
    if direction == Direction::Reverse {
        pending.reverse();
    }
    let mut finished: BTreeMap<String, bool> = BTreeMap::new();
    let mut outcomes = Vec::new();
    let mut errors = Vec::new();
    let mut running = FuturesUnordered::new();

    loop {
        if !cancel.is_cancelled() {
            let mut still = Vec::new();
            for id in pending.drain(..) {
                let pre = &prereqs[&id];
                if !pre.iter().all(|p| finished.contains_key(p)) {
                    still.push(id);
                    continue;
                }
                // `down` is best effort: a failed dependent does not keep us from removing
                // the rest (the state keeps what is left, and the next `down` retries).
                let blocked = match direction {
                    Direction::Forward => pre
                        .iter()
                        .find(|p| finished.get(*p) == Some(&false))
                        .cloned(),
                    Direction::Reverse => None,
                };
                if let Some(dep) = blocked {
                    let reason = format!("`{dep}` did not complete");
                    events.emit(Event::Skipped {
                        step: id.clone(),
                        reason: reason.clone(),
                    });
                    outcomes.push(StepOutcome {
                        step: id.clone(),
                        outcome: Outcome::Skipped { reason },
                        elapsed_ms: 0,
                    });
                    finished.insert(id, false);
                    continue;
                }
                let step = by_id[id.as_str()].clone();
                let fut = f(step);
                running.push(async move {
                    let t0 = Instant::now();
                    let r = fut.await;
                    (id, r, t0.elapsed())
                });
            }
            pending = still;
            // Skipping may have unblocked others; loop again before waiting.
            if running.is_empty()
                && !pending.is_empty()
                && pending
                    .iter()
                    .any(|id| prereqs[id].iter().all(|p| finished.contains_key(p)))
            {
                continue;
            }
        }
        let Some((id, result, elapsed)) = running.next().await else {
            break;
        };
        let elapsed_ms = elapsed.as_millis() as u64;
        match result {
            Ok(outcome) => {
                finished.insert(id.clone(), true);
                outcomes.push(StepOutcome {
                    step: id,
                    outcome,
                    elapsed_ms,
                });
            }
            Err(e) => {
                let e = e.in_step(&id);
                let message = error_chain(&e);
                events.emit(Event::Failed {
                    step: id.clone(),
                    kind: e.kind().to_string(),
                    message: message.clone(),
                });
                outcomes.push(StepOutcome {
                    step: id.clone(),
                    outcome: Outcome::Failed {
                        kind: e.kind().to_string(),
                        message,
                    },
                    elapsed_ms,
                });
                finished.insert(id.clone(), false);
                errors.push((id, e));
            }
        }
    }
    for id in pending {
        let reason = if cancel.is_cancelled() {
            "cancelled".to_string()
        } else {
            "not reached".to_string()
        };
        events.emit(Event::Skipped {
            step: id.clone(),
            reason: reason.clone(),
        });
        outcomes.push(StepOutcome {
            step: id,
            outcome: Outcome::Skipped { reason },
            elapsed_ms: 0,
        });
    }
    (outcomes, errors)
}

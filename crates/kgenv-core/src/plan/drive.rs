//! The four ways the engine drives a set of steps through the DAG: observe them (`plan`),
//! converge them (`up`), tear them down (`down`) and stop what bills by the hour (`stop`).
//! Each streams [`Event`]s and returns a [`Report`]; none knows which steps it drives.
//!
//! Before anything is destroyed the user can see it: [`down_preview`] lists, from the
//! state file alone, what `down` would delete and keep, step by step in `down`'s order;
//! `up` applies a change its step marked disruptive only once the context's confirmation
//! callback agrees ([`StepCtx::confirm`]), and otherwise fails that step with
//! [`Error::NotConfirmed`].

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::events::{Change, Event, Phase};
use super::executor::{run_dag, Direction, Outcome, StepOutcome};
use super::step::{CheckOutcome, Destroyed, Disruption, Observed, Step, StepCtx, Teardown};
use crate::error::{error_chain, BackendError, Error, Result, Unconfirmed};
use crate::state::{State, StepRecord};

/// What a run did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// `plan`, `up`, `down`, `status`, `stop` or `start`.
    pub operation: String,
    /// Environment name.
    pub env: String,
    /// Each step's outcome, in the order they finished.
    pub steps: Vec<StepOutcome>,
    /// Wall time in milliseconds.
    pub elapsed_ms: u64,
    /// What the environment would cost (`plan` only; the runner fills it in). Boxed: most
    /// reports have none, and a report is moved around whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prices: Option<Box<crate::pricing::Prices>>,
}

impl Report {
    /// Steps that changed something (created, updated, removed, stopped).
    pub fn changed(&self) -> usize {
        self.steps
            .iter()
            .filter(|s| matches!(s.outcome, Outcome::Changed | Outcome::Removed))
            .count()
    }

    /// Steps `plan` expects to change.
    pub fn planned_changes(&self) -> usize {
        self.steps
            .iter()
            .filter(
                |s| matches!(&s.outcome, Outcome::Planned { change } if *change != Change::None),
            )
            .count()
    }

    /// The outcome of one step.
    pub fn outcome(&self, step: &str) -> Option<&Outcome> {
        self.steps
            .iter()
            .find(|s| s.step == step)
            .map(|s| &s.outcome)
    }
}

/// The ids a run covers: every step, or those matching `only` (an id, or a prefix such as
/// `firewall` for `firewall/*`), cut down to `until` and everything it depends on.
pub fn select(
    steps: &[Arc<dyn Step>],
    only: &[String],
    until: Option<&str>,
) -> Result<BTreeSet<String>> {
    let ids: Vec<&str> = steps.iter().map(|s| s.id()).collect();
    let matching = |pat: &str| -> Result<Vec<String>> {
        let m: Vec<String> = ids
            .iter()
            .filter(|id| **id == pat || id.starts_with(&format!("{pat}/")))
            .map(|s| s.to_string())
            .collect();
        if m.is_empty() {
            return Err(Error::Usage(format!(
                "no step `{pat}` in this environment; steps are: {}",
                ids.join(", ")
            )));
        }
        Ok(m)
    };
    let mut selected: BTreeSet<String> = if only.is_empty() {
        ids.iter().map(|s| s.to_string()).collect()
    } else {
        let mut s = BTreeSet::new();
        for pat in only {
            s.extend(matching(pat)?);
        }
        s
    };
    if let Some(until) = until {
        let mut keep = BTreeSet::new();
        let mut stack = matching(until)?;
        while let Some(id) = stack.pop() {
            if keep.insert(id.clone()) {
                if let Some(step) = steps.iter().find(|s| s.id() == id) {
                    stack.extend(step.deps().iter().cloned());
                }
            }
        }
        selected = selected.intersection(&keep).cloned().collect();
    }
    Ok(selected)
}

/// Whether `check` failed only because kgenv cannot observe the step now (no credentials,
/// a backend missing from this build, a host not reachable yet): `plan` shows it as
/// unknown instead of failing.
fn unobservable(e: &Error) -> bool {
    e.backend().is_some_and(|b| {
        b.is_auth()
            || matches!(
                b,
                BackendError::Unavailable { .. } | BackendError::Connection { .. }
            )
    })
}

/// Dry run: what would change, and the calls each step would make. Makes no mutating call
/// and writes no file, here or on the host: steps see a [`StepCtx::read_only`] context.
/// Steps whose dependencies will change are not observed (their host may not exist
/// yet) and are shown with the actions they would take.
pub async fn plan(
    steps: &[Arc<dyn Step>],
    selected: &BTreeSet<String>,
    ctx: &StepCtx,
    operation: &str,
) -> Result<Report> {
    let changes: Arc<Mutex<BTreeMap<String, Change>>> = Arc::default();
    // Every plan only looks: no step may write, copy or make anything (issue 12, item 7).
    let ctx = &ctx.clone().read_only();
    drive(
        steps,
        selected,
        ctx,
        operation,
        Direction::Forward,
        |step, ctx| {
            let changes = changes.clone();
            async move {
                for w in step.warnings() {
                    ctx.warn(w);
                }
                let (upstream, unobserved): (Vec<String>, Vec<String>) = {
                    let c = changes.lock().unwrap_or_else(|p| p.into_inner());
                    let with = |want: &dyn Fn(Change) -> bool| {
                        step.deps()
                            .iter()
                            .filter(|d| c.get(*d).is_some_and(|ch| want(*ch)))
                            .cloned()
                            .collect()
                    };
                    (
                        with(&|ch| !matches!(ch, Change::None | Change::Unknown)),
                        with(&|ch| ch == Change::Unknown),
                    )
                };
                let (change, diff, actions, disruption) = if !upstream.is_empty() {
                    (
                        Change::Create,
                        vec![format!("after {} changes", upstream.join(", "))],
                        step.planned_actions(),
                        None,
                    )
                } else if !unobserved.is_empty() {
                    // Its host or inputs could not be observed either; trying would only wait.
                    (
                        Change::Unknown,
                        vec![format!(
                            "after {}, which could not be observed",
                            unobserved.join(", ")
                        )],
                        step.planned_actions(),
                        None,
                    )
                } else {
                    match step.check(&ctx).await {
                        Ok(CheckOutcome {
                            observed: Observed::Satisfied,
                            ..
                        }) => (Change::None, vec![], vec![], None),
                        Ok(CheckOutcome {
                            observed: Observed::Missing,
                            actions,
                            disruption,
                        }) => (Change::Create, vec![], actions, disruption),
                        Ok(CheckOutcome {
                            observed: Observed::Drifted(diff),
                            actions,
                            disruption,
                        }) => (Change::Update, diff, actions, disruption),
                        Err(e) if unobservable(&e) => (
                            Change::Unknown,
                            vec![format!("cannot observe: {}", error_chain(&e))],
                            step.planned_actions(),
                            None,
                        ),
                        Err(e) => return Err(e),
                    }
                };
                changes
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(step.id().to_string(), change);
                ctx.events().emit(Event::Planned {
                    step: step.id().to_string(),
                    summary: step.summary(),
                    change,
                    diff,
                    actions,
                    disruption,
                });
                Ok(Outcome::Planned { change })
            }
        },
    )
    .await
}

/// Converges the selected steps: each checks, and applies only when it differs. Every
/// step's preflight runs first, so bad local input fails before any call is made. A change
/// the step's check marked disruptive is applied only when [`StepCtx::confirm`] agrees;
/// refused, the step fails with [`Error::NotConfirmed`] and applies nothing.
pub async fn up(
    steps: &[Arc<dyn Step>],
    selected: &BTreeSet<String>,
    ctx: &StepCtx,
    operation: &str,
) -> Result<Report> {
    for step in steps.iter().filter(|s| selected.contains(s.id())) {
        step.preflight(&ctx.for_step_of(step.as_ref()))
            .await
            .map_err(|e| e.in_step(step.id()))?;
    }
    // Everything this run makes carries the environment's owner id, made now if needed.
    ctx.state.ensure_owner().await?;
    let report = drive(
        steps,
        selected,
        ctx,
        operation,
        Direction::Forward,
        |step, ctx| async move {
            let events = ctx.events();
            let id = step.id().to_string();
            for w in step.warnings() {
                ctx.warn(w);
            }
            events.emit(Event::Started {
                step: id.clone(),
                phase: Phase::Check,
            });
            let checked = step.check(&ctx).await?;
            if checked.observed == Observed::Satisfied {
                events.emit(Event::Satisfied { step: id });
                return Ok(Outcome::Satisfied);
            }
            if let Observed::Drifted(diff) = &checked.observed {
                for d in diff {
                    ctx.log(format!("differs: {d}"));
                }
            }
            if let Some(what) = checked.disruption.clone() {
                let disruption = Disruption {
                    step: id.clone(),
                    what,
                    diff: match checked.observed {
                        Observed::Drifted(diff) => diff,
                        _ => Vec::new(),
                    },
                };
                if !ctx.confirm(&disruption) {
                    return Err(Error::NotConfirmed(Box::new(Unconfirmed {
                        operation: "up".into(),
                        changes: vec![disruption.to_string()],
                        keeps: Vec::new(),
                    })));
                }
                ctx.log(format!("confirmed: {disruption}"));
            }
            let t = Instant::now();
            events.emit(Event::Started {
                step: id.clone(),
                phase: Phase::Apply,
            });
            step.apply(&ctx).await?;
            events.emit(Event::Done {
                step: id,
                phase: Phase::Apply,
                elapsed_ms: elapsed_ms(t),
            });
            Ok(Outcome::Changed)
        },
    )
    .await?;
    // Every step has now marked what it adopted from before owner ids: from here on, only
    // the owner id (or a recorded id) makes a resource this environment's.
    if selected.len() == steps.len() {
        ctx.state.settle_owner().await?;
    }
    Ok(report)
}

/// Removes what kgenv created, dependents first. Best effort: a step that fails does not
/// keep the others from being removed (the state keeps what is left for the next `down`).
pub async fn down(
    steps: &[Arc<dyn Step>],
    selected: &BTreeSet<String>,
    ctx: &StepCtx,
) -> Result<Report> {
    let report = reverse(steps, selected, ctx, "down", Phase::Destroy, |step, ctx| {
        Box::pin(async move { Ok(step.destroy(&ctx).await? == Destroyed::Removed) })
    })
    .await?;
    // An `up` writes the owner id before it makes anything; once every step has removed
    // what it made (recorded or found by the id), nothing carries it any more.
    if selected.len() == steps.len() {
        ctx.state.forget_if_empty().await?;
    }
    Ok(report)
}

/// What `down` would do to one step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepTeardown {
    /// Step id.
    pub step: String,
    /// What it deletes and keeps.
    #[serde(flatten)]
    pub teardown: Teardown,
}

/// What `down` would delete and keep, step by step in the order `down` goes (dependents
/// first). Made from the state file alone: no API call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DownPreview {
    /// Environment name.
    pub env: String,
    /// The steps that delete or keep something, in `down`'s order.
    pub steps: Vec<StepTeardown>,
}

impl DownPreview {
    /// Every line of what `down` deletes, in order.
    pub fn deletes(&self) -> Vec<String> {
        self.steps
            .iter()
            .flat_map(|s| s.teardown.deletes.iter().cloned())
            .collect()
    }

    /// Every line of what `down` keeps, in order.
    pub fn keeps(&self) -> Vec<String> {
        self.steps
            .iter()
            .flat_map(|s| s.teardown.keeps.iter().cloned())
            .collect()
    }

    /// The persistent disks the covered steps hold (kept unless named with
    /// `--delete-disk`): the names `--delete-disk` accepts.
    pub fn disks(&self) -> Vec<String> {
        self.steps
            .iter()
            .flat_map(|s| s.teardown.disks.iter().cloned())
            .collect()
    }

    /// Whether `down` would delete nothing (then there is nothing to confirm).
    pub fn deletes_nothing(&self) -> bool {
        self.steps.iter().all(|s| s.teardown.deletes.is_empty())
    }

    /// The error of a `down` that was not confirmed: it carries this preview's lines.
    pub fn not_confirmed(&self) -> Error {
        Error::NotConfirmed(Box::new(Unconfirmed {
            operation: "down".into(),
            changes: self.deletes(),
            keeps: self.keeps(),
        }))
    }
}

impl std::fmt::Display for DownPreview {
    /// `down`'s preview as the CLI prints it: what goes, then what stays.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (deletes, keeps) = (self.deletes(), self.keeps());
        let width = self.steps.iter().map(|s| s.step.len()).max().unwrap_or(0);
        if deletes.is_empty() {
            write!(f, "down: nothing of `{}` to delete", self.env)?;
        } else {
            write!(
                f,
                "down: deletes {} resource(s) of `{}`:",
                deletes.len(),
                self.env
            )?;
            for s in &self.steps {
                for d in &s.teardown.deletes {
                    write!(f, "\n  - {:<width$}  {d}", s.step)?;
                }
            }
        }
        if !keeps.is_empty() {
            write!(f, "\nkeeps:")?;
            for s in &self.steps {
                for k in &s.teardown.keeps {
                    write!(f, "\n  = {:<width$}  {k}", s.step)?;
                }
            }
        }
        Ok(())
    }
}

/// The selected steps in the order `down` starts them: a step after every selected step
/// that depends on it, ties in reverse declared order (as the executor launches them).
fn down_order<'a>(
    steps: &'a [Arc<dyn Step>],
    selected: &BTreeSet<String>,
) -> Vec<&'a Arc<dyn Step>> {
    let mut pending: Vec<&Arc<dyn Step>> = steps
        .iter()
        .rev()
        .filter(|s| selected.contains(s.id()))
        .collect();
    let mut order: Vec<&Arc<dyn Step>> = Vec::with_capacity(pending.len());
    while !pending.is_empty() {
        // A step is ready when no pending step depends on it.
        let ready = pending.iter().position(|s| {
            !pending
                .iter()
                .any(|other| other.deps().iter().any(|d| d == s.id()))
        });
        // A cycle cannot pass the executor; keep the declared order rather than loop.
        let i = ready.unwrap_or(0);
        order.push(pending.remove(i));
    }
    order
}

/// What `down` would delete and keep on the selected steps, from `state` alone (no call):
/// each step's [`Step::teardown`] of its record, in `down`'s order.
pub fn down_preview(
    steps: &[Arc<dyn Step>],
    selected: &BTreeSet<String>,
    state: &State,
    ctx: &StepCtx,
) -> DownPreview {
    let none = StepRecord::default();
    let steps = down_order(steps, selected)
        .into_iter()
        .filter_map(|step| {
            let record = state.step(step.id()).unwrap_or(&none);
            let teardown = step.teardown(record, &ctx.for_step_of(step.as_ref()));
            (!teardown.is_empty() || !teardown.disks.is_empty()).then(|| StepTeardown {
                step: step.id().to_string(),
                teardown,
            })
        })
        .collect();
    DownPreview {
        env: ctx.env.name.clone(),
        steps,
    }
}

/// Stops what bills by the hour (the VM) and keeps everything else, dependents first.
pub async fn stop(
    steps: &[Arc<dyn Step>],
    selected: &BTreeSet<String>,
    ctx: &StepCtx,
) -> Result<Report> {
    reverse(steps, selected, ctx, "stop", Phase::Stop, |step, ctx| {
        Box::pin(async move { step.stop(&ctx).await })
    })
    .await
}

/// A step's action in a reverse run: `Ok(true)` when it changed something.
type ReverseAction =
    fn(
        Arc<dyn Step>,
        StepCtx,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<bool>> + Send>>;

/// Runs `action` on the selected steps, dependents first.
async fn reverse(
    steps: &[Arc<dyn Step>],
    selected: &BTreeSet<String>,
    ctx: &StepCtx,
    operation: &str,
    phase: Phase,
    action: ReverseAction,
) -> Result<Report> {
    drive(
        steps,
        selected,
        ctx,
        operation,
        Direction::Reverse,
        |step, ctx| async move {
            let events = ctx.events().clone();
            let id = step.id().to_string();
            let t = Instant::now();
            events.emit(Event::Started {
                step: id.clone(),
                phase,
            });
            Ok(if action(step, ctx).await? {
                events.emit(Event::Done {
                    step: id,
                    phase,
                    elapsed_ms: elapsed_ms(t),
                });
                if phase == Phase::Destroy {
                    Outcome::Removed
                } else {
                    Outcome::Changed
                }
            } else {
                events.emit(Event::Satisfied { step: id });
                Outcome::Nothing
            })
        },
    )
    .await
}

/// Runs `body` on every selected step in dependency order (`direction`), each with its own
/// context, and makes the run's report.
async fn drive<F, Fut>(
    steps: &[Arc<dyn Step>],
    selected: &BTreeSet<String>,
    ctx: &StepCtx,
    operation: &str,
    direction: Direction,
    body: F,
) -> Result<Report>
where
    F: Fn(Arc<dyn Step>, StepCtx) -> Fut,
    Fut: std::future::Future<Output = Result<Outcome>>,
{
    let t0 = Instant::now();
    let (outcomes, errors) = run_dag(
        steps,
        selected,
        direction,
        &ctx.cancel,
        ctx.events(),
        |step| {
            let step_ctx = ctx.for_step_of(step.as_ref());
            body(step, step_ctx)
        },
    )
    .await;
    finish(operation, ctx, outcomes, errors, t0)
}

fn elapsed_ms(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// The run's report, or its error: cancelled, or the failed steps with the first failure.
fn finish(
    operation: &str,
    ctx: &StepCtx,
    steps: Vec<StepOutcome>,
    mut errors: Vec<(String, Error)>,
    t0: Instant,
) -> Result<Report> {
    if ctx.cancel.is_cancelled() {
        return Err(Error::Cancelled);
    }
    if !errors.is_empty() {
        let failed = errors.iter().map(|(id, _)| id.clone()).collect();
        let (_, first) = errors.remove(0);
        return Err(Error::RunFailed {
            failed,
            first: Box::new(first),
        });
    }
    Ok(Report {
        operation: operation.into(),
        env: ctx.env.name.clone(),
        steps,
        elapsed_ms: elapsed_ms(t0),
        prices: None,
    })
}

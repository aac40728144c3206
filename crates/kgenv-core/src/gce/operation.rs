//! Waiting for long-running operations: `zoneOperations.wait` / `globalOperations.wait`
//! long-polls (the server answers when the operation is DONE, or after about two minutes),
//! looped until DONE — never a sleep-and-get loop. A finished operation that carries
//! `error` is a typed failure (see [`super::errors::from_operation`]).

use std::time::{Duration, Instant};

use super::api;
use super::client::GceCompute;
use super::errors;
use super::model::{short_name, Operation};
use crate::backends::BackendResult;
use crate::error::BackendError;

/// Waits until `op` (started in `project`) is DONE and returns it; its error, if any, as a
/// typed [`BackendError`] about `resource`.
pub async fn wait(
    gce: &GceCompute,
    project: &str,
    mut op: Operation,
    resource: &str,
    limit: Duration,
) -> BackendResult<Operation> {
    let started = Instant::now();
    // Guards against a server that answers `wait` at once without the operation being done:
    // the long-poll is the pacing, this only keeps a misbehaving peer from a hot loop.
    let mut early_answers: u32 = 0;
    while !op.is_done() {
        if started.elapsed() > limit {
            return Err(BackendError::Timeout {
                what: format!("operation {} on {resource}", op.name),
                after: limit,
                last_seen: Some(format!("status {}", op.status)),
            });
        }
        let req = match op.zone.as_deref() {
            Some(z) => api::wait_zone_operation(project, short_name(z), &op.name)?,
            None if op.region.is_some() => {
                return Err(BackendError::other(format!(
                    "{resource}: regional operation {} is not expected here",
                    op.name
                )));
            }
            None => api::wait_global_operation(project, &op.name)?,
        };
        let asked = Instant::now();
        let next: Operation = gce.send(&req).await?;
        if !next.is_done() && asked.elapsed() < Duration::from_millis(50) {
            early_answers += 1;
            tokio::time::sleep(Duration::from_millis(50u64 << early_answers.min(5))).await;
        } else {
            early_answers = 0;
        }
        op = next;
    }
    match errors::from_operation(&op, resource) {
        Some(e) => Err(e),
        None => Ok(op),
    }
}

//! Whether the instance's current stop is a preemption, for `status`: a spot VM GCE took
//! back is TERMINATED like one the user stopped, and only GCE's operation history
//! (`compute.instances.preempted`) tells them apart. The newest preemption counts only if
//! it came after the VM's last start; a VM started again since then, then stopped by the
//! user, was not preempted this time.

use serde::{Deserialize, Serialize};

use crate::backends::compute::{InstanceInfo, InstanceStatus, Preemption};
use crate::error::Result;
use crate::plan::StepCtx;
use crate::spec::Instance;

use super::recorded_instance;

/// A VM stopped by a preemption: what `status` shows (also in `--json` and Python's
/// `Status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preempted {
    /// When GCE preempted it, RFC 3339 in UTC (`2026-12-04T10:02:11Z`).
    pub at: String,
    /// The provisioning model of the VM (`spot`).
    pub provisioning: String,
    /// The line `status` prints: when, and how to bring it back.
    pub message: String,
}

impl Preempted {
    fn new(p: Preemption, provisioning: &str) -> Self {
        // Shown to the second: what a person compares with their own clock.
        let at = chrono::DateTime::parse_from_rfc3339(&p.at).map_or(p.at, |t| {
            t.with_timezone(&chrono::Utc)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        });
        let message = format!(
            "preempted at {at} ({provisioning}); `kgenv start` or `kgenv up` brings it back, disks and data intact"
        );
        Self {
            at,
            provisioning: provisioning.to_string(),
            message,
        }
    }
}

/// The preemption that stopped `info`, when its current stop is one: it is STOPPING or
/// TERMINATED and GCE's newest preemption of it is not older than its last start.
pub async fn preempted(
    ctx: &StepCtx,
    spec: &Instance,
    info: &InstanceInfo,
) -> Result<Option<Preempted>> {
    if !matches!(
        info.status,
        InstanceStatus::Terminated | InstanceStatus::Stopping
    ) || info.id.is_empty()
    {
        return Ok(None);
    }
    let Some(p) = ctx
        .backends
        .compute
        .last_preemption(&info.at, &info.id)
        .await?
    else {
        return Ok(None);
    };
    if !after_last_start(&p.at, info.last_start.as_deref()) {
        return Ok(None);
    }
    Ok(Some(Preempted::new(p, spec.provisioning.name())))
}

/// The preemption of the instance the state recorded, if that is what stopped it last.
pub async fn recorded_preemption(ctx: &StepCtx, spec: &Instance) -> Result<Option<Preempted>> {
    let state = ctx.state.snapshot().await;
    let Some(at) = recorded_instance(&state) else {
        return Ok(None);
    };
    let Some(info) = ctx.backends.compute.get_instance(&at).await? else {
        return Ok(None);
    };
    preempted(ctx, spec, &info).await
}

/// Whether a preemption at `at` came at or after `last_start` (both RFC 3339, compared to
/// the millisecond GCE gives). No start time known: it did.
fn after_last_start(at: &str, last_start: Option<&str>) -> bool {
    let parse = |t: &str| {
        chrono::DateTime::parse_from_rfc3339(t)
            .ok()
            .map(|d| d.timestamp_millis())
    };
    match (parse(at), last_start.and_then(parse)) {
        (Some(p), Some(s)) => p >= s,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_preemption_counts_only_after_the_last_start() {
        let at = "2026-12-04T10:02:11.482Z";
        assert!(after_last_start(at, None));
        assert!(after_last_start(at, Some("2026-12-04T01:00:00.000-08:00")));
        assert!(
            after_last_start(at, Some("2026-12-04T02:02:11.482-08:00")),
            "same instant"
        );
        assert!(
            !after_last_start(at, Some("2026-12-04T02:02:11.483-08:00")),
            "started a millisecond later"
        );
    }

    #[test]
    fn the_message_says_when_and_what_to_do() {
        let p = Preempted::new(
            Preemption {
                at: "2026-12-04T10:02:11.482Z".into(),
                operation: "operation-1".into(),
            },
            "spot",
        );
        assert_eq!(p.at, "2026-12-04T10:02:11Z", "shown to the second");
        assert_eq!(p.message, "preempted at 2026-12-04T10:02:11Z (spot); `kgenv start` or `kgenv up` brings it back, disks and data intact");
    }
}

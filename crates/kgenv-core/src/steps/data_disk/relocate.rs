//! Moving the data disk to another zone (`kgenv move ZONE`): the disk-side phases, each
//! recorded in the state file under [`MOVE_ID`] before the next begins, so a run killed at
//! any moment is finished by a plain `kgenv move ZONE`.
//!
//! A zonal disk cannot change zone; GCE's way is a snapshot and a disk made from it. The
//! phases this module owns, in order (the runner's `move_to` stops and deletes the VM and
//! runs `up` between them, through the instance step):
//!
//! 1. [`begin`]: the move is recorded (target zone, the old disk with its GCE id, size and
//!    type, the snapshot's name) before anything changes;
//! 2. [`snapshot`]: the old disk, on a stopped VM, is snapshotted under
//!    `<disk>-move-<short>`, labelled with the owner id (an existing snapshot of this move
//!    is reused once READY);
//! 3. [`create_disk`]: `<instance>-data` is made in the target zone from the snapshot, same
//!    size and type, owner-labelled (one already there carrying the owner id is adopted);
//! 4. [`adopt_new_disk`]: the new disk becomes the environment's data disk in the
//!    `data-disk` record; the old one stays named in the move record only;
//! 5. [`finish`], only after `up` brought the VM up in the new zone with the disk mounted:
//!    the old disk and the snapshot are deleted, each only if it still carries the owner id
//!    (or the GCE id recorded for it), and the move record is dropped.
//!
//! Until [`finish`], the old disk and the snapshot are the user's data as it was before
//! the move: `down` keeps both and lists them ([`kept`]), and `up` refuses to run (it
//! would start the old VM and let work land on a disk whose snapshot is already taken).

use std::collections::BTreeMap;

use crate::backends::compute::{disk_path, DiskInfo, DiskRef, DiskRequest};
use crate::error::{BackendError, Result};
use crate::plan::StepCtx;
use crate::spec::Instance;
use crate::state::State;

use super::{record_disk, DATA_DISK_ID};

/// Id of the state record of an incomplete move (not a step of the DAG).
pub const MOVE_ID: &str = "move";

/// How far a move has come: each phase is recorded once it is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MovePhase {
    /// Recorded; nothing changed yet.
    Started,
    /// The VM in the old zone is stopped (or there was none).
    Stopped,
    /// The snapshot of the old disk is READY.
    Snapshotted,
    /// The new disk exists in the target zone.
    DiskCreated,
    /// The new disk is the environment's data disk in the state.
    Recorded,
    /// The VM in the old zone is deleted.
    VmDeleted,
    /// `up` brought the VM up in the target zone with the disk mounted.
    Up,
}

impl MovePhase {
    /// The phase's name in the state file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Stopped => "vm-stopped",
            Self::Snapshotted => "snapshotted",
            Self::DiskCreated => "disk-created",
            Self::Recorded => "disk-recorded",
            Self::VmDeleted => "old-vm-deleted",
            Self::Up => "up",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [
            Self::Started,
            Self::Stopped,
            Self::Snapshotted,
            Self::DiskCreated,
            Self::Recorded,
            Self::VmDeleted,
            Self::Up,
        ]
        .into_iter()
        .find(|p| p.as_str() == s)
    }
}

/// An incomplete move, as the state file records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingMove {
    /// The zone the data goes to.
    pub to_zone: String,
    /// The disk the data comes from.
    pub old_disk: DiskRef,
    /// The old disk's GCE id (an ownership proof beside the owner label).
    pub old_disk_id: String,
    /// Its size in GB (the new disk gets the same).
    pub size_gb: u64,
    /// Its type (the new disk gets the same).
    pub disk_type: String,
    /// The snapshot's name (global, in the disk's project).
    pub snapshot: String,
    /// The last phase done.
    pub phase: MovePhase,
}

impl PendingMove {
    /// The disk the move makes: the same name in the target zone.
    pub fn new_disk(&self) -> DiskRef {
        DiskRef {
            project: self.old_disk.project.clone(),
            zone: self.to_zone.clone(),
            name: self.old_disk.name.clone(),
        }
    }

    /// The snapshot as a disk's `sourceSnapshot` names it.
    pub fn snapshot_link(&self) -> String {
        format!(
            "projects/{}/global/snapshots/{}",
            self.old_disk.project, self.snapshot
        )
    }
}

/// The move the state records as incomplete, if any.
pub fn pending_move(state: &State) -> Option<PendingMove> {
    let r = state.step(MOVE_ID)?;
    Some(PendingMove {
        to_zone: r.facts.get("to_zone")?.clone(),
        old_disk: DiskRef::from_link(r.created.get("old_disk")?)?,
        old_disk_id: r.facts.get("old_disk_id").cloned().unwrap_or_default(),
        size_gb: r.facts.get("size_gb")?.parse().ok()?,
        disk_type: r.facts.get("type")?.clone(),
        snapshot: r.facts.get("snapshot")?.clone(),
        phase: MovePhase::parse(r.facts.get("phase")?)?,
    })
}

/// What an incomplete move keeps, one readable line each, for `down`'s list and
/// `status`: the old disk, the snapshot, and the new disk while it is not yet the
/// recorded data disk.
pub fn kept(m: &PendingMove) -> Vec<String> {
    let finish = format!("`kgenv move {}` finishes the move", m.to_zone);
    let mut lines = vec![
        format!(
            "data disk {} in {} ({} GB): your data as it was before the move to {}; deleted only once the move is done ({finish})",
            m.old_disk.name, m.old_disk.zone, m.size_gb, m.to_zone
        ),
        format!(
            "snapshot {} of that disk; deleted only once the move is done",
            m.snapshot
        ),
    ];
    if m.phase < MovePhase::Recorded {
        lines.push(format!(
            "disk {} in {}, if the move made it already ({finish})",
            m.old_disk.name, m.to_zone
        ));
    }
    lines
}

/// A snapshot name for a move of `disk`: `<disk>-move-<8 hex>`, within GCE's 63
/// characters.
fn snapshot_name(disk: &str) -> String {
    let short = &crate::state::new_owner_id()[..8];
    let keep = 63 - "-move-".len() - short.len();
    let base: String = disk.chars().take(keep).collect();
    format!("{}-move-{short}", base.trim_end_matches('-'))
}

/// Records the start of a move of `old` to `to_zone` (nothing changes before this is
/// written) and returns it.
pub async fn begin(ctx: &StepCtx, old: &DiskInfo, to_zone: &str) -> Result<PendingMove> {
    let m = PendingMove {
        to_zone: to_zone.into(),
        old_disk: old.at.clone(),
        old_disk_id: old.id.clone(),
        size_gb: old.size_gb,
        disk_type: old.disk_type.clone(),
        snapshot: snapshot_name(&old.at.name),
        phase: MovePhase::Started,
    };
    ctx.state
        .update(MOVE_ID, |r| {
            r.created.insert("old_disk".into(), disk_path(&m.old_disk));
            r.facts.insert("from_zone".into(), m.old_disk.zone.clone());
            r.facts.insert("to_zone".into(), m.to_zone.clone());
            r.facts.insert("old_disk_id".into(), m.old_disk_id.clone());
            r.facts.insert("size_gb".into(), m.size_gb.to_string());
            r.facts.insert("type".into(), m.disk_type.clone());
            r.facts.insert("snapshot".into(), m.snapshot.clone());
            r.facts.insert("phase".into(), m.phase.as_str().into());
        })
        .await?;
    Ok(m)
}

/// Records that `phase` is done.
pub async fn done(ctx: &StepCtx, m: &mut PendingMove, phase: MovePhase) -> Result<()> {
    m.phase = phase;
    ctx.state
        .update(MOVE_ID, |r| {
            r.facts.insert("phase".into(), phase.as_str().into());
        })
        .await?;
    Ok(())
}

fn labels(ctx_state: &State, spec: &Instance) -> BTreeMap<String, String> {
    let mut l = spec.labels.clone();
    l.extend(ctx_state.owner().labels());
    l
}

fn not_ours(what: &str) -> crate::Error {
    BackendError::AlreadyExists {
        resource: format!("{what} (it does not carry this environment's owner id; kgenv leaves it alone — delete or rename it, or pick another `instance.name`)"),
    }
    .into()
}

/// Snapshots the old disk (the VM must be stopped: a consistent copy). A snapshot of
/// this move already there is reused if it carries the owner id and is not FAILED.
pub async fn snapshot(ctx: &StepCtx, spec: &Instance, m: &PendingMove) -> Result<()> {
    let compute = &ctx.backends.compute;
    let state = ctx.state.snapshot().await;
    let project = &m.old_disk.project;
    let labels = labels(&state, spec);
    match compute.get_snapshot(project, &m.snapshot).await? {
        Some(s) if !state.owner().owns(&s.labels) => {
            return Err(not_ours(&format!("snapshot {project}/{}", m.snapshot)))
        }
        Some(s) if s.status == "READY" => {
            ctx.log(format!("snapshot {} is already taken", m.snapshot));
            return Ok(());
        }
        Some(s) if s.status == "FAILED" => {
            ctx.log(format!("snapshot {} failed; taking it again", m.snapshot));
            compute.delete_snapshot(project, &m.snapshot).await?;
        }
        // CREATING / UPLOADING: a killed run's; creating it again waits for it.
        _ => {}
    }
    ctx.log(format!(
        "snapshotting {} as {} (minutes for a large disk)",
        m.old_disk, m.snapshot
    ));
    match compute
        .create_snapshot(&m.old_disk, &m.snapshot, &labels)
        .await
    {
        Ok(_) => Ok(()),
        // A retried create that landed, or a killed run's still uploading: ours only
        // with the owner id, and only once READY.
        Err(BackendError::AlreadyExists { .. }) => {
            match compute.get_snapshot(project, &m.snapshot).await? {
                Some(s) if state.owner().owns(&s.labels) && s.status == "READY" => Ok(()),
                Some(s) if state.owner().owns(&s.labels) => Err(BackendError::FailedPrecondition {
                    resource: format!("snapshot {project}/{}", m.snapshot),
                    message: format!(
                        "is still {}; run `kgenv move {}` again in a few minutes",
                        s.status, m.to_zone
                    ),
                }
                .into()),
                _ => Err(not_ours(&format!("snapshot {project}/{}", m.snapshot))),
            }
        }
        Err(e) => Err(e.into()),
    }
}

/// Makes the new disk in the target zone from the snapshot (or adopts the one a killed
/// run made, if it carries the owner id).
pub async fn create_disk(ctx: &StepCtx, spec: &Instance, m: &PendingMove) -> Result<DiskInfo> {
    let compute = &ctx.backends.compute;
    let state = ctx.state.snapshot().await;
    let at = m.new_disk();
    let owner = state.owner();
    if let Some(d) = compute.get_disk(&at).await? {
        return if owner.owns(&d.labels) {
            ctx.log(format!("{at} is already made from the snapshot"));
            Ok(d)
        } else {
            Err(not_ours(&at.to_string()))
        };
    }
    let req = DiskRequest {
        at: at.clone(),
        size_gb: m.size_gb,
        disk_type: m.disk_type.clone(),
        labels: labels(&state, spec),
        source_snapshot: Some(m.snapshot_link()),
    };
    ctx.log(format!(
        "creating {at} from snapshot {} ({} GB {})",
        m.snapshot, m.size_gb, m.disk_type
    ));
    match compute.insert_disk(&req).await {
        Ok(d) => Ok(d),
        Err(BackendError::AlreadyExists { .. }) => match compute.get_disk(&at).await? {
            Some(d) if owner.owns(&d.labels) => Ok(d),
            _ => Err(not_ours(&at.to_string())),
        },
        Err(e) => Err(e.into()),
    }
}

/// Makes `new` the environment's data disk in the state (the `data-disk` record); the
/// old disk stays named in the move record.
pub async fn adopt_new_disk(ctx: &StepCtx, new: &DiskInfo) -> Result<()> {
    record_disk(ctx, new).await
}

/// After `up` succeeded in the target zone: deletes the old disk and the snapshot (each
/// only if it still carries the owner id or the recorded GCE id) and drops the move
/// record. What is no longer there is fine; what is not ours is left alone with a warning.
pub async fn finish(ctx: &StepCtx, m: &PendingMove) -> Result<()> {
    let compute = &ctx.backends.compute;
    let state = ctx.state.snapshot().await;
    let owner = state.owner();
    // Safety net: the data disk must be the new one before the old one goes.
    let recorded = state
        .step(DATA_DISK_ID)
        .and_then(|r| r.created.get("disk"))
        .and_then(|l| DiskRef::from_link(l));
    if recorded.as_ref() != Some(&m.new_disk()) {
        return Err(BackendError::InvalidArgument {
            resource: m.old_disk.to_string(),
            message: format!(
                "is not deleted: the recorded data disk is {} instead of the moved {}",
                recorded.map_or("none".into(), |d| d.to_string()),
                m.new_disk()
            ),
        }
        .into());
    }
    match compute.get_disk(&m.old_disk).await? {
        None => {}
        Some(d) if !(owner.owns(&d.labels) || (!d.id.is_empty() && d.id == m.old_disk_id)) => {
            ctx.warn(format!(
                "{} no longer carries this environment's owner id; kgenv leaves it alone",
                m.old_disk
            ));
        }
        Some(d) if !d.users.is_empty() => {
            return Err(BackendError::InUse {
                resource: m.old_disk.to_string(),
                message: format!(
                    "is still attached to {}; detach it, then run `kgenv move {}` again",
                    d.users.join(", "),
                    m.to_zone
                ),
            }
            .into());
        }
        Some(_) => {
            ctx.log(format!(
                "deleting {} (its data is now on {})",
                m.old_disk,
                m.new_disk()
            ));
            match compute.delete_disk(&m.old_disk).await {
                Ok(()) | Err(BackendError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    let project = &m.old_disk.project;
    match compute.get_snapshot(project, &m.snapshot).await? {
        None => {}
        Some(s) if !owner.owns(&s.labels) => ctx.warn(format!(
            "snapshot {} no longer carries this environment's owner id; kgenv leaves it alone",
            m.snapshot
        )),
        Some(_) => {
            ctx.log(format!("deleting snapshot {}", m.snapshot));
            match compute.delete_snapshot(project, &m.snapshot).await {
                Ok(()) | Err(BackendError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    ctx.state
        .update(MOVE_ID, |r| *r = Default::default())
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_names_fit_gce_names() {
        let long = "a".repeat(58) + "-data";
        let n = snapshot_name(&long);
        assert!(n.len() <= 63, "{n}");
        assert!(n.contains("-move-"), "{n}");
        assert!(crate::spec::rules::gce_name("snapshot", &n).is_ok(), "{n}");
        let short = snapshot_name("kg-data");
        assert!(
            short.starts_with("kg-data-move-") && short.len() == 21,
            "{short}"
        );
    }

    #[test]
    fn phases_round_trip_and_order() {
        for p in [MovePhase::Started, MovePhase::Recorded, MovePhase::Up] {
            assert_eq!(MovePhase::parse(p.as_str()), Some(p));
        }
        assert!(MovePhase::Snapshotted < MovePhase::Recorded);
        assert_eq!(MovePhase::parse("nonsense"), None);
    }
}

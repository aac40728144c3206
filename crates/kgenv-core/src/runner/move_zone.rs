//! `kgenv move ZONE`: the data disk and the VM go to another zone (after a stockout in the
//! disk's zone, say), written once here and called by every surface.
//!
//! A zonal disk never changes zone, so the data travels by snapshot. In order, each phase
//! recorded in the state file before the next ([`relocate`] owns the disk side):
//!
//! 1. checks, before any call: a GCE environment with a recorded data disk, ZONE a zone
//!    and not the disk's; then (GETs only) the machine and GPU types exist in ZONE;
//! 2. the [`MovePreview`] is shown and confirmed (`--yes`, Python `yes=True`; refused, it
//!    fails with [`Error::NotConfirmed`] and changes nothing);
//! 3. the VM is stopped, so the snapshot is consistent;
//! 4. the old disk is snapshotted; 5. `<instance>-data` is made in ZONE from it;
//! 6. the new disk is recorded as the data disk (the old one stays in the move record);
//! 7. the VM in the old zone is deleted through the instance step (its boot disk holds
//!    nothing `up` cannot rebuild);
//! 8. `up` runs: the instance goes to ZONE because the data disk is there, the data-disk
//!    step attaches it, disk-mount mounts it — never formatted, it has a file system;
//! 9. only then the old disk and the snapshot are deleted and the move record dropped.
//!
//! Killed or failed at any point, a plain `kgenv move ZONE` goes on from the recorded
//! phase. Meanwhile `up` and `start` refuse (they would start the old VM and let work
//! land on a disk already snapshotted), and `down` deletes the VM as usual but keeps the
//! old disk, the snapshot and the new disk, listing them as kept; `down --delete-disk` is
//! refused until the move is finished.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{Report, RunOptions, Runner};
use crate::error::{BackendError, Error, Result, Unconfirmed};
use crate::plan::{drive, Event, EventSink, Step, StepCtx};
use crate::spec::Target;
use crate::state::State;
use crate::steps::data_disk::relocate::{self, MovePhase, PendingMove};
use crate::steps::data_disk::{recorded_disk, DATA_DISK_ID};
use crate::steps::instance::{preflight, recorded_instance};

/// What `kgenv move ZONE` will do, shown before it does it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MovePreview {
    /// Environment name.
    pub env: String,
    /// The data disk's name (the same in both zones).
    pub disk: String,
    /// The zone the data disk is in now.
    pub from_zone: String,
    /// The zone it goes to.
    pub to_zone: String,
    /// The phase an interrupted move reached (it goes on from there), `None` for a new move.
    pub resumes_after: Option<String>,
    /// What it does, in order, one readable line each.
    pub steps: Vec<String>,
    /// What it deletes.
    pub deletes: Vec<String>,
    /// What it keeps.
    pub keeps: Vec<String>,
}

impl MovePreview {
    /// The error of a move that was not confirmed: it carries this preview's lines.
    pub fn not_confirmed(&self) -> Error {
        Error::NotConfirmed(Box::new(Unconfirmed {
            operation: "move".into(),
            changes: self.steps.clone(),
            keeps: self.keeps.clone(),
        }))
    }
}

impl std::fmt::Display for MovePreview {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "move: data disk {} of `{}` from {} to {}",
            self.disk, self.env, self.from_zone, self.to_zone
        )?;
        if let Some(p) = &self.resumes_after {
            write!(f, " (an interrupted move, going on after `{p}`)")?;
        }
        write!(f, ":")?;
        for (i, s) in self.steps.iter().enumerate() {
            write!(f, "\n  {}. {s}", i + 1)?;
        }
        if !self.deletes.is_empty() {
            write!(f, "\ndeletes:")?;
            for d in &self.deletes {
                write!(f, "\n  - {d}")?;
            }
        }
        if !self.keeps.is_empty() {
            write!(f, "\nkeeps:")?;
            for k in &self.keeps {
                write!(f, "\n  = {k}")?;
            }
        }
        Ok(())
    }
}

/// The error of a verb that would disturb an incomplete move.
pub(super) fn incomplete(m: &PendingMove, verb: &str) -> Error {
    Error::Usage(format!(
        "a move of the data disk {} from {} to {} is incomplete (done: {}); `kgenv {verb}` now could lose work written after its snapshot. Run `kgenv move {}` to finish it; the old disk and the snapshot are kept until it is done",
        m.old_disk.name,
        m.old_disk.zone,
        m.to_zone,
        m.phase.as_str(),
        m.to_zone
    ))
}

impl Runner {
    /// Refuses `verb` (`up`, `start`) while a move is incomplete and its new VM is not
    /// up yet.
    pub(super) async fn refuse_mid_move(&self, verb: &str) -> Result<()> {
        let state = self.store()?.snapshot().await;
        match relocate::pending_move(&state) {
            Some(m) if m.phase < MovePhase::Up => Err(incomplete(&m, verb)),
            _ => Ok(()),
        }
    }

    /// What an incomplete move keeps, for `down`'s list (`None` when no move is under way).
    pub(super) fn move_keeps(state: &State) -> Option<Vec<String>> {
        relocate::pending_move(state).map(|m| relocate::kept(&m))
    }

    /// What `move_to(zone)` would do, from the spec and the state file alone (no call).
    /// Usage errors (no data disk, a bad or the same zone, another move unfinished) are
    /// [`Error::Usage`] (exit 2).
    pub async fn move_preview(&self, zone: &str) -> Result<MovePreview> {
        let state = self.store()?.snapshot().await;
        self.move_plan(&state, zone)
    }

    fn move_plan(&self, state: &State, zone: &str) -> Result<MovePreview> {
        let usage = |m: String| Err(Error::Usage(m));
        let has_disk_spec = self
            .env
            .instance
            .as_ref()
            .is_some_and(|i| i.data_disk.is_some());
        if self.env.target != Target::Gce || !has_disk_spec {
            return usage(format!(
                "`kgenv move` moves a GCE data disk; `{}` has none (target `{}`{})",
                self.env.name,
                self.env.target.kind(),
                if self.env.target == Target::Gce {
                    ", `[instance.data_disk]` is off"
                } else {
                    ""
                }
            ));
        }
        if let Err(e) = crate::spec::rules::zone("ZONE", zone) {
            return usage(e.to_string());
        }
        let pending = relocate::pending_move(state);
        if let Some(m) = pending.as_ref().filter(|m| m.to_zone != zone) {
            return usage(format!(
                "a move of the data disk to {} is incomplete; finish it first with `kgenv move {}` (the data is safe: the old disk in {} and the snapshot are kept)",
                m.to_zone, m.to_zone, m.old_disk.zone
            ));
        }
        let (disk, from) = match &pending {
            Some(m) => (m.old_disk.name.clone(), m.old_disk.zone.clone()),
            None => {
                let Some(d) = recorded_disk(state) else {
                    return usage(format!(
                        "`{}` has no data disk yet, so there is nothing to move: `kgenv up` makes it (in the first zone of `instance.zones` with capacity)",
                        self.env.name
                    ));
                };
                if d.zone == zone {
                    return usage(format!(
                        "the data disk {} is already in {zone}; nothing to move",
                        d.name
                    ));
                }
                (d.name, d.zone)
            }
        };
        let size = state
            .fact(DATA_DISK_ID, "size_gb")
            .map_or(String::new(), |s| format!(", {s} GB"));
        let vm = recorded_instance(state);
        let mut steps = Vec::new();
        let phase = pending.as_ref().map(|m| m.phase);
        let before = |p: MovePhase| phase.is_none_or(|have| have < p);
        if before(MovePhase::Stopped) {
            steps.push(match &vm {
                Some(i) => format!("stop the VM {} in {from} (a consistent snapshot)", i.name),
                None => "no VM to stop".to_string(),
            });
        }
        if before(MovePhase::Snapshotted) {
            steps.push(format!(
                "snapshot disk {disk} in {from}{size} (minutes for a large disk)"
            ));
        }
        if before(MovePhase::DiskCreated) {
            steps.push(format!(
                "create disk {disk} in {zone} from the snapshot (same size and type)"
            ));
        }
        if before(MovePhase::VmDeleted) {
            if let Some(i) = vm.as_ref().filter(|i| i.zone != zone) {
                steps.push(format!(
                    "delete the VM {} in {} and its boot disk (rebuilt by `up`)",
                    i.name, i.zone
                ));
            }
        }
        if before(MovePhase::Up) {
            steps.push(format!(
                "`up`: a VM in {zone} with disk {disk} attached and mounted (not formatted), then the container, Jupyter and data again (tens of minutes, like a first `up`)"
            ));
        }
        steps.push(format!(
            "delete disk {disk} in {from} and the snapshot, once the VM in {zone} is up with the disk mounted"
        ));
        let mut deletes = Vec::new();
        if let Some(i) = vm
            .as_ref()
            .filter(|i| i.zone != zone && before(MovePhase::VmDeleted))
        {
            deletes.push(format!(
                "VM {} in {} with its boot disk (anything outside the data disk on it)",
                i.name, i.zone
            ));
        }
        deletes.push(format!(
            "disk {disk} in {from}, after its copy in {zone} is mounted on the new VM"
        ));
        deletes.push("the move's snapshot, at the same time".into());
        let keeps = vec![format!(
            "your data: on disk {disk} in {from} until the end, and on its copy in {zone} from then on"
        )];
        Ok(MovePreview {
            env: self.env.name.clone(),
            disk,
            from_zone: from,
            to_zone: zone.to_string(),
            resumes_after: phase.map(|p| p.as_str().to_string()),
            steps,
            deletes,
            keeps,
        })
    }

    /// `kgenv move ZONE`: moves the data disk (by snapshot) and the VM to `zone`, asking
    /// first: the [`MovePreview`] goes to `ask` (a terminal prompt; `|_| false` where
    /// nobody can answer) unless `opts.yes`. Refused: [`Error::NotConfirmed`], nothing
    /// changed. Goes on from where an interrupted move stopped. Returns the report of the
    /// `up` it runs in the new zone (operation `move`).
    pub async fn move_to(
        &self,
        zone: &str,
        opts: RunOptions,
        ask: impl FnOnce(&MovePreview) -> bool,
        on_event: impl Fn(Event) + Send + Sync + 'static,
    ) -> Result<Report> {
        let _lock = self.lock().await?;
        let ctx = self.ctx(EventSink::new(on_event))?;
        let preview = self.move_plan(&ctx.state.snapshot().await, zone)?;
        let spec = self
            .env
            .instance
            .clone()
            .ok_or_else(|| Error::Usage("no instance".into()))?;
        // The machine and GPU types must exist in ZONE before anything changes (GETs).
        let mut there = spec.clone();
        there.zones = crate::spec::Zones::Listed(vec![zone.to_string()]);
        preflight(&ctx.for_step("preflight"), &there).await?;
        if !opts.yes && !ask(&preview) {
            return Err(preview.not_confirmed());
        }
        let mctx = ctx.for_step(relocate::MOVE_ID);
        let result = self.move_phases(&ctx, &mctx, &spec, zone, &opts).await;
        if let Err(e) = &result {
            if !matches!(e, Error::NotConfirmed(_)) {
                mctx.warn(format!(
                    "the move to {zone} is not finished; the old data disk in {} and its snapshot are kept. Run `kgenv move {zone}` again to go on",
                    preview.from_zone
                ));
            }
        }
        result
    }

    async fn move_phases(
        &self,
        ctx: &StepCtx,
        mctx: &StepCtx,
        spec: &crate::spec::Instance,
        zone: &str,
        opts: &RunOptions,
    ) -> Result<Report> {
        let compute = &ctx.backends.compute;
        ctx.state.ensure_owner().await?;
        let state = ctx.state.snapshot().await;
        let mut m = match relocate::pending_move(&state) {
            Some(m) => {
                mctx.log(format!(
                    "going on with the move to {zone} after `{}`",
                    m.phase.as_str()
                ));
                m
            }
            None => {
                let at = recorded_disk(&state)
                    .ok_or_else(|| Error::Usage("no data disk recorded; nothing to move".into()))?;
                let old = compute
                    .get_disk(&at)
                    .await?
                    .ok_or_else(|| BackendError::NotFound {
                        resource: format!(
                            "{at} (recorded as the data disk; deleted outside kgenv?)"
                        ),
                    })?;
                let owned = state.owner().owns(&old.labels)
                    || state.fact(DATA_DISK_ID, "id") == Some(old.id.as_str());
                if !owned {
                    return Err(BackendError::AlreadyExists {
                        resource: format!("{at} (it does not carry this environment's owner id; kgenv does not move it)"),
                    }
                    .into());
                }
                relocate::begin(mctx, &old, zone).await?
            }
        };
        let instance = self.step("instance")?;
        let ictx = ctx.for_step("instance");
        if m.phase < MovePhase::Stopped {
            if recorded_instance(&ctx.state.snapshot().await).is_some() {
                match instance.stop(&ictx).await {
                    Ok(_) => {}
                    // Recorded but gone (deleted outside kgenv): nothing writes to the disk.
                    Err(e)
                        if e.backend()
                            .is_some_and(|b| matches!(b, BackendError::NotFound { .. })) =>
                    {
                        mctx.log("the recorded VM is gone; nothing to stop");
                    }
                    Err(e) => return Err(e),
                }
            }
            relocate::done(mctx, &mut m, MovePhase::Stopped).await?;
        }
        self.not_cancelled()?;
        if m.phase < MovePhase::Snapshotted {
            relocate::snapshot(mctx, spec, &m).await?;
            relocate::done(mctx, &mut m, MovePhase::Snapshotted).await?;
        }
        self.not_cancelled()?;
        if m.phase < MovePhase::Recorded {
            let new = relocate::create_disk(mctx, spec, &m).await?;
            relocate::done(mctx, &mut m, MovePhase::DiskCreated).await?;
            relocate::adopt_new_disk(mctx, &new).await?;
            relocate::done(mctx, &mut m, MovePhase::Recorded).await?;
        }
        self.not_cancelled()?;
        if m.phase < MovePhase::VmDeleted {
            let vm = recorded_instance(&ctx.state.snapshot().await);
            if vm.is_some_and(|i| i.zone != m.to_zone) {
                instance.destroy(&ictx).await?;
            }
            relocate::done(mctx, &mut m, MovePhase::VmDeleted).await?;
        }
        self.not_cancelled()?;
        let selected = self.select(&RunOptions::default())?;
        let mut up_ctx = ctx.clone();
        if let Some(confirm) = self.confirmation(opts.yes) {
            up_ctx = up_ctx.with_confirm(confirm);
        }
        // Even after a finished `up`, run it again: the old disk goes only once the
        // new VM is seen up with the disk mounted.
        let report = drive::up(&self.steps, &selected, &up_ctx, "move").await?;
        relocate::done(mctx, &mut m, MovePhase::Up).await?;
        relocate::finish(mctx, &m).await?;
        mctx.log(format!(
            "the data disk {} is in {zone} now; the old disk and the snapshot are deleted",
            m.old_disk.name
        ));
        Ok(report)
    }

    fn step(&self, id: &str) -> Result<Arc<dyn Step>> {
        self.steps
            .iter()
            .find(|s| s.id() == id)
            .cloned()
            .ok_or_else(|| Error::Usage(format!("this environment has no `{id}` step")))
    }

    fn not_cancelled(&self) -> Result<()> {
        if self.cancel.is_cancelled() {
            Err(Error::Cancelled)
        } else {
            Ok(())
        }
    }
}

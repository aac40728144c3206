//! Guide step 5: competition data, selected by glob, fetched to the destination (a host
//! directory the container mounts, or `gs://`) and resumed rather than restarted.
//!
//! [`pull`] is the one data operation: the step runs it to converge `[[data]]`, and
//! `kgenv data pull` (the runner's [`crate::runner::data::pull`]) runs it without an
//! environment. It lists the competition, selects by glob, skips what is complete at the
//! destination and fetches the rest a few files at a time, reporting each file and the
//! running total as events of step `data/<competition>`.
//!
//! Before the first byte is fetched, the pull compares what it needs with the free space at
//! the destination ([`Kaggle::space`]: `statvfs` here, or the data agent's answer on a host)
//! and stops with [`BackendError::InsufficientSpace`] when it cannot fit:
//!
//! - the files still to fetch count at their listed sizes, less what their partial downloads
//!   already hold there (a resumed pull needs only the rest). Kaggle lists a file it serves
//!   wrapped in a zip at its unpacked size, so the listed size is never below what lands;
//! - with `extract`, a listed `.zip`'s contents count too. Kaggle's listing does not give an
//!   archive's unpacked size, so it is estimated at the archive's own size
//!   ([`ZIP_CONTENTS_FACTOR`]) — the least it unpacks to (entries that do not compress are
//!   stored), so the check refuses only a pull that surely does not fit; compressed text can
//!   unpack to several times more. The message says when the figure is such an estimate;
//! - a `gs://` destination has no size limit and a backend that cannot measure (a mock)
//!   skips the check.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::backends::kaggle::{DataFile, DestSpace, FetchOptions, FileSelection, Kaggle};
use crate::backends::remote::CommandTimeout;
use crate::backends::{Meter, Progress, Stream};
use crate::error::{human_bytes, BackendError, Result, SpaceShortfall};
use crate::plan::{CheckOutcome, Destroyed, Event, EventSink, Step, StepCtx};
use crate::spec::{Data, Env, Target};
use crate::steps::hostfs::HostFs;

/// Files fetched at the same time by default; each uses the downloader's parallel streams.
pub const PARALLEL_FILES: usize = 4;

/// With `extract`, a listed `.zip`'s contents are counted as this many times its size:
/// Kaggle's listing does not give the unpacked size, and an archive unpacks to at least
/// about its own size, so 1 never refuses a pull that would fit (see the module docs).
pub const ZIP_CONTENTS_FACTOR: u64 = 1;

/// What a pull tells the user to change when its destination is too small, for a pull
/// without an environment (`kgenv data pull`).
pub const PULL_SPACE_REMEDY: &str =
    "Free space on that file system, or pull to a destination with more room (`--dest`).";

/// What a pull fetches, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullPlan {
    /// The competition's slug.
    pub competition: String,
    /// File globs (`*` matches across `/`); empty means every file.
    pub files: Vec<String>,
    /// A directory, or `gs://bucket/prefix`.
    pub dest: String,
    /// Unpack the `.zip` files Kaggle serves (directory destinations).
    pub extract: bool,
    /// Files fetched at the same time.
    pub parallel_files: usize,
    /// What to tell the user to change when the destination is too small (the setting to
    /// raise, or another destination).
    pub space_remedy: String,
}

impl PullPlan {
    /// The pull `[[data]]` of `env` describes.
    pub fn for_spec(env: &Env, spec: &Data) -> Self {
        Self {
            competition: spec.competition.clone(),
            files: spec.files.clone(),
            dest: spec.dest.clone(),
            extract: spec.extract,
            parallel_files: PARALLEL_FILES,
            space_remedy: space_remedy(env, &spec.dest),
        }
    }

    /// The step id its events carry.
    pub fn step_id(&self) -> String {
        format!("data/{}", self.competition)
    }
}

/// What a pull did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullReport {
    /// The competition.
    pub competition: String,
    /// Where the files are.
    pub dest: String,
    /// Files the globs selected.
    pub selected: usize,
    /// `(file, bytes)` for each file fetched now, in the order they finished.
    pub fetched: Vec<(String, u64)>,
    /// Files already complete at the destination.
    pub skipped: Vec<String>,
    /// Bytes transferred.
    pub bytes: u64,
    /// Wall time in milliseconds.
    pub elapsed_ms: u64,
}

/// What a pull finds before fetching: the selected files split into those still missing
/// at the destination and those already complete there.
struct Listing {
    selected: usize,
    missing: Vec<DataFile>,
    complete: Vec<String>,
}

/// The selected files of `plan`'s competition as `lister` lists them, split by whether
/// `looker` finds them complete at the destination (one `present` call each).
async fn listing(lister: &dyn Kaggle, looker: &dyn Kaggle, plan: &PullPlan) -> Result<Listing> {
    let files = lister.list_files(&plan.competition).await?;
    let selected = FileSelection::new(&plan.files)?.select(files);
    if selected.is_empty() {
        return Err(BackendError::NotFound {
            resource: format!(
                "files matching {:?} in competition {}",
                plan.files, plan.competition
            ),
        }
        .into());
    }
    let (mut missing, mut complete) = (Vec::new(), Vec::new());
    let count = selected.len();
    for f in selected {
        if looker.present(&plan.dest, &f.name).await? == Some(f.size) {
            complete.push(f.name);
        } else {
            missing.push(f);
        }
    }
    Ok(Listing {
        selected: count,
        missing,
        complete,
    })
}

/// The setting to raise when `dest` of `env` runs out of room.
fn space_remedy(env: &Env, dest: &str) -> String {
    let on_data_disk = dest.starts_with(&format!("{}/", env.host_dir()));
    match env.target {
        Target::Gce if on_data_disk => "Raise `instance.data_disk.size_gb` in kgenv.toml (the data disk grows in place on the next `up`), or pull fewer files (`files` in [[data]]).".into(),
        Target::Gce => format!("This `dest` is on the VM's boot disk: put it under {} (the data disk, sized by `instance.data_disk.size_gb`), raise `instance.disk_size_gb`, or pull fewer files (`files` in [[data]]).", env.host_dir()),
        Target::Ssh(_) => "Free space on that file system of the host, or choose another `dest` in [[data]].".into(),
        Target::Local => "Free space on that file system, or choose another `dest` in [[data]].".into(),
    }
}

/// The bytes `missing` need at a destination with `space` (see the module docs), and how
/// the figure was estimated when it is not exact.
fn space_needed(missing: &[DataFile], extract: bool, space: &DestSpace) -> (u64, Option<String>) {
    let download = missing
        .iter()
        .map(|f| f.size)
        .sum::<u64>()
        .saturating_sub(space.held);
    let zips: Vec<&DataFile> = missing
        .iter()
        .filter(|f| extract && f.name.to_ascii_lowercase().ends_with(".zip"))
        .collect();
    let contents = zips
        .iter()
        .map(|f| f.size.saturating_mul(ZIP_CONTENTS_FACTOR))
        .sum::<u64>();
    let estimate = (!zips.is_empty()).then(|| {
        format!(
            "{} to download and {} for the contents of {} zip(s), which Kaggle's listing does not size: counted at the zips' own size, the least they unpack to; compressed text can need several times more",
            human_bytes(download),
            human_bytes(contents),
            zips.len()
        )
    });
    (download.saturating_add(contents), estimate)
}

/// Fails with [`BackendError::InsufficientSpace`] when `missing` cannot fit at `plan`'s
/// destination; asks `kaggle` where it measures (on the host, for a host's agent).
async fn ensure_room(
    kaggle: &dyn Kaggle,
    plan: &PullPlan,
    missing: &[DataFile],
) -> Result<Option<(u64, DestSpace)>> {
    if missing.is_empty() {
        return Ok(None);
    }
    let names: Vec<String> = missing.iter().map(|f| f.name.clone()).collect();
    let Some(space) = kaggle.space(&plan.dest, &names).await? else {
        return Ok(None);
    };
    let (needed, estimate) = space_needed(missing, plan.extract, &space);
    if needed > space.free {
        return Err(BackendError::InsufficientSpace(Box::new(SpaceShortfall {
            location: if space.path == plan.dest {
                space.path
            } else {
                format!("{} (for {})", space.path, plan.dest)
            },
            needed,
            free: space.free,
            estimate,
            remedy: plan.space_remedy.clone(),
        }))
        .into());
    }
    Ok(Some((needed, space)))
}

/// Byte counts of the files in flight, for the pull's running total.
struct Totals {
    meter: Meter,
    finished: u64,
    running: HashMap<String, u64>,
    last: Instant,
}

/// Pulls `plan` through `kaggle` (any backend: local, `gs://`, on a host through the data
/// agent, or a mock). Each file and the running total (item `total`) are reported to
/// `events` as step `data/<competition>`; once `cancel` fires no new file starts (partial
/// files resume on the next run).
pub async fn pull(
    kaggle: &dyn Kaggle,
    plan: &PullPlan,
    events: &EventSink,
    cancel: &CancellationToken,
) -> Result<PullReport> {
    let started = Instant::now();
    let step = plan.step_id();
    let log = |line: String| {
        events.emit(Event::Log {
            step: step.clone(),
            stream: Stream::Stdout,
            line,
        })
    };
    let Listing {
        selected,
        missing,
        complete: skipped,
    } = listing(kaggle, kaggle, plan).await?;
    for f in &skipped {
        log(format!("{f}: already complete"));
    }
    // Nothing is fetched before this: a pull that cannot fit stops here.
    if let Some((needed, space)) = ensure_room(kaggle, plan, &missing).await? {
        log(format!(
            "needs {} at {}, {} free",
            human_bytes(needed),
            space.path,
            human_bytes(space.free)
        ));
    }
    let total: u64 = missing.iter().map(|f| f.size).sum();
    log(format!(
        "{} of the selected {} file(s) to fetch, {total} bytes{}",
        missing.len(),
        selected,
        if plan.extract { ", unpacking zips" } else { "" }
    ));
    let totals = Mutex::new(Totals {
        meter: Meter::new("total", Some(total), 0),
        finished: 0,
        running: HashMap::new(),
        last: Instant::now(),
    });
    let emit_total = |force: bool| {
        let mut t = totals.lock().unwrap_or_else(|p| p.into_inner());
        if !force && t.last.elapsed() < Duration::from_millis(250) {
            return;
        }
        t.last = Instant::now();
        let done = t.finished + t.running.values().sum::<u64>();
        t.meter.update(done);
        events.emit(Event::from_progress(&step, t.meter.progress(done)));
    };
    let fetch = FetchOptions::new(&plan.dest).extract(plan.extract);
    let bytes = AtomicU64::new(0);
    let fetched = Mutex::new(Vec::new());
    futures::stream::iter(missing.iter().map(Ok::<_, crate::Error>))
        .try_for_each_concurrent(plan.parallel_files.max(1), |f| {
            let (totals, emit_total, bytes, fetched, fetch, log, step) =
                (&totals, &emit_total, &bytes, &fetched, &fetch, &log, &step);
            async move {
                if cancel.is_cancelled() {
                    return Err(BackendError::Cancelled.into());
                }
                log(format!("{}: fetching {} bytes", f.name, f.size));
                let progress = |p: Progress| {
                    if let Progress::Transfer { done, .. } = &p {
                        totals
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .running
                            .insert(
                                f.name.clone(),
                                if f.size > 0 {
                                    (*done).min(f.size)
                                } else {
                                    *done
                                },
                            );
                    }
                    let is_transfer = matches!(p, Progress::Transfer { .. });
                    events.emit(Event::from_progress(step, p));
                    if is_transfer {
                        emit_total(false);
                    }
                };
                let n = kaggle.fetch(&plan.competition, f, fetch, &progress).await?;
                {
                    let mut t = totals.lock().unwrap_or_else(|p| p.into_inner());
                    t.running.remove(&f.name);
                    t.finished += f.size;
                }
                bytes.fetch_add(n, Ordering::Relaxed);
                fetched
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((f.name.clone(), n));
                log(format!("{}: done ({n} bytes)", f.name));
                emit_total(true);
                Ok(())
            }
        })
        .await?;
    Ok(PullReport {
        competition: plan.competition.clone(),
        dest: plan.dest.clone(),
        selected,
        fetched: fetched.into_inner().unwrap_or_else(|p| p.into_inner()),
        skipped,
        bytes: bytes.into_inner(),
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}

/// Fetches the selected files that are not fully at the destination.
pub struct DataStep {
    id: String,
    spec: Data,
    plan: PullPlan,
    deps: Vec<String>,
    /// Whether `dest` is under kgenv's data root on the host (`/var/lib/kgenv/<env>/…`).
    dest_in_data_root: bool,
}

impl DataStep {
    /// The step for `spec` in `env`.
    pub fn new(env: &Env, spec: Data) -> Self {
        let mut deps = vec![super::data_root_ready(env).to_string()];
        let in_bucket = env.bucket.as_ref().is_some_and(|b| {
            spec.dest.starts_with(&b.mount_point)
                || spec.dest.starts_with(&format!("gs://{}", b.bucket))
        });
        if in_bucket {
            deps.push("bucket".into());
        }
        Self {
            id: format!("data/{}", spec.competition),
            plan: PullPlan::for_spec(env, &spec),
            dest_in_data_root: spec.dest.starts_with(&format!("{}/", env.host_dir())),
            spec,
            deps,
        }
    }

    /// The Kaggle backend for this run: on a VM or SSH target it works on the host, so the
    /// data never passes through this machine.
    async fn kaggle(&self, ctx: &StepCtx) -> Result<Arc<dyn Kaggle>> {
        let local = ctx.backends.kaggle.clone();
        match ctx.remote().await? {
            Some(host) => Ok(local.on_host(host)?.unwrap_or(local)),
            None => Ok(local),
        }
    }

    /// For a run that only looks: the backend that lists (this machine's: an API call,
    /// nothing copied or sent to the host) and the one that looks at the destination (the
    /// data agent already on the host, sent no credentials; unknown when it is not there).
    async fn observers(&self, ctx: &StepCtx) -> Result<(Arc<dyn Kaggle>, Arc<dyn Kaggle>)> {
        let local = ctx.backends.kaggle.clone();
        let looker = match ctx.remote().await? {
            Some(host) => local
                .observer_on_host(host)?
                .unwrap_or_else(|| local.clone()),
            None => local.clone(),
        };
        Ok((local, looker))
    }
}

#[async_trait]
impl Step for DataStep {
    fn id(&self) -> &str {
        &self.id
    }
    /// The data agent's download is as long as the competition is big (hundreds of GB),
    /// so no total fits it; it reports progress as it goes, so a long silence means it is
    /// stuck (a stalled connection, a hung file system). Thirty minutes, not less: unpacking
    /// a zip prints nothing until it is done, and a 100 GB archive takes a while.
    fn command_timeout(&self) -> CommandTimeout {
        CommandTimeout::inactivity(Duration::from_secs(30 * 60))
    }
    fn deps(&self) -> &[String] {
        &self.deps
    }
    fn summary(&self) -> String {
        format!(
            "competition {} files {:?} → {} (kept by `down`)",
            self.spec.competition, self.spec.files, self.spec.dest
        )
    }
    fn planned_actions(&self) -> Vec<String> {
        let unpack = if self.spec.extract {
            ", unpacking the zips"
        } else {
            ""
        };
        vec![format!(
            "POST api.kaggle.com ListDataFiles {}; download the selected files to {}{unpack}",
            self.spec.competition, self.spec.dest
        )]
    }
    async fn check(&self, ctx: &StepCtx) -> Result<CheckOutcome> {
        let (lister, looker) = if ctx.is_read_only() {
            self.observers(ctx).await?
        } else {
            let kaggle = self.kaggle(ctx).await?;
            (kaggle.clone(), kaggle)
        };
        let missing = listing(lister.as_ref(), looker.as_ref(), &self.plan)
            .await?
            .missing;
        if missing.is_empty() {
            return Ok(CheckOutcome::satisfied());
        }
        // `plan` says now what `up` would stop on; `up` itself stops in the pull.
        if ctx.is_read_only() {
            match ensure_room(looker.as_ref(), &self.plan, &missing).await {
                Err(e)
                    if e.backend()
                        .is_some_and(|b| b.insufficient_space().is_some()) =>
                {
                    ctx.warn(e.to_string())
                }
                Err(e) => return Err(e),
                Ok(_) => {}
            }
        }
        let total: u64 = missing.iter().map(|f| f.size).sum();
        Ok(CheckOutcome::missing(vec![format!(
            "download {} file(s), {} bytes, to {}",
            missing.len(),
            total,
            self.spec.dest
        )]))
    }
    async fn apply(&self, ctx: &StepCtx) -> Result<()> {
        // The agent runs as the login user: a destination in kgenv's data root (made by
        // root) is handed to that user first. Anywhere else is the user's own choice, left
        // as it is.
        if self.dest_in_data_root {
            HostFs::of(ctx)
                .await?
                .mkdirs_for_user(&[&self.spec.dest])
                .await?;
        }
        let kaggle = self.kaggle(ctx).await?;
        pull(kaggle.as_ref(), &self.plan, ctx.events(), &ctx.cancel).await?;
        Ok(())
    }
    async fn destroy(&self, _ctx: &StepCtx) -> Result<Destroyed> {
        // Data is the user's: `down` never deletes it.
        Ok(Destroyed::Nothing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Instance, SshHost};

    fn file(name: &str, size: u64) -> DataFile {
        DataFile {
            name: name.into(),
            size,
        }
    }

    fn space(free: u64, held: u64) -> DestSpace {
        DestSpace {
            path: "/d".into(),
            free,
            held,
        }
    }

    #[test]
    fn the_need_counts_what_is_left_and_zip_contents_only_when_extracting() {
        let files = [file("train.csv", 1000), file("images.ZIP", 400)];
        assert_eq!(space_needed(&files, false, &space(0, 0)), (1400, None));
        assert_eq!(space_needed(&files, false, &space(0, 300)).0, 1100);
        assert_eq!(space_needed(&files, false, &space(0, 5000)).0, 0);
        let (needed, estimate) = space_needed(&files, true, &space(0, 0));
        assert_eq!(needed, 1400 + 400 * ZIP_CONTENTS_FACTOR);
        let estimate = estimate.expect("an estimate is said");
        assert!(estimate.contains("1 zip(s)"), "{estimate}");
    }

    #[test]
    fn the_remedy_names_the_setting_of_the_disk_the_destination_is_on() {
        let gce = Env::builder("kg")
            .instance(
                Instance::builder()
                    .project("my-project")
                    .zone("us-central1-a"),
            )
            .build()
            .expect("gce env");
        let on_disk = space_remedy(&gce, &format!("{}/input/titanic", gce.host_dir()));
        assert!(on_disk.contains("instance.data_disk.size_gb"), "{on_disk}");
        let boot = space_remedy(&gce, "/opt/data");
        assert!(boot.contains("instance.disk_size_gb"), "{boot}");
        let ssh = Env::builder("kg")
            .target(Target::Ssh(SshHost::parse("me@box").expect("host")))
            .build()
            .expect("ssh env");
        let r = space_remedy(&ssh, "/data");
        assert!(r.contains("another `dest`"), "{r}");
        assert!(!r.contains("size_gb"), "{r}");
    }
}

//! Guide step 3: a GCS bucket (created when missing with uniform bucket-level access in the
//! instance's region, never deleted by `down` unless named in
//! [`crate::runner::RunOptions::delete_buckets`]) mounted on the host with gcsfuse: installed
//! from Google's apt repository with a `signed-by` keyring, an `/etc/fstab` entry with
//! `_netdev` so it survives reboot (replaced atomically, [`FSTAB_SET_FN`]), `allow_other`,
//! implicit directories and a file cache on local disk, under the environment's data root
//! (on the data disk of a gce VM: [`super::disk_mount`]); the container sees the bucket
//! through an `rslave` bind.
//!
//! `check` tells a healthy mount from a stale one: the mount table must show the bucket at
//! the mount point AND listing it must answer in time ([`BUCKET_STATE_FN`], tested on its
//! own with made-up mount tables).

use std::time::Duration;

use async_trait::async_trait;

use super::script::{HostScript, ScriptBuilder, FSTAB_SET_FN};
use crate::backends::remote::CommandTimeout;
use crate::error::{BackendError, Result};
use crate::plan::{CheckOutcome, Destroyed, Step, StepCtx, Teardown};
use crate::spec::{rules::region_of, BucketMount, Env};
use crate::state::StepRecord;

/// `bucket_state TABLE FSTAB_MOUNT_POINT BUCKET DIR`: prints `ok` (the bucket is mounted
/// at the mount point and lists), `stale` (mounted but listing fails or hangs: a dead
/// gcsfuse), `missing` (nothing mounted there) or `other SOURCE TYPE` (another file system
/// is). `TABLE` is a mounts table (`/proc/self/mounts`), whose mount points are escaped as
/// fstab escapes them.
pub const BUCKET_STATE_FN: &str = r#"bucket_state() {
  _line=$(MP="$2" awk '$2 == ENVIRON["MP"] { l = $1 " " $3 } END { print l }' "$1")
  if [ -z "$_line" ]; then
    echo missing
    return 0
  fi
  case "$_line" in
    "$3 fuse.gcsfuse"|"$3 fuse"|"$3 gcsfuse") ;;
    *) echo "other $_line"; return 0 ;;
  esac
  if timeout 20 ls "$4" >/dev/null 2>&1; then echo ok; else echo stale; fi
}"#;

/// Escapes a path for an `/etc/fstab` field (and as `/proc/self/mounts` shows it).
pub fn fstab_escape(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        match c {
            ' ' => out.push_str("\\040"),
            '\t' => out.push_str("\\011"),
            '\n' => out.push_str("\\012"),
            '\\' => out.push_str("\\134"),
            c => out.push(c),
        }
    }
    out
}

/// Everything the bucket-mount script is rendered from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketScript {
    /// Bucket name.
    pub bucket: String,
    /// Mount point on the host.
    pub mount_point: String,
    /// gcsfuse mount options (kgenv's defaults, then the user's).
    pub options: Vec<String>,
    /// gcsfuse's file cache directory on local disk.
    pub cache_dir: String,
}

impl BucketScript {
    /// kgenv's defaults for `spec`: `allow_other`, implicit directories, a file cache in
    /// `cache_dir` ([`super::disk_mount::gcsfuse_cache_dir`] of the environment), then the
    /// spec's own options.
    pub fn for_spec(spec: &BucketMount, cache_dir: &str) -> Self {
        let cache_dir = cache_dir.to_string();
        let mut options = vec![
            "rw".to_string(),
            "_netdev".into(),
            "allow_other".into(),
            "implicit_dirs".into(),
            "file_mode=664".into(),
            "dir_mode=775".into(),
            format!("cache_dir={cache_dir}"),
        ];
        options.extend(spec.options.iter().cloned());
        Self {
            bucket: spec.bucket.clone(),
            mount_point: spec.mount_point.clone(),
            options,
            cache_dir,
        }
    }

    /// The `/etc/fstab` line.
    pub fn fstab_line(&self) -> String {
        format!(
            "{} {} gcsfuse {} 0 0",
            self.bucket,
            fstab_escape(&self.mount_point),
            self.options.join(",")
        )
    }

    /// Renders the script. `check` prints the mount's state (`ok`, `stale`, `missing`,
    /// `other …`) as its last line and exits 0 only for `ok`.
    pub fn render(&self) -> HostScript {
        ScriptBuilder::new("bucket-mount")
            .var("BUCKET", &self.bucket)
            .var("MOUNT_POINT", &self.mount_point)
            .var("FSTAB_MP", fstab_escape(&self.mount_point))
            .var("FSTAB_LINE", self.fstab_line())
            .var("CACHE_DIR", &self.cache_dir)
            .var("KEYRING", "/usr/share/keyrings/cloud.google.asc")
            .var("LIST", "/etc/apt/sources.list.d/gcsfuse.list")
            .helper(BUCKET_STATE_FN)
            .helper(FSTAB_SET_FN)
            .check(
                r#"if ! command -v gcsfuse >/dev/null 2>&1; then echo missing; exit 1; fi
if ! grep -qxF "$FSTAB_LINE" /etc/fstab; then echo missing; exit 1; fi
state=$(bucket_state /proc/self/mounts "$FSTAB_MP" "$BUCKET" "$MOUNT_POINT")
echo "$state"
[ "$state" = ok ]"#,
            )
            .apply(
                r#"if ! command -v gcsfuse >/dev/null 2>&1; then
  codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
  curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg -o "$KEYRING"
  echo "deb [signed-by=$KEYRING] https://packages.cloud.google.com/apt gcsfuse-$codename main" > "$LIST"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q gcsfuse
fi
grep -qs '^user_allow_other' /etc/fuse.conf || echo user_allow_other >> /etc/fuse.conf
mkdir -p "$MOUNT_POINT" "$CACHE_DIR"
changed=0
if ! grep -qxF "$FSTAB_LINE" /etc/fstab; then
  # Replace kgenv's earlier line for this mount point; keep every other line.
  fstab_set /etc/fstab "$FSTAB_MP" gcsfuse "$FSTAB_LINE"
  changed=1
fi
state=$(bucket_state /proc/self/mounts "$FSTAB_MP" "$BUCKET" "$MOUNT_POINT")
case "$state" in
  ok)
    if [ "$changed" = 1 ]; then umount "$MOUNT_POINT" && mount "$MOUNT_POINT"; fi
    ;;
  stale)
    umount -l "$MOUNT_POINT"
    mount "$MOUNT_POINT"
    ;;
  missing)
    mount "$MOUNT_POINT"
    ;;
  *)
    echo "kgenv: $MOUNT_POINT already has another file system mounted ($state); unmount it or choose another bucket.mount_point" >&2
    exit 1
    ;;
esac"#,
            )
            .destroy(
                r#"state=$(bucket_state /proc/self/mounts "$FSTAB_MP" "$BUCKET" "$MOUNT_POINT")
case "$state" in
  ok) umount "$MOUNT_POINT" || umount -l "$MOUNT_POINT" ;;
  stale) umount -l "$MOUNT_POINT" ;;
  *) ;;
esac
if grep -qxF "$FSTAB_LINE" /etc/fstab; then
  fstab_set /etc/fstab "$FSTAB_MP" gcsfuse ""
fi"#,
            )
            .build()
    }
}

/// Ensures the bucket and its mount.
pub struct BucketMountStep {
    project: String,
    default_location: String,
    spec: BucketMount,
    cache_dir: String,
    deps: Vec<String>,
}

impl BucketMountStep {
    /// The step for `spec` on `env`'s host.
    pub fn new(env: &Env, spec: BucketMount) -> Self {
        let (project, location) = env
            .instance
            .as_ref()
            .map_or((String::new(), "US".to_string()), |i| {
                (i.project.clone(), region_of(&i.zones[0]).to_string())
            });
        Self {
            project,
            default_location: location,
            spec,
            cache_dir: super::disk_mount::gcsfuse_cache_dir(&env.host_dir()),
            deps: vec![super::data_root_ready(env).into()],
        }
    }

    /// The host script: install gcsfuse, the fstab entry, the mount.
    pub fn script(&self) -> HostScript {
        BucketScript::for_spec(&self.spec, &self.cache_dir).render()
    }

    /// The location a created bucket gets: the spec's, else the region of the zone the
    /// instance landed in, else the first configured zone's region (`US` without instance).
    async fn location(&self, ctx: &StepCtx) -> String {
        let state = ctx.state.snapshot().await;
        self.spec
            .location
            .clone()
            .or_else(|| {
                state
                    .fact("instance", "zone")
                    .map(|z| region_of(z).to_string())
            })
            .unwrap_or_else(|| self.default_location.clone())
    }
}

#[async_trait]
impl Step for BucketMountStep {
    fn id(&self) -> &str {
        "bucket"
    }
    /// Installing gcsfuse runs `apt-get update` and `install` from Google's repository,
    /// which on a fresh VM may first wait for the boot-time package updates.
    fn command_timeout(&self) -> CommandTimeout {
        CommandTimeout::total(Duration::from_secs(20 * 60))
    }
    fn deps(&self) -> &[String] {
        &self.deps
    }
    fn summary(&self) -> String {
        format!(
            "bucket gs://{} mounted at {} with gcsfuse (kept by `down`)",
            self.spec.bucket, self.spec.mount_point
        )
    }
    fn planned_actions(&self) -> Vec<String> {
        vec![
            format!(
                "GET storage/v1/b/{} (create in {} with uniform bucket-level access when missing)",
                self.spec.bucket,
                self.spec
                    .location
                    .as_deref()
                    .unwrap_or(&self.default_location)
            ),
            "host: sh -s -- apply  # bucket-mount: install gcsfuse, fstab entry, mount".into(),
        ]
    }
    async fn check(&self, ctx: &StepCtx) -> Result<CheckOutcome> {
        let mut actions = Vec::new();
        let mut diff = Vec::new();
        match ctx.backends.storage.get_bucket(&self.spec.bucket).await? {
            None if !self.spec.create => {
                return Err(BackendError::NotFound { resource: format!("bucket gs://{} (set `bucket.create = true` to let kgenv create it)", self.spec.bucket) }.into());
            }
            None => actions.push(format!("POST storage/v1/b?project={} (create {} in {}, uniform bucket-level access)", self.project, self.spec.bucket, self.location(ctx).await)),
            Some(b) if !b.uniform_access => ctx.warn(format!("bucket gs://{} uses fine-grained ACLs; kgenv leaves existing buckets as they are (uniform bucket-level access is recommended)", b.name)),
            Some(_) => {}
        }
        let remote = ctx.require_remote().await?;
        let out = self.script().run(ctx, remote.as_ref(), "check").await?;
        if !out.success() {
            let state = out
                .stdout_text()
                .lines()
                .last()
                .unwrap_or_default()
                .trim()
                .to_string();
            match state.as_str() {
                "stale" => diff.push(format!("mount at {} is stale (listed in the mount table, but listing it fails): remount", self.spec.mount_point)),
                s if s.starts_with("other ") => diff.push(format!("{} has another file system mounted ({})", self.spec.mount_point, &s[6..])),
                _ => {}
            }
            actions.push("host: sh -s -- apply  # bucket-mount".into());
        }
        Ok(match (actions.is_empty(), diff.is_empty()) {
            (true, _) => CheckOutcome::satisfied(),
            (false, true) => CheckOutcome::missing(actions),
            (false, false) => CheckOutcome::drifted(diff, actions),
        })
    }
    async fn apply(&self, ctx: &StepCtx) -> Result<()> {
        let storage = &ctx.backends.storage;
        if storage.get_bucket(&self.spec.bucket).await?.is_none() {
            let location = self.location(ctx).await;
            match storage
                .create_bucket(&self.project, &self.spec.bucket, &location)
                .await
            {
                Ok(_) => {
                    ctx.log(format!(
                        "created bucket gs://{} in {location}",
                        self.spec.bucket
                    ));
                    // A fact, not a `created` entry: `down` keeps buckets and data.
                    ctx.state
                        .update("bucket", |r| {
                            r.facts
                                .insert("bucket_created_by_kgenv".into(), self.spec.bucket.clone());
                        })
                        .await?;
                }
                Err(BackendError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let remote = ctx.require_remote().await?;
        self.script().run(ctx, remote.as_ref(), "apply").await?;
        ctx.state
            .update("bucket", |r| {
                r.created
                    .insert("mount".into(), self.spec.mount_point.clone());
            })
            .await?;
        Ok(())
    }
    fn teardown(&self, record: &StepRecord, ctx: &StepCtx) -> Teardown {
        let bucket = &self.spec.bucket;
        let mut t = Teardown::default();
        if !record.created.is_empty() {
            t = t.delete(format!(
                "gcsfuse mount of gs://{bucket} at {} and its fstab entry",
                self.spec.mount_point
            ));
        }
        if ctx.delete_bucket_requested(bucket) {
            t.delete(format!(
                "bucket gs://{bucket} (as asked with --delete-bucket)"
            ))
        } else if record != &StepRecord::default() {
            t.keep(format!(
                "bucket gs://{bucket} and its data (delete it with --delete-bucket {bucket})"
            ))
        } else {
            t
        }
    }
    async fn destroy(&self, ctx: &StepCtx) -> Result<Destroyed> {
        let state = ctx.state.snapshot().await;
        let mounted = state.step("bucket").is_some_and(|r| !r.created.is_empty());
        let delete = ctx.delete_bucket_requested(&self.spec.bucket);
        if !mounted && !delete {
            return Ok(Destroyed::Nothing);
        }
        if mounted {
            let remote = ctx.require_remote().await?;
            self.script().run(ctx, remote.as_ref(), "destroy").await?;
            ctx.state
                .update("bucket", |r| {
                    r.created.clear();
                })
                .await?;
        }
        if delete {
            match ctx.backends.storage.delete_bucket(&self.spec.bucket).await {
                Ok(()) | Err(BackendError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
            ctx.state
                .update("bucket", |r| {
                    r.facts.remove("bucket_created_by_kgenv");
                })
                .await?;
            ctx.log(format!("deleted bucket gs://{} as asked", self.spec.bucket));
        } else {
            ctx.log(format!("unmounted {}; bucket gs://{} and its data are kept (name it in `down --delete-bucket` to delete it)", self.spec.mount_point, self.spec.bucket));
        }
        Ok(Destroyed::Removed)
    }
}

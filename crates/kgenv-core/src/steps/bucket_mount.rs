//! Guide step 3: a GCS bucket (created when missing with uniform bucket-level access in the
//! instance's region, never deleted by `down` unless named in
//! [`crate::runner::RunOptions::delete_buckets`]) mounted on the host with gcsfuse: installed
//! from Google's apt repository with a `signed-by` keyring, an `/etc/fstab` entry with
//! `_netdev` so it survives reboot (replaced atomically, [`FSTAB_SET_FN`]) and `allow_other`;
//! gcsfuse itself is tuned by a config file the entry names ([`BucketScript::config_text`]):
//! implicit directories, metadata cache TTLs, and a file cache with parallel downloads on
//! local disk, under the environment's data root (on the data disk of a gce VM:
//! [`super::disk_mount`]) and sized from that disk ([`default_file_cache_mb`]); the user's
//! `[bucket.gcsfuse]` options override kgenv's. The container sees the bucket through an
//! `rslave` bind.
//!
//! `check` tells a healthy mount from a stale one: the mount table must show the bucket at
//! the mount point AND listing it must answer in time ([`BUCKET_STATE_FN`], tested on its
//! own with made-up mount tables).

use std::time::Duration;

use async_trait::async_trait;

use super::script::{HostScript, ScriptBuilder, APT_GET_FN, FILE_PUT_FN, FSTAB_SET_FN};
use crate::backends::remote::CommandTimeout;
use crate::error::{BackendError, Result};
use crate::plan::{CheckOutcome, Destroyed, Step, StepCtx, Teardown};
use crate::spec::gcsfuse::insert_path;
use crate::spec::{rules::region_of, BucketMount, Env};
use crate::state::StepRecord;
use serde_json::{json, Value};

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

/// `config_current`: whether `$CONFIG_FILE` holds `$CONFIG_TEXT`. `config_write`: replaces it
/// with that text through `file_put` ([`FILE_PUT_FN`], which the script must include), so a
/// mount at boot never reads half a file.
pub const CONFIG_FNS: &str = r#"config_current() {
  [ -f "$CONFIG_FILE" ] && printf '%s\n' "$CONFIG_TEXT" | cmp -s - "$CONFIG_FILE"
}

config_write() {
  mkdir -p "$(dirname "$CONFIG_FILE")"
  file_put "$CONFIG_FILE" 0644 "$CONFIG_TEXT"
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

/// gcsfuse's file cache when `file-cache.max-size-mb` is not given, in MiB. gcsfuse's own
/// default (`-1`) lets the cache grow until the disk is full, and the disk also holds the
/// competition data, the user's outputs and (on a VM) the image store, so kgenv caps it at a
/// share of the disk it lives on: a fifth of the data disk (60 GiB of the default 300 GB:
/// several passes over a large dataset are read locally), a tenth of the boot disk when the
/// data disk is off (the boot disk also holds the OS and the ~60 GB image), and 10 GiB on an
/// ssh host, whose disk size kgenv does not know.
pub fn default_file_cache_mb(env: &Env) -> u64 {
    match &env.instance {
        Some(i) if env.target == crate::spec::Target::Gce => match &i.data_disk {
            Some(d) => d.size_gb * 1024 / 5,
            None => i.disk_size_gb * 1024 / 10,
        },
        _ => 10 * 1024,
    }
}

/// Where the gcsfuse config file for `bucket` at `mount_point` is written on the host: under
/// /etc (it configures a system mount, and the boot disk is rebuilt by `up` anyway), named
/// after the bucket and the mount point so two mounts never share one.
pub fn config_path(bucket: &str, mount_point: &str) -> String {
    format!(
        "/etc/kgenv/gcsfuse-{bucket}-{}.yaml",
        &super::short_hash(mount_point.as_bytes())[..8]
    )
}

/// kgenv's tuned gcsfuse settings, as documented for gcsfuse's config file, before the
/// user's `[bucket.gcsfuse]` overrides them.
pub fn tuned_defaults(cache_dir: &str, file_cache_mb: u64) -> Vec<(&'static str, Value)> {
    vec![
        // A file cache on local disk. `cache-dir` alone does not turn it on: gcsfuse also
        // needs `file-cache.max-size-mb` (see `default_file_cache_mb` for the size).
        ("cache-dir", json!(cache_dir)),
        ("file-cache.max-size-mb", json!(file_cache_mb)),
        // Training reads the same files at random offsets epoch after epoch: cache the whole
        // file on the first range read, so later reads are local.
        ("file-cache.cache-file-for-range-read", json!(true)),
        // Large files (competition archives, parquet) arrive in parallel chunks into the
        // cache instead of one stream; per-file parallelism and chunk size stay gcsfuse's.
        ("file-cache.enable-parallel-downloads", json!(true)),
        // Changes made through this mount are seen at once; changes made elsewhere (an
        // upload from a laptop) show within five minutes instead of gcsfuse's one.
        ("metadata-cache.ttl-secs", json!(300)),
        // Image competitions hold 100k+ files: room for ~150k stat entries (gcsfuse's 33
        // MiB holds ~20k) and larger per-directory type caches.
        ("metadata-cache.stat-cache-max-size-mb", json!(256)),
        ("metadata-cache.type-cache-max-size-mb", json!(32)),
        // Kaggle datasets are uploaded without directory placeholder objects.
        ("implicit-dirs", json!(true)),
        // The container's user (not root) writes outputs back through the mount.
        ("file-system.file-mode", json!("664")),
        ("file-system.dir-mode", json!("775")),
    ]
}

/// Everything the bucket-mount script is rendered from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketScript {
    /// Bucket name.
    pub bucket: String,
    /// Mount point on the host.
    pub mount_point: String,
    /// Mount options of the `/etc/fstab` entry (kgenv's, then the user's `options`).
    pub options: Vec<String>,
    /// gcsfuse's file cache directory on local disk.
    pub cache_dir: String,
    /// Path of the gcsfuse config file on the host ([`config_path`]).
    pub config_path: String,
    /// The gcsfuse config: [`tuned_defaults`] overridden by the user's `[bucket.gcsfuse]`.
    pub config: Value,
}

impl BucketScript {
    /// The script for `spec`: the file cache in `cache_dir` ([`super::disk_mount::gcsfuse_cache_dir`]
    /// of the environment) holding at most `file_cache_mb` MiB unless the spec says otherwise,
    /// every gcsfuse setting in a config file the fstab entry names (`config_file=`, which
    /// gcsfuse's mount helper passes on as `--config-file`), and only mount(8) options on the
    /// fstab line itself.
    pub fn for_spec(spec: &BucketMount, cache_dir: &str, file_cache_mb: u64) -> Self {
        let mut config = serde_json::Map::new();
        for (path, value) in tuned_defaults(cache_dir, file_cache_mb) {
            insert_path(&mut config, path, value);
        }
        for (path, value) in &spec.gcsfuse {
            insert_path(&mut config, path, value.clone());
        }
        let config_path = config_path(&spec.bucket, &spec.mount_point);
        let mut options = vec![
            "rw".to_string(),
            "_netdev".into(),
            // A FUSE option: it works from the fstab line, not from the config file.
            "allow_other".into(),
            // At boot, mount the data disk (which holds the cache) before the bucket.
            format!("x-systemd.requires-mounts-for={}", fstab_escape(cache_dir)),
            format!("config_file={config_path}"),
        ];
        options.extend(spec.options.iter().cloned());
        Self {
            bucket: spec.bucket.clone(),
            mount_point: spec.mount_point.clone(),
            options,
            cache_dir: cache_dir.to_string(),
            config_path,
            config: Value::Object(config),
        }
    }

    /// The config file's text. JSON is YAML (1.2 is a superset of it), so the file is
    /// written by serde_json rather than a hand-written YAML emitter.
    pub fn config_text(&self) -> String {
        format!(
            "# gcsfuse config for gs://{} at {}, written by kgenv: set options under [bucket.gcsfuse] in kgenv.toml\n{}",
            self.bucket,
            self.mount_point,
            serde_json::to_string_pretty(&self.config).unwrap_or_default()
        )
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
            .var("CONFIG_FILE", &self.config_path)
            .var("CONFIG_TEXT", self.config_text())
            .var("KEYRING", "/usr/share/keyrings/cloud.google.asc")
            .var("LIST", "/etc/apt/sources.list.d/gcsfuse.list")
            .helper(BUCKET_STATE_FN)
            .helper(FSTAB_SET_FN)
            .helper(FILE_PUT_FN)
            .helper(APT_GET_FN)
            .helper(CONFIG_FNS)
            .check(
                r#"if ! command -v gcsfuse >/dev/null 2>&1; then echo missing; exit 1; fi
if ! grep -qxF "$FSTAB_LINE" /etc/fstab; then echo missing; exit 1; fi
if ! config_current; then echo missing; exit 1; fi
state=$(bucket_state /proc/self/mounts "$FSTAB_MP" "$BUCKET" "$MOUNT_POINT")
echo "$state"
[ "$state" = ok ]"#,
            )
            .apply(
                r#"if ! command -v gcsfuse >/dev/null 2>&1; then
  codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
  file_put_from "$KEYRING" 0644 curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg
  file_put "$LIST" 0644 "deb [signed-by=$KEYRING] https://packages.cloud.google.com/apt gcsfuse-$codename main"
  apt_get update
  apt_get install -y gcsfuse
fi
grep -qs '^user_allow_other' /etc/fuse.conf ||
  file_put /etc/fuse.conf keep "$(cat /etc/fuse.conf 2>/dev/null; echo user_allow_other)"
mkdir -p "$MOUNT_POINT" "$CACHE_DIR"
changed=0
if ! config_current; then
  config_write
  changed=1
fi
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
fi
rm -f "$CONFIG_FILE""#,
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
    file_cache_mb: u64,
    deps: Vec<String>,
}

impl BucketMountStep {
    /// The step for `spec` on `env`'s host.
    pub fn new(env: &Env, spec: BucketMount) -> Self {
        let (project, location) =
            env.instance
                .as_ref()
                .map_or((String::new(), "US".to_string()), |i| {
                    // With `zones = "auto"` nothing says where: GCS's US multi-region.
                    (
                        i.project.clone(),
                        i.zones.first_region().unwrap_or("US").to_string(),
                    )
                });
        Self {
            project,
            default_location: location,
            spec,
            cache_dir: super::disk_mount::gcsfuse_cache_dir(&env.host_dir()),
            file_cache_mb: default_file_cache_mb(env),
            deps: vec![super::data_root_ready(env).into()],
        }
    }

    /// The host script: install gcsfuse, the fstab entry, the mount.
    pub fn script(&self) -> HostScript {
        BucketScript::for_spec(&self.spec, &self.cache_dir, self.file_cache_mb).render()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{DataDisk, Instance, SshHost, Target};

    fn gce(disk: Option<u64>) -> Env {
        let mut i = Instance::builder()
            .project("my-project")
            .zone("us-central1-a");
        i = match disk {
            Some(gb) => i.data_disk(DataDisk::builder().size_gb(gb)),
            None => i.no_data_disk(),
        };
        Env::builder("kg")
            .instance(i)
            .bucket(BucketMount::builder("kg-data"))
            .build()
            .expect("env")
    }

    fn config_of(env: &Env) -> Value {
        let spec = env.bucket.clone().expect("bucket");
        let cache = super::super::disk_mount::gcsfuse_cache_dir(&env.host_dir());
        BucketScript::for_spec(&spec, &cache, default_file_cache_mb(env)).config
    }

    #[test]
    fn a_typical_env_caches_files_on_the_data_root_sized_from_its_disk() {
        let env = gce(Some(300));
        let c = config_of(&env);
        assert_eq!(c["cache-dir"], "/var/lib/kgenv/kg/gcsfuse-cache");
        assert_eq!(c["file-cache"]["max-size-mb"], 61_440, "a fifth of 300 GB");
        assert_eq!(c["file-cache"]["enable-parallel-downloads"], true);
        assert_eq!(
            default_file_cache_mb(&gce(None)),
            20_480,
            "a tenth of the 200 GB boot disk"
        );
        let ssh = Env::builder("kg")
            .target(Target::Ssh(SshHost::parse("me@box").expect("host")))
            .bucket(BucketMount::builder("kg-data"))
            .build()
            .expect("env");
        assert_eq!(default_file_cache_mb(&ssh), 10_240);
    }

    #[test]
    fn the_users_size_wins_over_the_default() {
        let env = Env::builder("kg")
            .instance(
                Instance::builder()
                    .project("my-project")
                    .zone("us-central1-a"),
            )
            .bucket(BucketMount::builder("kg-data").gcsfuse("file-cache.max-size-mb", 1024))
            .build()
            .expect("env");
        assert_eq!(config_of(&env)["file-cache"]["max-size-mb"], 1024);
    }
}

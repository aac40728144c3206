//! Guide step 3: a GCS bucket (created when missing, never deleted by `down`) mounted on the
//! host with gcsfuse, surviving reboots, visible inside the container.

use async_trait::async_trait;

use super::script::{HostScript, ScriptBuilder};
use crate::error::{BackendError, Result};
use crate::plan::{CheckOutcome, Destroyed, Step, StepCtx};
use crate::spec::{rules::region_of, BucketMount, Env};

/// Ensures the bucket and its mount.
pub struct BucketMountStep {
    project: String,
    default_location: String,
    spec: BucketMount,
    deps: Vec<String>,
}

impl BucketMountStep {
    /// The step for `spec` on `env`'s host.
    pub fn new(env: &Env, spec: BucketMount) -> Self {
        let (project, location) = env.instance.as_ref().map_or((String::new(), "US".to_string()), |i| (i.project.clone(), region_of(&i.zones[0]).to_string()));
        Self { project, default_location: location, spec, deps: vec!["host".into()] }
    }

    /// The host script: install gcsfuse from Google's apt repository (signed-by keyring),
    /// an fstab entry with `_netdev` so the mount survives reboot, and the mount itself.
    pub fn script(&self) -> HostScript {
        let mut options = vec!["rw".to_string(), "_netdev".into(), "allow_other".into(), "implicit_dirs".into(), "file_mode=664".into(), "dir_mode=775".into(), "cache_dir=/var/cache/kgenv-gcsfuse".into()];
        options.extend(self.spec.options.iter().cloned());
        ScriptBuilder::new("bucket-mount")
            .var("BUCKET", &self.spec.bucket)
            .var("MOUNT_POINT", &self.spec.mount_point)
            .var("OPTIONS", options.join(","))
            .var("KEYRING", "/usr/share/keyrings/cloud.google.asc")
            .var("LIST", "/etc/apt/sources.list.d/gcsfuse.list")
            .check(r#"command -v gcsfuse >/dev/null 2>&1 || exit 1
grep -qs "^$BUCKET $MOUNT_POINT gcsfuse " /etc/fstab || exit 1
mountpoint -q "$MOUNT_POINT" || exit 1
# A stale FUSE mount answers mountpoint but fails to list.
ls "$MOUNT_POINT" >/dev/null 2>&1"#)
            .apply(r#"if ! command -v gcsfuse >/dev/null 2>&1; then
  codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
  curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg -o "$KEYRING"
  echo "deb [signed-by=$KEYRING] https://packages.cloud.google.com/apt gcsfuse-$codename main" > "$LIST"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q gcsfuse
fi
grep -qs '^user_allow_other' /etc/fuse.conf || echo user_allow_other >> /etc/fuse.conf
mkdir -p "$MOUNT_POINT" /var/cache/kgenv-gcsfuse
if ! grep -qs "^$BUCKET $MOUNT_POINT gcsfuse " /etc/fstab; then
  echo "$BUCKET $MOUNT_POINT gcsfuse $OPTIONS 0 0" >> /etc/fstab
fi
if mountpoint -q "$MOUNT_POINT" && ! ls "$MOUNT_POINT" >/dev/null 2>&1; then
  umount -l "$MOUNT_POINT"
fi
mountpoint -q "$MOUNT_POINT" || mount "$MOUNT_POINT""#)
            .destroy(r#"if mountpoint -q "$MOUNT_POINT"; then umount "$MOUNT_POINT" || umount -l "$MOUNT_POINT"; fi
if grep -qs "^$BUCKET $MOUNT_POINT gcsfuse " /etc/fstab; then
  grep -v "^$BUCKET $MOUNT_POINT gcsfuse " /etc/fstab > /etc/fstab.kgenv-tmp || true
  cat /etc/fstab.kgenv-tmp > /etc/fstab
  rm -f /etc/fstab.kgenv-tmp
fi"#)
            .build()
    }
}

#[async_trait]
impl Step for BucketMountStep {
    fn id(&self) -> &str {
        "bucket"
    }
    fn deps(&self) -> &[String] {
        &self.deps
    }
    fn summary(&self) -> String {
        format!("bucket gs://{} mounted at {} with gcsfuse (kept by `down`)", self.spec.bucket, self.spec.mount_point)
    }
    fn planned_actions(&self) -> Vec<String> {
        vec![
            format!("GET storage/v1/b/{} (create in {} when missing)", self.spec.bucket, self.spec.location.as_deref().unwrap_or(&self.default_location)),
            "host: sh -s -- apply  # bucket-mount: install gcsfuse, fstab entry, mount".into(),
        ]
    }
    async fn check(&self, ctx: &StepCtx) -> Result<CheckOutcome> {
        let mut actions = Vec::new();
        if ctx.backends.storage.get_bucket(&self.spec.bucket).await?.is_none() {
            if !self.spec.create {
                return Err(BackendError::NotFound { resource: format!("bucket gs://{} (set `bucket.create = true` to let kgenv create it)", self.spec.bucket) }.into());
            }
            actions.push(format!("POST storage/v1/b?project={} (create {})", self.project, self.spec.bucket));
        }
        let remote = ctx.require_remote().await?;
        if !self.script().is_converged(ctx, remote.as_ref()).await? {
            actions.push("host: sh -s -- apply  # bucket-mount".into());
        }
        Ok(if actions.is_empty() { CheckOutcome::satisfied() } else { CheckOutcome::missing(actions) })
    }
    async fn apply(&self, ctx: &StepCtx) -> Result<()> {
        let storage = &ctx.backends.storage;
        if storage.get_bucket(&self.spec.bucket).await?.is_none() {
            let state = ctx.state.snapshot().await;
            let location = self.spec.location.clone().or_else(|| state.fact("instance", "zone").map(|z| region_of(z).to_string())).unwrap_or_else(|| self.default_location.clone());
            match storage.create_bucket(&self.project, &self.spec.bucket, &location).await {
                Ok(_) => {
                    ctx.log(format!("created bucket gs://{} in {location}", self.spec.bucket));
                    // A fact, not a `created` entry: `down` keeps buckets and data.
                    ctx.state.update("bucket", |r| {
                        r.facts.insert("bucket_created_by_kgenv".into(), self.spec.bucket.clone());
                    }).await?;
                }
                Err(BackendError::AlreadyExists { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let remote = ctx.require_remote().await?;
        self.script().run(ctx, remote.as_ref(), "apply").await?;
        ctx.state.update("bucket", |r| {
            r.created.insert("mount".into(), self.spec.mount_point.clone());
        }).await?;
        Ok(())
    }
    async fn destroy(&self, ctx: &StepCtx) -> Result<Destroyed> {
        let state = ctx.state.snapshot().await;
        if state.step("bucket").is_none_or(|r| r.created.is_empty()) {
            return Ok(Destroyed::Nothing);
        }
        let remote = ctx.require_remote().await?;
        self.script().run(ctx, remote.as_ref(), "destroy").await?;
        ctx.state.update("bucket", |r| {
            r.created.clear();
        }).await?;
        ctx.log(format!("unmounted {}; bucket gs://{} and its data are kept", self.spec.mount_point, self.spec.bucket));
        Ok(Destroyed::Removed)
    }
}

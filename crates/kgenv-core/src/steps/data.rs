//! Guide step 5: competition data, selected by glob, fetched to the destination (a host
//! directory the container mounts, or `gs://`) and resumed rather than restarted.

use async_trait::async_trait;

use std::sync::Arc;

use crate::backends::kaggle::{DataFile, FetchOptions, FileSelection, Kaggle};
use crate::error::{BackendError, Result};
use crate::plan::{CheckOutcome, Destroyed, Step, StepCtx};
use crate::spec::{Data, Env};

/// Fetches the selected files that are not fully at the destination.
pub struct DataStep {
    id: String,
    spec: Data,
    deps: Vec<String>,
}

impl DataStep {
    /// The step for `spec` in `env`.
    pub fn new(env: &Env, spec: Data) -> Self {
        let mut deps = vec!["host".to_string()];
        let in_bucket = env.bucket.as_ref().is_some_and(|b| {
            spec.dest.starts_with(&b.mount_point)
                || spec.dest.starts_with(&format!("gs://{}", b.bucket))
        });
        if in_bucket {
            deps.push("bucket".into());
        }
        Self {
            id: format!("data/{}", spec.competition),
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

    async fn missing(&self, kaggle: &dyn Kaggle) -> Result<Vec<DataFile>> {
        let files = kaggle.list_files(&self.spec.competition).await?;
        let selected = FileSelection::new(&self.spec.files)?.select(files);
        if selected.is_empty() {
            return Err(BackendError::NotFound {
                resource: format!(
                    "files matching {:?} in competition {}",
                    self.spec.files, self.spec.competition
                ),
            }
            .into());
        }
        let mut missing = Vec::new();
        for f in selected {
            if kaggle.present(&self.spec.dest, &f.name).await? != Some(f.size) {
                missing.push(f);
            }
        }
        Ok(missing)
    }
}

#[async_trait]
impl Step for DataStep {
    fn id(&self) -> &str {
        &self.id
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
        let kaggle = self.kaggle(ctx).await?;
        let missing = self.missing(kaggle.as_ref()).await?;
        if missing.is_empty() {
            return Ok(CheckOutcome::satisfied());
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
        let kaggle = self.kaggle(ctx).await?;
        let opts = FetchOptions::new(&self.spec.dest).extract(self.spec.extract);
        for f in self.missing(kaggle.as_ref()).await? {
            if ctx.cancel.is_cancelled() {
                // Partial files resume on the next run.
                return Err(BackendError::Cancelled.into());
            }
            kaggle
                .fetch(&self.spec.competition, &f, &opts, &|p| ctx.progress(p))
                .await?;
        }
        Ok(())
    }
    async fn destroy(&self, _ctx: &StepCtx) -> Result<Destroyed> {
        // Data is the user's: `down` never deletes it.
        Ok(Destroyed::Nothing)
    }
}

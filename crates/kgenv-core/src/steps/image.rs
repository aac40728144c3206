//! Guide step 3: the image. Kaggle's prebuilt image is pulled (not built for hours); extras
//! are a thin layer tagged by a hash of base + extras, so unchanged extras never rebuild.

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::error::Result;
use crate::plan::{CheckOutcome, Destroyed, Step, StepCtx};
use crate::spec::Image;

/// Pulls the base and builds the extras layer.
pub struct ImageStep {
    spec: Image,
    deps: Vec<String>,
}

impl ImageStep {
    /// The step for `spec`.
    pub fn new(spec: Image) -> Self {
        Self {
            spec,
            deps: vec!["host".into()],
        }
    }
}

#[async_trait]
impl Step for ImageStep {
    fn id(&self) -> &str {
        "image"
    }
    fn deps(&self) -> &[String] {
        &self.deps
    }
    fn summary(&self) -> String {
        if self.spec.has_extras() {
            format!(
                "image {} = {} + apt [{}] + pip [{}]",
                self.spec.run_reference(),
                self.spec.base,
                self.spec.apt.join(" "),
                self.spec.pip.join(" ")
            )
        } else {
            format!("image {}", self.spec.base)
        }
    }
    fn planned_actions(&self) -> Vec<String> {
        let mut a = vec![format!("docker: pull {}", self.spec.base)];
        if self.spec.has_extras() {
            a.push(format!(
                "docker: build {} (extras layer)",
                self.spec.run_reference()
            ));
        }
        a
    }
    async fn check(&self, ctx: &StepCtx) -> Result<CheckOutcome> {
        let engine = ctx.engine().await?;
        if engine
            .inspect_image(&self.spec.run_reference())
            .await?
            .is_some()
        {
            return Ok(CheckOutcome::satisfied());
        }
        let mut actions = Vec::new();
        if engine.inspect_image(&self.spec.base).await?.is_none() {
            actions.push(format!("docker: pull {}", self.spec.base));
        }
        if self.spec.has_extras() {
            actions.push(format!(
                "docker: build {} (extras layer)",
                self.spec.run_reference()
            ));
        }
        Ok(CheckOutcome::missing(actions))
    }
    async fn apply(&self, ctx: &StepCtx) -> Result<()> {
        let engine = ctx.engine().await?;
        if engine.inspect_image(&self.spec.base).await?.is_none() {
            ctx.log(format!("pulling {}", self.spec.base));
            engine
                .pull_image(&self.spec.base, &|p| ctx.progress(p))
                .await?;
        }
        if self.spec.has_extras()
            && engine
                .inspect_image(&self.spec.run_reference())
                .await?
                .is_none()
        {
            let mut labels = BTreeMap::new();
            labels.insert("kgenv.base".to_string(), self.spec.base.clone());
            ctx.log(format!("building {}", self.spec.run_reference()));
            engine
                .build_image(
                    &self.spec.run_reference(),
                    &self.spec.dockerfile(),
                    &labels,
                    &|p| ctx.progress(p),
                )
                .await?;
        }
        Ok(())
    }
    async fn destroy(&self, _ctx: &StepCtx) -> Result<Destroyed> {
        // Images are a cache (the Kaggle image is tens of GB): kept, and gone with the VM on gce.
        Ok(Destroyed::Nothing)
    }
}

//! Guide step 4: the GPU is visible in the container, and PyTorch can use it.
//!
//! The step runs kgenv's GPU probe in the container ([`crate::gpu`]) and reads the typed
//! report. A host with no GPU is reported plainly; it is a failure only when the spec asked
//! for a GPU ([`gpu_required`]).

use async_trait::async_trait;

use crate::error::{BackendError, Result};
use crate::gpu::gpu_report_within;
use crate::plan::{CheckOutcome, Destroyed, Step, StepCtx};
use crate::spec::{Container, Env, Gpus};

/// Whether the spec requires a GPU: an explicit GPU count, or a GCE VM with a GPU. The
/// default `gpus = "all"` elsewhere means "the GPUs the host has, if any".
pub fn gpu_required(env: &Env, container: &Container) -> bool {
    matches!(container.gpus, Gpus::Count(_))
        || (container.gpus != Gpus::None
            && env.instance.as_ref().is_some_and(|i| i.gpu_type.is_some()))
}

/// Checks the GPU inside the container.
pub struct GpuCheckStep {
    container: String,
    wants_gpu: bool,
    asks_gpu: bool,
    deps: Vec<String>,
}

impl GpuCheckStep {
    /// The check for `container` in `env`.
    pub fn new(env: &Env, container: &Container) -> Self {
        Self {
            container: container.name.clone(),
            wants_gpu: gpu_required(env, container),
            asks_gpu: container.gpus != Gpus::None,
            deps: vec!["container".into()],
        }
    }
}

#[async_trait]
impl Step for GpuCheckStep {
    fn id(&self) -> &str {
        "gpu"
    }
    fn deps(&self) -> &[String] {
        &self.deps
    }
    fn summary(&self) -> String {
        format!(
            "GPU visible in {} ({})",
            self.container,
            if self.wants_gpu {
                "required"
            } else {
                "if the host has one"
            }
        )
    }
    fn planned_actions(&self) -> Vec<String> {
        vec![format!("docker exec {} sh -c <probe: nvidia-smi, libcuda along LD_LIBRARY_PATH, torch.cuda.is_available()>", self.container)]
    }
    async fn check(&self, ctx: &StepCtx) -> Result<CheckOutcome> {
        if !self.asks_gpu {
            // `gpus = "none"`: nothing to check, and no warning about a GPU nobody asked for.
            return Ok(CheckOutcome::satisfied());
        }
        let engine = ctx.engine().await?;
        let limit = ctx
            .command_timeout()
            .map_or(crate::plan::DEFAULT_COMMAND_TIMEOUT.after, |t| t.after);
        let host = match ctx.remote().await? {
            Some(r) => r.endpoint(),
            None => "this machine".into(),
        };
        let report = gpu_report_within(engine.as_ref(), &self.container, limit, &host)
            .await
            .map_err(|mut e| {
                if let BackendError::CommandTimeout(t) = &mut e {
                    t.step = Some(ctx.step_id().to_string());
                }
                e
            })?;
        for l in report.lines() {
            ctx.log(l);
        }
        if report.usable() {
            return Ok(CheckOutcome::satisfied());
        }
        let what = if let Some(dir) = &report.stub_shadowing {
            format!("the CUDA stub library in {dir} shadows the driver's libcuda, so PyTorch sees no GPU; remove {dir} from LD_LIBRARY_PATH in [container] env (kgenv removes it from the image's own LD_LIBRARY_PATH)")
        } else if report.gpus.is_empty() {
            format!(
                "no GPU visible in {}: {}",
                self.container,
                report.problem.as_deref().unwrap_or("unknown")
            )
        } else {
            format!("nvidia-smi sees {} GPU(s) but torch.cuda.is_available() is False in {}: the image's PyTorch may not match the driver (CUDA {})", report.gpus.len(), self.container, report.cuda_version.as_deref().unwrap_or("?"))
        };
        if self.wants_gpu {
            return Err(BackendError::GpuUnavailable {
                host: self.container.clone(),
                message: format!("{what}. The spec asks for a GPU; on a new VM the driver install can take a few minutes — run `kgenv up` again"),
            }
            .into());
        }
        ctx.warn(format!("{what}: the container runs on CPU"));
        Ok(CheckOutcome::satisfied())
    }
    async fn apply(&self, _ctx: &StepCtx) -> Result<()> {
        Ok(())
    }
    async fn destroy(&self, _ctx: &StepCtx) -> Result<Destroyed> {
        Ok(Destroyed::Nothing)
    }
}

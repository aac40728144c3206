//! Guide step 4: the GPU is visible in the container. A host with no GPU is reported
//! plainly; it is a failure only when the spec asked for a GPU.

use async_trait::async_trait;

use crate::error::{BackendError, Result};
use crate::plan::{CheckOutcome, Destroyed, Step, StepCtx};
use crate::spec::{Container, Env, Gpus};

/// What the check saw.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GpuReport {
    /// One line per GPU: name, driver version, memory.
    pub gpus: Vec<String>,
}

/// Parses `nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader`.
pub fn parse_nvidia_smi(stdout: &str) -> GpuReport {
    GpuReport { gpus: stdout.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect() }
}

/// Runs `nvidia-smi` in the container.
pub struct GpuCheckStep {
    container: String,
    wants_gpu: bool,
    deps: Vec<String>,
}

impl GpuCheckStep {
    /// The check for `container` in `env`.
    pub fn new(env: &Env, container: &Container) -> Self {
        let wants_gpu = env.instance.as_ref().is_some_and(|i| i.gpu_type.is_some()) || matches!(container.gpus, Gpus::Count(_));
        Self { container: container.name.clone(), wants_gpu, deps: vec!["container".into()] }
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
        format!("GPU visible in {} ({})", self.container, if self.wants_gpu { "required" } else { "if the host has one" })
    }
    fn planned_actions(&self) -> Vec<String> {
        vec![format!("docker exec {} nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader", self.container)]
    }
    async fn check(&self, ctx: &StepCtx) -> Result<CheckOutcome> {
        let engine = ctx.engine().await?;
        let cmd: Vec<String> = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"].map(String::from).to_vec();
        let out = engine.exec(&self.container, &cmd, &crate::backends::no_progress).await?;
        let report = parse_nvidia_smi(&out.stdout_text());
        if out.success() && !report.gpus.is_empty() {
            for g in &report.gpus {
                ctx.log(format!("GPU: {g}"));
            }
            return Ok(CheckOutcome::satisfied());
        }
        if self.wants_gpu {
            return Err(BackendError::CommandFailed {
                command: format!("nvidia-smi in {} (the spec asks for a GPU; on a new VM the driver install can take a few minutes — run `kgenv up` again)", self.container),
                exit_code: out.exit_code,
                stderr_tail: out.stderr_tail(),
            }
            .into());
        }
        ctx.warn("no GPU visible on this host: the container runs on CPU");
        Ok(CheckOutcome::satisfied())
    }
    async fn apply(&self, _ctx: &StepCtx) -> Result<()> {
        Ok(())
    }
    async fn destroy(&self, _ctx: &StepCtx) -> Result<Destroyed> {
        Ok(Destroyed::Nothing)
    }
}

//! Operations on the environment's container, for `kgenv logs`, `kgenv exec` and
//! `kgenv gpu`: they reach the engine the way the steps do (locally, or through the host's
//! SSH session) and stream what they get as [`Event`]s.

use std::sync::Arc;

use super::{Event, Runner};
use crate::backends::container::{ContainerEngine, LogOptions};
use crate::backends::remote::ExecOutput;
use crate::error::{Error, Result};
use crate::gpu::{gpu_report, GpuReport};
use crate::plan::{EventSink, StepCtx};

impl Runner {
    fn container_name(&self) -> Result<String> {
        self.env
            .container
            .as_ref()
            .map(|c| c.name.clone())
            .ok_or_else(|| {
                Error::Usage(format!(
                    "environment `{}` has no [container] section",
                    self.env.name
                ))
            })
    }

    /// The engine, and the context `step`'s output is reported in. Reaching the host is
    /// reported as step `host`, so a command's output (step `exec`, `logs`) holds only
    /// what the command printed.
    async fn engine_for(
        &self,
        events: EventSink,
        step: &str,
    ) -> Result<(Arc<dyn ContainerEngine>, StepCtx)> {
        let reach = self.ops_ctx(events, "host")?;
        let engine = reach.engine().await?;
        Ok((engine, reach.for_step(step)))
    }

    /// Streams the container's logs as [`Event::Log`] (step `logs`); with `opts.follow`,
    /// until the container stops or the future is dropped (Ctrl-C).
    pub async fn logs(
        &self,
        opts: LogOptions,
        on_event: impl Fn(Event) + Send + Sync + 'static,
    ) -> Result<()> {
        let name = self.container_name()?;
        let (engine, ctx) = self.engine_for(EventSink::new(on_event), "logs").await?;
        engine.logs(&name, opts, &|p| ctx.progress(p)).await?;
        Ok(())
    }

    /// Runs `cmd` in the container, streaming its output as [`Event::Log`] (step `exec`), and
    /// returns its exit code and output. A non-zero exit is an output, not an error.
    pub async fn exec(
        &self,
        cmd: &[String],
        on_event: impl Fn(Event) + Send + Sync + 'static,
    ) -> Result<ExecOutput> {
        if cmd.is_empty() {
            return Err(Error::Usage(
                "exec needs a command: `kgenv exec -- python -V`".into(),
            ));
        }
        let name = self.container_name()?;
        let (engine, ctx) = self.engine_for(EventSink::new(on_event), "exec").await?;
        Ok(engine.exec(&name, cmd, &|p| ctx.progress(p)).await?)
    }

    /// What the container sees of the GPU (see [`crate::gpu`]): GPUs, driver and CUDA
    /// versions, whether PyTorch can use it, and why not.
    pub async fn gpu_report(&self) -> Result<GpuReport> {
        let name = self.container_name()?;
        let (engine, _) = self.engine_for(EventSink::new(|_| {}), "gpu").await?;
        Ok(gpu_report(engine.as_ref(), &name).await?)
    }
}

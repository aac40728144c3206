//! Container operations beside `plan`/`up`/`down`, for `kgenv logs`, `kgenv exec` and
//! `kgenv gpu`: they reach the environment's engine the way the steps do (locally, or through
//! the host's SSH session) and stream what they get as [`Event`]s.

use super::{Event, EventSink, Runner};
use crate::backends::container::{ContainerEngine, LogOptions};
use crate::backends::remote::ExecOutput;
use crate::error::{Error, Result};
use crate::steps::gpu_check::{gpu_report, GpuReport};

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

    async fn engine_for(
        &self,
        events: &EventSink,
        step: &str,
    ) -> Result<(std::sync::Arc<dyn ContainerEngine>, super::StepCtx)> {
        let ctx = self.ctx(events)?.for_step(step);
        Ok((ctx.engine().await?, ctx))
    }

    /// Streams the container's logs as [`Event::Log`] (step `logs`); with `opts.follow`,
    /// until the container stops or the future is dropped (Ctrl-C).
    pub async fn logs(
        &self,
        opts: LogOptions,
        on_event: impl Fn(Event) + Send + Sync + 'static,
    ) -> Result<()> {
        let name = self.container_name()?;
        let events = EventSink::new(on_event);
        let (engine, ctx) = self.engine_for(&events, "logs").await?;
        engine.logs(&name, opts, &|p| ctx.progress(p)).await?;
        Ok(())
    }

    /// Runs `cmd` in the container, streaming its output as [`Event::Log`] (step `exec`), and
    /// returns its exit code and output.
    pub async fn exec(
        &self,
        cmd: &[String],
        on_event: impl Fn(Event) + Send + Sync + 'static,
    ) -> Result<ExecOutput> {
        let name = self.container_name()?;
        let events = EventSink::new(on_event);
        let (engine, ctx) = self.engine_for(&events, "exec").await?;
        Ok(engine.exec(&name, cmd, &|p| ctx.progress(p)).await?)
    }

    /// What the container sees of the GPU (see [`crate::steps::gpu_check`]).
    pub async fn gpu_report(&self) -> Result<GpuReport> {
        let name = self.container_name()?;
        let events = EventSink::new(|_| {});
        let (engine, _) = self.engine_for(&events, "gpu").await?;
        Ok(gpu_report(engine.as_ref(), &name).await?)
    }
}

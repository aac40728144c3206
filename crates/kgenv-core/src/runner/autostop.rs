//! `kgenv autostop MINUTES|off`: changes the idle agent on a running VM in place, without a
//! new `up` (the next `up` brings back what `kgenv.toml` says).

use super::{Event, Runner};
use crate::error::Result;
use crate::plan::EventSink;
use crate::steps::autostop::{hourly_price, set_autostop};

impl Runner {
    /// Installs the idle agent with `minutes` (5 to 10080) and the config's thresholds, or
    /// removes the idle stop with `None`, on the environment's GCE instance, and records it
    /// so `down` removes it. A `[budget]` stays in force either way (`off` does not lift
    /// it). Its script's output streams as [`Event::Log`] (step `autostop`).
    pub async fn autostop(
        &self,
        minutes: Option<u32>,
        on_event: impl Fn(Event) + Send + Sync + 'static,
    ) -> Result<()> {
        // Powering off is for a VM kgenv made, never for someone's SSH host.
        self.needs_instance("autostop")?;
        let _lock = self.lock().await?;
        let ctx = self.ops_ctx(EventSink::new(on_event), "autostop")?;
        let remote = ctx.require_remote().await?;
        if minutes.is_some() && self.env.autostop.is_none() && self.env.jupyter.is_some() {
            // The Jupyter step writes the agent's token only for an environment with
            // `[autostop]` (a token added later would change Jupyter's config, and restarting
            // it would end running kernels): without it the agent cannot see a busy kernel.
            ctx.warn("without [autostop] in kgenv.toml, Jupyter has no token for the idle agent, so a busy kernel and Jupyter activity cannot count as work; SSH sessions, GPU use and CPU use in the container still do. Add `[autostop]` and run `kgenv up` for the full check");
        }
        let hourly = match self.env.budget {
            Some(b) if b.max_cost.is_some() => hourly_price(&ctx).await?,
            _ => None,
        };
        set_autostop(
            &self.env,
            remote.as_ref(),
            &ctx.state,
            minutes,
            hourly,
            &|p| ctx.progress(p),
        )
        .await
    }
}

//! Operations on the environment's host: the SSH session the steps use, a command run over
//! it (`Env.ssh` in Python), and the system `ssh` command behind `kgenv ssh` (an
//! interactive login through the `ssh <env>` alias, with kgenv's pinned host key).

use std::sync::Arc;

use super::{Event, Runner};
use crate::backends::remote::{ExecOutput, ExecRequest, HostAddr};
use crate::backends::Remote;
use crate::error::{BackendError, Error, Result};
use crate::plan::EventSink;
use crate::spec::Target;

impl Runner {
    /// How to reach the host from what kgenv recorded; `None` on the local target.
    pub async fn host_addr(&self) -> Result<Option<HostAddr>> {
        if self.env.target == Target::Local {
            return Ok(None);
        }
        let ctx = self.ctx(EventSink::new(|_| {}))?;
        Ok(Some(ctx.host_addr().await?))
    }

    /// An SSH session to the environment's host (the gce instance from the state file, or
    /// the ssh target's host), or `None` on the local target.
    pub async fn connect_host(&self) -> Result<Option<Arc<dyn Remote>>> {
        // What the caller runs over it is theirs (a tunnel, a long job): no step limit.
        self.ops_ctx(EventSink::new(|_| {}), "ssh")?
            .without_command_timeout()
            .remote()
            .await
    }

    /// Runs `req` on the host over kgenv's verified SSH session, streaming its output as
    /// [`Event::Log`] (step `ssh`). A non-zero exit is an output, not an error.
    pub async fn ssh(
        &self,
        req: ExecRequest,
        on_event: impl Fn(Event) + Send + Sync + 'static,
    ) -> Result<ExecOutput> {
        if req.command.trim().is_empty() {
            return Err(Error::Usage("the command is empty".into()));
        }
        // Reaching the host is reported as step `host`; the command's output as `ssh`.
        // The user's command runs as long as it takes, unless `req` sets a limit.
        let reach = self
            .ops_ctx(EventSink::new(on_event), "host")?
            .without_command_timeout();
        let ctx = reach.for_step("ssh");
        let remote = reach.remote().await?.ok_or_else(|| BackendError::Unavailable {
            backend: "remote",
            hint: "the local target has no SSH host: run commands in a terminal, or in the container with `exec`".into(),
        })?;
        Ok(remote.exec(req, &|p| ctx.progress(p)).await?)
    }

    /// The system `ssh` command that logs in to the host through the `ssh <env>` alias
    /// `up` wrote (no `command`: an interactive shell; `tty` forces a terminal). The caller
    /// runs it: it needs the user's terminal.
    pub fn ssh_command(&self, command: &[String], tty: bool) -> Result<std::process::Command> {
        let name = &self.env.name;
        if self.env.target == Target::Local {
            return Err(Error::Usage(format!(
                "`{name}` runs on this machine (target local): there is no host to log in to"
            )));
        }
        let Some(aliases) = &self.backends.ssh_aliases else {
            return Err(Error::Usage(format!(
                "`{name}` has no `ssh {name}` alias: its backends keep none (simulated with --mock, or no home directory)"
            )));
        };
        if !aliases.has_host(name) {
            return Err(Error::Usage(format!(
                "no `ssh {name}` alias yet in {}: run `kgenv up` first",
                aliases.location().display()
            )));
        }
        Ok(aliases.ssh_command(name, command, tty))
    }
}

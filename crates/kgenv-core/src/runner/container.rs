//! Operations on the environment's container, for `kgenv logs`, `kgenv exec`, `kgenv shell`
//! and `kgenv gpu`: they reach the engine the way the steps do (locally, or through the
//! host's SSH session) and stream what they get as [`Event`]s, or, for the shell, pass a
//! terminal's bytes both ways.

use std::sync::Arc;

use futures::StreamExt;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use super::{Event, Runner};
use crate::backends::container::{ContainerEngine, LogOptions, TermSize};
use crate::backends::remote::ExecOutput;
use crate::error::{BackendError, Error, Result};
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

    /// Runs `command` (by default the container's `bash`, else `sh`) on a terminal in the
    /// container, wired to `io`: what arrives on `io.input` is typed into it, what it shows
    /// is written to `io.output`, each size on `io.resizes` resizes it. Returns its exit code
    /// once it exits. Reaching the host is reported as step `host`.
    ///
    /// The caller owns its own terminal (raw mode, reading keys, `SIGWINCH`); this is the
    /// part every surface shares.
    pub async fn shell<W>(
        &self,
        command: &[String],
        io: ShellIo<W>,
        on_event: impl Fn(Event) + Send + Sync + 'static,
    ) -> Result<i64>
    where
        W: AsyncWrite + Unpin + Send,
    {
        let name = self.container_name()?;
        let (engine, _) = self.engine_for(EventSink::new(on_event), "shell").await?;
        let command = if command.is_empty() {
            DEFAULT_SHELL.iter().map(|s| (*s).to_string()).collect()
        } else {
            command.to_vec()
        };
        let env: Vec<String> = io.term.iter().map(|t| format!("TERM={t}")).collect();
        let tty = engine.exec_tty(&name, &command, &env, io.size).await?;
        let (mut input, mut output, control) = (tty.input, tty.output, tty.control);
        let (mut keys, mut resizes, mut screen) = (io.input, io.resizes, io.output);
        let (mut keys_open, mut resizes_open) = (true, true);
        let screen_err = |e| Error::from(BackendError::io("writing the terminal", e));
        loop {
            tokio::select! {
                chunk = output.next() => match chunk {
                    Some(bytes) => {
                        screen.write_all(&bytes?).await.map_err(screen_err)?;
                        screen.flush().await.map_err(screen_err)?;
                    }
                    // The command exited (its terminal closed).
                    None => break,
                },
                typed = keys.recv(), if keys_open => match typed {
                    // A failed write means the command is exiting: its output ends next.
                    Some(bytes) => {
                        if input.write_all(&bytes).await.is_ok() {
                            let _ = input.flush().await;
                        }
                    }
                    // End of input (a pipe, not a terminal): the command sees it.
                    None => {
                        keys_open = false;
                        let _ = input.shutdown().await;
                    }
                },
                size = resizes.recv(), if resizes_open => match size {
                    Some(size) => {
                        if let Err(e) = control.resize(size).await {
                            tracing::debug!("terminal resize to {size:?} not applied: {e}");
                        }
                    }
                    None => resizes_open = false,
                },
            }
        }
        Ok(control.exit_code().await?)
    }

    /// What the container sees of the GPU (see [`crate::gpu`]): GPUs, driver and CUDA
    /// versions, whether PyTorch can use it, and why not.
    pub async fn gpu_report(&self) -> Result<GpuReport> {
        let name = self.container_name()?;
        let (engine, _) = self.engine_for(EventSink::new(|_| {}), "gpu").await?;
        Ok(gpu_report(engine.as_ref(), &name).await?)
    }
}

/// What `kgenv shell` runs without a command: bash where the image has it (Kaggle's does),
/// else sh. A fixed line: nothing of the user's is in it.
pub const DEFAULT_SHELL: &[&str] = &[
    "/bin/sh",
    "-c",
    "if command -v bash >/dev/null 2>&1; then exec bash; else exec sh; fi",
];

/// The local side of [`Runner::shell`]: keystrokes in, the screen out, size changes.
#[derive(Debug)]
pub struct ShellIo<W> {
    /// Bytes typed (already raw: the caller's terminal does not interpret them).
    pub input: mpsc::Receiver<Vec<u8>>,
    /// Where the container's terminal output goes.
    pub output: W,
    /// New sizes of the caller's terminal, as they happen.
    pub resizes: mpsc::Receiver<TermSize>,
    /// The size the terminal starts at.
    pub size: TermSize,
    /// `TERM` for the command (the caller's), so programs draw for the right terminal.
    pub term: Option<String>,
}

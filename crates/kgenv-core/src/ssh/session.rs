//! [`SshConnector`] and [`SshSession`]: the real [`RemoteConnector`] and [`Remote`].
//!
//! A session owns ONE SSH connection. Every call opens a channel on it, so many commands,
//! file transfers and tunnels run at once; session channels are limited to
//! [`SshOptions::max_sessions`] at a time (OpenSSH refuses more than its `MaxSessions`), the
//! rest queue. When the connection drops, the calls that were running on it fail with
//! [`BackendError::Connection`] and the next call dials again (bounded by
//! [`SshOptions::reconnect_within`]); a call whose channel could not even be opened on the
//! dead connection is retried once on the new one, since its command never started.

use std::collections::VecDeque;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use russh::client::Msg;
use russh::{Channel, ChannelOpenFailure};
use tokio::sync::{Mutex, Semaphore};

use super::connect::{connect_ready, Live, SshOptions, Target};
use super::exec::{self, ExecFail, Exit, Limits, LineSplitter};
use super::identity;
use super::verify::HostKeyPolicy;
use crate::backends::remote::{
    ByteStream, ExecOutput, ExecRequest, HostAddr, Remote, RemoteConnector,
};
use crate::backends::{BackendResult, Progress, ProgressFn, Stream};
use crate::error::{BackendError, CommandTimedOut};

/// Opens verified, authenticated SSH sessions ([`SshSession`]).
///
/// ```no_run
/// # async fn demo(addr: kgenv_core::backends::remote::HostAddr) -> kgenv_core::backends::BackendResult<()> {
/// use std::time::Duration;
/// use kgenv_core::backends::{no_progress, remote::ExecRequest};
/// use kgenv_core::ssh::SshConnector;
/// let session = SshConnector::new().open(&addr, Duration::from_secs(300)).await?;
/// let out = session.run(ExecRequest::new("nvidia-smi -L"), &no_progress).await?;
/// println!("{}", out.stdout_text());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct SshConnector {
    opts: SshOptions,
}

impl SshConnector {
    /// A connector with the default options (kgenv's known_hosts in its config dir).
    pub fn new() -> Self {
        Self::default()
    }

    /// A connector with `opts`.
    pub fn with_options(opts: SshOptions) -> Self {
        Self { opts }
    }

    /// Reads and records host keys in `path` instead of `<config>/known_hosts`.
    #[must_use]
    pub fn known_hosts(mut self, path: impl Into<PathBuf>) -> Self {
        self.opts.known_hosts = path.into();
        self
    }

    /// Runs at most `n` commands at once per connection (at least 1).
    #[must_use]
    pub fn max_sessions(mut self, n: usize) -> Self {
        self.opts.max_sessions = n.max(1);
        self
    }

    /// Waits up to `d` for a dropped connection to come back.
    #[must_use]
    pub fn reconnect_within(mut self, d: Duration) -> Self {
        self.opts.reconnect_within = d;
        self
    }

    /// Retries a refused login for up to `d` while waiting for a host.
    #[must_use]
    pub fn auth_grace(mut self, d: Duration) -> Self {
        self.opts.auth_grace = d;
        self
    }

    /// The options in force.
    pub fn options(&self) -> &SshOptions {
        &self.opts
    }

    /// Connects to `addr`, waiting up to about `ready_within` for it to accept a login.
    pub async fn open(
        &self,
        addr: &HostAddr,
        ready_within: Duration,
    ) -> BackendResult<Arc<SshSession>> {
        let key_path = addr
            .identity_file
            .clone()
            .ok_or_else(|| BackendError::InvalidArgument {
                resource: format!("SSH host {addr}"),
                message: "no identity file: kgenv logs in with a private key file only".into(),
            })?;
        let key = identity::load(&key_path)?;
        let known_hosts = if self.opts.known_hosts.as_os_str().is_empty() {
            // No home directory when the options were made: say so.
            super::verify::known_hosts_path()?
        } else {
            self.opts.known_hosts.clone()
        };
        let policy = Arc::new(HostKeyPolicy::new(addr, known_hosts)?);
        let target = Target {
            addr: addr.clone(),
            opts: self.opts.clone(),
            key,
            key_path,
            policy,
        };
        let live = connect_ready(&target, 1, ready_within).await?;
        Ok(Arc::new(SshSession {
            sessions: Arc::new(Semaphore::new(target.opts.max_sessions)),
            target,
            conn: Mutex::new(Some(Arc::new(live))),
            next_id: AtomicU64::new(2),
        }))
    }
}

#[async_trait]
impl RemoteConnector for SshConnector {
    async fn connect(
        &self,
        addr: &HostAddr,
        ready_within: Duration,
    ) -> BackendResult<Arc<dyn Remote>> {
        let session: Arc<dyn Remote> = self.open(addr, ready_within).await?;
        Ok(session)
    }
}

/// One verified, authenticated connection to a host, re-established when it drops.
pub struct SshSession {
    target: Target,
    conn: Mutex<Option<Arc<Live>>>,
    sessions: Arc<Semaphore>,
    next_id: AtomicU64,
}

impl std::fmt::Debug for SshSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SshSession")
            .field("endpoint", &self.target.addr.to_string())
            .finish_non_exhaustive()
    }
}

/// Whether a russh error means the connection itself is gone.
fn connection_gone(e: &russh::Error) -> bool {
    !matches!(e, russh::Error::ChannelOpenFailure(_))
}

impl SshSession {
    /// The address this session connects to.
    pub fn addr(&self) -> &HostAddr {
        &self.target.addr
    }

    pub(crate) fn endpoint_string(&self) -> String {
        self.target.addr.to_string()
    }

    pub(crate) fn lost(&self, message: impl Into<String>) -> BackendError {
        BackendError::Connection {
            endpoint: self.endpoint_string(),
            message: message.into(),
            source: None,
        }
    }

    /// The live connection, dialing again when the last one dropped.
    async fn live(&self) -> BackendResult<Arc<Live>> {
        let mut slot = self.conn.lock().await;
        if let Some(live) = slot.as_ref() {
            if !live.handle.is_closed() {
                return Ok(live.clone());
            }
            tracing::info!(host = %self.target.addr, "SSH connection lost; reconnecting");
        }
        *slot = None;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let live = connect_ready(&self.target, id, self.target.opts.reconnect_within)
            .await
            .map_err(|e| match e {
                e @ (BackendError::HostKeyMismatch { .. }
                | BackendError::Unauthenticated { .. }
                | BackendError::InvalidArgument { .. }) => e,
                other => BackendError::Connection {
                    endpoint: self.endpoint_string(),
                    message: format!(
                        "the connection dropped and could not be re-established within {}s",
                        self.target.opts.reconnect_within.as_secs()
                    ),
                    source: Some(Box::new(other)),
                },
            })?;
        let live = Arc::new(live);
        *slot = Some(live.clone());
        Ok(live)
    }

    /// Forgets connection `id` if it is still the current one.
    async fn invalidate(&self, id: u64) {
        let mut slot = self.conn.lock().await;
        if slot.as_ref().is_some_and(|l| l.id == id) {
            *slot = None;
        }
    }

    /// Opens a channel with `open`, retrying once on a fresh connection when the current
    /// one turns out to be dead (nothing ran yet, so a retry is safe). With
    /// `retry_refusals`, a refused open is retried for a few seconds: OpenSSH frees a
    /// finished session slightly after its channel closes, so a new session opened right
    /// then can hit `MaxSessions` although kgenv stays under it.
    pub(crate) async fn open_channel<F, Fut>(
        &self,
        what: &str,
        retry_refusals: bool,
        open: F,
    ) -> BackendResult<(Arc<Live>, Channel<Msg>)>
    where
        F: Fn(Arc<Live>) -> Fut,
        Fut: Future<Output = Result<Channel<Msg>, russh::Error>>,
    {
        let mut reconnected = false;
        let mut refusals = 0u32;
        loop {
            let live = self.live().await?;
            match open(live.clone()).await {
                Ok(ch) => return Ok((live, ch)),
                Err(russh::Error::ChannelOpenFailure(f)) => {
                    if retry_refusals && refusals < 40 {
                        refusals += 1;
                        tracing::debug!(host = %self.target.addr, "opening {what} refused ({f:?}); retrying");
                        tokio::time::sleep(Duration::from_millis(25 * u64::from(refusals.min(10))))
                            .await;
                        continue;
                    }
                    return Err(self.open_failure(what, f));
                }
                Err(e) if connection_gone(&e) && !reconnected => {
                    tracing::debug!(host = %self.target.addr, "opening {what} failed ({e}); reconnecting once");
                    reconnected = true;
                    self.invalidate(live.id).await;
                }
                Err(e) => {
                    return Err(BackendError::Connection {
                        endpoint: self.endpoint_string(),
                        message: format!("opening {what} failed"),
                        source: Some(Box::new(e)),
                    })
                }
            }
        }
    }

    fn open_failure(&self, what: &str, f: ChannelOpenFailure) -> BackendError {
        let endpoint = self.endpoint_string();
        match f {
            ChannelOpenFailure::AdministrativelyProhibited => BackendError::PermissionDenied {
                resource: format!("{what} on {endpoint}"),
                message: "the SSH server forbids it (check AllowTcpForwarding / AllowStreamLocalForwarding / MaxSessions in sshd_config)".into(),
            },
            ChannelOpenFailure::ConnectFailed => BackendError::Connection {
                endpoint,
                message: format!("the host could not open {what} (nothing listening there, or sshd's MaxSessions reached)"),
                source: None,
            },
            other => BackendError::Connection {
                endpoint,
                message: format!("the server refused to open {what}: {other:?}"),
                source: None,
            },
        }
    }

    /// Runs a shell line, handing output chunks to `on_chunk` as they arrive. With `wrap`,
    /// the line goes through [`exec::remote_line`] (sh, `sudo -n` when `sudo`, killable as
    /// a whole); without, it reaches the login shell as it is (what `ssh HOST CMD` does).
    /// Waits for a free session slot first.
    pub(crate) async fn exec_chunks(
        &self,
        command: &str,
        stdin: Option<&[u8]>,
        sudo: bool,
        wrap: bool,
        limits: Limits,
        on_chunk: &mut (dyn FnMut(Stream, &[u8]) + Send),
    ) -> Result<Exit, ExecFail> {
        let _permit = self
            .sessions
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ExecFail::Lost("session closed".into()))?;
        let (live, channel) = self
            .open_channel("a session channel", true, |live| async move {
                live.handle.channel_open_session().await
            })
            .await
            .map_err(ExecFail::Open)?;
        let (line, killer) = if wrap {
            let killer = exec::Killer {
                live: live.clone(),
                sudo: sudo && !live.login_is_root,
            };
            (
                exec::remote_line(command, sudo, live.login_is_root),
                Some(killer),
            )
        } else {
            (command.to_string(), None)
        };
        let res = exec::run(channel, &line, stdin, limits, killer, on_chunk).await;
        if matches!(res, Err(ExecFail::Lost(_))) && live.handle.is_closed() {
            self.invalidate(live.id).await;
        }
        res
    }

    /// Maps a failed exec of `label` to a typed error; `tail` is the last output lines.
    pub(crate) fn exec_error(
        &self,
        label: &str,
        fail: ExecFail,
        limits: Limits,
        tail: Vec<String>,
    ) -> BackendError {
        match fail {
            ExecFail::TimedOut { idle } => {
                BackendError::CommandTimeout(Box::new(CommandTimedOut {
                    step: None,
                    command: label.to_string(),
                    host: self.endpoint_string(),
                    after: if idle { limits.idle } else { limits.total }.unwrap_or_default(),
                    inactivity: idle,
                    last_lines: tail,
                }))
            }
            ExecFail::Refused => BackendError::CommandFailed {
                command: label.to_string(),
                exit_code: -1,
                stderr_tail: "the SSH server refused to run the command".into(),
            },
            ExecFail::Lost(why) => self.lost(format!(
                "connection lost while `{label}` was running ({why}); it may or may not have finished"
            )),
            ExecFail::Open(e) => e,
        }
    }

    /// Runs a command like [`Remote::exec`], under its inherent name for callers holding an
    /// `Arc<SshSession>`. The request's limits (total and inactivity) are enforced here: the
    /// command and everything it started are killed when one passes, and the error keeps
    /// its last [`CommandTimedOut::TAIL_LINES`] lines of output.
    pub async fn run(
        &self,
        req: ExecRequest,
        progress: ProgressFn<'_>,
    ) -> BackendResult<ExecOutput> {
        let mut out = ExecOutput::default();
        let mut split = [
            LineSplitter::new(Stream::Stdout),
            LineSplitter::new(Stream::Stderr),
        ];
        let limits = Limits {
            total: req.timeout,
            idle: req.idle_timeout,
        };
        let mut tail: VecDeque<String> = VecDeque::with_capacity(CommandTimedOut::TAIL_LINES);
        let mut keep = |line: &str| {
            if tail.len() == CommandTimedOut::TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line.chars().take(200).collect());
        };
        let res = {
            let mut emit = |stream: Stream, line: String| {
                keep(&line);
                progress(Progress::Line { stream, line });
            };
            let mut on_chunk = |stream: Stream, data: &[u8]| match stream {
                Stream::Stdout => {
                    out.stdout.extend_from_slice(data);
                    split[0].feed(data, &mut emit);
                }
                Stream::Stderr => {
                    out.stderr.extend_from_slice(data);
                    split[1].feed(data, &mut emit);
                }
            };
            self.exec_chunks(
                &req.command,
                req.stdin.as_deref(),
                req.sudo,
                true,
                limits,
                &mut on_chunk,
            )
            .await
        };
        {
            let mut emit = |stream: Stream, line: String| {
                keep(&line);
                progress(Progress::Line { stream, line });
            };
            for s in &mut split {
                s.finish(&mut emit);
            }
        }
        let label = req
            .label
            .clone()
            .unwrap_or_else(|| exec::label(&req.command));
        match res {
            Ok(exit) => {
                out.exit_code = exit.code;
                if let Some(sig) = exit.signal {
                    tracing::debug!(host = %self.target.addr, "`{label}` killed by signal {sig}");
                }
                Ok(out)
            }
            Err(fail) => Err(self.exec_error(&label, fail, limits, tail.into())),
        }
    }

    /// Runs `command` by the login shell exactly as `ssh HOST COMMAND` would, its raw output
    /// passed to `on_chunk` as it arrives (no line splitting, no buffering): for
    /// `kgenv ssh -- CMD`. Returns the exit status (-1 when killed by a signal).
    pub async fn run_streaming(
        &self,
        command: &str,
        on_chunk: &mut (dyn FnMut(Stream, &[u8]) + Send),
    ) -> BackendResult<i64> {
        // The user's own command (a training run) may take as long as it takes: no limit.
        self.exec_chunks(command, None, false, false, Limits::default(), on_chunk)
            .await
            .map(|e| e.code)
            .map_err(|f| self.exec_error(&exec::label(command), f, Limits::default(), Vec::new()))
    }

    /// The login user's home directory, as the host's login shell reports it.
    pub(crate) async fn login_home(&self) -> BackendResult<Option<String>> {
        Ok(self.live().await?.home.clone())
    }

    pub(crate) fn files_as_root(&self) -> bool {
        self.target.opts.files_as_root
    }
}

#[async_trait]
impl Remote for SshSession {
    fn endpoint(&self) -> String {
        self.endpoint_string()
    }

    async fn exec(&self, req: ExecRequest, progress: ProgressFn<'_>) -> BackendResult<ExecOutput> {
        self.run(req, progress).await
    }

    async fn put_file(&self, path: &str, content: &[u8], mode: u32) -> BackendResult<()> {
        self.write_file(path, content, mode).await
    }

    async fn read_file(&self, path: &str) -> BackendResult<Option<Vec<u8>>> {
        self.fetch_file(path).await
    }

    async fn open_tcp(&self, host: &str, port: u16) -> BackendResult<Box<dyn ByteStream>> {
        self.tcp_stream(host, port).await
    }

    async fn open_unix(&self, path: &str) -> BackendResult<Box<dyn ByteStream>> {
        self.unix_stream(path).await
    }
}

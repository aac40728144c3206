//! The Remote (SSH) backend traits: commands, files and tunnels on a host, and the user's
//! OpenSSH configuration where kgenv keeps a `Host <env>` alias for it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite};

use super::{BackendResult, ProgressFn};

/// A bidirectional byte stream: a tunnelled TCP connection or unix socket.
pub trait ByteStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> ByteStream for T {}

/// How to reach a host over SSH.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostAddr {
    /// Login user.
    pub user: String,
    /// Host name or IP.
    pub host: String,
    /// SSH port.
    pub port: u16,
    /// Private key to log in with.
    pub identity_file: Option<PathBuf>,
    /// Host keys to pin (`ssh-ed25519 AAAA...`), e.g. from GCE guest attributes. Empty: use
    /// kgenv's known_hosts file.
    pub pinned_host_keys: Vec<String>,
    /// Record an unknown host's key on first use (only when the user asked for it).
    pub trust_on_first_use: bool,
}

impl std::fmt::Display for HostAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}:{}", self.user, self.host, self.port)
    }
}

/// One command to run on a host. `command` is a shell line whose every value was quoted
/// with [`crate::shell::quote`]; build it with [`crate::shell::Cmd`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    /// The shell line.
    pub command: String,
    /// Bytes written to the command's stdin, then closed.
    pub stdin: Option<Vec<u8>>,
    /// Run through `sudo -n`.
    pub sudo: bool,
    /// Give up (and kill the command) after this long in all.
    pub timeout: Option<Duration>,
    /// Give up (and kill the command) once it has printed nothing for this long: for
    /// commands that are long but show progress (a download), where a total would be wrong.
    pub idle_timeout: Option<Duration>,
    /// How messages name the command (`disk-mount apply`); without one, its first word.
    pub label: Option<String>,
}

impl ExecRequest {
    /// A request for `command` with no stdin, no sudo and no timeout.
    pub fn new(command: impl Into<String>) -> Self {
        Self {
            command: command.into(),
            stdin: None,
            sudo: false,
            timeout: None,
            idle_timeout: None,
            label: None,
        }
    }

    /// Feeds `stdin` to the command.
    #[must_use]
    pub fn stdin(mut self, stdin: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(stdin.into());
        self
    }

    /// Runs the command through `sudo -n`.
    #[must_use]
    pub fn sudo(mut self) -> Self {
        self.sudo = true;
        self
    }

    /// Gives up after `timeout` in all.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Gives up once the command has printed nothing for `idle`.
    #[must_use]
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.idle_timeout = Some(idle);
        self
    }

    /// Names the command `label` in messages (a script's name and action rather than
    /// `sh …`). Never put a secret in it.
    #[must_use]
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// Whether the request carries a limit of its own (total or inactivity).
    pub fn has_timeout(&self) -> bool {
        self.timeout.is_some() || self.idle_timeout.is_some()
    }

    /// Applies `limit` unless the request carries a limit of its own: the caller that set
    /// one knows its command better than a step-wide default does.
    #[must_use]
    pub fn or_timeout(self, limit: CommandTimeout) -> Self {
        if self.has_timeout() {
            return self;
        }
        match limit.kind {
            TimeoutKind::Total => self.timeout(limit.after),
            TimeoutKind::Inactivity => self.idle_timeout(limit.after),
        }
    }
}

/// What a command's time limit measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeoutKind {
    /// The whole running time: for commands that should finish quickly (`mount`, `mkdir`,
    /// an install script), which may also hang while printing (a retry loop).
    Total,
    /// Time without any output: for long commands that report progress as they go (the
    /// data agent's download of hundreds of GB), which a total would kill while healthy.
    Inactivity,
}

/// How long a remote command may run before kgenv kills it: a step's default for the
/// commands it runs ([`crate::backends`]' callers set it per request with
/// [`ExecRequest::or_timeout`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandTimeout {
    /// The limit.
    pub after: Duration,
    /// What it measures.
    pub kind: TimeoutKind,
}

impl CommandTimeout {
    /// At most `after` in all.
    pub const fn total(after: Duration) -> Self {
        Self {
            after,
            kind: TimeoutKind::Total,
        }
    }

    /// At most `after` without output.
    pub const fn inactivity(after: Duration) -> Self {
        Self {
            after,
            kind: TimeoutKind::Inactivity,
        }
    }

    /// The same kind of limit with another duration (a `[timeouts]` entry of kgenv.toml).
    #[must_use]
    pub fn with_after(mut self, after: Duration) -> Self {
        self.after = after;
        self
    }
}

/// What a finished command left.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    /// Exit status (-1 when killed by a signal).
    pub exit_code: i64,
    /// Everything it wrote to stdout.
    pub stdout: Vec<u8>,
    /// Everything it wrote to stderr.
    pub stderr: Vec<u8>,
}

impl ExecOutput {
    /// Whether it exited 0.
    pub fn success(&self) -> bool {
        self.exit_code == 0
    }

    /// Stdout as text (lossy).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Itself when it exited 0, else a [`BackendError::CommandFailed`] naming `command`
    /// with the tail of its stderr.
    pub fn or_failed(self, command: impl Into<String>) -> BackendResult<Self> {
        if self.success() {
            return Ok(self);
        }
        Err(crate::error::BackendError::CommandFailed {
            command: command.into(),
            exit_code: self.exit_code,
            stderr_tail: self.stderr_tail(),
        })
    }

    /// The last few lines of stderr, for error messages.
    pub fn stderr_tail(&self) -> String {
        let text = String::from_utf8_lossy(&self.stderr);
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    }
}

/// An authenticated, verified session on a host. Many calls may run at once.
#[async_trait]
pub trait Remote: Send + Sync {
    /// `user@host:port`, for messages.
    fn endpoint(&self) -> String;
    /// Runs a command, streaming its output lines to `progress`. When a limit of `req`
    /// passes (`timeout`, `idle_timeout`), the command is killed with what it started and
    /// the call fails with [`crate::error::BackendError::CommandTimeout`].
    async fn exec(&self, req: ExecRequest, progress: ProgressFn<'_>) -> BackendResult<ExecOutput>;
    /// Writes a file (binary-safe) with `mode`, creating parent directories.
    async fn put_file(&self, path: &str, content: &[u8], mode: u32) -> BackendResult<()>;
    /// Reads a file, `None` when it does not exist.
    async fn read_file(&self, path: &str) -> BackendResult<Option<Vec<u8>>>;
    /// Opens a TCP connection from the host to `host:port` (SSH `direct-tcpip`).
    async fn open_tcp(&self, host: &str, port: u16) -> BackendResult<Box<dyn ByteStream>>;
    /// Opens a unix socket on the host (SSH `direct-streamlocal`), e.g. Docker's.
    async fn open_unix(&self, path: &str) -> BackendResult<Box<dyn ByteStream>>;
}

/// Opens [`Remote`] sessions.
#[async_trait]
pub trait RemoteConnector: Send + Sync {
    /// Connects, verifies the host key and logs in; waits for the host up to `ready_within`.
    async fn connect(
        &self,
        addr: &HostAddr,
        ready_within: Duration,
    ) -> BackendResult<Arc<dyn Remote>>;
}

/// The user's OpenSSH configuration, where kgenv keeps one `Host <env>` block per
/// environment so `ssh <env>`, `scp` and editors' remote plugins reach the host with kgenv's
/// key and its pinned host key. The real one edits `~/.ssh/config` (an `Include` line) and a
/// file of kgenv's own; the mocks have none, so simulated runs never touch it.
pub trait SshAliases: Send + Sync {
    /// Writes (or replaces) the block for `env` pointing at `addr`. Idempotent.
    fn write_host(&self, env: &str, addr: &HostAddr) -> BackendResult<()>;
    /// Removes the block for `env` and its host-key entries.
    fn remove_host(&self, env: &str) -> BackendResult<()>;
    /// Whether a block for `env` exists.
    fn has_host(&self, env: &str) -> bool;
    /// Where the blocks live, for the state file and messages.
    fn location(&self) -> PathBuf;
    /// The system `ssh` command reaching `env` through its block: an interactive login
    /// without `command`; `tty` forces a terminal.
    fn ssh_command(&self, env: &str, command: &[String], tty: bool) -> std::process::Command;
}

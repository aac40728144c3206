//! Error types for every layer of kgenv, with predicates so callers ask questions
//! (`is_retryable()`, `is_stockout()`, `quota()`) instead of matching strings.

use std::path::PathBuf;
use std::time::Duration;

/// A boxed error kept as a `#[source]` when a lower layer's error type is not ours.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result alias for the core.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A builder's `build()` found a field that breaks a rule.
///
/// `field` is the dotted path the user wrote (`instance.gpu_count`), so the config layer can
/// point at the exact line and column of `kgenv.toml`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid `{field}`: {rule}")]
pub struct ValidationError {
    /// Dotted path of the offending field, as written in `kgenv.toml`.
    pub field: String,
    /// What the rule is and what to do about it.
    pub rule: String,
}

impl ValidationError {
    /// A new error for `field` breaking `rule`.
    pub fn new(field: impl Into<String>, rule: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            rule: rule.into(),
        }
    }

    /// The same error with `prefix.` put in front of the field path.
    #[must_use]
    pub fn within(mut self, prefix: &str) -> Self {
        if !prefix.is_empty() {
            self.field = format!("{prefix}.{}", self.field);
        }
        self
    }
}

/// A problem in `kgenv.toml`: where it is and what is wrong.
#[derive(Debug, thiserror::Error)]
#[error("{}:{line}:{column}: {message}", path.display())]
pub struct ConfigError {
    /// The config file.
    pub path: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// The dotted field path, when the error is about one field.
    pub field: Option<String>,
    /// What is wrong and what to do.
    pub message: String,
}

/// Scope of a GCE quota: a region, or every region at once.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QuotaScope {
    /// The quota applies to one region (`us-central1`); other regions may still have room.
    Region(String),
    /// The quota is project-wide (`GPUS_ALL_REGIONS`); no other zone will help.
    Global,
}

/// A quota that stopped a request.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QuotaInfo {
    /// The quota metric, e.g. `NVIDIA_T4_GPUS` or `GPUS_ALL_REGIONS`.
    pub metric: String,
    /// The limit, when the API said it.
    pub limit: Option<f64>,
    /// Where the quota applies.
    pub scope: QuotaScope,
}

/// Too little free space at a destination, found before anything was written there.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SpaceShortfall {
    /// Where (`user@host:22:/var/lib/kgenv/kg/input`, or a local directory).
    pub location: String,
    /// Bytes the operation needs there (an estimate when `estimate` says how).
    pub needed: u64,
    /// Bytes free there (for an unprivileged user, as `df` shows as available).
    pub free: u64,
    /// How `needed` was estimated, when it is not exact (unknown unpacked sizes).
    pub estimate: Option<String>,
    /// What the user can change: the setting to raise, or another destination.
    pub remedy: String,
}

impl std::fmt::Display for SpaceShortfall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "not enough free space at {}: needs {} but {} is free",
            self.location,
            human_bytes(self.needed),
            human_bytes(self.free)
        )?;
        if let Some(how) = &self.estimate {
            write!(f, " ({how})")?;
        }
        write!(f, "; nothing was downloaded. {}", self.remedy)
    }
}

/// `n` bytes for a person: `1.5 GiB (1610612736 bytes)`, exact bytes kept for scripts.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} bytes");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1} {unit} ({n} bytes)")
}

/// A remote command that ran past its timeout and was killed (with everything it started):
/// which step ran it, which command, how long it was given, and the last lines it printed
/// (a hung `mount` prints nothing; a stuck `apt-get` shows what it waited on).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CommandTimedOut {
    /// The step that ran it (`disk-mount`, `data/titanic`), when a step did.
    pub step: Option<String>,
    /// A short label for the command (`disk-mount apply`, `mkdir …`), never the whole
    /// script nor its secret arguments.
    pub command: String,
    /// The host it ran on (`user@host:22`).
    pub host: String,
    /// The limit it hit.
    pub after: Duration,
    /// Whether the limit was on silence (no output for `after`) rather than on the total
    /// running time.
    pub inactivity: bool,
    /// The last lines of its combined stdout and stderr, oldest first (at most
    /// [`CommandTimedOut::TAIL_LINES`]).
    pub last_lines: Vec<String>,
}

impl CommandTimedOut {
    /// How many of the last output lines the error keeps.
    pub const TAIL_LINES: usize = 10;
}

impl std::fmt::Display for CommandTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let limit = humantime::format_duration(self.after);
        write!(f, "`{}` on {}", self.command, self.host)?;
        if self.inactivity {
            write!(f, " printed nothing for {limit}")?;
        } else {
            write!(f, " ran longer than {limit}")?;
        }
        write!(f, " and was stopped (it and what it started were killed)")?;
        match self.last_lines.as_slice() {
            [] if self.inactivity => {}
            [] => write!(f, "; it printed nothing")?,
            lines => write!(f, "; its last output:\n  {}", lines.join("\n  "))?,
        }
        if let Some(step) = &self.step {
            // Suggest a limit well above the one hit, so one edit is enough.
            let more = Duration::from_secs((self.after.as_secs() * 3).max(60));
            let sep = if self.last_lines.is_empty() {
                ". "
            } else {
                "\n"
            };
            write!(
                f,
                "{sep}If it only needs longer, raise the limit in kgenv.toml: [timeouts] \"{step}\" = \"{}\"",
                humantime::format_duration(more)
            )?;
        }
        Ok(())
    }
}

/// An error from a backend (GCE, GCS, SSH, Docker, Kaggle, GitHub) or its mock.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The resource does not exist.
    #[error("{resource} not found")]
    NotFound {
        /// Which resource.
        resource: String,
    },
    /// The resource exists already (and is not kgenv's to adopt).
    #[error("{resource} already exists")]
    AlreadyExists {
        /// Which resource.
        resource: String,
    },
    /// No credentials, or credentials the service rejected.
    #[error("{service}: not authenticated: {message}")]
    Unauthenticated {
        /// Which service (`compute`, `kaggle`, ...).
        service: &'static str,
        /// What went wrong and how to provide credentials.
        message: String,
    },
    /// Authenticated, but not allowed.
    #[error("{resource}: permission denied: {message}")]
    PermissionDenied {
        /// Which resource.
        resource: String,
        /// The service's explanation and what to grant.
        message: String,
    },
    /// A zone has no capacity for the requested machine or GPU.
    #[error("zone {zone} has no capacity for {resource}: {message}")]
    Stockout {
        /// The zone that is out of stock.
        zone: String,
        /// What was requested.
        resource: String,
        /// The service's message.
        message: String,
    },
    /// A quota stops the request.
    #[error("quota {} exceeded (limit {}){}: {message}", quota.metric, quota.limit.map_or("unknown".to_string(), |l| l.to_string()), match &quota.scope { QuotaScope::Region(r) => format!(" in region {r}"), QuotaScope::Global => " in all regions".to_string() })]
    Quota {
        /// Which quota.
        quota: QuotaInfo,
        /// The service's message.
        message: String,
    },
    /// The service asked us to slow down.
    #[error("{service}: rate limited{}", retry_after.map(|d| format!(", retry after {}s", d.as_secs())).unwrap_or_default())]
    RateLimited {
        /// Which service.
        service: &'static str,
        /// The `Retry-After` the service gave.
        retry_after: Option<Duration>,
    },
    /// A failure that may pass if retried (5xx, reset connection).
    #[error("{service}: transient failure: {message}")]
    Transient {
        /// Which service.
        service: &'static str,
        /// What happened.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// The request is wrong; retrying will not help.
    #[error("{resource}: invalid request: {message}")]
    InvalidArgument {
        /// Which resource.
        resource: String,
        /// The service's message.
        message: String,
    },
    /// The resource is used by another one and cannot be changed or deleted while it is
    /// (a disk attached to an instance: GCE's `resourceInUseByAnotherResource`).
    #[error("{resource} is in use: {message}")]
    InUse {
        /// Which resource.
        resource: String,
        /// The service's message (it names the user).
        message: String,
    },
    /// The resource is not in the state the request needs (an instance must be stopped
    /// before its machine type, GPUs or service account change).
    #[error("{resource}: {message}")]
    FailedPrecondition {
        /// Which resource.
        resource: String,
        /// The service's message and what to do.
        message: String,
    },
    /// Waited too long.
    #[error("timed out after {}s waiting for {what}{}", after.as_secs(), last_seen.as_ref().map(|s| format!(" (last seen: {s})")).unwrap_or_default())]
    Timeout {
        /// What we were waiting for.
        what: String,
        /// How long we waited.
        after: Duration,
        /// The last thing observed, to help diagnose.
        last_seen: Option<String>,
    },
    /// A remote command ran past its timeout and was killed (see [`CommandTimedOut`]).
    #[error("{0}")]
    CommandTimeout(Box<CommandTimedOut>),
    /// An SSH host presented a key that differs from the pinned one.
    #[error("host key for {host} changed: expected {expected}, got {found}. Someone may be intercepting the connection, or the host was rebuilt; if you know it was rebuilt, remove its entry from {known_hosts} and run again")]
    HostKeyMismatch {
        /// Host name or address.
        host: String,
        /// Fingerprint kgenv pinned.
        expected: String,
        /// Fingerprint the host offered.
        found: String,
        /// Where the pin lives.
        known_hosts: String,
    },
    /// A connection could not be made or was lost.
    #[error("connection to {endpoint} failed: {message}")]
    Connection {
        /// Where we tried to connect.
        endpoint: String,
        /// What happened.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// A command on a host or in a container exited non-zero.
    #[error("`{command}` exited with {exit_code}{}", if stderr_tail.is_empty() { String::new() } else { format!(": {stderr_tail}") })]
    CommandFailed {
        /// A short label for the command (never its secret arguments).
        command: String,
        /// Its exit status.
        exit_code: i64,
        /// The last lines of its stderr.
        stderr_tail: String,
    },
    /// The host cannot give a container the GPU it asked for: the engine has no `nvidia`
    /// device driver (the NVIDIA Container Toolkit is missing) or the host has no GPU.
    #[error("{host} cannot give the container a GPU: {message}")]
    GpuUnavailable {
        /// The engine or host (`local`, `user@host:22`).
        host: String,
        /// The engine's message and what to do.
        message: String,
    },
    /// A destination has too little free space for what is about to land there: raised
    /// before anything is fetched (see [`SpaceShortfall`]).
    #[error("{0}")]
    InsufficientSpace(Box<SpaceShortfall>),
    /// The backend is not available in this build or configuration.
    #[error("{backend} backend unavailable: {hint}")]
    Unavailable {
        /// Which backend.
        backend: &'static str,
        /// What to do.
        hint: String,
    },
    /// A local I/O error.
    #[error("{context}: {source}")]
    Io {
        /// What we were doing.
        context: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The operation was cancelled.
    #[error("cancelled")]
    Cancelled,
    /// Anything else, with the service's message.
    #[error("{message}")]
    Other {
        /// What happened.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
}

impl BackendError {
    /// Whether a retry of the same request may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::RateLimited { .. }
                | Self::Transient { .. }
                | Self::Connection { .. }
                | Self::Timeout { .. }
                | Self::CommandTimeout(_)
        )
    }

    /// Whether something waited too long: an operation ([`Self::Timeout`]) or a remote
    /// command that was killed ([`Self::CommandTimeout`]).
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout { .. } | Self::CommandTimeout(_))
    }

    /// The remote command that timed out, when that is what happened.
    pub fn command_timeout(&self) -> Option<&CommandTimedOut> {
        match self {
            Self::CommandTimeout(c) => Some(c),
            _ => None,
        }
    }

    /// Whether the error is a zone running out of capacity (try another zone).
    pub fn is_stockout(&self) -> bool {
        matches!(self, Self::Stockout { .. })
    }

    /// The quota that stopped the request, if that is what happened.
    pub fn quota(&self) -> Option<&QuotaInfo> {
        match self {
            Self::Quota { quota, .. } => Some(quota),
            _ => None,
        }
    }

    /// Whether the resource is in use by another (a disk still attached).
    pub fn is_in_use(&self) -> bool {
        matches!(self, Self::InUse { .. })
    }

    /// Whether the resource is not in the state the request needs (e.g. not stopped).
    pub fn is_failed_precondition(&self) -> bool {
        matches!(self, Self::FailedPrecondition { .. })
    }

    /// Whether the resource was not found.
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }

    /// Whether the host cannot give a container a GPU (no NVIDIA container runtime or no GPU).
    pub fn is_gpu_unavailable(&self) -> bool {
        matches!(self, Self::GpuUnavailable { .. })
    }

    /// How much space was missing, when a destination was too small for a pull.
    pub fn insufficient_space(&self) -> Option<&SpaceShortfall> {
        match self {
            Self::InsufficientSpace(s) => Some(s),
            _ => None,
        }
    }

    /// Whether the error means credentials are missing or rejected.
    pub fn is_auth(&self) -> bool {
        matches!(
            self,
            Self::Unauthenticated { .. } | Self::PermissionDenied { .. }
        )
    }

    /// A short stable name for the kind, used in events, JSON and Python exceptions.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => "not_found",
            Self::AlreadyExists { .. } => "already_exists",
            Self::Unauthenticated { .. } => "unauthenticated",
            Self::PermissionDenied { .. } => "permission_denied",
            Self::Stockout { .. } => "stockout",
            Self::Quota { .. } => "quota",
            Self::RateLimited { .. } => "rate_limited",
            Self::Transient { .. } => "transient",
            Self::InvalidArgument { .. } => "invalid_argument",
            Self::InUse { .. } => "in_use",
            Self::FailedPrecondition { .. } => "failed_precondition",
            Self::Timeout { .. } | Self::CommandTimeout(_) => "timeout",
            Self::HostKeyMismatch { .. } => "host_key_mismatch",
            Self::Connection { .. } => "connection",
            Self::CommandFailed { .. } => "command_failed",
            Self::GpuUnavailable { .. } => "gpu_unavailable",
            Self::InsufficientSpace(_) => "insufficient_space",
            Self::Unavailable { .. } => "unavailable",
            Self::Io { .. } => "io",
            Self::Cancelled => "cancelled",
            Self::Other { .. } => "other",
        }
    }

    /// Wraps an I/O error with what we were doing.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// A transient error with a message and no source.
    pub fn transient(service: &'static str, message: impl Into<String>) -> Self {
        Self::Transient {
            service,
            message: message.into(),
            source: None,
        }
    }

    /// An error that is none of the typed kinds.
    pub fn other(message: impl Into<String>) -> Self {
        Self::Other {
            message: message.into(),
            source: None,
        }
    }
}

/// A state-file problem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    /// The state file could not be read or written.
    #[error("state file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The state file is not valid JSON of the expected shape. kgenv never rewrites it.
    #[error("state file {} is corrupt ({source}); {}", path.display(), restore_hint(path, backup.as_deref()))]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The copy of the file before kgenv's last write (`<env>.json.bak`), if one exists.
        backup: Option<PathBuf>,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The state file exists but holds nothing (a write cut short outside kgenv, a full
    /// disk, a truncation by hand). kgenv never rewrites it.
    #[error("state file {} is empty; {}", path.display(), restore_hint(path, backup.as_deref()))]
    Empty {
        /// The file.
        path: PathBuf,
        /// The copy of the file before kgenv's last write (`<env>.json.bak`), if one exists.
        backup: Option<PathBuf>,
    },
    /// The state file was written by a newer kgenv, in a format this one cannot read
    /// safely. kgenv never rewrites it.
    #[error("state file {} has format version {found}, but this kgenv reads version {supported} and older: it was written by a newer kgenv; upgrade kgenv to use this environment (the file is left as it is)", path.display())]
    Newer {
        /// The file.
        path: PathBuf,
        /// The version the file records.
        found: u64,
        /// The newest version this kgenv reads.
        supported: u32,
    },
    /// The state file records an environment on another target than this run's: acting on
    /// it would remove or change things by names recorded for the other target.
    #[error("state file {} is for target `{recorded}`, but this run is for target `{requested}`; use --target {recorded} (or set the config's target back to `{recorded}`) to work on that environment, or move the state file aside to start a new one on `{requested}` (what was made on `{recorded}` is then no longer tracked)", path.display())]
    TargetMismatch {
        /// The file.
        path: PathBuf,
        /// The target the file records.
        recorded: String,
        /// The target of this run.
        requested: String,
    },
    /// Another kgenv process holds the environment's lock.
    #[error("environment `{env}` is busy: another kgenv process holds {}; wait for it or remove the lock if that process is gone", path.display())]
    Locked {
        /// The environment.
        env: String,
        /// The lock file.
        path: PathBuf,
    },
}

/// What to say about a state file kgenv cannot read: restore the backup, or start over.
fn restore_hint(path: &std::path::Path, backup: Option<&std::path::Path>) -> String {
    let aside = format!(
        "move {} aside to start over (kgenv will not delete what it cannot read, nor rewrite it; what only that file records is then no longer tracked)",
        path.display()
    );
    match backup {
        Some(b) => format!(
            "the file as it was before kgenv's last write is kept in {}: check it and copy it over {} to restore it, or {aside}",
            b.display(),
            path.display()
        ),
        None => format!("no backup of it exists; {aside}"),
    }
}

impl StateError {
    /// Whether the error is the user's request not matching the state (a state for
    /// another target): exit code 2 in the CLI, like a config error.
    pub fn is_config(&self) -> bool {
        matches!(self, Self::TargetMismatch { .. })
    }

    /// Whether the file exists but cannot be used as it is (empty, corrupt, or from a newer
    /// kgenv); such a file is never rewritten.
    pub fn is_unreadable(&self) -> bool {
        matches!(
            self,
            Self::Corrupt { .. } | Self::Empty { .. } | Self::Newer { .. }
        )
    }

    /// The state file the error is about (the lock file for [`Locked`](Self::Locked)).
    pub fn path(&self) -> &std::path::Path {
        match self {
            Self::Io { path, .. }
            | Self::Corrupt { path, .. }
            | Self::Empty { path, .. }
            | Self::Newer { path, .. }
            | Self::TargetMismatch { path, .. }
            | Self::Locked { path, .. } => path,
        }
    }

    /// A short stable name for the reason (`io`, `corrupt`, `empty`, `newer`,
    /// `target_mismatch`, `locked`), used by the Python surface.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Io { .. } => "io",
            Self::Corrupt { .. } => "corrupt",
            Self::Empty { .. } => "empty",
            Self::Newer { .. } => "newer",
            Self::TargetMismatch { .. } => "target_mismatch",
            Self::Locked { .. } => "locked",
        }
    }
}

/// A change that deletes, stops or restarts something was not confirmed, so it was not
/// made: what it would have done, for the caller to show (`kgenv down` without a terminal
/// and without `--yes`, `env.down()` without `yes=True`, an `up` that restarts the VM).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Unconfirmed {
    /// The operation (`down`, `up`, `move`).
    pub operation: String,
    /// What it would delete (`down`) or stop and restart (`up`), one readable line each.
    pub changes: Vec<String>,
    /// What it keeps in any case (buckets, data disks).
    pub keeps: Vec<String>,
}

impl std::fmt::Display for Unconfirmed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.operation == "down" {
            write!(
                f,
                "`down` would delete {} resource(s) and was not confirmed, so nothing was changed. It would delete: {}",
                self.changes.len(),
                self.changes.join("; ")
            )?;
            if !self.keeps.is_empty() {
                write!(f, ". It keeps: {}", self.keeps.join("; "))?;
            }
        } else if self.operation == "move" {
            write!(
                f,
                "`move` was not confirmed, so nothing was changed. It would: {}",
                self.changes.join("; ")
            )?;
        } else {
            write!(
                f,
                "`{}` needs a confirmation it did not get, so that change was not applied: {}",
                self.operation,
                self.changes.join("; ")
            )?;
        }
        write!(
            f,
            ". Run it on a terminal to be asked, or pass --yes (Python: yes=True) to go ahead"
        )
    }
}

/// The core's error: what failed, in which step, and why.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The config file is wrong.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A spec built in code is wrong.
    #[error(transparent)]
    Validation(#[from] ValidationError),
    /// A backend failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The state file failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// A step failed; the source says why.
    #[error("step `{step}` failed: {source}")]
    Step {
        /// The step.
        step: String,
        /// Why it failed.
        #[source]
        source: Box<Error>,
    },
    /// One or more steps failed during a run.
    #[error("{} step(s) failed: {}", failed.len(), failed.join(", "))]
    RunFailed {
        /// The failed steps, in the order they failed.
        failed: Vec<String>,
        /// The first failure.
        #[source]
        first: Box<Error>,
    },
    /// The run was cancelled (Ctrl-C or a cancelled token).
    #[error("cancelled; steps that were running finished or rolled back, and the state file is consistent")]
    Cancelled,
    /// A request of the user cannot be honoured as asked (unknown step name, ...).
    #[error("{0}")]
    Usage(String),
    /// A change that deletes, stops or restarts was not confirmed and was not made.
    #[error("{0}")]
    NotConfirmed(Box<Unconfirmed>),
}

impl Error {
    /// The innermost backend error, looking through step and run wrappers.
    pub fn backend(&self) -> Option<&BackendError> {
        match self {
            Self::Backend(e) => Some(e),
            Self::Step { source, .. } => source.backend(),
            Self::RunFailed { first, .. } => first.backend(),
            _ => None,
        }
    }

    /// Whether retrying the same operation may succeed.
    pub fn is_retryable(&self) -> bool {
        self.backend().is_some_and(BackendError::is_retryable)
    }

    /// Whether a zone ran out of capacity.
    pub fn is_stockout(&self) -> bool {
        self.backend().is_some_and(BackendError::is_stockout)
    }

    /// The quota that stopped the run, if any.
    pub fn quota(&self) -> Option<&QuotaInfo> {
        self.backend().and_then(BackendError::quota)
    }

    /// Whether something waited too long (an operation, or a remote command that was killed).
    pub fn is_timeout(&self) -> bool {
        self.backend().is_some_and(BackendError::is_timeout)
    }

    /// The remote command that timed out, looking through step and run wrappers.
    pub fn command_timeout(&self) -> Option<&CommandTimedOut> {
        self.backend().and_then(BackendError::command_timeout)
    }

    /// Whether the error is the user's input (config, validation, usage, a state file for
    /// another target, or a destructive change not confirmed): exit code 2 in the CLI.
    pub fn is_config(&self) -> bool {
        match self {
            Self::Config(_) | Self::Validation(_) | Self::Usage(_) | Self::NotConfirmed(_) => true,
            Self::State(s) => s.is_config(),
            Self::Step { source, .. } => source.is_config(),
            Self::RunFailed { first, .. } => first.is_config(),
            _ => false,
        }
    }

    /// What a refused confirmation would have done, looking through step and run wrappers.
    pub fn unconfirmed(&self) -> Option<&Unconfirmed> {
        match self {
            Self::NotConfirmed(u) => Some(u),
            Self::Step { source, .. } => source.unconfirmed(),
            Self::RunFailed { first, .. } => first.unconfirmed(),
            _ => None,
        }
    }

    /// Whether a change was refused for want of a confirmation (nothing was changed by it).
    pub fn is_not_confirmed(&self) -> bool {
        self.unconfirmed().is_some()
    }

    /// Whether the run was cancelled.
    pub fn is_cancelled(&self) -> bool {
        match self {
            Self::Cancelled | Self::Backend(BackendError::Cancelled) => true,
            Self::Step { source, .. } => source.is_cancelled(),
            _ => false,
        }
    }

    /// A short stable name for the kind, used in JSON output and Python exceptions.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Config(_) => "config",
            Self::Validation(_) => "validation",
            Self::Backend(e) => e.kind(),
            Self::State(_) => "state",
            Self::Step { source, .. } => source.kind(),
            Self::RunFailed { first, .. } => first.kind(),
            Self::Cancelled => "cancelled",
            Self::Usage(_) => "usage",
            Self::NotConfirmed(_) => "not_confirmed",
        }
    }

    /// Wraps this error as the failure of `step`.
    #[must_use]
    pub fn in_step(self, step: &str) -> Self {
        match self {
            already @ Self::Step { .. } => already,
            other => Self::Step {
                step: step.to_string(),
                source: Box::new(other),
            },
        }
    }
}

/// An error and its causes on one line: `a: b: c`, without repeating a cause the message
/// already contains.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let t = s.to_string();
        if !msg.contains(&t) {
            msg.push_str(": ");
            msg.push_str(&t);
        }
        cur = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predicates_look_through_wrappers() {
        let e = Error::from(BackendError::Stockout {
            zone: "us-central1-a".into(),
            resource: "nvidia-tesla-t4".into(),
            message: "ZONE_RESOURCE_POOL_EXHAUSTED".into(),
        })
        .in_step("instance");
        assert!(e.is_stockout());
        assert!(!e.is_retryable());
        assert_eq!(e.kind(), "stockout");
        let q = Error::from(BackendError::Quota {
            quota: QuotaInfo {
                metric: "GPUS_ALL_REGIONS".into(),
                limit: Some(0.0),
                scope: QuotaScope::Global,
            },
            message: "Quota exceeded".into(),
        });
        assert_eq!(
            q.quota().map(|q| q.metric.as_str()),
            Some("GPUS_ALL_REGIONS")
        );
        assert!(q.to_string().contains("in all regions"), "{q}");
        assert!(Error::from(BackendError::transient("compute", "503")).is_retryable());
        assert!(Error::from(ValidationError::new("x", "y")).is_config());
    }
}

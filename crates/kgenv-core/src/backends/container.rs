//! The ContainerEngine (Docker) backend trait and the container and image values it takes.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use futures::Stream;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWrite;

use super::remote::{ExecOutput, Remote};
use super::{BackendResult, ProgressFn};
use crate::error::BackendError;

/// An image present in the engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineImage {
    /// Image id (`sha256:...`).
    pub id: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// The image's environment (`KEY=value`), e.g. to find CUDA's stub directory in
    /// `LD_LIBRARY_PATH`.
    #[serde(default)]
    pub env: Vec<String>,
}

/// What the engine says about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineInfo {
    /// Engine version (`27.3.1`).
    pub version: String,
    /// API version in use (`1.47`).
    pub api_version: String,
    /// Registered OCI runtimes (`runc`, `nvidia`).
    pub runtimes: Vec<String>,
    /// The default runtime.
    pub default_runtime: String,
}

impl EngineInfo {
    /// Whether the NVIDIA container runtime is registered (the sign of a host set up for
    /// GPU containers). An engine may also serve GPU requests through the toolkit's hook
    /// alone, so `false` is a hint, not a proof.
    pub fn has_nvidia_runtime(&self) -> bool {
        self.runtimes.iter().any(|r| r == "nvidia") || self.default_runtime == "nvidia"
    }
}

/// Which logs to read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogOptions {
    /// Keep streaming new lines until the container stops (or the caller drops the call).
    pub follow: bool,
    /// Only the last `n` lines; `None`: all.
    pub tail: Option<u64>,
    /// Prefix each line with its RFC 3339 timestamp.
    pub timestamps: bool,
}

/// A port published from the container to the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortPublish {
    /// Port inside the container.
    pub container_port: u16,
    /// Port on the host.
    pub host_port: u16,
    /// Host address to bind (`127.0.0.1` by default).
    pub host_ip: String,
}

/// A bind mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindMount {
    /// Path on the host.
    pub source: String,
    /// Path in the container.
    pub target: String,
    /// Read-only.
    pub read_only: bool,
    /// Propagation (`rslave` so a gcsfuse mount remade on the host shows inside).
    pub propagation: Option<String>,
}

/// What kgenv asks the engine to create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRequest {
    /// Container name.
    pub name: String,
    /// Image reference.
    pub image: String,
    /// `Some(0)`: all GPUs; `Some(n)`: n GPUs; `None`: no GPU.
    pub gpus: Option<u32>,
    /// Published ports.
    pub ports: Vec<PortPublish>,
    /// Bind mounts.
    pub mounts: Vec<BindMount>,
    /// `/dev/shm` size in bytes.
    pub shm_size_bytes: u64,
    /// Environment (only what the user put in the spec).
    pub env: BTreeMap<String, String>,
    /// Labels, including kgenv's ownership and spec-hash labels.
    pub labels: BTreeMap<String, String>,
    /// Command, or the image's default.
    pub command: Option<Vec<String>>,
    /// Working directory, or the image's default.
    #[serde(default)]
    pub working_dir: Option<String>,
}

/// What kgenv knows of an existing container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerInfo {
    /// Container id.
    pub id: String,
    /// Container name.
    pub name: String,
    /// Image reference it was created from.
    pub image: String,
    /// Whether it is running.
    pub running: bool,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

/// A terminal's size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TermSize {
    /// Lines.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
}

/// A command running on a terminal in a container ([`ContainerEngine::exec_tty`]): what is
/// written to `input` is typed into it, `output` is what its terminal shows (stdout and
/// stderr merged, as on any terminal) and ends when the command exits.
pub struct TtyExec {
    /// Keystrokes for the command.
    pub input: Pin<Box<dyn AsyncWrite + Send>>,
    /// The terminal's output.
    pub output: Pin<Box<dyn Stream<Item = BackendResult<bytes::Bytes>> + Send>>,
    /// Resizes the terminal, and reads the exit code at the end.
    pub control: Box<dyn TtyControl>,
}

impl std::fmt::Debug for TtyExec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TtyExec").finish_non_exhaustive()
    }
}

/// The side channel of a [`TtyExec`].
#[async_trait]
pub trait TtyControl: Send + Sync {
    /// Tells the command its terminal is now `size` (it gets `SIGWINCH`).
    async fn resize(&self, size: TermSize) -> BackendResult<()>;
    /// The command's exit code, once its output has ended.
    async fn exit_code(&self) -> BackendResult<i64>;
}

/// A Docker engine, local or on a host.
#[async_trait]
pub trait ContainerEngine: Send + Sync {
    /// The image, or `None` when absent.
    async fn inspect_image(&self, reference: &str) -> BackendResult<Option<EngineImage>>;
    /// Pulls an image, reporting bytes per layer.
    async fn pull_image(&self, reference: &str, progress: ProgressFn<'_>) -> BackendResult<()>;
    /// Builds `dockerfile` (with an empty context) as `tag`, streaming build output.
    async fn build_image(
        &self,
        tag: &str,
        dockerfile: &str,
        labels: &BTreeMap<String, String>,
        progress: ProgressFn<'_>,
    ) -> BackendResult<()>;
    /// The container, or `None`.
    async fn inspect_container(&self, name: &str) -> BackendResult<Option<ContainerInfo>>;
    /// Creates a container (not started).
    async fn create_container(&self, req: &ContainerRequest) -> BackendResult<String>;
    /// Starts a container.
    async fn start_container(&self, name: &str) -> BackendResult<()>;
    /// Removes a container, stopping it first.
    async fn remove_container(&self, name: &str) -> BackendResult<()>;
    /// Runs a command in a running container, streaming its output lines to `progress`.
    async fn exec(
        &self,
        container: &str,
        cmd: &[String],
        progress: ProgressFn<'_>,
    ) -> BackendResult<ExecOutput>;
    /// Runs `cmd` in a running container on a terminal of `size`, with `env` (`KEY=value`)
    /// added, attached (for `kgenv shell`). An engine without terminals says so.
    async fn exec_tty(
        &self,
        container: &str,
        cmd: &[String],
        env: &[String],
        size: TermSize,
    ) -> BackendResult<TtyExec> {
        let _ = (container, cmd, env, size);
        Err(BackendError::Unavailable {
            backend: "container engine",
            hint: "this engine cannot open a terminal in the container (the simulated one of --mock cannot): run commands with `kgenv exec -- CMD`".into(),
        })
    }
    /// Streams a container's log lines to `progress`; with `follow`, until the container
    /// stops or the caller drops the future.
    async fn logs(
        &self,
        container: &str,
        opts: LogOptions,
        progress: ProgressFn<'_>,
    ) -> BackendResult<()>;
    /// Version and runtimes of the engine.
    async fn info(&self) -> BackendResult<EngineInfo>;
}

/// Where the engine lives.
#[derive(Clone)]
pub enum EngineLocation {
    /// This machine (`DOCKER_HOST` or the default socket).
    Local,
    /// A host reached over SSH; the engine socket is tunnelled.
    Remote(Arc<dyn Remote>),
}

/// Opens engines.
#[async_trait]
pub trait EngineConnector: Send + Sync {
    /// Connects to the engine at `at`.
    async fn connect(&self, at: EngineLocation) -> BackendResult<Arc<dyn ContainerEngine>>;
}

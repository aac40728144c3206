//! The ContainerEngine (Docker) backend trait and the container and image values it takes.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::remote::{ExecOutput, Remote};
use super::{BackendResult, ProgressFn};

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

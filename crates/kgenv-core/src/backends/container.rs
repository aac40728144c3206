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
    /// Runs a command in a running container.
    async fn exec(
        &self,
        container: &str,
        cmd: &[String],
        progress: ProgressFn<'_>,
    ) -> BackendResult<ExecOutput>;
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

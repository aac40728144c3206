//! The Docker layer: kgenv's [`ContainerEngine`] on bollard, for this machine's engine and for
//! a host's engine reached through its SSH session, with no `docker` CLI on either side.
//!
//! - [`transport`]: the local socket (`DOCKER_HOST`) or a tunnelled one
//!   ([`Remote::open_unix`](crate::backends::Remote::open_unix), one SSH channel per HTTP
//!   connection, hijacked exec streams included);
//! - [`engine`]: the typed API calls ([`DockerEngine`]);
//! - [`progress`]: pull and build streams as [`Progress`](crate::backends::Progress);
//! - [`auth`]: tokens for gcr.io and Artifact Registry;
//! - `errors`: bollard's errors as typed [`BackendError`](crate::BackendError)s.
//!
//! ## GPUs on a host without the NVIDIA runtime
//!
//! A GPU is asked for with a device request (driver `nvidia`, all GPUs, capabilities
//! `[["gpu"]]`). An engine without the NVIDIA Container Toolkit accepts the create but
//! refuses the start (`could not select device driver "nvidia"`); kgenv maps that to
//! [`BackendError::GpuUnavailable`](crate::BackendError::GpuUnavailable). The container
//! step then decides: when the spec *requires* a GPU (an explicit count, or a GCE VM with a
//! GPU) the error stops the run; with the default `gpus = "all"` on a host with no GPU
//! support the container is recreated without the request, with a warning, and labelled so
//! a later `up` re-creates it with GPUs once the engine has the NVIDIA runtime.
//!
//! ```no_run
//! # async fn demo() -> kgenv_core::backends::BackendResult<()> {
//! use kgenv_core::backends::container::{EngineConnector, EngineLocation};
//! use kgenv_core::docker::DockerConnector;
//! let engine = DockerConnector::new().connect(EngineLocation::Local).await?;
//! let info = engine.info().await?;
//! println!("Docker {} (API {}), runtimes {:?}", info.version, info.api_version, info.runtimes);
//! # Ok(()) }
//! ```

pub mod auth;
pub mod engine;
mod errors;
pub mod progress;
pub mod transport;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use auth::RegistryAuth;
pub use engine::DockerEngine;

use crate::backends::container::{ContainerEngine, EngineConnector, EngineLocation};
use crate::backends::BackendResult;

/// How long one Engine API call may take to answer (streams then run as long as they need).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// Opens Docker engines: this machine's, or a host's through its SSH session.
#[derive(Debug, Clone)]
pub struct DockerConnector {
    auth: Arc<RegistryAuth>,
    remote_socket: String,
}

impl Default for DockerConnector {
    fn default() -> Self {
        Self::new()
    }
}

impl DockerConnector {
    /// A connector with registry tokens from the environment (see [`RegistryAuth::from_env`])
    /// and the host's engine at `/var/run/docker.sock`.
    pub fn new() -> Self {
        Self {
            auth: Arc::new(RegistryAuth::from_env()),
            remote_socket: transport::DEFAULT_SOCKET.into(),
        }
    }

    /// Uses these registry credentials.
    #[must_use]
    pub fn registry_auth(mut self, auth: RegistryAuth) -> Self {
        self.auth = Arc::new(auth);
        self
    }

    /// The engine socket on remote hosts (default `/var/run/docker.sock`).
    #[must_use]
    pub fn remote_socket(mut self, path: impl Into<String>) -> Self {
        self.remote_socket = path.into();
        self
    }

    /// Connects to the engine at `at`, with the concrete type (for calls beyond the trait).
    pub async fn open(&self, at: EngineLocation) -> BackendResult<DockerEngine> {
        let (docker, endpoint) = match at {
            EngineLocation::Local => transport::connect_local(REQUEST_TIMEOUT).await?,
            EngineLocation::Remote(remote) => {
                transport::connect_remote(remote, &self.remote_socket, REQUEST_TIMEOUT).await?
            }
        };
        Ok(DockerEngine::new(docker, endpoint, self.auth.clone()))
    }
}

#[async_trait]
impl EngineConnector for DockerConnector {
    async fn connect(&self, at: EngineLocation) -> BackendResult<Arc<dyn ContainerEngine>> {
        Ok(Arc::new(self.open(at).await?))
    }
}

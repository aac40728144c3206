//! How kgenv reaches a Docker Engine: the local socket (`DOCKER_HOST` or
//! `/var/run/docker.sock`), or a host's socket through its SSH session.
//!
//! The remote transport is a hyper client whose connector opens one stream per HTTP
//! connection with [`Remote::open_unix`] (an SSH `direct-streamlocal` channel on the one SSH
//! connection). Idle connections are pooled, so a burst of API calls reuses a few channels;
//! hijacked connections (exec, attach) upgrade their own channel and leave the pool.
//!
//! This module only opens connections; the API calls live in [`super::engine`].

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bollard::{BollardRequest, Docker};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::errors::map_err;
use crate::backends::remote::{ByteStream, Remote};
use crate::backends::BackendResult;
use crate::error::BackendError;

/// Docker's socket path on Linux hosts.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// Where a local engine listens, from `DOCKER_HOST`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalEndpoint {
    /// A unix socket path.
    Unix(String),
    /// A plain-HTTP TCP address (`tcp://host:port`).
    Tcp(String),
}

impl LocalEndpoint {
    /// Parses `DOCKER_HOST` (`None` or empty: the default socket). TLS (`DOCKER_TLS_VERIFY`)
    /// and `ssh://` hosts are refused with a hint: kgenv reaches remote engines through its
    /// own SSH session (target `ssh`).
    pub fn from_docker_host(value: Option<&str>) -> BackendResult<Self> {
        let value = value.map(str::trim).unwrap_or_default();
        if value.is_empty() {
            return Ok(Self::Unix(DEFAULT_SOCKET.into()));
        }
        if let Some(path) = value.strip_prefix("unix://") {
            return Ok(Self::Unix(path.into()));
        }
        if let Some(addr) = value
            .strip_prefix("tcp://")
            .or_else(|| value.strip_prefix("http://"))
        {
            return Ok(Self::Tcp(addr.trim_end_matches('/').into()));
        }
        let hint = if value.starts_with("ssh://") {
            format!("DOCKER_HOST={value} is an SSH engine: use `target = \"ssh\"` with that host instead, kgenv tunnels the engine socket itself")
        } else {
            format!("DOCKER_HOST={value} is not supported: use unix:///path/to/docker.sock or tcp://host:port")
        };
        Err(BackendError::Unavailable {
            backend: "docker",
            hint,
        })
    }

    /// A name for messages.
    pub fn describe(&self) -> String {
        match self {
            Self::Unix(p) => format!("unix://{p}"),
            Self::Tcp(a) => format!("tcp://{a}"),
        }
    }
}

/// Opens the local engine named by `DOCKER_HOST` (or the default socket) and agrees on an
/// API version with it.
pub async fn connect_local(timeout: Duration) -> BackendResult<(Docker, String)> {
    if std::env::var_os("DOCKER_TLS_VERIFY").is_some_and(|v| !v.is_empty()) {
        return Err(BackendError::Unavailable {
            backend: "docker",
            hint: "DOCKER_TLS_VERIFY is set, but kgenv talks to TLS engines only through SSH; unset it or use target = \"ssh\"".into(),
        });
    }
    let endpoint = LocalEndpoint::from_docker_host(std::env::var("DOCKER_HOST").ok().as_deref())?;
    let name = endpoint.describe();
    let secs = timeout.as_secs().max(1);
    let docker = match &endpoint {
        LocalEndpoint::Unix(path) => {
            if !std::path::Path::new(path).exists() {
                return Err(BackendError::Unavailable {
                    backend: "docker",
                    hint: format!("no Docker engine socket at {path}: install and start Docker (Debian: `apt-get install docker.io`), or set DOCKER_HOST"),
                });
            }
            Docker::connect_with_unix(path, secs, bollard::API_DEFAULT_VERSION)
        }
        LocalEndpoint::Tcp(addr) => Docker::connect_with_http(addr, secs, bollard::API_DEFAULT_VERSION),
    }
    .map_err(|e| map_err(e, "docker engine", &name))?;
    let docker = docker
        .negotiate_version()
        .await
        .map_err(|e| map_err(e, "docker engine", &name))?;
    Ok((docker, name))
}

/// Opens the engine behind `socket` on a host, through `remote`'s SSH session.
pub async fn connect_remote(
    remote: Arc<dyn Remote>,
    socket: &str,
    timeout: Duration,
) -> BackendResult<(Docker, String)> {
    let name = format!("{}:{socket}", remote.endpoint());
    let answered = Arc::new(AtomicBool::new(false));
    let connector = RemoteSocketConnector {
        remote,
        socket: socket.into(),
        answered: answered.clone(),
    };
    let client = Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector);
    let client = Arc::new(client);
    let transport = move |req: BollardRequest| {
        let client = client.clone();
        async move {
            client
                .request(req)
                .await
                .map_err(bollard::errors::Error::from)
        }
    };
    // The host part is only the `Host` header: every connection goes to the tunnelled socket.
    let docker = Docker::connect_with_custom_transport(
        transport,
        Some("http://docker.sock"),
        timeout.as_secs().max(1),
        bollard::API_DEFAULT_VERSION,
    )
    .map_err(|e| map_err(e, "docker engine", &name))?;
    let docker = docker
        .negotiate_version()
        .await
        .map_err(|e| map_err(e, "docker engine", &name))?;
    answered.store(true, Ordering::Relaxed);
    Ok((docker, name))
}

/// How long a connection to an engine that has answered before is retried while its socket
/// is gone or refuses: `dockerd` restarting (the NVIDIA driver installer restarts it on a
/// fresh VM) takes seconds; a minute covers a slow one.
pub const ENGINE_RESTART_GRACE: Duration = Duration::from_secs(60);

/// Opens one tunnelled stream to the engine socket per HTTP connection.
#[derive(Clone)]
struct RemoteSocketConnector {
    remote: Arc<dyn Remote>,
    socket: String,
    /// Set once the engine has answered: from then on a socket that cannot be opened is an
    /// engine restarting, waited for (a first connection fails at once, with its hint).
    answered: Arc<AtomicBool>,
}

impl tower_service::Service<http::Uri> for RemoteSocketConnector {
    type Response = TokioIo<Tunnel>;
    type Error = BackendError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: http::Uri) -> Self::Future {
        let (remote, socket) = (self.remote.clone(), self.socket.clone());
        let answered = self.answered.clone();
        Box::pin(async move {
            let started = std::time::Instant::now();
            let mut pause = Duration::from_millis(200);
            let mut warned = false;
            loop {
                match remote.open_unix(&socket).await {
                    Ok(stream) => return Ok(TokioIo::new(Tunnel(stream))),
                    Err(e @ BackendError::Connection { .. })
                        if answered.load(Ordering::Relaxed)
                            && started.elapsed() < ENGINE_RESTART_GRACE =>
                    {
                        if !warned {
                            tracing::warn!(host = %remote.endpoint(), %socket, error = %e, "the Docker engine stopped answering (restarting?); waiting up to {}s for it", ENGINE_RESTART_GRACE.as_secs());
                            warned = true;
                        }
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(Duration::from_secs(2));
                    }
                    Err(e) => return Err(with_socket_hint(e, &socket)),
                }
            }
        })
    }
}

/// What to check when the host's engine socket cannot be opened. sshd answers a
/// `direct-streamlocal` open it cannot connect with a bare "connect failed", whether the
/// socket is missing or the login user may not open it (not root and not in the `docker`
/// group), so the message names both.
fn with_socket_hint(err: BackendError, socket: &str) -> BackendError {
    match err {
        BackendError::Connection {
            endpoint,
            mut message,
            source,
        } if !message.contains(DOCKER_GROUP_HINT) => {
            message.push_str(&format!(
                ". Check that Docker runs on the host and that the login user may open {socket}: {DOCKER_GROUP_HINT}"
            ));
            BackendError::Connection {
                endpoint,
                message,
                source,
            }
        }
        other => other,
    }
}

/// How a non-root login user gets access to the engine socket.
pub(crate) const DOCKER_GROUP_HINT: &str =
    "root, or a member of the `docker` group (`sudo usermod -aG docker USER`, then log in again)";

/// One tunnelled stream, as hyper's client wants it.
pub(crate) struct Tunnel(Box<dyn ByteStream>);

impl Connection for Tunnel {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl AsyncRead for Tunnel {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for Tunnel {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_host_is_parsed_like_the_cli() {
        assert_eq!(
            LocalEndpoint::from_docker_host(None).expect("default"),
            LocalEndpoint::Unix(DEFAULT_SOCKET.into())
        );
        assert_eq!(
            LocalEndpoint::from_docker_host(Some("")).expect("empty"),
            LocalEndpoint::Unix(DEFAULT_SOCKET.into())
        );
        assert_eq!(
            LocalEndpoint::from_docker_host(Some("unix:///run/user/1000/docker.sock"))
                .expect("unix"),
            LocalEndpoint::Unix("/run/user/1000/docker.sock".into())
        );
        assert_eq!(
            LocalEndpoint::from_docker_host(Some("tcp://127.0.0.1:2375")).expect("tcp"),
            LocalEndpoint::Tcp("127.0.0.1:2375".into())
        );
        let e = LocalEndpoint::from_docker_host(Some("ssh://me@box")).expect_err("ssh refused");
        assert!(e.to_string().contains("target = \"ssh\""), "{e}");
        assert!(LocalEndpoint::from_docker_host(Some("npipe:////./pipe/docker_engine")).is_err());
    }
}

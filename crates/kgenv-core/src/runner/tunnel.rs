//! Local tunnels: a TCP listener on this machine whose every connection is carried through
//! the host's SSH session ([`Remote::open_tcp`]) to a port on the host — what
//! `kgenv jupyter` and `Env.jupyter()` open so Jupyter needs no public port.
//!
//! ```no_run
//! # async fn demo(remote: std::sync::Arc<dyn kgenv_core::backends::Remote>) -> kgenv_core::backends::BackendResult<()> {
//! use kgenv_core::runner::tunnel::forward_local;
//! let fwd = forward_local(remote, "127.0.0.1:0".parse().unwrap(), "127.0.0.1", 8888).await?;
//! println!("Jupyter: http://{}/", fwd.local_addr());
//! fwd.closed().await; // serves until dropped or the listener fails
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

use crate::backends::{BackendResult, Remote};
use crate::error::BackendError;

/// A local TCP listener forwarding each connection to a port on the host. Stops (and drops
/// its connections) when dropped.
#[derive(Debug)]
pub struct LocalForward {
    local_addr: SocketAddr,
    task: JoinHandle<()>,
}

impl LocalForward {
    /// The address it listens on (the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Waits until the forward stops (it only stops when the listener fails or it is dropped).
    pub async fn closed(self) {
        let mut this = self;
        let _ = (&mut this.task).await;
    }
}

impl Drop for LocalForward {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Listens on `bind` and forwards every accepted connection through `remote` to
/// `target_host:target_port` as seen from the host. A connection whose tunnel cannot be
/// opened is closed and logged; the listener keeps serving.
pub async fn forward_local(
    remote: Arc<dyn Remote>,
    bind: SocketAddr,
    target_host: &str,
    target_port: u16,
) -> BackendResult<LocalForward> {
    let listener = TcpListener::bind(bind)
        .await
        .map_err(|e| BackendError::io(format!("listening on {bind} for the SSH tunnel"), e))?;
    let local_addr = listener
        .local_addr()
        .map_err(|e| BackendError::io("reading the tunnel's local address", e))?;
    let target_host = target_host.to_string();
    let task = tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (mut local, peer) = match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            tracing::warn!("tunnel listener {local_addr}: accept failed: {e}");
                            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    let remote = remote.clone();
                    let host = target_host.clone();
                    conns.spawn(async move {
                        match remote.open_tcp(&host, target_port).await {
                            Ok(mut stream) => {
                                let _ = local.set_nodelay(true);
                                if let Err(e) = tokio::io::copy_bidirectional(&mut local, &mut stream).await {
                                    tracing::debug!("tunnel {peer} -> {host}:{target_port} ended: {e}");
                                }
                            }
                            Err(e) => tracing::warn!("tunnel {peer} -> {host}:{target_port}: {e}"),
                        }
                    });
                }
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
    });
    Ok(LocalForward { local_addr, task })
}

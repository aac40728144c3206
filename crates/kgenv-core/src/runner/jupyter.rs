//! Jupyter from this machine: a local address for the environment's Jupyter — on `gce` and
//! `ssh` a tunnel through the host's SSH session (so no Jupyter port is public), on `local`
//! the port Docker publishes — with the URL, the certificate's fingerprint and, in token
//! mode, the token.

use super::tunnel::{forward_local, LocalForward};
use super::Runner;
use crate::error::{Error, Result};
use crate::jupyter::{access, JupyterAccess};

/// A local address for Jupyter. A tunnel serves until it is dropped or [`close`]d.
///
/// [`close`]: JupyterTunnel::close
#[derive(Debug)]
pub struct JupyterTunnel {
    access: JupyterAccess,
    port: u16,
    forward: Option<LocalForward>,
}

impl JupyterTunnel {
    /// `https://127.0.0.1:PORT/` (`http://` when TLS is off). Holds no secret.
    pub fn url(&self) -> &str {
        &self.access.url
    }

    /// The URL to open in a browser: with `?token=` in token mode (a secret: do not log it).
    pub fn browser_url(&self) -> String {
        self.access.browser_url()
    }

    /// The local port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// SHA-256 fingerprint of Jupyter's certificate (`AB:CD:…`), to compare with the
    /// browser's warning.
    pub fn cert_sha256(&self) -> Option<&str> {
        self.access.cert_sha256.as_deref()
    }

    /// Whether the certificate is kgenv's self-signed one (browsers warn about it).
    pub fn self_signed(&self) -> bool {
        self.access.self_signed
    }

    /// Whether Jupyter runs in token mode (the token is in [`browser_url`]).
    ///
    /// [`browser_url`]: JupyterTunnel::browser_url
    pub fn token_mode(&self) -> bool {
        self.access.token.is_some()
    }

    /// Whether this is an SSH tunnel (false: Docker publishes the port on this machine).
    pub fn tunnelled(&self) -> bool {
        self.forward.is_some()
    }

    /// Stops accepting connections and closes the open ones.
    pub fn close(self) {}

    /// Serves until the tunnel stops (its listener failed); returns at once when it is not
    /// a tunnel.
    pub async fn closed(self) {
        if let Some(f) = self.forward {
            f.closed().await;
        }
    }
}

impl Runner {
    /// Opens a local address for the environment's Jupyter: on `gce`/`ssh` a tunnel through
    /// the host's SSH session listening on 127.0.0.1:`local_port` (0 picks a free port), on
    /// `local` the port Docker publishes.
    pub async fn jupyter(&self, local_port: u16) -> Result<JupyterTunnel> {
        let env = &self.env;
        let usage = |m: String| Error::Usage(m);
        let jupyter = env
            .jupyter
            .as_ref()
            .ok_or_else(|| usage(format!("`{}` has no [jupyter] section", env.name)))?;
        let publish = env
            .container
            .as_ref()
            .and_then(|c| {
                c.ports
                    .iter()
                    .find(|p| p.container == u32::from(jupyter.port))
            })
            .ok_or_else(|| {
                usage(format!(
                    "`{}`'s [container] does not publish Jupyter's port {}",
                    env.name, jupyter.port
                ))
            })?;
        let host_port = u16::try_from(publish.host.unwrap_or(publish.container))
            .map_err(|_| usage("Jupyter's published port is out of range".into()))?;
        // Docker publishes on `bind` on the host; a wildcard is reached on loopback.
        let bind = match publish.bind.as_deref() {
            None | Some("0.0.0.0") | Some("::") => "127.0.0.1".to_string(),
            Some(b) => b.to_string(),
        };
        let Some(remote) = self.connect_host().await? else {
            return Ok(JupyterTunnel {
                access: access(env, host_port)?,
                port: host_port,
                forward: None,
            });
        };
        let local = std::net::SocketAddr::from(([127, 0, 0, 1], local_port));
        let forward = forward_local(remote, local, &bind, host_port).await?;
        let port = forward.local_addr().port();
        Ok(JupyterTunnel {
            access: access(env, port)?,
            port,
            forward: Some(forward),
        })
    }
}

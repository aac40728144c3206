//! Jupyter's configuration as kgenv writes it: the file names in its directory, where that
//! directory is inside the container, and the jupyter_server 2.x config for a spec
//! ([`render_config`]), public so tests can start the real server with exactly this.

use serde_json::{json, Value};

use crate::spec::{Jupyter, JupyterAuth, JupyterTls};

/// Where the Jupyter config directory is mounted inside the container.
pub const JUPYTER_DIR_IN_CONTAINER: &str = "/etc/kgenv/jupyter";
/// The config file's name in the Jupyter directory.
pub const CONFIG_FILE: &str = "jupyter_server_config.json";
/// The file holding the token the idle agent uses to read `/api/status` (0600).
pub const AGENT_TOKEN_FILE: &str = "agent-token";

/// Where the server runs: what the config's addresses and paths are, as the server sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JupyterLayout {
    /// Listen address. Inside the container `0.0.0.0` (Docker publishes the port on the
    /// host's 127.0.0.1 by default, so nothing is reachable from outside the host).
    pub ip: String,
    /// Port to listen on.
    pub port: u16,
    /// The directory holding the config, `cert.pem` and `key.pem`.
    pub config_dir: String,
    /// Notebook root.
    pub root_dir: String,
}

impl JupyterLayout {
    /// The layout inside kgenv's container for `spec`.
    pub fn in_container(spec: &Jupyter) -> Self {
        Self {
            ip: "0.0.0.0".into(),
            port: spec.port,
            config_dir: JUPYTER_DIR_IN_CONTAINER.into(),
            root_dir: spec.root_dir.clone(),
        }
    }
}

/// The jupyter_server 2.x config for `spec`: `secret` is the argon2 hash (password mode) or
/// the token (token mode); `agent_token`, when given in password mode, is a second
/// credential for the host's idle agent to read `/api/status`.
pub fn render_config(
    spec: &Jupyter,
    secret: &str,
    agent_token: Option<&str>,
    layout: &JupyterLayout,
) -> Value {
    let mut server = json!({
        "ip": layout.ip,
        "port": layout.port,
        "port_retries": 0,
        "open_browser": false,
        "allow_root": true,
        "root_dir": layout.root_dir,
    });
    if spec.tls != JupyterTls::Off {
        server["certfile"] = json!(format!("{}/cert.pem", layout.config_dir));
        server["keyfile"] = json!(format!("{}/key.pem", layout.config_dir));
    }
    match &spec.auth {
        JupyterAuth::Password { .. } => json!({
            "ServerApp": server,
            "IdentityProvider": { "token": agent_token.unwrap_or("") },
            "PasswordIdentityProvider": { "hashed_password": secret, "password_required": true },
        }),
        JupyterAuth::Token => {
            json!({ "ServerApp": server, "IdentityProvider": { "token": secret } })
        }
    }
}

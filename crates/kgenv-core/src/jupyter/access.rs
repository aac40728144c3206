//! How to reach an environment's Jupyter from this machine, for `kgenv jupyter`: the URL at
//! the tunnel's local end, the certificate's fingerprint from the copy kgenv keeps, and in
//! token mode the token (a secret, redacted from `Debug`).

use super::tls::{certificate_sha256, local_cert_paths};
use super::token::user_token;
use crate::error::{BackendError, Result, ValidationError};
use crate::spec::{Env, JupyterAuth, JupyterTls};

/// How to reach Jupyter from this machine, for `kgenv jupyter`.
#[derive(Clone, PartialEq, Eq)]
pub struct JupyterAccess {
    /// `https://127.0.0.1:PORT/` (or `http://` when TLS is off), PORT being the tunnel's
    /// local end. Holds no secret.
    pub url: String,
    /// SHA-256 fingerprint of the certificate (`AB:CD:…`), to compare with the browser's
    /// warning for a self-signed certificate.
    pub cert_sha256: Option<String>,
    /// Whether the certificate is kgenv's self-signed one.
    pub self_signed: bool,
    /// Token mode: the token (a secret: shown only on request, never logged).
    pub token: Option<String>,
}

impl std::fmt::Debug for JupyterAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JupyterAccess")
            .field("url", &self.url)
            .field("cert_sha256", &self.cert_sha256)
            .field("self_signed", &self.self_signed)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl JupyterAccess {
    /// The URL to open in a browser: with `?token=` in token mode (do not log it).
    pub fn browser_url(&self) -> String {
        match &self.token {
            Some(t) => format!("{}?token={t}", self.url),
            None => self.url.clone(),
        }
    }
}

/// How to reach `env`'s Jupyter through a tunnel whose local end is `local_port`: the URL,
/// the certificate's fingerprint (from the local copy kgenv keeps) and, in token mode, the
/// token. Fails when `env` has no Jupyter.
pub fn access(env: &Env, local_port: u16) -> Result<JupyterAccess> {
    let spec = env.jupyter.as_ref().ok_or_else(|| {
        ValidationError::new("jupyter", "this environment has no [jupyter] section")
    })?;
    let scheme = if spec.tls == JupyterTls::Off {
        "http"
    } else {
        "https"
    };
    let cert = match &spec.tls {
        JupyterTls::Off => None,
        JupyterTls::SelfSigned => Some(
            std::fs::read_to_string(local_cert_paths(&env.name)?.0).map_err(|e| {
                BackendError::io("reading the Jupyter certificate (run `kgenv up` first)", e)
            })?,
        ),
        JupyterTls::Files { cert, .. } => Some(
            std::fs::read_to_string(cert)
                .map_err(|e| BackendError::io(format!("reading jupyter.tls file {cert}"), e))?,
        ),
    };
    Ok(JupyterAccess {
        url: format!("{scheme}://127.0.0.1:{local_port}/"),
        cert_sha256: cert.as_deref().map(certificate_sha256).transpose()?,
        self_signed: spec.tls == JupyterTls::SelfSigned,
        token: match spec.auth {
            JupyterAuth::Token => Some(user_token(&env.name)?),
            JupyterAuth::Password { .. } => None,
        },
    })
}

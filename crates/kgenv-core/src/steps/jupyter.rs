//! Guide step 4: Jupyter, never without authentication. The password is hashed here in
//! jupyter_server's argon2 format, so the plaintext never leaves the user's machine; TLS
//! uses a self-signed certificate kgenv makes (or the user's); the server runs inside the
//! container under a supervisor loop ([`supervisor_command`]: restarted when it exits or its
//! files change) and is reached through `kgenv jupyter`'s tunnel ([`access`]).
//!
//! The rendering functions ([`render_config`], [`self_signed_certificate`]) are public so
//! the tests can start the real jupyter_server from PyPI with exactly what kgenv writes.

use async_trait::async_trait;
use serde_json::{json, Value};

use super::container::JUPYTER_DIR_IN_CONTAINER;
use super::hostfs::HostFs;
use crate::error::{BackendError, Result, ValidationError};
use crate::plan::{CheckOutcome, Destroyed, Step, StepCtx};
use crate::shell::quote;
use crate::spec::{Env, Jupyter, JupyterAuth, JupyterTls};

/// The config file's name in the Jupyter directory.
pub const CONFIG_FILE: &str = "jupyter_server_config.json";
/// The file holding the token the idle agent uses to read `/api/status` (0600).
pub const AGENT_TOKEN_FILE: &str = "agent-token";

/// Hashes `password` as jupyter_server's `passwd()` does: `argon2:` followed by an argon2id
/// PHC string with memory 10240 KiB, 10 passes, parallelism 8.
pub fn hash_password(password: &str) -> Result<String, BackendError> {
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
    let params = argon2::Params::new(10_240, 10, 8, Some(32))
        .map_err(|e| BackendError::other(e.to_string()))?;
    let hasher = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = SaltString::generate(&mut OsRng);
    let phc = hasher
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| BackendError::other(format!("hashing the Jupyter password: {e}")))?;
    Ok(format!("argon2:{phc}"))
}

/// Checks `password` against a hash made by [`hash_password`] (or by jupyter_server).
pub fn verify_password(password: &str, hashed: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    let Some(phc) = hashed.strip_prefix("argon2:") else {
        return false;
    };
    PasswordHash::new(phc).is_ok_and(|h| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

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

/// A self-signed certificate and its private key (PEM) for `names` (DNS names or IP
/// addresses, each becoming a subject alternative name).
pub fn self_signed_certificate(names: &[String]) -> Result<(String, String), BackendError> {
    let ck = rcgen::generate_simple_self_signed(names.to_vec())
        .map_err(|e| BackendError::other(format!("generating the Jupyter certificate: {e}")))?;
    Ok((ck.cert.pem(), ck.signing_key.serialize_pem()))
}

/// The SHA-256 fingerprint of the first certificate in `pem`, as browsers and
/// `openssl x509 -fingerprint -sha256` show it (`AB:CD:…`).
pub fn certificate_sha256(pem: &str) -> Result<String, BackendError> {
    use rustls_pki_types::pem::PemObject;
    use sha2::Digest;
    let der = rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| BackendError::other(format!("reading the Jupyter certificate: {e}")))?;
    Ok(sha2::Sha256::digest(der.as_ref())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":"))
}

/// The supervisor loop the container runs: starts Jupyter once its config is there,
/// restarts it when it exits (a crash) or when a file of `config_dir` changes (a new
/// password or certificate), and stops it on `docker stop`.
pub fn supervisor_command(config_dir: &str) -> String {
    let d = quote(config_dir);
    format!(
        "trap 'kill \"$pid\" 2>/dev/null; exit 0' TERM INT; pid=; \
         while :; do \
           if [ -f {d}/{CONFIG_FILE} ]; then \
             stamp=$(cat {d}/* 2>/dev/null | cksum); \
             jupyter server --config={d}/{CONFIG_FILE} & pid=$!; \
             while kill -0 \"$pid\" 2>/dev/null; do \
               sleep 2; \
               if [ \"$(cat {d}/* 2>/dev/null | cksum)\" != \"$stamp\" ]; then kill \"$pid\"; fi; \
             done; \
             wait \"$pid\"; \
           fi; \
           sleep 2; \
         done"
    )
}

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
    let step = JupyterStep::new(env, spec.clone());
    let scheme = if spec.tls == JupyterTls::Off {
        "http"
    } else {
        "https"
    };
    let cert = match &spec.tls {
        JupyterTls::Off => None,
        JupyterTls::SelfSigned => Some(
            std::fs::read_to_string(step.local_cert_paths().0).map_err(|e| {
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
            JupyterAuth::Token => Some(step.token()?),
            JupyterAuth::Password { .. } => None,
        },
    })
}

/// Writes Jupyter's config (and certificate) where the container reads it.
pub struct JupyterStep {
    env: String,
    spec: Jupyter,
    dir: String,
    with_agent: bool,
    published_on: Vec<String>,
    deps: Vec<String>,
}

impl JupyterStep {
    /// The step for `spec` in `env`.
    pub fn new(env: &Env, spec: Jupyter) -> Self {
        let published_on = env
            .container
            .iter()
            .flat_map(|c| c.ports.iter())
            .filter(|p| p.container == u32::from(spec.port))
            .map(|p| {
                format!(
                    "{}:{}",
                    p.bind.as_deref().unwrap_or("127.0.0.1"),
                    p.host.unwrap_or(p.container)
                )
            })
            .collect();
        Self {
            env: env.name.clone(),
            spec,
            dir: format!("{}/jupyter", env.host_dir()),
            with_agent: env.autostop.is_some(),
            published_on,
            deps: vec!["container".into()],
        }
    }

    fn config_path(&self) -> String {
        format!("{}/{CONFIG_FILE}", self.dir)
    }

    fn secret_of(config: &Value) -> Option<&str> {
        config
            .pointer("/PasswordIdentityProvider/hashed_password")
            .or_else(|| config.pointer("/IdentityProvider/token"))
            .and_then(Value::as_str)
    }

    fn password(&self) -> Result<Option<String>> {
        match &self.spec.auth {
            JupyterAuth::Password { env } => match std::env::var(env) {
                Ok(p) if !p.is_empty() => Ok(Some(p)),
                _ => Err(ValidationError::new("jupyter.password_env", format!("export {env} with the Jupyter password (it is hashed here; the plaintext never leaves this machine)")).into()),
            },
            JupyterAuth::Token => Ok(None),
        }
    }

    /// A random token made once and kept (0600) in the environment's key dir as `name`.
    fn kept_token(&self, name: &str) -> Result<String> {
        let path = crate::paths::keys_dir(&self.env).join(name);
        if let Ok(t) = std::fs::read_to_string(&path) {
            if !t.trim().is_empty() {
                return Ok(t.trim().to_string());
            }
        }
        let mut bytes = [0u8; 24];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
        let token = hex::encode(bytes);
        crate::paths::write_atomic(&path, token.as_bytes(), 0o600)
            .map_err(|e| BackendError::io(format!("writing {}", path.display()), e))?;
        Ok(token)
    }

    /// The token for token mode.
    fn token(&self) -> Result<String> {
        self.kept_token("jupyter-token")
    }

    /// The token the host's idle agent reads `/api/status` with: the user's token in token
    /// mode, a separate one in password mode; `None` without autostop.
    fn agent_token(&self) -> Result<Option<String>> {
        if !self.with_agent {
            return Ok(None);
        }
        Ok(Some(match self.spec.auth {
            JupyterAuth::Token => self.token()?,
            JupyterAuth::Password { .. } => self.kept_token("jupyter-agent-token")?,
        }))
    }

    fn render(&self, secret: &str, agent_token: Option<&str>) -> Value {
        let agent = match self.spec.auth {
            JupyterAuth::Password { .. } => agent_token,
            JupyterAuth::Token => None,
        };
        render_config(
            &self.spec,
            secret,
            agent,
            &JupyterLayout::in_container(&self.spec),
        )
    }

    fn local_cert_paths(&self) -> (std::path::PathBuf, std::path::PathBuf) {
        let dir = crate::paths::keys_dir(&self.env);
        (dir.join("jupyter-cert.pem"), dir.join("jupyter-key.pem"))
    }

    /// The TLS certificate and key (PEM): generated once per environment and kept (key 0600).
    fn certificate(&self, ctx_ip: Option<&str>) -> Result<Option<(String, String)>> {
        match &self.spec.tls {
            JupyterTls::Off => Ok(None),
            JupyterTls::Files { cert, key } => {
                let read = |p: &str| {
                    std::fs::read_to_string(p)
                        .map_err(|e| BackendError::io(format!("reading jupyter.tls file {p}"), e))
                };
                Ok(Some((read(cert)?, read(key)?)))
            }
            JupyterTls::SelfSigned => {
                let (cert_path, key_path) = self.local_cert_paths();
                if let (Ok(c), Ok(k)) = (
                    std::fs::read_to_string(&cert_path),
                    std::fs::read_to_string(&key_path),
                ) {
                    return Ok(Some((c, k)));
                }
                let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
                names.extend(ctx_ip.map(str::to_string));
                let (c, k) = self_signed_certificate(&names)?;
                crate::paths::write_atomic(&key_path, k.as_bytes(), 0o600)
                    .map_err(|e| BackendError::io("writing the Jupyter key", e))?;
                crate::paths::write_atomic(&cert_path, c.as_bytes(), 0o644)
                    .map_err(|e| BackendError::io("writing the Jupyter certificate", e))?;
                Ok(Some((c, k)))
            }
        }
    }
}

#[async_trait]
impl Step for JupyterStep {
    fn id(&self) -> &str {
        "jupyter"
    }
    fn deps(&self) -> &[String] {
        &self.deps
    }
    fn summary(&self) -> String {
        let auth = match &self.spec.auth {
            JupyterAuth::Password { env } => format!("password from ${env}, argon2-hashed locally"),
            JupyterAuth::Token => "token".into(),
        };
        format!(
            "Jupyter on port {} ({auth}, TLS {:?}), published on {}",
            self.spec.port,
            self.spec.tls,
            self.published_on.join(", ")
        )
    }
    fn warnings(&self) -> Vec<String> {
        let open: Vec<&String> = self
            .published_on
            .iter()
            .filter(|b| !(b.starts_with("127.") || b.starts_with("[::1]") || b.starts_with("::1")))
            .collect();
        if open.is_empty() {
            return Vec::new();
        }
        let tls = if self.spec.tls == JupyterTls::Off {
            " WITHOUT TLS (passwords cross the network in clear)"
        } else {
            ""
        };
        vec![format!("Jupyter is published on {} — reachable beyond the host{tls}; the default (127.0.0.1, through `kgenv jupyter`'s tunnel) keeps it private", open.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "))]
    }
    fn planned_actions(&self) -> Vec<String> {
        vec![format!(
            "host: write {} (mode 0600) and the TLS files",
            self.config_path()
        )]
    }
    async fn preflight(&self, ctx: &StepCtx) -> Result<()> {
        // Once applied, `check` can live without the password (it just cannot verify it);
        // the first run needs it to hash.
        let applied = ctx
            .state
            .snapshot()
            .await
            .step("jupyter")
            .is_some_and(|r| !r.created.is_empty());
        if !applied {
            self.password()?;
        }
        if let JupyterTls::Files { cert, key } = &self.spec.tls {
            for (field, p) in [("jupyter.cert", cert), ("jupyter.key", key)] {
                if !std::path::Path::new(p).is_file() {
                    return Err(
                        ValidationError::new(field, format!("{p} is not a readable file")).into(),
                    );
                }
            }
        }
        Ok(())
    }
    async fn check(&self, ctx: &StepCtx) -> Result<CheckOutcome> {
        let fs = HostFs::of(ctx).await?;
        let Some(bytes) = fs.read(&self.config_path()).await? else {
            return Ok(CheckOutcome::missing(self.planned_actions()));
        };
        let have: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let secret = Self::secret_of(&have).unwrap_or_default().to_string();
        let agent = self.agent_token()?;
        let mut diff = Vec::new();
        if self.render(&secret, agent.as_deref()) != have {
            diff.push("configuration differs".to_string());
        }
        match &self.spec.auth {
            // Without the password at hand we cannot tell; do not force a change.
            JupyterAuth::Password { env } => {
                if let Ok(p) = std::env::var(env) {
                    if !p.is_empty() && !verify_password(&p, &secret) {
                        diff.push(format!("password: ${env} changed"));
                    }
                }
            }
            JupyterAuth::Token => {
                if self.token()? != secret {
                    diff.push("token changed".into());
                }
            }
        }
        if self.with_agent
            && fs
                .read(&format!("{}/{AGENT_TOKEN_FILE}", self.dir))
                .await?
                .map(|b| String::from_utf8_lossy(&b).trim().to_string())
                != agent
        {
            diff.push("idle agent's token missing".into());
        }
        Ok(if diff.is_empty() {
            CheckOutcome::satisfied()
        } else {
            CheckOutcome::drifted(diff, self.planned_actions())
        })
    }
    async fn apply(&self, ctx: &StepCtx) -> Result<()> {
        let secret = match self.password()? {
            Some(p) => hash_password(&p)?,
            None => self.token()?,
        };
        let agent = self.agent_token()?;
        let ip = ctx
            .state
            .snapshot()
            .await
            .fact("instance", "external_ip")
            .map(str::to_string);
        let fs = HostFs::of(ctx).await?;
        fs.mkdirs(&[&self.dir]).await?;
        if let Some((cert, key)) = self.certificate(ip.as_deref())? {
            fs.write(&format!("{}/cert.pem", self.dir), cert.as_bytes(), 0o644)
                .await?;
            fs.write(&format!("{}/key.pem", self.dir), key.as_bytes(), 0o600)
                .await?;
        }
        if let Some(t) = &agent {
            fs.write(
                &format!("{}/{AGENT_TOKEN_FILE}", self.dir),
                t.as_bytes(),
                0o600,
            )
            .await?;
        }
        // The config last: the supervisor starts (or restarts) Jupyter when it changes.
        let config = serde_json::to_vec_pretty(&self.render(&secret, agent.as_deref()))
            .map_err(|e| BackendError::other(e.to_string()))?;
        fs.write(&self.config_path(), &config, 0o600).await?;
        ctx.state
            .update("jupyter", |r| {
                r.created.insert("config".into(), self.config_path());
            })
            .await?;
        Ok(())
    }
    async fn destroy(&self, ctx: &StepCtx) -> Result<Destroyed> {
        let state = ctx.state.snapshot().await;
        if state.step("jupyter").is_none_or(|r| r.created.is_empty()) {
            return Ok(Destroyed::Nothing);
        }
        HostFs::of(ctx).await?.remove(&self.dir).await?;
        ctx.state
            .update("jupyter", |r| *r = Default::default())
            .await?;
        Ok(Destroyed::Removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_has_jupyter_format_and_verifies() {
        let h = hash_password("s3cret pass").expect("hash");
        assert!(
            h.starts_with("argon2:$argon2id$v=19$m=10240,t=10,p=8$"),
            "{h}"
        );
        assert!(verify_password("s3cret pass", &h));
        assert!(!verify_password("wrong", &h));
        assert_ne!(h, hash_password("s3cret pass").expect("hash"), "salted");
    }

    #[test]
    fn fingerprint_is_sha256_of_der() {
        let (cert, _) = self_signed_certificate(&["localhost".into()]).expect("cert");
        let fp = certificate_sha256(&cert).expect("fingerprint");
        assert_eq!(fp.len(), 32 * 3 - 1, "{fp}");
        assert!(
            fp.chars().all(|c| c == ':' || c.is_ascii_hexdigit()),
            "{fp}"
        );
        let (other, _) = self_signed_certificate(&["localhost".into()]).expect("cert");
        assert_ne!(certificate_sha256(&other).expect("fp"), fp);
    }
}

//! Guide step 4: Jupyter, never without authentication. The password is hashed here in
//! jupyter_server's argon2 format, so the plaintext never leaves the user's machine; TLS
//! uses a self-signed certificate kgenv makes (or the user's); the server runs inside the
//! container under its supervisor loop and is reached through `kgenv jupyter`'s tunnel.

use async_trait::async_trait;
use serde_json::{json, Value};

use super::container::JUPYTER_DIR_IN_CONTAINER;
use super::hostfs::HostFs;
use crate::error::{BackendError, Result, ValidationError};
use crate::plan::{CheckOutcome, Destroyed, Step, StepCtx};
use crate::spec::{Env, Jupyter, JupyterAuth, JupyterTls};

/// Hashes `password` as jupyter_server's `passwd()` does: `argon2:` followed by an argon2id
/// PHC string with memory 10240 KiB, 10 passes, parallelism 8.
pub fn hash_password(password: &str) -> Result<String, BackendError> {
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
    let params = argon2::Params::new(10_240, 10, 8, Some(32)).map_err(|e| BackendError::other(e.to_string()))?;
    let hasher = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = SaltString::generate(&mut OsRng);
    let phc = hasher.hash_password(password.as_bytes(), &salt).map_err(|e| BackendError::other(format!("hashing the Jupyter password: {e}")))?;
    Ok(format!("argon2:{phc}"))
}

/// Checks `password` against a hash made by [`hash_password`] (or by jupyter_server).
pub fn verify_password(password: &str, hashed: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    let Some(phc) = hashed.strip_prefix("argon2:") else { return false };
    PasswordHash::new(phc).is_ok_and(|h| argon2::Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

/// Writes Jupyter's config (and certificate) where the container reads it.
pub struct JupyterStep {
    env: String,
    spec: Jupyter,
    dir: String,
    deps: Vec<String>,
}

impl JupyterStep {
    /// The step for `spec` in `env`.
    pub fn new(env: &Env, spec: Jupyter) -> Self {
        Self { env: env.name.clone(), spec, dir: format!("{}/jupyter", env.host_dir()), deps: vec!["container".into()] }
    }

    fn config_path(&self) -> String {
        format!("{}/jupyter_server_config.json", self.dir)
    }

    /// The config with `secret` as hashed password or token.
    fn render(&self, secret: &str) -> Value {
        let mut server = json!({
            "ip": "0.0.0.0",
            "port": self.spec.port,
            "open_browser": false,
            "allow_root": true,
            "root_dir": self.spec.root_dir,
        });
        if self.spec.tls != JupyterTls::Off {
            server["certfile"] = json!(format!("{JUPYTER_DIR_IN_CONTAINER}/cert.pem"));
            server["keyfile"] = json!(format!("{JUPYTER_DIR_IN_CONTAINER}/key.pem"));
        }
        match &self.spec.auth {
            JupyterAuth::Password { .. } => json!({
                "ServerApp": server,
                "IdentityProvider": { "token": "" },
                "PasswordIdentityProvider": { "hashed_password": secret, "password_required": true },
            }),
            JupyterAuth::Token => json!({ "ServerApp": server, "IdentityProvider": { "token": secret } }),
        }
    }

    fn secret_of(config: &Value) -> Option<&str> {
        config.pointer("/PasswordIdentityProvider/hashed_password").or_else(|| config.pointer("/IdentityProvider/token")).and_then(Value::as_str)
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

    /// The token for token mode, made once and kept (0600) in the config dir.
    fn token(&self) -> Result<String> {
        let path = crate::paths::keys_dir(&self.env).join("jupyter-token");
        if let Ok(t) = std::fs::read_to_string(&path) {
            return Ok(t.trim().to_string());
        }
        let mut bytes = [0u8; 24];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
        let token = hex::encode(bytes);
        crate::paths::write_atomic(&path, token.as_bytes(), 0o600).map_err(|e| BackendError::io(format!("writing {}", path.display()), e))?;
        Ok(token)
    }

    /// The TLS certificate and key (PEM): generated once per environment and kept (key 0600).
    fn certificate(&self, ctx_ip: Option<&str>) -> Result<Option<(String, String)>> {
        match &self.spec.tls {
            JupyterTls::Off => Ok(None),
            JupyterTls::Files { cert, key } => {
                let read = |p: &str| std::fs::read_to_string(p).map_err(|e| BackendError::io(format!("reading jupyter.tls file {p}"), e));
                Ok(Some((read(cert)?, read(key)?)))
            }
            JupyterTls::SelfSigned => {
                let dir = crate::paths::keys_dir(&self.env);
                let (cert_path, key_path) = (dir.join("jupyter-cert.pem"), dir.join("jupyter-key.pem"));
                if let (Ok(c), Ok(k)) = (std::fs::read_to_string(&cert_path), std::fs::read_to_string(&key_path)) {
                    return Ok(Some((c, k)));
                }
                let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
                names.extend(ctx_ip.map(str::to_string));
                let ck = rcgen::generate_simple_self_signed(names).map_err(|e| BackendError::other(format!("generating the Jupyter certificate: {e}")))?;
                let (c, k) = (ck.cert.pem(), ck.signing_key.serialize_pem());
                crate::paths::write_atomic(&key_path, k.as_bytes(), 0o600).map_err(|e| BackendError::io("writing the Jupyter key", e))?;
                crate::paths::write_atomic(&cert_path, c.as_bytes(), 0o644).map_err(|e| BackendError::io("writing the Jupyter certificate", e))?;
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
        format!("Jupyter on port {} ({auth}, TLS {:?})", self.spec.port, self.spec.tls)
    }
    fn planned_actions(&self) -> Vec<String> {
        vec![format!("host: write {} (mode 0600) and the TLS files", self.config_path())]
    }
    async fn preflight(&self, ctx: &StepCtx) -> Result<()> {
        // Once applied, `check` can live without the password (it just cannot verify it);
        // the first run needs it to hash.
        let applied = ctx.state.snapshot().await.step("jupyter").is_some_and(|r| !r.created.is_empty());
        if !applied {
            self.password()?;
        }
        if let JupyterTls::Files { cert, key } = &self.spec.tls {
            for (field, p) in [("jupyter.cert", cert), ("jupyter.key", key)] {
                if !std::path::Path::new(p).is_file() {
                    return Err(ValidationError::new(field, format!("{p} is not a readable file")).into());
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
        let mut diff = Vec::new();
        if self.render(&secret) != have {
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
        Ok(if diff.is_empty() { CheckOutcome::satisfied() } else { CheckOutcome::drifted(diff, self.planned_actions()) })
    }
    async fn apply(&self, ctx: &StepCtx) -> Result<()> {
        let secret = match self.password()? {
            Some(p) => hash_password(&p)?,
            None => self.token()?,
        };
        let ip = ctx.state.snapshot().await.fact("instance", "external_ip").map(str::to_string);
        let fs = HostFs::of(ctx).await?;
        fs.mkdirs(&[&self.dir]).await?;
        if let Some((cert, key)) = self.certificate(ip.as_deref())? {
            fs.write(&format!("{}/cert.pem", self.dir), cert.as_bytes(), 0o644).await?;
            fs.write(&format!("{}/key.pem", self.dir), key.as_bytes(), 0o600).await?;
        }
        let config = serde_json::to_vec_pretty(&self.render(&secret)).map_err(|e| BackendError::other(e.to_string()))?;
        fs.write(&self.config_path(), &config, 0o600).await?;
        ctx.state.update("jupyter", |r| {
            r.created.insert("config".into(), self.config_path());
        }).await?;
        Ok(())
    }
    async fn destroy(&self, ctx: &StepCtx) -> Result<Destroyed> {
        let state = ctx.state.snapshot().await;
        if state.step("jupyter").is_none_or(|r| r.created.is_empty()) {
            return Ok(Destroyed::Nothing);
        }
        HostFs::of(ctx).await?.remove(&self.dir).await?;
        ctx.state.update("jupyter", |r| *r = Default::default()).await?;
        Ok(Destroyed::Removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_has_jupyter_format_and_verifies() {
        let h = hash_password("s3cret pass").expect("hash");
        assert!(h.starts_with("argon2:$argon2id$v=19$m=10240,t=10,p=8$"), "{h}");
        assert!(verify_password("s3cret pass", &h));
        assert!(!verify_password("wrong", &h));
        assert_ne!(h, hash_password("s3cret pass").expect("hash"), "salted");
    }
}

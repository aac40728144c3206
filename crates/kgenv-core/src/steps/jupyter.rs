//! Guide step 4: Jupyter, never without authentication. This step writes Jupyter's config,
//! certificate and the idle agent's token where the container reads them; what goes in
//! them — the argon2 hash, the self-signed certificate, the config, the supervisor loop
//! the container runs, and how `kgenv jupyter` reaches the server — is [`crate::jupyter`].

use async_trait::async_trait;
use serde_json::Value;

use super::hostfs::HostFs;
use crate::error::{BackendError, Result, ValidationError};
use crate::jupyter::{
    agent_token, certificate, existing_certificate, existing_token, hash_password, render_config,
    user_token, verify_password, JupyterLayout, AGENT_TOKEN_FILE, CONFIG_FILE,
};
use crate::plan::{CheckOutcome, Destroyed, Step, StepCtx};
use crate::spec::{Env, Jupyter, JupyterAuth, JupyterTls};

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

    /// The token for token mode.
    fn token(&self) -> Result<String> {
        user_token(&self.env)
    }

    /// The token the host's idle agent reads `/api/status` with; `None` without autostop.
    fn agent_token(&self) -> Result<Option<String>> {
        if !self.with_agent {
            return Ok(None);
        }
        agent_token(&self.env, &self.spec.auth).map(Some)
    }

    /// The tokens `check` compares with: made now when missing, except in a run that only
    /// looks, which takes only those already kept (`None`: not made yet).
    fn tokens_seen(&self, ctx: &StepCtx) -> Result<(Option<String>, Option<String>)> {
        if !ctx.is_read_only() {
            let user = match self.spec.auth {
                JupyterAuth::Token => Some(self.token()?),
                JupyterAuth::Password { .. } => None,
            };
            return Ok((user, self.agent_token()?));
        }
        let user = existing_token(&self.env, &self.spec.auth, true);
        let agent = self
            .with_agent
            .then(|| existing_token(&self.env, &self.spec.auth, false))
            .flatten();
        Ok((user, agent))
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

    /// The TLS certificate and key (PEM): generated once per environment and kept (key 0600).
    fn certificate(&self, host_ip: Option<&str>) -> Result<Option<(String, String)>> {
        certificate(&self.env, &self.spec.tls, host_ip)
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
        let (user, agent) = self.tokens_seen(ctx)?;
        let mut diff = Vec::new();
        if self.with_agent && agent.is_none() {
            diff.push(
                "no token for the idle agent kept on this machine yet (`up` makes one)".to_string(),
            );
        } else if self.render(&secret, agent.as_deref()) != have {
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
            JupyterAuth::Token => match user {
                Some(t) if t == secret => {}
                Some(_) => diff.push("token changed".into()),
                None => diff.push("no token kept on this machine yet (`up` makes one)".into()),
            },
        }
        if self.spec.tls != JupyterTls::Off {
            // The host's copy can outlive this machine's (a kept data disk, a new checkout):
            // a certificate that differs from the one kgenv trusts breaks every connection.
            let host_cert = fs.read(&format!("{}/cert.pem", self.dir)).await?;
            match existing_certificate(&self.env, &self.spec.tls) {
                None => {
                    diff.push("no certificate kept on this machine yet (`up` makes one)".into())
                }
                Some(local) if host_cert.as_deref() != Some(local.as_bytes()) => {
                    diff.push("the host's certificate is not the one kgenv keeps".into());
                }
                Some(_) => {}
            }
        }
        if self.with_agent
            && agent.is_some()
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

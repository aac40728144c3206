//! The `host` step: reach the machine the rest runs on — log in over SSH with a verified
//! host key (gce, ssh), or find the local Docker engine (local).

use async_trait::async_trait;

use crate::backends::no_progress;
use crate::backends::remote::{ExecRequest, HostAddr};
use crate::error::{BackendError, Result};
use crate::plan::{CheckOutcome, Destroyed, Step, StepCtx};
use crate::spec::{Env, Target};
use crate::state::State;

/// How to reach `env`'s host given its recorded `state`: from the spec (ssh) or from what
/// the instance step recorded (gce: external IP, host keys from guest attributes). The
/// runner hands it to the engine as the run's [`crate::plan::HostLocator`].
pub fn addr_for(env: &Env, state: &State) -> Result<HostAddr> {
    let key = || crate::keys::private_key_path(&env.name);
    match &env.target {
        Target::Ssh(h) => Ok(HostAddr {
            user: h.user.clone(),
            host: h.host.clone(),
            port: h.port,
            identity_file: Some(match &h.identity_file {
                Some(p) => p.into(),
                None => key()?,
            }),
            pinned_host_keys: Vec::new(),
            trust_on_first_use: h.trust_on_first_use,
        }),
        Target::Gce => {
            let ip = state
                .fact("instance", "external_ip")
                .ok_or_else(|| no_instance_address(&env.name))?;
            let pinned = state
                .fact("instance", "host_keys")
                .map(|k| k.lines().map(str::to_string).collect())
                .unwrap_or_default();
            Ok(HostAddr {
                user: crate::keys::GCE_USER.into(),
                host: ip.to_string(),
                port: gce_ssh_port(),
                identity_file: Some(key()?),
                pinned_host_keys: pinned,
                trust_on_first_use: false,
            })
        }
        Target::Local => Err(BackendError::Unavailable {
            backend: "remote",
            hint: "the local target has no SSH host".into(),
        }
        .into()),
    }
}

/// Environment variable that moves the gce target's SSH port off 22: a test hook only (the
/// end-to-end tests' sshd on 127.0.0.1 cannot listen on 22), not a user setting — the
/// firewall kgenv writes opens 22, and GCE's images listen there.
pub const GCE_SSH_PORT_ENV: &str = "KGENV_GCE_SSH_PORT";

/// Port 22, unless [`GCE_SSH_PORT_ENV`] holds another valid port.
fn gce_ssh_port() -> u16 {
    std::env::var(GCE_SSH_PORT_ENV)
        .ok()
        .and_then(|p| p.parse::<u16>().ok())
        .filter(|p| *p != 0)
        .unwrap_or(22)
}

/// The error for a gce host whose instance has no recorded address yet.
fn no_instance_address(env: &str) -> BackendError {
    const WHY: &str = "no external IP recorded: the instance does not exist yet (run `kgenv up`)";
    BackendError::Connection {
        endpoint: format!("instance {env}"),
        message: WHY.into(),
        source: None,
    }
}

/// What the Host block was written for: a change of address or pinned keys rewrites it.
fn ssh_config_stamp(addr: &HostAddr) -> String {
    let keys = super::short_hash(addr.pinned_host_keys.join("\n").as_bytes());
    format!("{addr} keys={keys}")
}

/// Logs in to the host (or finds the local engine).
pub struct HostStep {
    deps: Vec<String>,
}

impl HostStep {
    /// A host step after `deps` (the instance and its firewall on gce).
    pub fn new(deps: Vec<String>) -> Self {
        Self { deps }
    }
}

#[async_trait]
impl Step for HostStep {
    fn id(&self) -> &str {
        "host"
    }
    fn deps(&self) -> &[String] {
        &self.deps
    }
    fn summary(&self) -> String {
        "reach the host (SSH login with a pinned host key, or the local Docker engine)".into()
    }
    fn planned_actions(&self) -> Vec<String> {
        vec!["ssh: wait for port 22 and the SSH banner, log in, run `true`".into()]
    }
    async fn check(&self, ctx: &StepCtx) -> Result<CheckOutcome> {
        match ctx.remote().await? {
            Some(remote) => {
                let out = remote.exec(ExecRequest::new("true"), &no_progress).await?;
                if !out.success() {
                    return Err(BackendError::CommandFailed {
                        command: "true".into(),
                        exit_code: out.exit_code,
                        stderr_tail: out.stderr_tail(),
                    }
                    .into());
                }
            }
            None => {
                ctx.engine().await?;
            }
        }
        // `ssh <env>` works once kgenv's Host block matches the address it logs in with.
        if ctx.ssh_aliases().is_some() && ctx.env.target != Target::Local {
            let addr = ctx.host_addr().await?;
            let recorded = ctx
                .state
                .snapshot()
                .await
                .fact("host", "ssh_config")
                .map(str::to_string);
            if recorded.as_deref() != Some(&ssh_config_stamp(&addr)) {
                return Ok(CheckOutcome::missing(vec![format!(
                    "write the `Host {}` block and the `Include` in ~/.ssh/config",
                    ctx.env.name
                )]));
            }
        }
        Ok(CheckOutcome::satisfied())
    }
    async fn apply(&self, ctx: &StepCtx) -> Result<()> {
        // Reaching the host happened in `check`; what is left is the user's SSH config.
        let Some(files) = ctx.ssh_aliases() else {
            return Ok(());
        };
        let addr = ctx.host_addr().await?;
        files.write_host(&ctx.env.name, &addr)?;
        ctx.state
            .update("host", |r| {
                r.created
                    .insert("ssh_config".into(), files.location().display().to_string());
                r.facts.insert("ssh_config".into(), ssh_config_stamp(&addr));
            })
            .await?;
        ctx.log(format!("`ssh {}` now reaches {addr}", ctx.env.name));
        Ok(())
    }
    async fn destroy(&self, ctx: &StepCtx) -> Result<Destroyed> {
        let recorded = ctx
            .state
            .snapshot()
            .await
            .step("host")
            .is_some_and(|r| !r.created.is_empty());
        if !recorded {
            return Ok(Destroyed::Nothing);
        }
        if let Some(files) = ctx.ssh_aliases() {
            files.remove_host(&ctx.env.name)?;
        }
        ctx.state
            .update("host", |r| *r = Default::default())
            .await?;
        Ok(Destroyed::Removed)
    }
}

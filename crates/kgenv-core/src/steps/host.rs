//! The `host` step: reach the machine the rest runs on — log in over SSH with a verified
//! host key (gce, ssh), or find the local Docker engine (local) — and wait out a fresh VM's
//! first boot ([`first_boot`]: the NVIDIA driver install, dpkg's lock, Docker's restart)
//! before any other step touches it.

pub mod first_boot;

use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::backends::no_progress;
use crate::backends::remote::{ExecRequest, HostAddr, Remote};
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

/// How long `up` waits for a fresh VM's first boot by default: the DLVM's driver install
/// takes 5 to 10 minutes on GCE; twice that is a host that will not become ready.
pub const DEFAULT_FIRST_BOOT_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// How often the first-boot probe runs while the host is busy.
const PROBE_EVERY: Duration = Duration::from_secs(2);

/// How often the progress line repeats while the reason stays the same.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// Logs in to the host (or finds the local engine) and waits for it to be ready.
pub struct HostStep {
    deps: Vec<String>,
    first_boot_timeout: Duration,
}

impl HostStep {
    /// A host step after `deps` (the instance and its firewall on gce).
    pub fn new(deps: Vec<String>) -> Self {
        Self {
            deps,
            first_boot_timeout: DEFAULT_FIRST_BOOT_TIMEOUT,
        }
    }

    /// Bounds the wait for first boot to end.
    #[must_use]
    pub fn first_boot_timeout(mut self, timeout: Duration) -> Self {
        self.first_boot_timeout = timeout;
        self
    }
}

/// Runs the first-boot probe once.
async fn probe(remote: &dyn Remote) -> Result<Vec<first_boot::Busy>> {
    let out = remote
        .exec(ExecRequest::new(first_boot::PROBE), &no_progress)
        .await?
        .or_failed("first-boot probe")?;
    Ok(first_boot::parse(&out.stdout_text()))
}

/// Waits until the probe finds nothing to wait for, with a progress line when the reason
/// changes and every [`PROGRESS_EVERY`]; gives up after `within` with a timeout naming what
/// the host was still busy with.
async fn wait_first_boot(ctx: &StepCtx, remote: &dyn Remote, within: Duration) -> Result<()> {
    let started = Instant::now();
    let mut said: Option<(String, Instant)> = None;
    loop {
        let busy = probe(remote).await?;
        let Some(first) = busy.first() else {
            if said.is_some() {
                ctx.log(format!(
                    "the host is ready (first boot took {} more)",
                    first_boot::clock(started.elapsed())
                ));
            }
            return Ok(());
        };
        let waited = started.elapsed();
        if waited >= within {
            return Err(BackendError::Timeout {
                what: format!("the host's first boot to finish: still waiting for {first}"),
                after: within,
                last_seen: Some(
                    busy.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; "),
                ),
            }
            .into());
        }
        let reason = first.waiting_for();
        let due = match &said {
            Some((r, at)) => *r != reason || at.elapsed() >= PROGRESS_EVERY,
            None => true,
        };
        if due {
            ctx.log(first_boot::describe(&busy, waited));
            said = Some((reason, Instant::now()));
        }
        tokio::time::sleep(PROBE_EVERY.min(within.saturating_sub(waited))).await;
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
        vec![
            "ssh: wait for port 22 and the SSH banner, log in, run `true`".into(),
            "wait for first boot: the NVIDIA driver install, dpkg's lock, Docker answering".into(),
        ]
    }
    async fn check(&self, ctx: &StepCtx) -> Result<CheckOutcome> {
        match ctx.remote().await? {
            Some(remote) => {
                remote
                    .exec(ExecRequest::new("true"), &no_progress)
                    .await?
                    .or_failed("true")?;
                // A fresh VM answers SSH long before its first boot is over.
                if let Some(first) = probe(remote.as_ref()).await?.first() {
                    return Ok(CheckOutcome::missing(vec![format!(
                        "wait (up to {}) for {first}",
                        first_boot::clock(self.first_boot_timeout)
                    )]));
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
        // Reaching the host happened in `check`; what is left is first boot and the user's
        // SSH config.
        if let Some(remote) = ctx.remote().await? {
            wait_first_boot(ctx, remote.as_ref(), self.first_boot_timeout).await?;
        }
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

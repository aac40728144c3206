//! Autostop (not in the guide, but its missing piece): a systemd timer on the VM runs an
//! idle agent every minute that powers the VM off after N idle minutes — no Jupyter activity
//! (the server's `/api/status` `last_activity`, read with the agent token the jupyter step
//! writes) and no SSH session (kgenv's tunnel included) — so a forgotten GPU stops billing.
//! A guest power-off stops a GCE instance and keeps its disk.
//!
//! The idle decision is a pure shell function ([`IDLE_DECIDE_FN`]) so tests can feed it
//! made-up clocks and sessions; `kgenv autostop MINUTES|off` is [`set_autostop`].

use async_trait::async_trait;

use super::script::{assignment, HostScript, ScriptBuilder};
use crate::backends::{ProgressFn, Remote};
use crate::error::Result;
use crate::jupyter::AGENT_TOKEN_FILE;
use crate::plan::{CheckOutcome, Destroyed, Step, StepCtx};
use crate::spec::{Autostop, Env, JupyterTls};
use crate::state::StateStore;

/// `kgenv_idle_decide NOW BOOT STAMP IDLE_MINUTES SSH_SESSIONS JUPYTER_LAST`, all epoch
/// seconds or counts; prints `stop`, or `keep LAST` with the latest activity seen (kept in
/// the stamp file for the next run). A fresh boot, an SSH session and Jupyter's
/// `last_activity` count as activity; unknown values are ignored.
pub const IDLE_DECIDE_FN: &str = r#"kgenv_idle_decide() {
  _now=$1 _boot=$2 _last=$3 _minutes=$4 _sessions=$5 _jupyter=$6
  case $_last in ''|*[!0-9]*) _last=0 ;; esac
  case $_boot in ''|*[!0-9]*) _boot=0 ;; esac
  if [ "$_boot" -gt "$_last" ]; then _last=$_boot; fi
  case $_jupyter in
    ''|*[!0-9]*) ;;
    *) if [ "$_jupyter" -gt "$_last" ]; then _last=$_jupyter; fi ;;
  esac
  case $_sessions in ''|*[!0-9]*) _sessions=0 ;; esac
  if [ "$_sessions" -gt 0 ]; then _last=$_now; fi
  if [ "$_last" -gt "$_now" ]; then _last=$_now; fi
  if [ $((_now - _last)) -ge $((_minutes * 60)) ]; then
    echo stop
  else
    echo "keep $_last"
  fi
}"#;

/// How the agent reaches Jupyter on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JupyterProbe {
    /// `https://127.0.0.1:PORT/api/status`.
    pub url: String,
    /// CA file to verify the server with (kgenv's self-signed certificate); `None`: the
    /// user's certificate, not checked on loopback (`curl -k`).
    pub cacert: Option<String>,
    /// The agent token file the jupyter step writes (0600).
    pub token_file: String,
}

/// Everything the autostop script is rendered from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutostopScript {
    /// Idle minutes before the VM is stopped.
    pub idle_minutes: u32,
    /// Jupyter to ask for `last_activity`, when the environment has one.
    pub jupyter: Option<JupyterProbe>,
    /// Where the agent is installed.
    pub agent_path: String,
    /// Where the systemd units go.
    pub unit_dir: String,
    /// Where the agent keeps its stamp file.
    pub state_dir: String,
}

impl AutostopScript {
    /// The defaults on a host: `/usr/local/sbin/kgenv-idle`, `/etc/systemd/system`,
    /// `/var/lib/kgenv`.
    pub fn on_host(idle_minutes: u32, jupyter: Option<JupyterProbe>) -> Self {
        Self {
            idle_minutes,
            jupyter,
            agent_path: "/usr/local/sbin/kgenv-idle".into(),
            unit_dir: "/etc/systemd/system".into(),
            state_dir: "/var/lib/kgenv".into(),
        }
    }

    /// The idle agent (a POSIX sh program, shellchecked by the tests).
    pub fn agent_text(&self) -> String {
        let (url, cacert, token_file) = match &self.jupyter {
            Some(j) => (
                j.url.as_str(),
                j.cacert.as_deref().unwrap_or(""),
                j.token_file.as_str(),
            ),
            None => ("", "", ""),
        };
        format!(
            r#"#!/bin/sh
# kgenv idle agent: powers this VM off after IDLE_MINUTES without Jupyter activity or SSH
# session. Installed and removed by kgenv (`kgenv autostop MINUTES|off`).
set -u
IDLE_MINUTES={minutes}
{url}{cacert}{token_file}{stamp}
{decide}

# Established connections to sshd (kgenv's tunnel has no tty, so `who` misses it).
ssh_sessions() {{
  if command -v ss >/dev/null 2>&1; then
    ss -Htn state established '( sport = :22 )' 2>/dev/null | wc -l
  else
    who | wc -l
  fi
}}

# Jupyter's last_activity in epoch seconds, or nothing when it cannot be read.
jupyter_last_activity() {{
  [ -n "$JUPYTER_URL" ] && [ -r "$TOKEN_FILE" ] || return 0
  token=$(cat "$TOKEN_FILE")
  if [ -n "$CACERT" ]; then
    status=$(printf 'Authorization: token %s\n' "$token" | curl -fsS --max-time 10 --cacert "$CACERT" -H @- "$JUPYTER_URL" 2>/dev/null) || return 0
  else
    status=$(printf 'Authorization: token %s\n' "$token" | curl -fsS --max-time 10 -k -H @- "$JUPYTER_URL" 2>/dev/null) || return 0
  fi
  ts=$(printf '%s' "$status" | sed -n 's/.*"last_activity": *"\([^"]*\)".*/\1/p')
  if [ -n "$ts" ]; then date -d "$ts" +%s 2>/dev/null || true; fi
}}

now=$(date +%s)
boot=$((now - $(cut -d. -f1 /proc/uptime)))
stamp=$(cat "$STAMP" 2>/dev/null || echo 0)
verdict=$(kgenv_idle_decide "$now" "$boot" "$stamp" "$IDLE_MINUTES" "$(ssh_sessions)" "$(jupyter_last_activity)")
case "$verdict" in
  stop)
    logger -t kgenv-idle "no Jupyter activity and no SSH session for $IDLE_MINUTES minutes: powering off"
    systemctl poweroff
    ;;
  keep\ *)
    echo "${{verdict#keep }}" > "$STAMP"
    ;;
esac"#,
            minutes = self.idle_minutes,
            url = assignment("JUPYTER_URL", url),
            cacert = assignment("CACERT", cacert),
            token_file = assignment("TOKEN_FILE", token_file),
            stamp = assignment("STAMP", &format!("{}/idle-stamp", self.state_dir)),
            decide = IDLE_DECIDE_FN,
        )
    }

    fn service_text(&self) -> String {
        format!(
            "[Unit]\nDescription=kgenv idle check\n[Service]\nType=oneshot\nExecStart={}",
            self.agent_path
        )
    }

    fn timer_text() -> &'static str {
        "[Unit]\nDescription=kgenv idle check every minute\n[Timer]\nOnBootSec=5min\nOnUnitActiveSec=1min\n[Install]\nWantedBy=timers.target"
    }

    /// Renders the script: `check` (agent and units as rendered, timer enabled and active),
    /// `apply` (write them, re-arm the idle clock, enable the timer), `destroy`.
    pub fn render(&self) -> HostScript {
        ScriptBuilder::new("autostop")
            .var("AGENT", &self.agent_path)
            .var("AGENT_TEXT", self.agent_text())
            .var("UNIT_DIR", &self.unit_dir)
            .var("SERVICE_TEXT", self.service_text())
            .var("TIMER_TEXT", Self::timer_text())
            .var("STATE_DIR", &self.state_dir)
            .helper(super::script::FILE_PUT_FN)
            .check(
                r#"[ "$(cat "$AGENT" 2>/dev/null)" = "$AGENT_TEXT" ] || exit 1
[ -x "$AGENT" ] || exit 1
[ "$(cat "$UNIT_DIR/kgenv-idle.service" 2>/dev/null)" = "$SERVICE_TEXT" ] || exit 1
[ "$(cat "$UNIT_DIR/kgenv-idle.timer" 2>/dev/null)" = "$TIMER_TEXT" ] || exit 1
systemctl is-enabled --quiet kgenv-idle.timer || exit 1
systemctl is-active --quiet kgenv-idle.timer"#,
            )
            .apply(
                r#"mkdir -p "$(dirname "$AGENT")" "$UNIT_DIR" "$STATE_DIR"
file_put "$AGENT" 0755 "$AGENT_TEXT"
file_put "$UNIT_DIR/kgenv-idle.service" 0644 "$SERVICE_TEXT"
file_put "$UNIT_DIR/kgenv-idle.timer" 0644 "$TIMER_TEXT"
# (Re)arming counts as activity: the idle clock starts now.
date +%s > "$STATE_DIR/idle-stamp"
systemctl daemon-reload
systemctl enable --now kgenv-idle.timer"#,
            )
            .destroy(
                r#"systemctl disable --now kgenv-idle.timer 2>/dev/null || true
rm -f "$UNIT_DIR/kgenv-idle.timer" "$UNIT_DIR/kgenv-idle.service" "$AGENT" "$STATE_DIR/idle-stamp"
systemctl daemon-reload 2>/dev/null || true"#,
            )
            .build()
    }
}

/// How the agent reaches `env`'s Jupyter: the host side of the published port.
pub fn jupyter_probe(env: &Env) -> Option<JupyterProbe> {
    let j = env.jupyter.as_ref()?;
    let published = env
        .container
        .as_ref()?
        .ports
        .iter()
        .find(|p| p.container == u32::from(j.port))?;
    let bind = published.bind.as_deref().unwrap_or("127.0.0.1");
    let host = if bind == "0.0.0.0" || bind == "::" {
        "127.0.0.1"
    } else {
        bind
    };
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    let dir = format!("{}/jupyter", env.host_dir());
    let scheme = if j.tls == JupyterTls::Off {
        "http"
    } else {
        "https"
    };
    Some(JupyterProbe {
        url: format!(
            "{scheme}://{host}:{}/api/status",
            published.host.unwrap_or(published.container)
        ),
        cacert: (j.tls == JupyterTls::SelfSigned).then(|| format!("{dir}/cert.pem")),
        token_file: format!("{dir}/{AGENT_TOKEN_FILE}"),
    })
}

/// `kgenv autostop MINUTES|off`: installs the idle agent with `minutes` (validated like the
/// spec: 5..=10080), or removes it with `None`, on the host behind `remote`, and records it
/// in `state` so `down` removes it. The next `kgenv up` brings back what `kgenv.toml` says.
pub async fn set_autostop(
    env: &Env,
    remote: &dyn Remote,
    state: &StateStore,
    minutes: Option<u32>,
    progress: ProgressFn<'_>,
) -> Result<()> {
    match minutes {
        Some(m) => {
            let spec = Autostop::builder(m)
                .build()
                .map_err(|e| e.within("autostop"))?;
            AutostopScript::on_host(spec.idle_minutes, jupyter_probe(env))
                .render()
                .run_on(remote, "apply", progress)
                .await?;
            state
                .update("autostop", |r| {
                    r.created.insert("agent".into(), "kgenv-idle.timer".into());
                    r.facts.insert("idle_minutes".into(), m.to_string());
                })
                .await?;
        }
        None => {
            AutostopScript::on_host(60, None)
                .render()
                .run_on(remote, "destroy", progress)
                .await?;
            state
                .update("autostop", |r| *r = Default::default())
                .await?;
        }
    }
    Ok(())
}

/// Installs or removes the idle agent.
pub struct AutostopStep {
    spec: Autostop,
    jupyter: Option<JupyterProbe>,
    deps: Vec<String>,
}

impl AutostopStep {
    /// The step for `spec` in `env`.
    pub fn new(env: &Env, spec: Autostop) -> Self {
        Self {
            spec,
            jupyter: jupyter_probe(env),
            deps: vec![super::data_root_ready(env).into()],
        }
    }

    /// The host script installing `/usr/local/sbin/kgenv-idle` and its timer.
    pub fn script(&self) -> HostScript {
        AutostopScript::on_host(self.spec.idle_minutes, self.jupyter.clone()).render()
    }
}

#[async_trait]
impl Step for AutostopStep {
    fn id(&self) -> &str {
        "autostop"
    }
    fn deps(&self) -> &[String] {
        &self.deps
    }
    fn summary(&self) -> String {
        format!(
            "stop the VM after {} idle minutes (no Jupyter activity, no SSH session)",
            self.spec.idle_minutes
        )
    }
    fn planned_actions(&self) -> Vec<String> {
        vec!["host: sh -s -- apply  # autostop: kgenv-idle agent + systemd timer".into()]
    }
    async fn check(&self, ctx: &StepCtx) -> Result<CheckOutcome> {
        let remote = ctx.require_remote().await?;
        Ok(if self.script().is_converged(ctx, remote.as_ref()).await? {
            CheckOutcome::satisfied()
        } else {
            CheckOutcome::missing(self.planned_actions())
        })
    }
    async fn apply(&self, ctx: &StepCtx) -> Result<()> {
        let remote = ctx.require_remote().await?;
        self.script().run(ctx, remote.as_ref(), "apply").await?;
        ctx.state
            .update("autostop", |r| {
                r.created.insert("agent".into(), "kgenv-idle.timer".into());
                r.facts
                    .insert("idle_minutes".into(), self.spec.idle_minutes.to_string());
            })
            .await?;
        Ok(())
    }
    async fn destroy(&self, ctx: &StepCtx) -> Result<Destroyed> {
        let state = ctx.state.snapshot().await;
        if state.step("autostop").is_none_or(|r| r.created.is_empty()) {
            return Ok(Destroyed::Nothing);
        }
        // On gce the instance is usually deleted too; remove the agent anyway so a kept VM
        // does not stop itself.
        let remote = ctx.require_remote().await?;
        self.script().run(ctx, remote.as_ref(), "destroy").await?;
        ctx.state
            .update("autostop", |r| *r = Default::default())
            .await?;
        Ok(Destroyed::Removed)
    }
}

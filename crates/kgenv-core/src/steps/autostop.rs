//! Autostop (not in the guide, but its missing piece): a systemd timer on the VM that stops
//! it after N idle minutes — no Jupyter activity and no SSH session — so a forgotten GPU
//! stops billing. Stopping keeps the disk.

use async_trait::async_trait;

use super::script::{HostScript, ScriptBuilder};
use crate::error::Result;
use crate::plan::{CheckOutcome, Destroyed, Step, StepCtx};
use crate::spec::{Autostop, Env};

/// Installs or removes the idle agent.
pub struct AutostopStep {
    spec: Autostop,
    jupyter_port: u16,
    deps: Vec<String>,
}

impl AutostopStep {
    /// The step for `spec` in `env`.
    pub fn new(env: &Env, spec: Autostop) -> Self {
        let port = env.container.as_ref().and_then(|c| env.jupyter.as_ref().and_then(|j| c.ports.iter().find(|p| p.container == u32::from(j.port)).and_then(|p| p.host))).unwrap_or(8888);
        Self { spec, jupyter_port: port as u16, deps: vec!["host".into()] }
    }

    /// The host script installing `/usr/local/sbin/kgenv-idle` and its timer.
    pub fn script(&self) -> HostScript {
        ScriptBuilder::new("autostop")
            .var("IDLE_MINUTES", self.spec.idle_minutes.to_string())
            .var("JUPYTER_PORT", self.jupyter_port.to_string())
            .var("AGENT", "/usr/local/sbin/kgenv-idle")
            .var("UNIT_DIR", "/etc/systemd/system")
            .check(r#"[ -x "$AGENT" ] || exit 1
grep -qs "^IDLE_MINUTES=$IDLE_MINUTES\$" "$AGENT" || exit 1
grep -qs "^JUPYTER_PORT=$JUPYTER_PORT\$" "$AGENT" || exit 1
systemctl is-active --quiet kgenv-idle.timer"#)
            .apply(r#"cat > "$AGENT" <<AGENT_EOF
#!/bin/sh
# kgenv idle agent: stop this VM after IDLE_MINUTES without activity.
IDLE_MINUTES=$IDLE_MINUTES
JUPYTER_PORT=$JUPYTER_PORT
STAMP=/var/lib/kgenv/last-activity
mkdir -p /var/lib/kgenv
now=\$(date +%s)
[ -f "\$STAMP" ] || echo "\$now" > "\$STAMP"
active=0
# An SSH session (kgenv's tunnel included) counts as activity.
if who | grep -q .; then active=1; fi
if ss -tn state established '( sport = :22 )' 2>/dev/null | tail -n +2 | grep -q .; then active=1; fi
# Jupyter: a busy kernel, or activity in the last minutes.
status=\$(curl -fsk --max-time 5 "https://127.0.0.1:\$JUPYTER_PORT/api/status" 2>/dev/null || curl -fs --max-time 5 "http://127.0.0.1:\$JUPYTER_PORT/api/status" 2>/dev/null || true)
case "\$status" in *'"kernels": 0'*|'') ;; *) active=1 ;; esac
if [ "\$active" = 1 ]; then echo "\$now" > "\$STAMP"; exit 0; fi
last=\$(cat "\$STAMP")
if [ \$(( (now - last) / 60 )) -ge "\$IDLE_MINUTES" ]; then
  logger -t kgenv-idle "idle for \$IDLE_MINUTES minutes: stopping"
  systemctl poweroff
fi
AGENT_EOF
chmod 0755 "$AGENT"
cat > "$UNIT_DIR/kgenv-idle.service" <<'UNIT_EOF'
[Unit]
Description=kgenv idle check
[Service]
Type=oneshot
ExecStart=/usr/local/sbin/kgenv-idle
UNIT_EOF
cat > "$UNIT_DIR/kgenv-idle.timer" <<'UNIT_EOF'
[Unit]
Description=kgenv idle check every minute
[Timer]
OnBootSec=5min
OnUnitActiveSec=1min
[Install]
WantedBy=timers.target
UNIT_EOF
rm -f /var/lib/kgenv/last-activity
systemctl daemon-reload
systemctl enable --now kgenv-idle.timer"#)
            .destroy(r#"systemctl disable --now kgenv-idle.timer 2>/dev/null || true
rm -f "$UNIT_DIR/kgenv-idle.timer" "$UNIT_DIR/kgenv-idle.service" "$AGENT" /var/lib/kgenv/last-activity
systemctl daemon-reload 2>/dev/null || true"#)
            .build()
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
        format!("stop the VM after {} idle minutes (no Jupyter activity, no SSH session)", self.spec.idle_minutes)
    }
    fn planned_actions(&self) -> Vec<String> {
        vec!["host: sh -s -- apply  # autostop: kgenv-idle agent + systemd timer".into()]
    }
    async fn check(&self, ctx: &StepCtx) -> Result<CheckOutcome> {
        let remote = ctx.require_remote().await?;
        Ok(if self.script().is_converged(ctx, remote.as_ref()).await? { CheckOutcome::satisfied() } else { CheckOutcome::missing(self.planned_actions()) })
    }
    async fn apply(&self, ctx: &StepCtx) -> Result<()> {
        let remote = ctx.require_remote().await?;
        self.script().run(ctx, remote.as_ref(), "apply").await?;
        ctx.state.update("autostop", |r| {
            r.created.insert("agent".into(), "kgenv-idle.timer".into());
        }).await?;
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
        ctx.state.update("autostop", |r| *r = Default::default()).await?;
        Ok(Destroyed::Removed)
    }
}

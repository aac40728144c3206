//! Autostop (not in the guide, but its missing piece) and the budget: a systemd timer on the
//! VM runs an agent every minute that powers the VM off after N idle minutes, or once the
//! budget's running time is used, so a forgotten GPU stops billing — and never while work
//! runs. A guest power-off stops a GCE instance and keeps its disks.
//!
//! Idle means all of these, for the configured minutes: no SSH session (kgenv's tunnel
//! included); no Jupyter activity (`/api/status` `last_activity`, read with the agent token
//! the jupyter step writes); no busy kernel (`/api/kernels` `execution_state`: a training
//! cell that prints nothing is busy); every GPU under `gpu_util_percent` (`nvidia-smi`; none
//! installed is unknown, ignored); every container process under `cpu_percent` of a core,
//! measured over a short sample from `/proc/PID/stat` (ps shows a lifetime average).
//! Before a stop, logged-in users (`wall`) and the container's open terminals (Jupyter's
//! ptys) are told when and why, and how to keep the VM — once per idle stretch.
//!
//! The budget is kept on the host so it holds while the user's laptop is closed: each tick
//! adds the time since the later of the last tick and the boot (the kernel's uptime and boot
//! id, so stopped time and wall-clock jumps never count) to a file under the agent's state
//! dir. The used time resets only when the budget itself changes. `max_cost` becomes
//! seconds through the VM's hourly price ([`hourly_price`]); with no price it is an error,
//! never a guessed number.
//!
//! The decisions are pure shell functions ([`IDLE_DECIDE_FN`], [`BUDGET_DECIDE_FN`]) fed
//! by the probes, so tests can give them made-up clocks and readings. `kgenv autostop
//! MINUTES|off` is [`set_autostop`]; `off` removes the idle stop but keeps a budget.

use async_trait::async_trait;

use super::script::{assignment, HostScript, ScriptBuilder};
use crate::backends::{ProgressFn, Remote};
use crate::error::{Result, ValidationError};
use crate::jupyter::AGENT_TOKEN_FILE;
use crate::plan::{CheckOutcome, Destroyed, Step, StepCtx};
use crate::spec::{Autostop, Budget, Env, JupyterTls, DEFAULT_WARN_MINUTES};
use crate::state::StateStore;

/// `kgenv_idle_decide NOW BOOT LAST MINUTES WARN_MINUTES WARNED_FOR WARNED_AT SESSIONS
/// JUPYTER_LAST BUSY_KERNELS GPU_MAX GPU_PERCENT CPU_MAX CPU_PERCENT`: times are epoch
/// seconds. Prints `keep LAST` with the latest activity seen (kept in the stamp file for the
/// next run), `warn LAST STOP_AT` when the users must be told now (no warning yet for the
/// idle stretch that began at LAST: WARNED_FOR is the stretch the last warning was for,
/// WARNED_AT when), or `stop` — only once the idle time is reached and the warning is
/// `WARN_MINUTES` old (0: no warning). A fresh boot, an SSH session, Jupyter's
/// `last_activity`, a busy kernel, a GPU or a process at or above its threshold count as
/// activity; unknown (empty or garbled) readings are ignored; a clock that went backwards
/// never yields a negative idle time or an early stop.
pub const IDLE_DECIDE_FN: &str = r#"kgenv_idle_num() {
  case $1 in ''|*[!0-9]*) return 1 ;; esac
}
kgenv_idle_decide() {
  _now=$1 _boot=$2 _last=$3 _minutes=$4 _warn=$5 _wfor=$6 _wat=$7 _sessions=$8 _jupyter=$9
  shift 9
  _busy=$1 _gpu=$2 _gpu_min=$3 _cpu=$4 _cpu_min=$5
  kgenv_idle_num "$_last" || _last=0
  kgenv_idle_num "$_boot" || _boot=0
  kgenv_idle_num "$_warn" || _warn=0
  if [ "$_boot" -gt "$_last" ]; then _last=$_boot; fi
  if kgenv_idle_num "$_jupyter" && [ "$_jupyter" -gt "$_last" ]; then _last=$_jupyter; fi
  _active=
  if kgenv_idle_num "$_sessions" && [ "$_sessions" -gt 0 ]; then _active=ssh; fi
  if kgenv_idle_num "$_busy" && [ "$_busy" -gt 0 ]; then _active=kernel; fi
  if kgenv_idle_num "$_gpu" && kgenv_idle_num "$_gpu_min" && [ "$_gpu" -ge "$_gpu_min" ]; then _active=gpu; fi
  if kgenv_idle_num "$_cpu" && kgenv_idle_num "$_cpu_min" && [ "$_cpu" -ge "$_cpu_min" ]; then _active=cpu; fi
  if [ -n "$_active" ]; then _last=$_now; fi
  if [ "$_last" -gt "$_now" ]; then _last=$_now; fi
  _idle=$((_now - _last)) _limit=$((_minutes * 60)) _lead=$((_warn * 60))
  if [ "$_idle" -lt $((_limit - _lead)) ]; then
    echo "keep $_last"
  elif [ "$_lead" -eq 0 ]; then
    if [ "$_idle" -ge "$_limit" ]; then echo stop; else echo "keep $_last"; fi
  elif [ "$_wfor" != "$_last" ] || ! kgenv_idle_num "$_wat"; then
    _at=$((_last + _limit))
    if [ "$_at" -lt $((_now + _lead)) ]; then _at=$((_now + _lead)); fi
    echo "warn $_last $_at"
  else
    if [ "$_wat" -gt "$_now" ]; then _wat=$_now; fi
    if [ "$_idle" -ge "$_limit" ] && [ $((_now - _wat)) -ge "$_lead" ]; then
      echo stop
    else
      echo "keep $_last"
    fi
  fi
}"#;

/// `kgenv_budget_decide FOR RECORDED_FOR BOOT_ID UPTIME RECORDED_BOOT_ID RECORDED_UPTIME
/// USED WARNED_USED LIMIT WARN_MINUTES`: seconds, except the ids. Adds the running time
/// since the later of the last tick and the boot to USED (the time since the recorded
/// uptime in the same boot, the whole uptime after a new boot; a budget set for something
/// else than RECORDED_FOR starts from 0) and prints `keep USED WARNED_USED`, `warn USED USED`
/// when the users must be told now, or `stop USED WARNED_USED` once USED reaches LIMIT and
/// the warning is `WARN_MINUTES` of running time old. WARNED_USED is `-` before a warning;
/// a new boot clears it, so a VM started again with its budget used is warned again.
pub const BUDGET_DECIDE_FN: &str = r#"kgenv_budget_num() {
  case $1 in ''|*[!0-9]*) return 1 ;; esac
}
kgenv_budget_decide() {
  _for=$1 _rfor=$2 _boot_id=$3 _up=$4 _rboot=$5 _rup=$6 _used=$7 _wused=$8 _limit=$9
  shift 9
  _warn=$1
  kgenv_budget_num "$_up" || _up=0
  kgenv_budget_num "$_rup" || _rup=0
  kgenv_budget_num "$_used" || _used=0
  kgenv_budget_num "$_warn" || _warn=0
  kgenv_budget_num "$_limit" || _limit=0
  if [ "$_for" != "$_rfor" ]; then
    _used=0 _wused=-
  elif [ "$_boot_id" != "$_rboot" ]; then
    _used=$((_used + _up)) _wused=-
  elif [ "$_up" -gt "$_rup" ]; then
    _used=$((_used + _up - _rup))
  fi
  kgenv_budget_num "$_wused" || _wused=-
  _lead=$((_warn * 60))
  if [ "$_used" -lt $((_limit - _lead)) ]; then
    echo "keep $_used $_wused"
  elif [ "$_lead" -eq 0 ]; then
    if [ "$_used" -ge "$_limit" ]; then echo "stop $_used $_wused"; else echo "keep $_used $_wused"; fi
  elif [ "$_wused" = - ]; then
    echo "warn $_used $_used"
  elif [ "$_used" -ge "$_limit" ] && [ $((_used - _wused)) -ge "$_lead" ]; then
    echo "stop $_used $_wused"
  else
    echo "keep $_used $_wused"
  fi
}"#;

/// The agent's probes and notices (they read the variables the agent sets first).
const AGENT_PROBES: &str = r#"# Established connections to sshd (kgenv's tunnel has no tty, so `who` misses it).
ssh_sessions() {
  if command -v ss >/dev/null 2>&1; then
    ss -Htn state established '( sport = :22 )' 2>/dev/null | wc -l | tr -d ' '
  else
    who | wc -l | tr -d ' '
  fi
}

# GETs a Jupyter API URL with the agent token; fails when it cannot be read.
jupyter_get() {
  [ -n "$JUPYTER_URL" ] && [ -r "$TOKEN_FILE" ] || return 1
  token=$(cat "$TOKEN_FILE")
  if [ -n "$CACERT" ]; then
    printf 'Authorization: token %s\n' "$token" | curl -fsS --max-time 10 --cacert "$CACERT" -H @- "$1" 2>/dev/null
  else
    printf 'Authorization: token %s\n' "$token" | curl -fsS --max-time 10 -k -H @- "$1" 2>/dev/null
  fi
}

# Jupyter's last_activity in epoch seconds, or nothing when it cannot be read.
jupyter_last_activity() {
  status=$(jupyter_get "$JUPYTER_URL") || return 0
  ts=$(printf '%s' "$status" | sed -n 's/.*"last_activity": *"\([^"]*\)".*/\1/p')
  if [ -n "$ts" ]; then date -d "$ts" +%s 2>/dev/null || true; fi
}

# How many kernels are busy (a cell running, printing or not), or nothing when unknown.
busy_kernels() {
  kernels=$(jupyter_get "$KERNELS_URL") || return 0
  printf '%s' "$kernels" | grep -o '"execution_state": *"busy"' | wc -l | tr -d ' '
}

# The highest utilisation of any GPU, or nothing without nvidia-smi (unknown, ignored).
gpu_util_max() {
  command -v nvidia-smi >/dev/null 2>&1 || return 0
  timeout 30 nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits 2>/dev/null |
    awk '$1 ~ /^[0-9]+$/ { if (!seen || $1 + 0 > m) m = $1 + 0; seen = 1 } END { if (seen) print m }'
}

# "PID TICKS" (user + system CPU) for each pid. The command name in /proc/PID/stat may hold
# spaces and parentheses, so the fields are counted from its last ") ".
cpu_ticks() {
  for p in $1; do
    t=$(awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$p/stat" 2>/dev/null) || continue
    if [ -n "$t" ]; then echo "$p $t"; fi
  done
}

# The highest CPU use (percent of one core) of any process in the container, measured over
# CPU_SAMPLE_SECONDS: ps shows a lifetime average, which misses a job that just started.
container_cpu_max() {
  [ -n "$CONTAINER" ] || return 0
  pids=$(timeout 30 docker top "$CONTAINER" -o pid 2>/dev/null | awk 'NR > 1 && $1 ~ /^[0-9]+$/ { print $1 }')
  [ -n "$pids" ] || return 0
  hz=$(getconf CLK_TCK 2>/dev/null) || hz=100
  before=$(cpu_ticks "$pids")
  sleep "$CPU_SAMPLE_SECONDS"
  after=$(cpu_ticks "$pids")
  printf '%s\n--\n%s\n' "$before" "$after" | awk -v hz="$hz" -v s="$CPU_SAMPLE_SECONDS" '
    $0 == "--" { second = 1; next }
    !second { t[$1] = $2; next }
    ($1 in t) { p = int(($2 - t[$1]) * 100 / hz / s); if (p > m) m = p }
    END { print m + 0 }'
}

# Tells logged-in users (wall) and the container's open terminals (Jupyter's ptys) $1.
notify() {
  logger -t kgenv-idle "$1" 2>/dev/null || true
  printf '%s\n' "$1" | wall 2>/dev/null || true
  [ -n "$CONTAINER" ] || return 0
  # shellcheck disable=SC2016 # expanded by the container's shell
  timeout 30 docker exec "$CONTAINER" sh -c 'for t in /dev/pts/[0-9]*; do if [ -c "$t" ]; then printf "\r\n%s\r\n" "$1" > "$t" 2>/dev/null; fi; done; true' kgenv-notify "$1" >/dev/null 2>&1 || true
}

# "HH:MM UTC" of epoch $1.
clock_time() {
  date -u -d "@$1" '+%H:%M UTC' 2>/dev/null || echo "in a few minutes"
}"#;

/// What the agent does each tick, after its settings, decisions and probes.
const AGENT_MAIN: &str = r#"now=$(eval "$CLOCK")
up=$(cut -d. -f1 "$UPTIME_FILE")
boot=$((now - up))
stop_reason=

if [ -n "$BUDGET_SECONDS" ]; then
  rfor='' used='' rboot='' rup='' wused=''
  if [ -r "$BUDGET_FILE" ]; then read -r rfor used rboot rup wused < "$BUDGET_FILE" || true; fi
  boot_id=$(cat "$BOOT_ID_FILE" 2>/dev/null) || boot_id=unknown
  read -r verdict used wused <<EOF
$(kgenv_budget_decide "$BUDGET_FOR" "$rfor" "$boot_id" "$up" "$rboot" "$rup" "$used" "$wused" "$BUDGET_SECONDS" "$WARN_MINUTES")
EOF
  printf '%s %s %s %s %s\n' "$BUDGET_FOR" "$used" "$boot_id" "$up" "$wused" > "$BUDGET_FILE.tmp" \
    && mv -f "$BUDGET_FILE.tmp" "$BUDGET_FILE"
  echo "budget: $verdict, $used of $BUDGET_SECONDS running seconds used ($BUDGET_FOR)"
  case $verdict in
    warn)
      left=$((BUDGET_SECONDS - used))
      if [ "$left" -lt $((WARN_MINUTES * 60)) ]; then left=$((WARN_MINUTES * 60)); fi
      notify "kgenv: this VM powers off at $(clock_time $((now + left))) (in about $(((left + 59) / 60)) minutes): its budget ($BUDGET_FOR) is used up. To keep it running, raise [budget] in kgenv.toml and run \`kgenv up\` (\`kgenv autostop off\` does not lift a budget)."
      ;;
    stop) stop_reason="the budget ($BUDGET_FOR) is used: $used running seconds" ;;
  esac
fi

if [ -z "$stop_reason" ] && [ -n "$IDLE_MINUTES" ]; then
  last=$(cat "$STAMP" 2>/dev/null) || last=0
  wfor='' wat=''
  if [ -r "$WARN_STAMP" ]; then read -r wfor wat < "$WARN_STAMP" || true; fi
  read -r verdict vlast vat <<EOF
$(kgenv_idle_decide "$now" "$boot" "$last" "$IDLE_MINUTES" "$WARN_MINUTES" "$wfor" "$wat" "$(ssh_sessions)" "$(jupyter_last_activity)" "$(busy_kernels)" "$(gpu_util_max)" "$GPU_UTIL_PERCENT" "$(container_cpu_max)" "$CPU_PERCENT")
EOF
  echo "idle: $verdict"
  case $verdict in
    stop)
      stop_reason="no activity for $IDLE_MINUTES minutes (no SSH session, Jupyter activity or busy kernel; GPUs under $GPU_UTIL_PERCENT%, container processes under $CPU_PERCENT% CPU)"
      ;;
    warn)
      echo "$vlast" > "$STAMP"
      echo "$vlast $now" > "$WARN_STAMP"
      notify "kgenv: this VM powers off at $(clock_time "$vat") (in about $(((vat - now + 59) / 60)) minutes): nothing has run for $(((now - vlast) / 60)) minutes (no SSH session, Jupyter activity, busy kernel, GPU or CPU work). To keep it: any activity (an SSH session, a running cell, a key typed in a terminal), or \`kgenv autostop off\` on your machine."
      ;;
    keep)
      echo "$vlast" > "$STAMP"
      ;;
  esac
fi

if [ -n "$stop_reason" ]; then
  logger -t kgenv-idle "$stop_reason: powering off" 2>/dev/null || true
  echo "$stop_reason: powering off"
  eval "$POWEROFF"
fi"#;

/// How the agent reaches Jupyter on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JupyterProbe {
    /// `https://127.0.0.1:PORT/api/status`.
    pub url: String,
    /// `https://127.0.0.1:PORT/api/kernels?no_track_activity=1`: the kernels'
    /// `execution_state`, asked without the request itself counting as activity.
    pub kernels_url: String,
    /// CA file to verify the server with (kgenv's self-signed certificate); `None`: the
    /// user's certificate, not checked on loopback (`curl -k`).
    pub cacert: Option<String>,
    /// The agent token file the jupyter step writes (0600).
    pub token_file: String,
}

/// A budget as the agent enforces it: running seconds, and what it was set for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BudgetLimit {
    /// Running seconds after which the VM is powered off.
    pub seconds: u64,
    /// [`Budget::set_for`]: the used time resets only when this changes.
    pub set_for: String,
}

/// Turns `budget` into running seconds: `max_hours`, and `max_cost` through the VM's
/// `hourly_usd`, whichever comes first. `Ok(None)`: no limit can ever be reached (a cost
/// budget on a VM whose price is 0). A cost budget without a price is an error naming
/// `budget.max_cost`: kgenv never enforces a guessed number.
pub fn budget_limit(
    budget: &Budget,
    hourly_usd: Option<f64>,
) -> std::result::Result<Option<BudgetLimit>, ValidationError> {
    // Validated positive and at most 87600 hours, so the seconds fit.
    let mut seconds = budget.max_hours.map(|h| (h * 3600.0).round() as u64);
    if let Some(cost) = budget.max_cost {
        let price = hourly_usd
            .filter(|p| p.is_finite() && *p >= 0.0)
            .ok_or_else(|| {
                ValidationError::new(
                    "budget.max_cost",
                    "the VM's hourly price is unavailable (the Cloud Billing Catalog could not be read), so a cost cannot be turned into running hours and kgenv never enforces a guessed number: set budget.max_hours instead, or try again when prices can be read",
                )
            })?;
        if price > 0.0 {
            let by_cost = (cost / price * 3600.0).floor().min(u64::MAX as f64) as u64;
            seconds = Some(seconds.map_or(by_cost, |s| s.min(by_cost)));
        }
    }
    Ok(seconds.map(|seconds| BudgetLimit {
        seconds,
        set_for: budget.set_for(),
    }))
}

/// Everything the agent and its units are rendered from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutostopScript {
    /// Idle minutes before the VM is stopped; `None`: no idle stop (a budget alone).
    pub idle_minutes: Option<u32>,
    /// Minutes of warning before a stop (idle or budget); 0: none.
    pub warn_minutes: u32,
    /// A GPU at or above this utilisation (percent) is activity.
    pub gpu_util_percent: u32,
    /// A container process at or above this CPU (percent of a core) is activity.
    pub cpu_percent: u32,
    /// Seconds each CPU sample lasts.
    pub cpu_sample_seconds: u32,
    /// The budget, when there is one.
    pub budget: Option<BudgetLimit>,
    /// Jupyter to ask for `last_activity` and busy kernels, when the environment has one.
    pub jupyter: Option<JupyterProbe>,
    /// The container whose processes and terminals the agent looks at.
    pub container: Option<String>,
    /// Where the agent is installed.
    pub agent_path: String,
    /// Where the systemd units go.
    pub unit_dir: String,
    /// Where the agent keeps its stamps and the budget's used time.
    pub state_dir: String,
    /// The command that powers the VM off (`systemctl poweroff`; tests put a marker here).
    pub poweroff: String,
    /// The command printing the time in epoch seconds (`date +%s`).
    pub clock: String,
    /// The kernel's uptime (`/proc/uptime`).
    pub uptime_file: String,
    /// The kernel's boot id (`/proc/sys/kernel/random/boot_id`).
    pub boot_id_file: String,
}

impl AutostopScript {
    /// The agent for `env` on its host: `/usr/local/sbin/kgenv-idle`,
    /// `/etc/systemd/system`, `/var/lib/kgenv`, with `idle` (its thresholds and warning)
    /// and `budget`. Without `idle`, the warning lead is the config's, else the default.
    pub fn for_env(env: &Env, idle: Option<Autostop>, budget: Option<BudgetLimit>) -> Self {
        let rules = idle.or(env.autostop);
        Self {
            idle_minutes: idle.map(|a| a.idle_minutes),
            warn_minutes: rules.map_or(DEFAULT_WARN_MINUTES, |a| a.warn_minutes),
            gpu_util_percent: rules.map_or(crate::spec::DEFAULT_GPU_UTIL_PERCENT, |a| {
                a.gpu_util_percent
            }),
            cpu_percent: rules.map_or(crate::spec::DEFAULT_CPU_PERCENT, |a| a.cpu_percent),
            cpu_sample_seconds: 2,
            budget,
            jupyter: jupyter_probe(env),
            container: env.container.as_ref().map(|c| c.name.clone()),
            agent_path: "/usr/local/sbin/kgenv-idle".into(),
            unit_dir: "/etc/systemd/system".into(),
            state_dir: "/var/lib/kgenv".into(),
            poweroff: "systemctl poweroff".into(),
            clock: "date +%s".into(),
            uptime_file: "/proc/uptime".into(),
            boot_id_file: "/proc/sys/kernel/random/boot_id".into(),
        }
    }

    /// Whether there is nothing for the agent to do (no idle stop, no budget).
    pub fn is_idle_and_budget_free(&self) -> bool {
        self.idle_minutes.is_none() && self.budget.is_none()
    }

    /// The agent (a POSIX sh program, shellchecked by the tests).
    pub fn agent_text(&self) -> String {
        let (url, kernels, cacert, token_file) = match &self.jupyter {
            Some(j) => (
                j.url.as_str(),
                j.kernels_url.as_str(),
                j.cacert.as_deref().unwrap_or(""),
                j.token_file.as_str(),
            ),
            None => ("", "", "", ""),
        };
        let (budget_seconds, budget_for) = match &self.budget {
            Some(b) => (b.seconds.to_string(), b.set_for.as_str()),
            None => (String::new(), ""),
        };
        let settings = [
            (
                "IDLE_MINUTES",
                self.idle_minutes.map(|m| m.to_string()).unwrap_or_default(),
            ),
            ("WARN_MINUTES", self.warn_minutes.to_string()),
            ("GPU_UTIL_PERCENT", self.gpu_util_percent.to_string()),
            ("CPU_PERCENT", self.cpu_percent.to_string()),
            ("CPU_SAMPLE_SECONDS", self.cpu_sample_seconds.to_string()),
            ("BUDGET_SECONDS", budget_seconds),
            ("BUDGET_FOR", budget_for.to_string()),
            ("CONTAINER", self.container.clone().unwrap_or_default()),
            ("JUPYTER_URL", url.to_string()),
            ("KERNELS_URL", kernels.to_string()),
            ("CACERT", cacert.to_string()),
            ("TOKEN_FILE", token_file.to_string()),
            ("STAMP", format!("{}/idle-stamp", self.state_dir)),
            ("WARN_STAMP", format!("{}/idle-warned", self.state_dir)),
            ("BUDGET_FILE", format!("{}/budget-used", self.state_dir)),
            ("POWEROFF", self.poweroff.clone()),
            ("CLOCK", self.clock.clone()),
            ("UPTIME_FILE", self.uptime_file.clone()),
            ("BOOT_ID_FILE", self.boot_id_file.clone()),
        ]
        .iter()
        .map(|(k, v)| assignment(k, v))
        .collect::<String>();
        format!(
            "#!/bin/sh\n# kgenv idle and budget agent: powers this VM off after IDLE_MINUTES without activity,\n# or once BUDGET_SECONDS of running time are used. Installed and removed by kgenv\n# (`kgenv autostop MINUTES|off`, the [autostop] and [budget] sections of kgenv.toml).\nset -u\n{settings}\n{IDLE_DECIDE_FN}\n\n{BUDGET_DECIDE_FN}\n\n{AGENT_PROBES}\n\n{AGENT_MAIN}"
        )
    }

    fn service_text(&self) -> String {
        format!(
            "[Unit]\nDescription=kgenv idle and budget check\n[Service]\nType=oneshot\nExecStart={}",
            self.agent_path
        )
    }

    fn timer_text() -> &'static str {
        "[Unit]\nDescription=kgenv idle and budget check every minute\n[Timer]\nOnBootSec=5min\nOnUnitActiveSec=1min\n[Install]\nWantedBy=timers.target"
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
rm -f "$UNIT_DIR/kgenv-idle.timer" "$UNIT_DIR/kgenv-idle.service" "$AGENT" \
  "$STATE_DIR/idle-stamp" "$STATE_DIR/idle-warned" "$STATE_DIR/budget-used"
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
    let base = format!(
        "{scheme}://{host}:{}",
        published.host.unwrap_or(published.container)
    );
    Some(JupyterProbe {
        url: format!("{base}/api/status"),
        kernels_url: format!("{base}/api/kernels?no_track_activity=1"),
        cacert: (j.tls == JupyterTls::SelfSigned).then(|| format!("{dir}/cert.pem")),
        token_file: format!("{dir}/{AGENT_TOKEN_FILE}"),
    })
}

/// The VM's price per hour in USD (spot or on demand, as it is provisioned), for a
/// `max_cost` budget; `None` when unknown, or when there is no cost budget (the catalog is
/// then not read). The VM is the one kgenv made: its zone, machine type and GPUs as
/// recorded, so a VM on the second GPU choice is priced as that.
pub async fn hourly_price(ctx: &StepCtx) -> Result<Option<f64>> {
    let (Some(budget), Some(spec)) = (&ctx.env.budget, &ctx.env.instance) else {
        return Ok(None);
    };
    if budget.max_cost.is_none() {
        return Ok(None);
    }
    let Some(vm) = super::instance::recorded_vm(&ctx.state.snapshot().await, spec) else {
        return Ok(None);
    };
    let Some(catalog) = super::prices::loaded(ctx).await.catalog else {
        return Ok(None);
    };
    Ok(super::prices::vm_hourly_usd(
        &catalog,
        &vm.machine_type,
        vm.gpu.as_ref().map(|(t, n)| (t.as_str(), *n)),
        crate::spec::rules::region_of(&vm.zone),
        spec.provisioning,
    ))
}

/// `kgenv autostop MINUTES|off`: installs the agent with `minutes` (validated like the spec:
/// 5..=10080) and the config's thresholds, or with `None` removes the idle stop, on the
/// host behind `remote`, and records it in `state` so `down` removes it. A `[budget]` stays
/// in force either way (it is turned into seconds with `hourly_usd`); with no budget, `off`
/// removes the agent. The next `kgenv up` brings back what `kgenv.toml` says.
pub async fn set_autostop(
    env: &Env,
    remote: &dyn Remote,
    state: &StateStore,
    minutes: Option<u32>,
    hourly_usd: Option<f64>,
    progress: ProgressFn<'_>,
) -> Result<()> {
    let idle = minutes
        .map(|m| {
            env.autostop
                .map_or_else(|| Autostop::builder(m).build(), |a| a.with_idle_minutes(m))
                .map_err(|e| e.within("autostop"))
        })
        .transpose()?;
    let budget = env
        .budget
        .as_ref()
        .map(|b| budget_limit(b, hourly_usd))
        .transpose()?
        .flatten();
    let script = AutostopScript::for_env(env, idle, budget);
    if script.is_idle_and_budget_free() {
        script.render().run_on(remote, "destroy", progress).await?;
        state
            .update("autostop", |r| *r = Default::default())
            .await?;
    } else {
        script.render().run_on(remote, "apply", progress).await?;
        state.update("autostop", |r| record(r, &script)).await?;
    }
    Ok(())
}

/// What the state keeps of an installed agent: that it exists (so `down` removes it), its
/// idle minutes and what its budget was set for.
fn record(r: &mut crate::state::StepRecord, script: &AutostopScript) {
    r.created.insert("agent".into(), "kgenv-idle.timer".into());
    match script.idle_minutes {
        Some(m) => r.facts.insert("idle_minutes".into(), m.to_string()),
        None => r.facts.remove("idle_minutes"),
    };
    match &script.budget {
        Some(b) => {
            r.facts
                .insert("budget_seconds".into(), b.seconds.to_string());
            r.facts.insert("budget".into(), b.set_for.clone())
        }
        None => {
            r.facts.remove("budget_seconds");
            r.facts.remove("budget")
        }
    };
}

/// Installs or removes the idle and budget agent.
pub struct AutostopStep {
    autostop: Option<Autostop>,
    budget: Option<Budget>,
    base: AutostopScript,
    deps: Vec<String>,
}

impl AutostopStep {
    /// The step for `env`'s `[autostop]` and `[budget]`.
    pub fn new(env: &Env) -> Self {
        Self {
            autostop: env.autostop,
            budget: env.budget,
            base: AutostopScript::for_env(env, env.autostop, None),
            deps: vec![super::data_root_ready(env).into()],
        }
    }

    /// The host script installing `/usr/local/sbin/kgenv-idle` and its timer, with the
    /// budget turned into seconds at `hourly_usd` (an error for `max_cost` without it).
    pub fn script(&self, hourly_usd: Option<f64>) -> Result<HostScript> {
        let budget = self
            .budget
            .as_ref()
            .map(|b| budget_limit(b, hourly_usd))
            .transpose()?
            .flatten();
        Ok(self.script_with(budget).render())
    }

    fn script_with(&self, budget: Option<BudgetLimit>) -> AutostopScript {
        AutostopScript {
            budget,
            ..self.base.clone()
        }
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
        let mut parts = Vec::new();
        if let Some(a) = &self.autostop {
            let warn = if a.warn_minutes > 0 {
                format!("; users warned {} minutes before", a.warn_minutes)
            } else {
                String::new()
            };
            parts.push(format!(
                "stop the VM after {} idle minutes (no SSH session, Jupyter activity or busy kernel, GPUs under {}%, container processes under {}% CPU{warn})",
                a.idle_minutes, a.gpu_util_percent, a.cpu_percent
            ));
        }
        if let Some(b) = &self.budget {
            let mut limits = Vec::new();
            if let Some(h) = b.max_hours {
                limits.push(format!("{h} running hours"));
            }
            if let Some(c) = b.max_cost {
                limits.push(format!("${c} at the VM's hourly price"));
            }
            parts.push(format!(
                "budget: stop the VM after {}, counted on the host",
                limits.join(" or ")
            ));
        }
        parts.join("; ")
    }
    fn planned_actions(&self) -> Vec<String> {
        vec!["host: sh -s -- apply  # autostop: kgenv-idle agent + systemd timer".into()]
    }
    async fn check(&self, ctx: &StepCtx) -> Result<CheckOutcome> {
        // Without a price a cost budget cannot be rendered: `apply` says why.
        let Ok(script) = self.script(hourly_price(ctx).await?) else {
            return Ok(CheckOutcome::missing(self.planned_actions()));
        };
        let remote = ctx.require_remote().await?;
        Ok(if script.is_converged(ctx, remote.as_ref()).await? {
            CheckOutcome::satisfied()
        } else {
            CheckOutcome::missing(self.planned_actions())
        })
    }
    async fn apply(&self, ctx: &StepCtx) -> Result<()> {
        let hourly = hourly_price(ctx).await?;
        let script = self.script(hourly)?;
        let remote = ctx.require_remote().await?;
        script.run(ctx, remote.as_ref(), "apply").await?;
        let budget = self
            .budget
            .as_ref()
            .map(|b| budget_limit(b, hourly))
            .transpose()?
            .flatten();
        let rendered = self.script_with(budget);
        ctx.state
            .update("autostop", |r| record(r, &rendered))
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
        self.base
            .render()
            .run(ctx, remote.as_ref(), "destroy")
            .await?;
        ctx.state
            .update("autostop", |r| *r = Default::default())
            .await?;
        Ok(Destroyed::Removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_becomes_running_seconds_whichever_limit_comes_first() {
        let hours = Budget::builder().max_hours(2.5).build().expect("valid");
        let limit = budget_limit(&hours, None).expect("no price needed");
        assert_eq!(
            limit,
            Some(BudgetLimit {
                seconds: 9000,
                set_for: "max_hours=2.5".into()
            })
        );
        let both = Budget::builder()
            .max_hours(10.0)
            .max_cost(3.0)
            .build()
            .expect("valid");
        // $3 at $0.75/h is 4 h, before the 10 h.
        assert_eq!(
            budget_limit(&both, Some(0.75))
                .expect("priced")
                .map(|l| l.seconds),
            Some(4 * 3600)
        );
        // $3 at $0.20/h is 15 h: the 10 h come first.
        assert_eq!(
            budget_limit(&both, Some(0.2))
                .expect("priced")
                .map(|l| l.seconds),
            Some(10 * 3600)
        );
        let cost = Budget::builder().max_cost(3.0).build().expect("valid");
        let e = budget_limit(&cost, None).expect_err("no price");
        assert_eq!(e.field, "budget.max_cost");
        assert!(
            e.rule.contains("never enforces a guessed number"),
            "{}",
            e.rule
        );
        assert_eq!(
            budget_limit(&cost, Some(f64::NAN)).expect_err("NaN").field,
            "budget.max_cost"
        );
        // A free VM never reaches a cost limit.
        assert_eq!(budget_limit(&cost, Some(0.0)).expect("free"), None);
    }
}

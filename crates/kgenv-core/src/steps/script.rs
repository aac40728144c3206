//! kgenv's host scripts: small POSIX sh programs with `check`, `apply` and `destroy`
//! actions, rendered from typed specs with every value quoted by [`crate::shell::quote`],
//! and fed to `sh -s -- ACTION` on stdin (nothing is left on the host to go stale).

use crate::backends::remote::{ExecOutput, ExecRequest, Remote};
use crate::backends::ProgressFn;
use crate::error::{BackendError, Result};
use crate::plan::StepCtx;
use crate::shell::{quote, Cmd};

/// `NAME=value` with the value quoted, as one line, preceded by a shellcheck directive when
/// the quoted value holds what shellcheck would flag inside single quotes (`$`, a backtick,
/// an escaped `'`): there they are meant literally.
pub fn assignment(name: &str, value: &str) -> String {
    let q = quote(value);
    let mut codes = Vec::new();
    if q.starts_with('\'') && (value.contains('$') || value.contains('`')) {
        codes.push("SC2016");
    }
    if value.contains('\'') {
        codes.push("SC1003");
    }
    let directive = if codes.is_empty() {
        String::new()
    } else {
        format!(
            "# shellcheck disable={} # a literal value\n",
            codes.join(",")
        )
    };
    format!("{directive}{name}={q}\n")
}

/// The text of [`FILE_PUT_FN`], as a macro so [`FSTAB_SET_FN`] can `concat!` it.
macro_rules! file_put_fn {
    () => {
        r#"file_put_from() {
  _fp_path=$1 _fp_mode=$2
  shift 2
  if [ -e "$_fp_path" ] && "$@" | cmp -s - "$_fp_path"; then
    return 0
  fi
  _fp_dir=$(dirname "$_fp_path")
  if ! _fp_tmp=$(mktemp "$_fp_dir/.$(basename "$_fp_path").kgenv.XXXXXX"); then
    echo "kgenv: cannot make a temp file in $_fp_dir to rewrite $_fp_path (is that file system full or read-only?); $_fp_path is unchanged" >&2
    return 1
  fi
  if ! "$@" > "$_fp_tmp" || ! "$@" | cmp -s - "$_fp_tmp"; then
    rm -f "$_fp_tmp"
    echo "kgenv: writing the new $_fp_path failed (is $_fp_dir full?); $_fp_path is unchanged" >&2
    return 1
  fi
  if [ "$_fp_mode" != keep ]; then
    chmod "$_fp_mode" "$_fp_tmp"
  elif [ -e "$_fp_path" ]; then
    chmod --reference="$_fp_path" "$_fp_tmp" && chown --reference="$_fp_path" "$_fp_tmp"
  else
    chmod 0644 "$_fp_tmp"
  fi || { rm -f "$_fp_tmp"; echo "kgenv: cannot give the new $_fp_path its mode and owner; $_fp_path is unchanged" >&2; return 1; }
  if ! sync "$_fp_tmp" || ! mv -f "$_fp_tmp" "$_fp_path"; then
    rm -f "$_fp_tmp"
    echo "kgenv: replacing $_fp_path failed; $_fp_path is unchanged" >&2
    return 1
  fi
  # The rename is on disk once the directory is: best effort, the file itself is.
  sync "$_fp_dir" 2>/dev/null || true
}

file_put() {
  file_put_from "$1" "$2" printf '%s\n' "$3"
}"#
    };
}

/// `file_put PATH MODE TEXT` replaces PATH with TEXT and a newline; `file_put_from PATH MODE
/// COMMAND [ARGS…]` with what COMMAND prints (run again to check what was written). Neither
/// does anything when PATH already holds that text. MODE is an octal mode, or `keep` for
/// PATH's own mode and owner (0644 when PATH is new).
///
/// The one way kgenv's host scripts change a system file (`/etc/fstab`, apt's sources,
/// `/etc/fuse.conf`, systemd units): the new text goes to a temp file beside PATH, is read
/// back and compared with what was meant (so a short write on a full file system is caught
/// even when a tool does not report it), gets its mode, is flushed to disk and renamed over
/// PATH. A failed write leaves PATH as it was, and a crash leaves the old file or the new
/// one, never a truncated one: a broken fstab can stop a VM from booting, a broken unit or
/// sources list breaks the next boot or `apt-get`.
pub const FILE_PUT_FN: &str = file_put_fn!();

/// `fstab_set FSTAB MOUNT_POINT TYPE LINE`: rewrites FSTAB without its entries for
/// MOUNT_POINT (as fstab escapes it; only those of file system TYPE when TYPE is not empty),
/// with LINE appended when LINE is not empty, and does nothing when that is what FSTAB holds.
/// The one way kgenv's host scripts change `/etc/fstab`, through [`FILE_PUT_FN`] (which it
/// includes): a failed write leaves FSTAB as it was, with its mode and owner.
pub const FSTAB_SET_FN: &str = concat!(
    r#"fstab_text() {
  if [ -e "$1" ]; then
    MP="$2" FT="$3" awk '!($1 !~ /^#/ && $2 == ENVIRON["MP"] && (ENVIRON["FT"] == "" || $3 == ENVIRON["FT"]))' "$1" || return 1
  fi
  if [ -n "$4" ]; then printf '%s\n' "$4"; fi
}

fstab_set() {
  file_put_from "$1" keep fstab_text "$@"
}

"#,
    file_put_fn!()
);

/// `apt_get ARGS…`: `apt-get` as kgenv's host scripts run it — non-interactive, quiet, and
/// waiting up to 10 minutes for dpkg's lock instead of failing at once: on a fresh Deep
/// Learning VM the NVIDIA driver installer holds it for minutes after first boot (the host
/// step waits for the installer first; this covers anything else holding it, such as
/// unattended-upgrades).
pub const APT_GET_FN: &str = r#"apt_get() {
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 -q "$@"
}"#;

/// A rendered host script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostScript {
    /// Name (the `# kgenv-script:` header).
    pub name: String,
    /// Full text.
    pub text: String,
}

/// Builds a host script from variables and the three action bodies.
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct ScriptBuilder {
    name: String,
    vars: Vec<(String, String)>,
    helpers: Vec<String>,
    check: String,
    apply: String,
    destroy: String,
}

impl ScriptBuilder {
    /// A script named `name`.
    pub fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            ..Default::default()
        }
    }
    /// A shell variable set to `value`, quoted.
    pub fn var(mut self, name: &str, value: impl AsRef<str>) -> Self {
        self.vars.push((name.into(), value.as_ref().into()));
        self
    }
    /// Shell functions shared by the actions (and testable on their own), placed after the
    /// variables.
    pub fn helper(mut self, text: &str) -> Self {
        let text = text.trim_matches('\n').to_string();
        // Helpers include the ones they call ([`FSTAB_SET_FN`] holds [`FILE_PUT_FN`]):
        // each function is defined once.
        if self.helpers.iter().any(|h| h.contains(&text)) {
            return self;
        }
        self.helpers.retain(|h| !text.contains(h.as_str()));
        self.helpers.push(text);
        self
    }
    /// The body of `check` (exit 0 when converged).
    pub fn check(mut self, body: &str) -> Self {
        self.check = body.into();
        self
    }
    /// The body of `apply` (idempotent).
    pub fn apply(mut self, body: &str) -> Self {
        self.apply = body.into();
        self
    }
    /// The body of `destroy`.
    pub fn destroy(mut self, body: &str) -> Self {
        self.destroy = body.into();
        self
    }

    /// Renders the script.
    pub fn build(self) -> HostScript {
        let mut t = format!("#!/bin/sh\n# kgenv-script: {}\n# Rendered by kgenv; values are quoted, actions are idempotent.\nset -eu\n\n", self.name);
        for (k, v) in &self.vars {
            t.push_str(&assignment(k, v));
        }
        for h in &self.helpers {
            t.push('\n');
            t.push_str(h);
            t.push('\n');
        }
        let body = |b: &str| {
            let b = b.trim_matches('\n');
            if b.is_empty() {
                "  :".to_string()
            } else {
                b.lines()
                    .map(|l| {
                        if l.is_empty() {
                            String::new()
                        } else {
                            format!("  {l}")
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            }
        };
        t.push_str(&format!(
            "\ncheck() {{\n{}\n}}\n\napply() {{\n{}\n}}\n\ndestroy() {{\n{}\n}}\n\n",
            body(&self.check),
            body(&self.apply),
            body(&self.destroy)
        ));
        t.push_str("case \"${1:-}\" in\n  check) check ;;\n  apply) apply ;;\n  destroy) destroy ;;\n  *) echo \"usage: sh -s -- check|apply|destroy\" >&2; exit 2 ;;\nesac\n");
        HostScript {
            name: self.name,
            text: t,
        }
    }
}

impl HostScript {
    /// Runs `action` on the host (with sudo). `check` returns whether it exited 0; the
    /// others fail on a non-zero exit.
    pub async fn run(
        &self,
        ctx: &StepCtx,
        remote: &dyn Remote,
        action: &str,
    ) -> Result<ExecOutput> {
        self.run_on(remote, action, &|p| ctx.progress(p)).await
    }

    /// [`HostScript::run`] outside a run (for commands such as `kgenv autostop`).
    pub async fn run_on(
        &self,
        remote: &dyn Remote,
        action: &str,
        progress: ProgressFn<'_>,
    ) -> Result<ExecOutput> {
        let req = ExecRequest::new(Cmd::new("sh").args(["-s", "--", action]).line())
            .stdin(self.text.clone())
            .sudo()
            .label(format!("{} {action}", self.name));
        let out = remote.exec(req, progress).await?;
        if action != "check" && !out.success() {
            return Err(BackendError::CommandFailed {
                command: format!("{} {action}", self.name),
                exit_code: out.exit_code,
                stderr_tail: out.stderr_tail(),
            }
            .into());
        }
        Ok(out)
    }

    /// Whether `check` passes on the host.
    pub async fn is_converged(&self, ctx: &StepCtx, remote: &dyn Remote) -> Result<bool> {
        Ok(self.run(ctx, remote, "check").await?.success())
    }
}

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

/// `fstab_set FSTAB MOUNT_POINT TYPE LINE`: rewrites FSTAB without its entries for
/// MOUNT_POINT (as fstab escapes it; only those of file system TYPE when TYPE is not empty),
/// with LINE appended when LINE is not empty, and does nothing when that is what FSTAB holds.
///
/// The one way kgenv's host scripts change `/etc/fstab`: the new text goes to a temp file
/// beside FSTAB, is read back and compared with what was meant (so a short write on a full
/// file system is caught even when a tool does not report it), gets FSTAB's mode and owner,
/// is flushed to disk and renamed over FSTAB. A failed write leaves FSTAB as it was, and a
/// crash leaves the old file or the new one, never a truncated one: a broken fstab can stop
/// a VM from booting.
pub const FSTAB_SET_FN: &str = r#"fstab_text() {
  if [ -e "$1" ]; then
    MP="$2" FT="$3" awk '!($1 !~ /^#/ && $2 == ENVIRON["MP"] && (ENVIRON["FT"] == "" || $3 == ENVIRON["FT"]))' "$1" || return 1
  fi
  if [ -n "$4" ]; then printf '%s\n' "$4"; fi
}

fstab_set() {
  if [ -e "$1" ] && fstab_text "$@" | cmp -s - "$1"; then
    return 0
  fi
  _fs_dir=$(dirname "$1")
  if ! _fs_tmp=$(mktemp "$_fs_dir/.fstab.kgenv.XXXXXX"); then
    echo "kgenv: cannot make a temp file in $_fs_dir to rewrite $1 (is that file system full or read-only?); $1 is unchanged" >&2
    return 1
  fi
  if ! fstab_text "$@" > "$_fs_tmp" || ! fstab_text "$@" | cmp -s - "$_fs_tmp"; then
    rm -f "$_fs_tmp"
    echo "kgenv: writing the new $1 failed (is $_fs_dir full?); $1 is unchanged" >&2
    return 1
  fi
  if [ -e "$1" ]; then
    chmod --reference="$1" "$_fs_tmp" && chown --reference="$1" "$_fs_tmp"
  else
    chmod 0644 "$_fs_tmp"
  fi || { rm -f "$_fs_tmp"; echo "kgenv: cannot give the new $1 its mode and owner; $1 is unchanged" >&2; return 1; }
  if ! sync "$_fs_tmp" || ! mv -f "$_fs_tmp" "$1"; then
    rm -f "$_fs_tmp"
    echo "kgenv: replacing $1 failed; $1 is unchanged" >&2
    return 1
  fi
  # The rename is on disk once the directory is: best effort, the file itself is.
  sync "$_fs_dir" 2>/dev/null || true
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
        self.helpers.push(text.trim_matches('\n').to_string());
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

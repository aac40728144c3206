//! Files on the host over an exec stream: `put_file` pipes the bytes into
//! `cat > TMP && chmod MODE TMP && mv -f TMP PATH` (binary-safe, atomic, parents created),
//! `read_file` runs `cat` and tells "absent" from "unreadable" by a marker exit status.
//!
//! kgenv's host files live in system directories, so both run as root (`sudo -n` unless the
//! login user is root) when [`super::SshOptions::files_as_root`] is set — except a file
//! written into the login user's home, which is written as that user so it stays theirs. Every path reaches
//! the shell through [`crate::shell::quote`].

use std::sync::atomic::{AtomicU64, Ordering};

use super::session::SshSession;
use crate::backends::{no_progress, remote::ExecRequest, BackendResult};
use crate::error::BackendError;
use crate::shell::{quote, Cmd};

/// Exit status `read_file`'s script uses for "no such file".
const ABSENT: i64 = 44;

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The shell line that writes stdin (`len` bytes) to `path` with `mode`, atomically: into a
/// temp file beside it, whose size is checked (a full disk can cut a write short without
/// every tool saying so) and which is flushed to disk before it is renamed over `path`. A
/// failure leaves `path` as it was and no temp file.
pub(crate) fn put_script(path: &str, len: usize, mode: u32, nonce: &str) -> String {
    let dir = match path.rfind('/') {
        Some(0) => "/".to_string(),
        Some(i) => path[..i].to_string(),
        None => ".".to_string(),
    };
    let tmp = format!("{path}.kgenv-tmp-{nonce}");
    let mode = format!("{:o}", mode & 0o7777);
    format!(
        "{mkdir} && umask 077 && {{ cat > {tmp_q} && test \"$(wc -c < {tmp_q})\" -eq {len} && sync -- {tmp_q} && {chmod} && {mv}; }} || {{ rc=$?; rm -f -- {tmp_q}; echo 'kgenv: the write failed (is that file system full?); the file is unchanged' >&2; exit $rc; }}",
        mkdir = Cmd::new("mkdir").arg("-p").arg("--").arg(&dir),
        tmp_q = quote(&tmp),
        chmod = Cmd::new("chmod").arg(&mode).arg("--").arg(&tmp),
        mv = Cmd::new("mv").arg("-f").arg("--").arg(&tmp).arg(path),
    )
}

/// Whether `path` is inside `dir` (lexically: kgenv's own paths have no `..`).
fn in_dir(path: &str, dir: &str) -> bool {
    let dir = dir.trim_end_matches('/');
    !dir.is_empty()
        && path
            .strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/') && !rest.split('/').any(|c| c == ".."))
}

/// The shell line that prints `path`, or exits [`ABSENT`] when it does not exist.
pub(crate) fn read_script(path: &str) -> String {
    let p = quote(path);
    format!("if test -e {p} || test -L {p}; then exec cat -- {p}; else exit {ABSENT}; fi")
}

impl SshSession {
    pub(crate) async fn write_file(
        &self,
        path: &str,
        content: &[u8],
        mode: u32,
    ) -> BackendResult<()> {
        let nonce = format!(
            "{}-{}",
            std::process::id(),
            TMP_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        // What kgenv leaves in the login user's home (the data agent's binary, say) is the
        // user's: written as the user, not through sudo.
        let in_home = self
            .login_home()
            .await?
            .is_some_and(|home| in_dir(path, &home));
        let req = ExecRequest {
            command: put_script(path, content.len(), mode, &nonce),
            stdin: Some(content.to_vec()),
            sudo: self.files_as_root() && !in_home,
            timeout: None,
            idle_timeout: None,
            label: None,
        };
        let out = self.run(req, &no_progress).await?;
        if !out.success() {
            return Err(BackendError::CommandFailed {
                command: format!("write {path} on {}", self.endpoint_string()),
                exit_code: out.exit_code,
                stderr_tail: out.stderr_tail(),
            });
        }
        Ok(())
    }

    pub(crate) async fn fetch_file(&self, path: &str) -> BackendResult<Option<Vec<u8>>> {
        let req = ExecRequest {
            command: read_script(path),
            stdin: None,
            sudo: self.files_as_root(),
            timeout: None,
            idle_timeout: None,
            label: None,
        };
        let out = self.run(req, &no_progress).await?;
        match out.exit_code {
            0 => Ok(Some(out.stdout)),
            ABSENT if out.stderr.is_empty() => Ok(None),
            code => Err(BackendError::CommandFailed {
                command: format!("read {path} on {}", self.endpoint_string()),
                exit_code: code,
                stderr_tail: out.stderr_tail(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_in_the_home_directory() {
        assert!(in_dir("/home/kgenv/.cache/kgenv/bin/x", "/home/kgenv"));
        assert!(in_dir("/home/kgenv/.cache/x", "/home/kgenv/"));
        assert!(!in_dir("/home/kgenvother/x", "/home/kgenv"));
        assert!(!in_dir("/home/kgenv", "/home/kgenv"));
        assert!(!in_dir("/home/kgenv/../root/x", "/home/kgenv"));
        assert!(!in_dir("/var/lib/kgenv/e/x", "/home/kgenv"));
        assert!(!in_dir("/x", ""));
    }

    #[test]
    fn scripts_quote_paths() {
        let s = put_script("/var/lib/kgenv/my dir/it's", 5, 0o600, "1-2");
        assert!(s.contains("mkdir -p -- '/var/lib/kgenv/my dir'"), "{s}");
        assert!(s.contains("chmod 600 -- "), "{s}");
        assert!(s.contains("'/var/lib/kgenv/my dir/it'\\''s'"), "{s}");
        assert!(put_script("/x", 0, 0o644, "n").contains("mkdir -p -- /"));
        assert!(read_script("/a b").contains("cat -- '/a b'"));
    }
}

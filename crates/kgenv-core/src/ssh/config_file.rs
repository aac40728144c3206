//! `~/.ssh/config` integration, so `ssh <env>`, `scp`, `rsync` and editors' remote plugins
//! reach an environment's host with the same key and the same pinned host key as kgenv.
//!
//! kgenv owns one file, `<config>/ssh_config`, with one `Host` block per environment
//! between `# kgenv:begin ENV` / `# kgenv:end ENV` markers, and adds a single
//! `Include` line at the top of `~/.ssh/config` once (a symlinked config is edited where
//! it points). Each block pins the host key: `UserKnownHostsFile` is kgenv's known_hosts
//! file, `HostKeyAlias kgenv-ENV` names the entries kgenv writes there from the pinned or
//! recorded keys, and `StrictHostKeyChecking yes` refuses anything else.
//! [`SshConfigFiles::remove_host`] takes the block and its host-key entries out again, and
//! the `Include` line with the last block.
//!
//! For an interactive shell the CLI spawns the system `ssh` with kgenv's file
//! ([`SshConfigFiles::ssh_command`]); commands can also run over kgenv's own connection
//! ([`super::SshSession::run_streaming`]).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::verify::{self, host_pattern, parse_public_key};
use crate::backends::remote::HostAddr;
use crate::error::BackendError;
use crate::paths;

/// The files kgenv's SSH config integration reads and writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshConfigFiles {
    /// The user's OpenSSH config (`~/.ssh/config`), which gets the `Include` line.
    pub user_config: PathBuf,
    /// kgenv's own file with the `Host` blocks (`<config>/ssh_config`).
    pub kgenv_config: PathBuf,
    /// kgenv's known_hosts file (`<config>/known_hosts`).
    pub known_hosts: PathBuf,
}

const HEADER: &str = "# Written by kgenv: one Host block per environment. Edits between kgenv's markers are\n# replaced on the next `kgenv up` and removed by `kgenv down`.\n";
const INCLUDE_COMMENT: &str = "# kgenv environments (`ssh <env>`); removed by `kgenv down`";

fn invalid(what: &str, message: impl Into<String>) -> BackendError {
    BackendError::InvalidArgument {
        resource: what.to_string(),
        message: message.into(),
    }
}

fn read_or_empty(path: &Path) -> Result<String, BackendError> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(BackendError::io(format!("reading {}", path.display()), e)),
    }
}

fn write(path: &Path, text: &str) -> Result<(), BackendError> {
    paths::write_atomic(path, text.as_bytes(), 0o600)
        .map_err(|e| BackendError::io(format!("writing {}", path.display()), e))
}

/// A word for ssh_config: checked to be one plain token.
fn plain_word(what: &str, value: &str) -> Result<String, BackendError> {
    if value.is_empty()
        || value
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "\"'#%\\".contains(c))
    {
        return Err(invalid(
            what,
            format!("`{value}` cannot be written to an ssh_config file"),
        ));
    }
    Ok(value.to_string())
}

/// A path for ssh_config: double-quoted, `%` escaped (ssh expands `%` tokens).
fn quoted_path(what: &str, path: &Path) -> Result<String, BackendError> {
    let text = path
        .to_str()
        .ok_or_else(|| invalid(what, "path is not valid UTF-8"))?;
    if text.chars().any(|c| c == '"' || c.is_control()) {
        return Err(invalid(
            what,
            format!("`{text}` cannot be written to an ssh_config file"),
        ));
    }
    Ok(format!("\"{}\"", text.replace('%', "%%")))
}

/// Checks an environment name for use as an ssh `Host` alias.
fn alias_name(env: &str) -> Result<&str, BackendError> {
    let ok = !env.is_empty()
        && !env.starts_with('-')
        && env
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if ok {
        Ok(env)
    } else {
        Err(invalid(
            "environment name",
            format!("`{env}` cannot be an ssh Host alias (letters, digits, `.`, `_`, `-`)"),
        ))
    }
}

fn markers(env: &str) -> (String, String) {
    (format!("# kgenv:begin {env}"), format!("# kgenv:end {env}"))
}

/// `text` without the block of `env`, and whether one was there.
fn without_block(text: &str, env: &str) -> (String, bool) {
    let (begin, end) = markers(env);
    let mut out = Vec::new();
    let mut inside = false;
    let mut found = false;
    for line in text.lines() {
        if line.trim() == begin {
            inside = true;
            found = true;
            continue;
        }
        if inside {
            if line.trim() == end {
                inside = false;
            }
            continue;
        }
        out.push(line);
    }
    let mut s = out.join("\n");
    if !s.is_empty() {
        s.push('\n');
    }
    (s, found)
}

fn has_blocks(text: &str) -> bool {
    text.lines()
        .any(|l| l.trim_start().starts_with("# kgenv:begin "))
}

impl SshConfigFiles {
    /// The usual places: `~/.ssh/config`, `<config>/ssh_config`, `<config>/known_hosts`.
    pub fn default_paths() -> Result<Self, BackendError> {
        let home = dirs::home_dir().ok_or_else(|| BackendError::Unavailable {
            backend: "ssh",
            hint: "no home directory: cannot find ~/.ssh/config".into(),
        })?;
        Ok(Self {
            user_config: home.join(".ssh").join("config"),
            kgenv_config: paths::config_dir()?.join("ssh_config"),
            known_hosts: verify::known_hosts_path()?,
        })
    }

    /// The `HostKeyAlias` of `env`'s entries in kgenv's known_hosts file.
    pub fn host_key_alias(env: &str) -> String {
        format!("kgenv-{env}")
    }

    /// The `Include` line for kgenv's file.
    fn include_line(&self) -> Result<String, BackendError> {
        Ok(format!(
            "Include {}",
            quoted_path("kgenv ssh_config", &self.kgenv_config)?
        ))
    }

    /// Writes (or replaces) the `Host ENV` block for `addr`, records its host keys under the
    /// alias, and makes sure `~/.ssh/config` includes kgenv's file. Idempotent.
    ///
    /// The keys are `addr.pinned_host_keys`, or else those kgenv's known_hosts file holds for
    /// the address; with neither, ssh will refuse the host until kgenv has connected once.
    pub fn write_host(&self, env: &str, addr: &HostAddr) -> Result<(), BackendError> {
        let env = alias_name(env)?;
        let identity = addr.identity_file.as_ref().ok_or_else(|| {
            invalid(
                &format!("SSH host {addr}"),
                "no identity file to write into ssh_config",
            )
        })?;
        let alias = Self::host_key_alias(env);
        let block = [
            markers(env).0,
            format!("Host {env}"),
            format!("  HostName {}", plain_word("host", &addr.host)?),
            format!("  Port {}", addr.port),
            format!("  User {}", plain_word("user", &addr.user)?),
            format!("  IdentityFile {}", quoted_path("identity file", identity)?),
            "  IdentitiesOnly yes".to_string(),
            format!(
                "  UserKnownHostsFile {}",
                quoted_path("known_hosts", &self.known_hosts)?
            ),
            format!("  HostKeyAlias {alias}"),
            "  StrictHostKeyChecking yes".to_string(),
            "  UpdateHostKeys no".to_string(),
            markers(env).1,
        ]
        .join("\n");

        let keys = if addr.pinned_host_keys.iter().any(|k| !k.trim().is_empty()) {
            addr.pinned_host_keys
                .iter()
                .filter(|k| !k.trim().is_empty())
                .map(|k| parse_public_key(k))
                .collect::<Result<Vec<_>, _>>()?
        } else {
            verify::lookup(&self.known_hosts, &host_pattern(&addr.host, addr.port))?
        };
        if keys.is_empty() {
            tracing::warn!(env, "no host key known for {addr} yet; `ssh {env}` will refuse the host until kgenv has connected to it");
        }
        verify::set_entries(&self.known_hosts, &alias, &keys)?;

        let (mut text, _) = without_block(&read_or_empty(&self.kgenv_config)?, env);
        if !text.starts_with(HEADER) {
            text = format!("{HEADER}{text}");
        }
        if !text.ends_with("\n\n") {
            text.push('\n');
        }
        text.push_str(&block);
        text.push('\n');
        write(&self.kgenv_config, &text)?;
        self.ensure_include()
    }

    /// Removes the block of `env` and its host-key entries; with no block left, removes
    /// kgenv's file and the `Include` line too. Absent is fine.
    pub fn remove_host(&self, env: &str) -> Result<(), BackendError> {
        let env = alias_name(env)?;
        verify::set_entries(&self.known_hosts, &Self::host_key_alias(env), &[])?;
        let current = read_or_empty(&self.kgenv_config)?;
        let (text, found) = without_block(&current, env);
        if has_blocks(&text) {
            if found {
                write(&self.kgenv_config, &text)?;
            }
            return Ok(());
        }
        match std::fs::remove_file(&self.kgenv_config) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(BackendError::io(
                    format!("removing {}", self.kgenv_config.display()),
                    e,
                ))
            }
        }
        self.remove_include()
    }

    /// The file to edit: `~/.ssh/config`, or where it links to.
    fn user_config_target(&self) -> PathBuf {
        std::fs::canonicalize(&self.user_config).unwrap_or_else(|_| self.user_config.clone())
    }

    fn ensure_include(&self) -> Result<(), BackendError> {
        let include = self.include_line()?;
        let target = self.user_config_target();
        let text = read_or_empty(&target)?;
        if text.lines().any(|l| l.trim() == include) {
            return Ok(());
        }
        if let Some(dir) = target.parent() {
            if !dir.exists() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| BackendError::io(format!("creating {}", dir.display()), e))?;
                #[cfg(unix)]
                {
                    use std::os::unix::fs::PermissionsExt;
                    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
                }
            }
        }
        // At the top: ssh uses the first value it finds, and an Include after a `Host`
        // line would only apply inside that block.
        let sep = if text.is_empty() { "" } else { "\n" };
        write(
            &target,
            &format!("{INCLUDE_COMMENT}\n{include}\n{sep}{text}"),
        )
    }

    fn remove_include(&self) -> Result<(), BackendError> {
        let include = self.include_line()?;
        let target = self.user_config_target();
        let text = read_or_empty(&target)?;
        if !text.lines().any(|l| l.trim() == include) {
            return Ok(());
        }
        let mut lines: Vec<&str> = Vec::new();
        let mut skip_blank = false;
        for line in text.lines() {
            if line.trim() == include || line == INCLUDE_COMMENT {
                skip_blank = line.trim() == include;
                continue;
            }
            if skip_blank && line.trim().is_empty() {
                skip_blank = false;
                continue;
            }
            skip_blank = false;
            lines.push(line);
        }
        let mut out = lines.join("\n");
        if !out.is_empty() {
            out.push('\n');
        }
        write(&target, &out)
    }

    /// The system `ssh` command for `env`, using kgenv's file alone (`-F`), so it works even
    /// if the `Include` line was removed by hand. No `command`: an interactive login shell.
    /// With a command, its words are joined by spaces and run by the remote shell, exactly
    /// as `ssh HOST CMD…` does; `tty` forces a terminal (`-t`) for full-screen programs.
    pub fn ssh_command(&self, env: &str, command: &[String], tty: bool) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.arg("-F").arg(&self.kgenv_config);
        if tty {
            cmd.arg("-t");
        }
        cmd.arg("--").arg(env).args(command);
        cmd
    }
}

impl crate::backends::SshAliases for SshConfigFiles {
    fn write_host(&self, env: &str, addr: &HostAddr) -> Result<(), BackendError> {
        SshConfigFiles::write_host(self, env, addr)
    }
    fn remove_host(&self, env: &str) -> Result<(), BackendError> {
        SshConfigFiles::remove_host(self, env)
    }
    fn has_host(&self, env: &str) -> bool {
        let (begin, _) = markers(env);
        read_or_empty(&self.kgenv_config).is_ok_and(|t| t.lines().any(|l| l.trim() == begin))
    }
    fn location(&self) -> PathBuf {
        self.kgenv_config.clone()
    }
    fn ssh_command(&self, env: &str, command: &[String], tty: bool) -> Command {
        SshConfigFiles::ssh_command(self, env, command, tty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK5BHwLJIK66Suu8T761u2noakEWKSIIqt8mnecF8n5C a";

    fn files(dir: &Path) -> SshConfigFiles {
        SshConfigFiles {
            user_config: dir.join("home/.ssh/config"),
            kgenv_config: dir.join("kgenv/ssh_config"),
            known_hosts: dir.join("kgenv/known_hosts"),
        }
    }

    fn addr() -> HostAddr {
        HostAddr {
            user: "kgenv".into(),
            host: "203.0.113.7".into(),
            port: 22,
            identity_file: Some(PathBuf::from("/k/id_ed25519")),
            pinned_host_keys: vec![KEY.into()],
            trust_on_first_use: false,
        }
    }

    #[test]
    fn write_is_idempotent_and_remove_restores() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = files(dir.path());
        std::fs::create_dir_all(dir.path().join("home/.ssh")).expect("mkdir");
        std::fs::write(&f.user_config, "Host mine\n  User me\n").expect("write");
        f.write_host("dev", &addr()).expect("write");
        f.write_host("dev", &addr()).expect("write again");
        f.write_host("exp", &addr()).expect("second env");
        let user = std::fs::read_to_string(&f.user_config).expect("read");
        assert_eq!(user.matches("Include ").count(), 1, "{user}");
        assert!(user.starts_with(INCLUDE_COMMENT), "{user}");
        let ours = std::fs::read_to_string(&f.kgenv_config).expect("read");
        assert_eq!(ours.matches("Host dev\n").count(), 1, "{ours}");
        assert!(ours.contains("HostKeyAlias kgenv-dev"), "{ours}");
        assert!(ours.contains("StrictHostKeyChecking yes"), "{ours}");
        assert_eq!(
            verify::lookup(&f.known_hosts, "kgenv-dev")
                .expect("lookup")
                .len(),
            1
        );

        f.remove_host("dev").expect("remove");
        let ours = std::fs::read_to_string(&f.kgenv_config).expect("read");
        assert!(
            !ours.contains("Host dev") && ours.contains("Host exp"),
            "{ours}"
        );
        assert!(verify::lookup(&f.known_hosts, "kgenv-dev")
            .expect("lookup")
            .is_empty());
        f.remove_host("exp").expect("remove last");
        f.remove_host("exp").expect("remove absent");
        assert!(!f.kgenv_config.exists());
        assert_eq!(
            std::fs::read_to_string(&f.user_config).expect("read"),
            "Host mine\n  User me\n"
        );
    }

    #[test]
    fn refuses_values_that_would_inject_config() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = files(dir.path());
        let mut a = addr();
        a.host = "h\n  ProxyCommand evil".into();
        assert!(f.write_host("dev", &a).is_err());
        assert!(f.write_host("dev x", &addr()).is_err());
        assert!(!f.kgenv_config.exists());
    }
}

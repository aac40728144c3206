//! Host-key verification: which server keys kgenv trusts for a host.
//!
//! The order, strictest first:
//! 1. the keys pinned in [`HostAddr::pinned_host_keys`] (recorded from the GCE instance's
//!    guest attributes): the host must present one of them;
//! 2. otherwise kgenv's own known_hosts file (`<config>/known_hosts`, OpenSSH format, entries
//!    named `host` for port 22 or `[host]:port` otherwise, as `ssh-keyscan` writes them);
//! 3. otherwise, and only when [`HostAddr::trust_on_first_use`] is set, the presented key is
//!    recorded in that file and accepted.
//!
//! A host that presents a different key is a [`BackendError::HostKeyMismatch`]; an unknown
//! host without trust-on-first-use is refused. Nothing is ever silently accepted.
//!
//! Hashed known_hosts names (`|1|…`) and wildcard patterns are not matched: kgenv writes
//! its own file with plain names.

use std::path::{Path, PathBuf};

use russh::keys::{Algorithm, HashAlg, PublicKey};

use crate::backends::remote::HostAddr;
use crate::error::BackendError;
use crate::paths;

/// kgenv's own known_hosts file: `<config>/known_hosts` (an error without a home
/// directory: a known_hosts file in a shared place could be planted).
pub fn known_hosts_path() -> Result<PathBuf, BackendError> {
    Ok(paths::config_dir()?.join("known_hosts"))
}

/// The name OpenSSH uses for a host in known_hosts: `host` on port 22, `[host]:port` otherwise.
pub fn host_pattern(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_string()
    } else {
        format!("[{host}]:{port}")
    }
}

/// The SHA-256 fingerprint of a key, as OpenSSH prints it (`SHA256:…`).
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// Parses one public key line, `ssh-ed25519 AAAA… [comment]`.
pub fn parse_public_key(line: &str) -> Result<PublicKey, BackendError> {
    let mut words = line.split_whitespace();
    let (Some(kind), Some(data)) = (words.next(), words.next()) else {
        return Err(BackendError::InvalidArgument {
            resource: "host key".into(),
            message: format!(
                "`{}` is not a public key line (`TYPE BASE64 [COMMENT]`)",
                short(line)
            ),
        });
    };
    PublicKey::from_openssh(&format!("{kind} {data}")).map_err(|e| BackendError::InvalidArgument {
        resource: "host key".into(),
        message: format!("`{}` is not a valid {kind} public key: {e}", short(line)),
    })
}

fn short(s: &str) -> String {
    let s = s.trim();
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(60).collect::<String>())
    } else {
        s.to_string()
    }
}

fn same_key(a: &PublicKey, b: &PublicKey) -> bool {
    a.key_data() == b.key_data()
}

/// One entry of a known_hosts file.
#[derive(Debug, Clone)]
struct Entry {
    revoked: bool,
    names: Vec<String>,
    key: PublicKey,
}

/// Reads a known_hosts file; a missing file has no entries. Unparsable lines are skipped.
fn read_entries(path: &Path) -> Result<Vec<Entry>, BackendError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(BackendError::io(format!("reading {}", path.display()), e)),
    };
    let mut entries = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace().peekable();
        let mut revoked = false;
        if let Some(marker) = words.peek().filter(|w| w.starts_with('@')) {
            if *marker != "@revoked" {
                continue; // @cert-authority: kgenv does not use host certificates.
            }
            revoked = true;
            words.next();
        }
        let (Some(names), Some(kind), Some(data)) = (words.next(), words.next(), words.next())
        else {
            continue;
        };
        let Ok(key) = PublicKey::from_openssh(&format!("{kind} {data}")) else {
            continue;
        };
        entries.push(Entry {
            revoked,
            names: names.split(',').map(str::to_string).collect(),
            key,
        });
    }
    Ok(entries)
}

/// The keys recorded for `name` in the known_hosts file at `path` (revoked keys excluded).
pub fn lookup(path: &Path, name: &str) -> Result<Vec<PublicKey>, BackendError> {
    Ok(read_entries(path)?
        .into_iter()
        .filter(|e| !e.revoked && e.names.iter().any(|n| n == name))
        .map(|e| e.key)
        .collect())
}

fn is_revoked(path: &Path, key: &PublicKey) -> Result<bool, BackendError> {
    Ok(read_entries(path)?
        .iter()
        .any(|e| e.revoked && same_key(&e.key, key)))
}

fn key_line(name: &str, key: &PublicKey) -> Result<String, BackendError> {
    let text = key
        .to_openssh()
        .map_err(|e| BackendError::other(format!("encoding a host key: {e}")))?;
    // Drop the comment, if any: `TYPE BASE64`.
    let mut words = text.split_whitespace();
    let kind = words.next().unwrap_or_default();
    let data = words.next().unwrap_or_default();
    Ok(format!("{name} {kind} {data}"))
}

/// Replaces every entry named exactly `name` (alone on its line) by `keys`; an empty `keys`
/// removes them. Other lines are kept as they are. Written atomically, mode 0600.
pub fn set_entries(path: &Path, name: &str, keys: &[PublicKey]) -> Result<(), BackendError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(BackendError::io(format!("reading {}", path.display()), e)),
    };
    let mut out: Vec<String> = text
        .lines()
        .filter(|l| l.split_whitespace().next() != Some(name))
        .map(str::to_string)
        .collect();
    for key in keys {
        out.push(key_line(name, key)?);
    }
    if out.is_empty() && text.is_empty() {
        return Ok(());
    }
    let mut body = out.join("\n");
    if !body.is_empty() {
        body.push('\n');
    }
    paths::write_atomic(path, body.as_bytes(), 0o600)
        .map_err(|e| BackendError::io(format!("writing {}", path.display()), e))
}

/// Appends `key` for `name` to the known_hosts file (trust on first use); a key already
/// recorded for `name` is left alone.
pub fn record(path: &Path, name: &str, key: &PublicKey) -> Result<(), BackendError> {
    if lookup(path, name)?.iter().any(|k| same_key(k, key)) {
        return Ok(());
    }
    let mut text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(BackendError::io(format!("reading {}", path.display()), e)),
    };
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&key_line(name, key)?);
    text.push('\n');
    paths::write_atomic(path, text.as_bytes(), 0o600)
        .map_err(|e| BackendError::io(format!("writing {}", path.display()), e))
}

/// Where the expected keys came from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    Pinned,
    KnownHosts,
}

/// The host-key rules for one host: what it must present, and what to do when it is new.
#[derive(Debug, Clone)]
pub struct HostKeyPolicy {
    host: String,
    name: String,
    pinned: Vec<PublicKey>,
    known_hosts: PathBuf,
    trust_on_first_use: bool,
}

impl HostKeyPolicy {
    /// The rules for `addr`, reading and recording keys in `known_hosts`. Fails when a pinned
    /// key line cannot be parsed.
    pub fn new(addr: &HostAddr, known_hosts: PathBuf) -> Result<Self, BackendError> {
        let pinned = addr
            .pinned_host_keys
            .iter()
            .filter(|l| !l.trim().is_empty())
            .map(|l| parse_public_key(l))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            host: addr.to_string(),
            name: host_pattern(&addr.host, addr.port),
            pinned,
            known_hosts,
            trust_on_first_use: addr.trust_on_first_use,
        })
    }

    /// The known_hosts file this policy reads and records in.
    pub fn known_hosts(&self) -> &Path {
        &self.known_hosts
    }

    fn expected(&self) -> Result<(Vec<PublicKey>, Source), BackendError> {
        if !self.pinned.is_empty() {
            return Ok((self.pinned.clone(), Source::Pinned));
        }
        Ok((lookup(&self.known_hosts, &self.name)?, Source::KnownHosts))
    }

    /// The host-key algorithms to offer, so a host with several keys presents one kgenv
    /// knows (as OpenSSH orders them by known_hosts). All safe defaults when nothing is known.
    pub fn preferred_algorithms(&self) -> Vec<Algorithm> {
        let default = russh::Preferred::DEFAULT.key.to_vec();
        let expected = self.expected().map(|(k, _)| k).unwrap_or_default();
        if expected.is_empty() {
            return default
                .into_iter()
                .filter(|a| !matches!(a, Algorithm::Rsa { hash: None }))
                .collect();
        }
        let mut algos: Vec<Algorithm> = Vec::new();
        for key in &expected {
            let found = match key.algorithm() {
                Algorithm::Rsa { .. } => vec![
                    Algorithm::Rsa {
                        hash: Some(HashAlg::Sha512),
                    },
                    Algorithm::Rsa {
                        hash: Some(HashAlg::Sha256),
                    },
                ],
                other => vec![other],
            };
            for a in found {
                if !algos.contains(&a) {
                    algos.push(a);
                }
            }
        }
        algos
    }

    /// Decides whether `offered` may be trusted for this host, recording it on first use
    /// when that is allowed.
    pub fn check(&self, offered: &PublicKey) -> Result<(), BackendError> {
        if is_revoked(&self.known_hosts, offered)? {
            return Err(BackendError::HostKeyMismatch {
                host: self.host.clone(),
                expected: "a key that is not revoked".into(),
                found: format!("revoked key {}", fingerprint(offered)),
                known_hosts: self.known_hosts.display().to_string(),
            });
        }
        let (expected, source) = self.expected()?;
        if expected.iter().any(|k| same_key(k, offered)) {
            return Ok(());
        }
        if !expected.is_empty() {
            let known_hosts = match source {
                Source::Pinned => {
                    "the host keys kgenv recorded from the instance's guest attributes (state file)"
                        .to_string()
                }
                Source::KnownHosts => self.known_hosts.display().to_string(),
            };
            return Err(BackendError::HostKeyMismatch {
                host: self.host.clone(),
                expected: expected
                    .iter()
                    .map(fingerprint)
                    .collect::<Vec<_>>()
                    .join(" or "),
                found: format!("{} {}", offered.algorithm(), fingerprint(offered)),
                known_hosts,
            });
        }
        if self.trust_on_first_use {
            tracing::warn!(
                host = %self.host,
                fingerprint = %fingerprint(offered),
                file = %self.known_hosts.display(),
                "trusting a new SSH host key on first use and recording it"
            );
            return record(&self.known_hosts, &self.name, offered);
        }
        Err(BackendError::InvalidArgument {
            resource: format!("SSH host {}", self.host),
            message: format!(
                "its host key ({} {}) is not pinned and not in {}; kgenv does not trust unknown hosts. \
                 Check the fingerprint out of band, then either set `trust_on_first_use = true` for this \
                 host or add the key to that file (`ssh-keyscan -p PORT HOST`)",
                offered.algorithm(),
                fingerprint(offered),
                self.known_hosts.display()
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK5BHwLJIK66Suu8T761u2noakEWKSIIqt8mnecF8n5C a";
    const KEY_B: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBAIRPvfyZuwwu3W9I0JHtUJ6PgKmP5IMfaHB8EzqZ2z b";

    fn addr(pinned: &[&str], tofu: bool) -> HostAddr {
        HostAddr {
            user: "kgenv".into(),
            host: "10.0.0.1".into(),
            port: 2222,
            identity_file: None,
            pinned_host_keys: pinned.iter().map(|s| s.to_string()).collect(),
            trust_on_first_use: tofu,
        }
    }

    #[test]
    fn pinned_keys_accept_theirs_and_refuse_others() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kh = dir.path().join("known_hosts");
        let policy = HostKeyPolicy::new(&addr(&[KEY_A], false), kh).expect("policy");
        let a = parse_public_key(KEY_A).expect("a");
        let b = parse_public_key(KEY_B).expect("b");
        policy.check(&a).expect("pinned key accepted");
        let err = policy.check(&b).expect_err("other key refused");
        assert_eq!(err.kind(), "host_key_mismatch", "{err}");
        assert!(err.to_string().contains(&fingerprint(&b)), "{err}");
        assert_eq!(policy.preferred_algorithms(), vec![Algorithm::Ed25519]);
    }

    #[test]
    fn unknown_host_needs_tofu_and_tofu_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kh = dir.path().join("known_hosts");
        let a = parse_public_key(KEY_A).expect("a");
        let b = parse_public_key(KEY_B).expect("b");
        let strict = HostKeyPolicy::new(&addr(&[], false), kh.clone()).expect("policy");
        let err = strict.check(&a).expect_err("unknown refused");
        assert_eq!(err.kind(), "invalid_argument");
        assert!(!kh.exists(), "nothing recorded without TOFU");

        let tofu = HostKeyPolicy::new(&addr(&[], true), kh.clone()).expect("policy");
        tofu.check(&a).expect("first use trusted");
        let text = std::fs::read_to_string(&kh).expect("recorded");
        assert!(
            text.starts_with("[10.0.0.1]:2222 ssh-ed25519 AAAA"),
            "{text}"
        );
        // Now known: the strict policy accepts it and refuses a change, even with TOFU.
        strict.check(&a).expect("known key accepted");
        let err = tofu.check(&b).expect_err("changed key refused");
        assert_eq!(err.kind(), "host_key_mismatch");
        assert!(err.to_string().contains(&kh.display().to_string()), "{err}");
    }

    #[test]
    fn set_entries_replaces_only_that_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kh = dir.path().join("known_hosts");
        std::fs::write(&kh, format!("# mine\nother {KEY_B}\n@revoked * {KEY_B}\n")).expect("write");
        let a = parse_public_key(KEY_A).expect("a");
        set_entries(&kh, "kgenv-dev", std::slice::from_ref(&a)).expect("set");
        assert_eq!(lookup(&kh, "kgenv-dev").expect("lookup").len(), 1);
        assert_eq!(lookup(&kh, "other").expect("lookup").len(), 1);
        set_entries(&kh, "kgenv-dev", &[]).expect("clear");
        assert!(lookup(&kh, "kgenv-dev").expect("lookup").is_empty());
        let text = std::fs::read_to_string(&kh).expect("read");
        assert!(
            text.contains("# mine") && text.contains("@revoked"),
            "{text}"
        );
        // A revoked key is refused even when pinned.
        let b = parse_public_key(KEY_B).expect("b");
        let policy = HostKeyPolicy::new(&addr(&[KEY_B], false), kh).expect("policy");
        assert_eq!(
            policy.check(&b).expect_err("revoked").kind(),
            "host_key_mismatch"
        );
    }

    #[test]
    fn bad_pinned_line_is_a_clear_error() {
        let err = HostKeyPolicy::new(&addr(&["not a key"], false), PathBuf::from("/nonexistent"))
            .expect_err("bad pin");
        assert!(err.to_string().contains("not a valid"), "{err}");
    }
}

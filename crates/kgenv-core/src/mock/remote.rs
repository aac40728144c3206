//! The mock Remote backend: a simulated host with files, kgenv host scripts and `ssh-keygen`.
//!
//! It models kgenv's host-script convention: a script fed on stdin to `sh -s -- ACTION`
//! whose header names it (`# kgenv-script: NAME`). `apply` marks that exact script as
//! applied, `check` exits 0 only when the same script (by hash) was applied, `destroy`
//! forgets it. A script that sets `KEY_FILE=PATH` generates an SSH key pair there on `apply`
//! when none exists, and removes it on `destroy` (as the github-key script does). `true` exits 0; `ssh-keygen -f PATH`
//! writes a key pair; a command whose first line starts with `# kgenv-probe:` (a read-only
//! probe) exits 0 with no output (the host is ready); every other command exits 0 and is
//! recorded as mutating. Generated
//! keys are real ed25519 keys, so fingerprints work.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sha2::{Digest, Sha256};

use super::compute::MOCK_HOST_KEY;

/// How kgenv's read-only host probes begin (see `steps::host::first_boot::PROBE`).
const PROBE_MARK: &str = "# kgenv-probe:";
use super::MockWorld;
use crate::backends::compute::InstanceStatus;
use crate::backends::remote::{
    ByteStream, ExecOutput, ExecRequest, HostAddr, Remote, RemoteConnector,
};
use crate::backends::{BackendResult, Progress, ProgressFn, Stream};
use crate::error::BackendError;

pub(super) struct MockConnector(pub(super) MockWorld);

#[async_trait]
impl RemoteConnector for MockConnector {
    async fn connect(
        &self,
        addr: &HostAddr,
        _ready_within: Duration,
    ) -> BackendResult<Arc<dyn Remote>> {
        let host = addr.host.clone();
        let pinned = addr.pinned_host_keys.clone();
        self.0
            .call("remote.connect", &addr.to_string(), false, |s| {
                // Addresses the mock compute hands out must belong to a running instance.
                if host.starts_with("203.0.113.") {
                    let running = s.instances.values().any(|i| {
                        i.external_ip.as_deref() == Some(&host)
                            && i.status == InstanceStatus::Running
                    });
                    if !running {
                        return Err(BackendError::Connection {
                            endpoint: host.clone(),
                            message: "no route to host (no running instance has this address)"
                                .into(),
                            source: None,
                        });
                    }
                }
                if !pinned.is_empty() && !pinned.iter().any(|k| k == MOCK_HOST_KEY) {
                    return Err(BackendError::HostKeyMismatch {
                        host: host.clone(),
                        expected: pinned.join(", "),
                        found: MOCK_HOST_KEY.into(),
                        known_hosts: "state file".into(),
                    });
                }
                Ok(())
            })
            .await?;
        Ok(Arc::new(MockRemote {
            world: self.0.clone(),
            endpoint: addr.to_string(),
        }))
    }
}

struct MockRemote {
    world: MockWorld,
    endpoint: String,
}

/// The value of a top-level `NAME=value` line of a rendered script (values quoted by
/// [`crate::shell::quote`]).
fn script_var(script: &[u8], name: &str) -> Option<String> {
    let text = String::from_utf8_lossy(script);
    let raw = text
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=")))?;
    Some(
        match raw.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
            Some(inner) => inner.replace("'\\''", "'"),
            None => raw.to_string(),
        },
    )
}

/// Writes a fresh ed25519 key pair at `path` into the simulated host.
fn keygen(s: &mut super::WorldState, path: &str) {
    let id = s.id();
    let comment = format!("kgenv-mock-{id}");
    let pair = ssh_key::PrivateKey::random(&mut rand_core::OsRng, ssh_key::Algorithm::Ed25519)
        .ok()
        .and_then(|mut k| {
            k.set_comment(&comment);
            Some((
                k.to_openssh(ssh_key::LineEnding::LF).ok()?.to_string(),
                k.public_key().to_openssh().ok()?,
            ))
        });
    let (private, public) = pair.unwrap_or_else(|| {
        (
            format!("mock private key {id}\n"),
            format!("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5MockGithubKey{id} kgenv"),
        )
    });
    s.host_files
        .insert(path.to_string(), (private.into_bytes(), 0o600));
    s.host_files.insert(
        format!("{path}.pub"),
        (format!("{public}\n").into_bytes(), 0o644),
    );
}

fn script_name(script: &[u8]) -> Option<String> {
    String::from_utf8_lossy(script).lines().find_map(|l| {
        l.strip_prefix("# kgenv-script: ")
            .map(|n| n.trim().to_string())
    })
}

#[async_trait]
impl Remote for MockRemote {
    fn endpoint(&self) -> String {
        self.endpoint.clone()
    }

    async fn exec(&self, req: ExecRequest, progress: ProgressFn<'_>) -> BackendResult<ExecOutput> {
        let words: Vec<&str> = req.command.split_whitespace().collect();
        let action = match words.as_slice() {
            ["sh", "-s", "--", a, ..] => Some(a.to_string()),
            _ => None,
        };
        let script = action
            .as_ref()
            .and(req.stdin.as_deref())
            .and_then(|s| script_name(s).map(|n| (n, hex::encode(Sha256::digest(s)))));
        let key_file = req
            .stdin
            .as_deref()
            .filter(|_| action.as_deref() == Some("apply"))
            .and_then(|s| script_var(s, "KEY_FILE"));
        let key_destroy = req
            .stdin
            .as_deref()
            .filter(|_| action.as_deref() == Some("destroy"))
            .and_then(|s| script_var(s, "KEY_FILE"));
        // A `# kgenv-probe:` line opens the read-only probes (the host step's first-boot probe).
        let probe = req.command.starts_with(PROBE_MARK);
        let mutating = !(req.command == "true" || probe || action.as_deref() == Some("check"));
        let out = self
            .world
            .call("remote.exec", &req.command, mutating, |s| {
                let ok = ExecOutput::default();
                if let (Some(action), Some((name, hash))) = (&action, &script) {
                    return Ok(match action.as_str() {
                        "check" if s.host_scripts.get(name) == Some(hash) => ok,
                        "check" => ExecOutput { exit_code: 1, ..ok },
                        "apply" => {
                            if let Some(path) = key_file
                                .as_deref()
                                .filter(|p| !s.host_files.contains_key(*p))
                            {
                                keygen(s, path);
                            }
                            s.host_scripts.insert(name.clone(), hash.clone());
                            ok
                        }
                        "destroy" => {
                            if let Some(path) = &key_destroy {
                                s.host_files.remove(path);
                                s.host_files.remove(&format!("{path}.pub"));
                            }
                            s.host_scripts.remove(name);
                            ok
                        }
                        _ => ExecOutput {
                            exit_code: 2,
                            stderr: b"unknown action".to_vec(),
                            ..ok
                        },
                    });
                }
                if words.first() == Some(&"ssh-keygen") {
                    if let Some(i) = words.iter().position(|w| *w == "-f") {
                        let path = words
                            .get(i + 1)
                            .map(|p| p.trim_matches('\''))
                            .unwrap_or_default()
                            .to_string();
                        keygen(s, &path);
                    }
                }
                Ok(ok)
            })
            .await?;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            progress(Progress::Line {
                stream: Stream::Stdout,
                line: line.to_string(),
            });
        }
        Ok(out)
    }

    async fn put_file(&self, path: &str, content: &[u8], mode: u32) -> BackendResult<()> {
        self.world
            .call("remote.put_file", path, true, |s| {
                s.host_files
                    .insert(path.to_string(), (content.to_vec(), mode));
                Ok(())
            })
            .await
    }

    async fn read_file(&self, path: &str) -> BackendResult<Option<Vec<u8>>> {
        self.world
            .call("remote.read_file", path, false, |s| {
                Ok(s.host_files.get(path).map(|(c, _)| c.clone()))
            })
            .await
    }

    async fn open_tcp(&self, host: &str, port: u16) -> BackendResult<Box<dyn ByteStream>> {
        self.world
            .call("remote.open_tcp", &format!("{host}:{port}"), false, |_| {
                Ok(())
            })
            .await?;
        Ok(Box::new(echo()))
    }

    async fn open_unix(&self, path: &str) -> BackendResult<Box<dyn ByteStream>> {
        self.world
            .call("remote.open_unix", path, false, |_| Ok(()))
            .await?;
        Ok(Box::new(echo()))
    }
}

/// One end of an in-memory pipe whose other end echoes everything back.
fn echo() -> tokio::io::DuplexStream {
    let (ours, mut theirs) = tokio::io::duplex(64 * 1024);
    tokio::spawn(async move {
        let (mut r, mut w) = tokio::io::split(&mut theirs);
        let _ = tokio::io::copy(&mut r, &mut w).await;
    });
    ours
}

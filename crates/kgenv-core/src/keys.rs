//! kgenv's per-environment SSH key: ed25519, made by kgenv, private file mode 0600 in the
//! config dir, public key published in GCE's `ssh-keys` metadata as `USER:ssh-ed25519 … kgenv`.

use std::path::{Path, PathBuf};

use crate::error::BackendError;
use crate::paths;

/// The login user kgenv creates on GCE instances through `ssh-keys` metadata.
pub const GCE_USER: &str = "kgenv";

/// An environment's key pair on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvKey {
    /// The private key file (OpenSSH format, mode 0600).
    pub private_path: PathBuf,
    /// The public key line, `ssh-ed25519 AAAA… kgenv-<env>`.
    pub public: String,
}

impl EnvKey {
    /// The `ssh-keys` metadata value for `user`.
    pub fn gce_metadata(&self, user: &str) -> String {
        format!("{user}:{}", self.public)
    }
}

/// Path of the private key of `env` (an error without a home directory).
pub fn private_key_path(env: &str) -> Result<PathBuf, BackendError> {
    Ok(paths::keys_dir(env)?.join("id_ed25519"))
}

/// Loads the key of `env`, generating it on first use.
pub fn ensure(env: &str) -> Result<EnvKey, BackendError> {
    ensure_at(&private_key_path(env)?, &format!("kgenv-{env}"))
}

/// Loads the key at `path`, generating it (and `path.pub`) when absent.
pub fn ensure_at(path: &Path, comment: &str) -> Result<EnvKey, BackendError> {
    let pub_path = path.with_extension("pub");
    if path.exists() {
        let public = match std::fs::read_to_string(&pub_path) {
            Ok(p) => p.trim().to_string(),
            Err(_) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| BackendError::io(format!("reading {}", path.display()), e))?;
                let key = ssh_key::PrivateKey::from_openssh(&text).map_err(|e| {
                    BackendError::other(format!(
                        "{} is not an OpenSSH private key: {e}",
                        path.display()
                    ))
                })?;
                if key.is_encrypted() {
                    return Err(BackendError::other(format!("{} is encrypted; kgenv needs an unencrypted key (or load it into ssh-agent and point `identity_file` at an unencrypted copy)", path.display())));
                }
                key.public_key()
                    .to_openssh()
                    .map_err(|e| BackendError::other(e.to_string()))?
            }
        };
        return Ok(EnvKey {
            private_path: path.to_path_buf(),
            public,
        });
    }
    let mut key = ssh_key::PrivateKey::random(&mut rand_core::OsRng, ssh_key::Algorithm::Ed25519)
        .map_err(|e| BackendError::other(format!("generating an ed25519 key: {e}")))?;
    key.set_comment(comment);
    let private = key
        .to_openssh(ssh_key::LineEnding::LF)
        .map_err(|e| BackendError::other(e.to_string()))?;
    let public = key
        .public_key()
        .to_openssh()
        .map_err(|e| BackendError::other(e.to_string()))?;
    paths::write_atomic(path, private.as_bytes(), 0o600)
        .map_err(|e| BackendError::io(format!("writing {}", path.display()), e))?;
    paths::write_atomic(&pub_path, format!("{public}\n").as_bytes(), 0o644)
        .map_err(|e| BackendError::io(format!("writing {}", pub_path.display()), e))?;
    Ok(EnvKey {
        private_path: path.to_path_buf(),
        public,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_with_private_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys/id_ed25519");
        let a = ensure_at(&path, "kgenv-test").expect("generate");
        let b = ensure_at(&path, "kgenv-test").expect("load");
        assert_eq!(a, b);
        assert!(a.public.starts_with("ssh-ed25519 "), "{}", a.public);
        assert!(a.gce_metadata("kgenv").starts_with("kgenv:ssh-ed25519 "));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }
}

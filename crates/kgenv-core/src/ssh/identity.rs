//! The client key kgenv logs in with: kgenv's per-environment ed25519 key
//! ([`crate::keys`]) or a key file the user names, loaded for russh.
//!
//! OpenSSH-format keys (what kgenv and `ssh-keygen` write) and the older PEM formats are
//! read. kgenv never prompts: an encrypted key is refused with an error that says what to do.

use std::path::Path;
use std::sync::Arc;

use russh::keys::PrivateKey;

use crate::error::BackendError;

/// Loads the private key at `path` for logging in. The key material never appears in errors.
pub fn load(path: &Path) -> Result<Arc<PrivateKey>, BackendError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        BackendError::io(format!("reading SSH identity file {}", path.display()), e)
    })?;
    let encrypted = || BackendError::Unauthenticated {
        service: "ssh",
        message: format!(
            "identity file {} is protected by a passphrase and kgenv does not prompt for one. \
             Leave `identity_file` unset to use kgenv's own key for this environment, or point it \
             at an unencrypted copy (`cp KEY KEY.kgenv && ssh-keygen -p -N '' -f KEY.kgenv`)",
            path.display()
        ),
    };
    if text.contains("BEGIN OPENSSH PRIVATE KEY") {
        let key = PrivateKey::from_openssh(&text).map_err(|e| BackendError::InvalidArgument {
            resource: format!("SSH identity file {}", path.display()),
            message: format!("not a valid OpenSSH private key: {e}"),
        })?;
        if key.is_encrypted() {
            return Err(encrypted());
        }
        return Ok(Arc::new(key));
    }
    match russh::keys::decode_secret_key(&text, None) {
        Ok(key) => Ok(Arc::new(key)),
        Err(russh::keys::Error::KeyIsEncrypted) => Err(encrypted()),
        Err(e) => Err(BackendError::InvalidArgument {
            resource: format!("SSH identity file {}", path.display()),
            message: format!("not a private key kgenv can read ({e}); use an OpenSSH-format key"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kgenv_generated_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("id_ed25519");
        let env_key = crate::keys::ensure_at(&path, "kgenv-test").expect("generate");
        let key = load(&path).expect("load");
        let public = key.public_key().to_openssh().expect("encode");
        assert_eq!(
            public.split_whitespace().nth(1),
            env_key.public.split_whitespace().nth(1)
        );
    }

    #[test]
    fn garbage_and_missing_files_are_clear_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("junk");
        std::fs::write(&path, "hello").expect("write");
        let err = load(&path).expect_err("junk refused");
        assert!(err.to_string().contains("junk"), "{err}");
        let err = load(&dir.path().join("absent")).expect_err("missing refused");
        assert_eq!(err.kind(), "io");
    }
}

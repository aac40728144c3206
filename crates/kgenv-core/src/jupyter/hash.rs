//! The Jupyter password hash, in jupyter_server's own argon2 format, so the plaintext is
//! hashed on the user's machine and never leaves it.

use crate::error::BackendError;

/// Hashes `password` as jupyter_server's `passwd()` does: `argon2:` followed by an argon2id
/// PHC string with memory 10240 KiB, 10 passes, parallelism 8.
pub fn hash_password(password: &str) -> Result<String, BackendError> {
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
    let params = argon2::Params::new(10_240, 10, 8, Some(32))
        .map_err(|e| BackendError::other(e.to_string()))?;
    let hasher = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = SaltString::generate(&mut OsRng);
    let phc = hasher
        .hash_password(password.as_bytes(), &salt)
        .map_err(|e| BackendError::other(format!("hashing the Jupyter password: {e}")))?;
    Ok(format!("argon2:{phc}"))
}

/// Checks `password` against a hash made by [`hash_password`] (or by jupyter_server).
pub fn verify_password(password: &str, hashed: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    let Some(phc) = hashed.strip_prefix("argon2:") else {
        return false;
    };
    PasswordHash::new(phc).is_ok_and(|h| {
        argon2::Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_has_jupyter_format_and_verifies() {
        let h = hash_password("s3cret pass").expect("hash");
        assert!(
            h.starts_with("argon2:$argon2id$v=19$m=10240,t=10,p=8$"),
            "{h}"
        );
        assert!(verify_password("s3cret pass", &h));
        assert!(!verify_password("wrong", &h));
        assert_ne!(h, hash_password("s3cret pass").expect("hash"), "salted");
    }
}

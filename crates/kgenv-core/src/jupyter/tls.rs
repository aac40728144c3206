//! Jupyter's TLS certificate: the self-signed one kgenv makes (once per environment, kept
//! in its key directory so the fingerprint the user accepted stays valid), the user's own
//! files, and the SHA-256 fingerprint `kgenv jupyter` shows to compare with the browser's.

use std::path::PathBuf;

use crate::error::{BackendError, Result};
use crate::spec::JupyterTls;

/// A self-signed certificate and its private key (PEM) for `names` (DNS names or IP
/// addresses, each becoming a subject alternative name).
pub fn self_signed_certificate(names: &[String]) -> Result<(String, String), BackendError> {
    let ck = rcgen::generate_simple_self_signed(names.to_vec())
        .map_err(|e| BackendError::other(format!("generating the Jupyter certificate: {e}")))?;
    Ok((ck.cert.pem(), ck.signing_key.serialize_pem()))
}

/// The SHA-256 fingerprint of the first certificate in `pem`, as browsers and
/// `openssl x509 -fingerprint -sha256` show it (`AB:CD:…`).
pub fn certificate_sha256(pem: &str) -> Result<String, BackendError> {
    use rustls_pki_types::pem::PemObject;
    use sha2::Digest;
    let der = rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| BackendError::other(format!("reading the Jupyter certificate: {e}")))?;
    Ok(sha2::Sha256::digest(der.as_ref())
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":"))
}

/// Where the local copy of environment `env`'s self-signed certificate and key are kept.
/// An error without a home directory (see [`crate::paths::config_dir`]).
pub(crate) fn local_cert_paths(env: &str) -> Result<(PathBuf, PathBuf)> {
    let dir = crate::paths::keys_dir(env)?;
    Ok((dir.join("jupyter-cert.pem"), dir.join("jupyter-key.pem")))
}

/// The certificate (PEM) kgenv serves for `tls` in environment `env`, if it exists already:
/// the user's file, or the self-signed one kept on this machine. Makes nothing (for `plan`
/// and `status`); `None` when TLS is off or nothing is kept yet.
pub(crate) fn existing_certificate(env: &str, tls: &JupyterTls) -> Option<String> {
    match tls {
        JupyterTls::Off => None,
        JupyterTls::Files { cert, .. } => std::fs::read_to_string(cert).ok(),
        JupyterTls::SelfSigned => std::fs::read_to_string(local_cert_paths(env).ok()?.0).ok(),
    }
}

/// The TLS certificate and key (PEM) `tls` asks for in environment `env`: the user's
/// files, or kgenv's self-signed pair — generated once (for localhost, 127.0.0.1 and
/// `host_ip` when known) and kept (key 0600). `None` when TLS is off.
pub(crate) fn certificate(
    env: &str,
    tls: &JupyterTls,
    host_ip: Option<&str>,
) -> Result<Option<(String, String)>> {
    match tls {
        JupyterTls::Off => Ok(None),
        JupyterTls::Files { cert, key } => {
            let read = |p: &str| {
                std::fs::read_to_string(p)
                    .map_err(|e| BackendError::io(format!("reading jupyter.tls file {p}"), e))
            };
            Ok(Some((read(cert)?, read(key)?)))
        }
        JupyterTls::SelfSigned => {
            let (cert_path, key_path) = local_cert_paths(env)?;
            if let (Ok(c), Ok(k)) = (
                std::fs::read_to_string(&cert_path),
                std::fs::read_to_string(&key_path),
            ) {
                return Ok(Some((c, k)));
            }
            let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
            names.extend(host_ip.map(str::to_string));
            let (c, k) = self_signed_certificate(&names)?;
            crate::paths::write_atomic(&key_path, k.as_bytes(), 0o600)
                .map_err(|e| BackendError::io("writing the Jupyter key", e))?;
            crate::paths::write_atomic(&cert_path, c.as_bytes(), 0o644)
                .map_err(|e| BackendError::io("writing the Jupyter certificate", e))?;
            Ok(Some((c, k)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_sha256_of_der() {
        let (cert, _) = self_signed_certificate(&["localhost".into()]).expect("cert");
        let fp = certificate_sha256(&cert).expect("fingerprint");
        assert_eq!(fp.len(), 32 * 3 - 1, "{fp}");
        assert!(
            fp.chars().all(|c| c == ':' || c.is_ascii_hexdigit()),
            "{fp}"
        );
        let (other, _) = self_signed_certificate(&["localhost".into()]).expect("cert");
        assert_ne!(certificate_sha256(&other).expect("fp"), fp);
    }
}

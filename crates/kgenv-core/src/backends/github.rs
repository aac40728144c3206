//! The GitHub keys backend trait: deploy keys on a repository, or keys on the user, plus
//! GitHub's published SSH host keys (`/meta`) so hosts pin github.com instead of trusting
//! the first connection.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::BackendResult;

/// Where a key is registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyScope {
    /// A deploy key on `owner/name` (least privilege).
    Repo(String),
    /// A key on the authenticated user's account.
    User,
}

impl KeyScope {
    /// The page where a person adds a key of this scope by hand, on the GitHub at `web_url`
    /// (`https://github.com`, or a GitHub Enterprise server).
    ///
    /// ```
    /// use kgenv_core::backends::github::KeyScope;
    /// let repo = KeyScope::Repo("octo/kaggle".into());
    /// assert_eq!(repo.settings_url("https://github.com"), "https://github.com/octo/kaggle/settings/keys/new");
    /// assert_eq!(KeyScope::User.settings_url("https://ghe.example.com/"), "https://ghe.example.com/settings/ssh/new");
    /// ```
    pub fn settings_url(&self, web_url: &str) -> String {
        let web = web_url.trim_end_matches('/');
        match self {
            Self::Repo(r) => format!("{web}/{r}/settings/keys/new"),
            Self::User => format!("{web}/settings/ssh/new"),
        }
    }

    /// The REST path of this scope's keys collection (`/repos/o/r/keys`, `/user/keys`).
    pub fn keys_path(&self) -> String {
        match self {
            Self::Repo(r) => format!("/repos/{r}/keys"),
            Self::User => "/user/keys".into(),
        }
    }
}

/// A registered key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GithubKeyInfo {
    /// GitHub's key id.
    pub id: u64,
    /// Title shown in GitHub's settings.
    pub title: String,
    /// The public key, `ssh-ed25519 AAAA...`.
    pub key: String,
    /// Read-only (deploy keys only).
    pub read_only: bool,
}

/// The SHA-256 fingerprint of an OpenSSH public key line (`SHA256:…`, as `ssh-keygen -l`
/// prints it), or `None` when the line is not a public key. Keys are compared by it, so a
/// changed comment or title does not make a key "different".
pub fn key_fingerprint(line: &str) -> Option<String> {
    let key = ssh_key::PublicKey::from_openssh(line.trim()).ok()?;
    Some(key.fingerprint(ssh_key::HashAlg::Sha256).to_string())
}

/// The SSH host name of the GitHub at `web_url` (`github.com` for `https://github.com`).
pub fn ssh_host(web_url: &str) -> String {
    let rest = web_url.split_once("://").map_or(web_url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    // Drop a port, keeping bracketed IPv6 literals whole.
    match host.rsplit_once(':') {
        Some((h, p))
            if !h.is_empty()
                && p.chars().all(|c| c.is_ascii_digit())
                && (!h.contains(':') || h.ends_with(']')) =>
        {
            h.trim_matches(['[', ']']).to_string()
        }
        _ => host.to_string(),
    }
}

/// GitHub's keys API.
#[async_trait]
pub trait GitHub: Send + Sync {
    /// The web address of this GitHub (`https://github.com`, or a GitHub Enterprise server):
    /// for settings pages in messages, and its SSH host name ([`ssh_host`]).
    fn web_url(&self) -> String;
    /// GitHub's published SSH host keys (`GET /meta`, field `ssh_keys`): OpenSSH public key
    /// lines without host names. Needs no token.
    async fn ssh_host_keys(&self) -> BackendResult<Vec<String>>;
    /// Keys registered in `scope`.
    async fn list_keys(&self, scope: &KeyScope) -> BackendResult<Vec<GithubKeyInfo>>;
    /// Registers a key.
    async fn add_key(
        &self,
        scope: &KeyScope,
        title: &str,
        key: &str,
        read_only: bool,
    ) -> BackendResult<GithubKeyInfo>;
    /// Removes a key by id.
    async fn delete_key(&self, scope: &KeyScope, id: u64) -> BackendResult<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_host_of_web_urls() {
        assert_eq!(ssh_host("https://github.com"), "github.com");
        assert_eq!(ssh_host("https://ghe.corp.example/"), "ghe.corp.example");
        assert_eq!(ssh_host("http://127.0.0.1:8080"), "127.0.0.1");
        assert_eq!(ssh_host("https://[::1]:443/x"), "::1");
    }

    #[test]
    fn fingerprints_ignore_comments() {
        let a = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
        let fa = key_fingerprint(a).expect("a key");
        assert_eq!(
            key_fingerprint(&format!("{a} some comment")),
            Some(fa.clone())
        );
        assert_eq!(
            fa, "SHA256:+DiY3wvvV6TuJJhbpZisF/zLDA0zPMSvHdkr4UvCOqU",
            "GitHub's published ed25519 fingerprint"
        );
        assert_eq!(key_fingerprint("not a key"), None);
    }
}

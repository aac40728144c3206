//! The mock GitHub backend: keys per scope, rejecting a key already in use (GitHub's 422),
//! and github.com's real published SSH host keys for `/meta`.

use async_trait::async_trait;

use super::MockWorld;
use crate::backends::github::{GitHub, GithubKeyInfo, KeyScope};
use crate::backends::BackendResult;
use crate::error::BackendError;

pub(super) struct MockGitHub(pub(super) MockWorld);

fn label(scope: &KeyScope) -> String {
    match scope {
        KeyScope::Repo(r) => format!("repo {r}"),
        KeyScope::User => "user".into(),
    }
}

/// github.com's published host keys (ed25519 and ECDSA), as `/meta` lists them.
pub const GITHUB_HOST_KEYS: [&str; 2] = [
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl",
    "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBEmKSENjQEezOmxkZMy7opKgwFB9nkt5YRrYMjNuG5N87uRgg6CLrbo5wAdT/y6v0mKV0U2w0WZ2YB/++Tpockg=",
];

#[async_trait]
impl GitHub for MockGitHub {
    fn web_url(&self) -> String {
        "https://github.com".into()
    }

    async fn ssh_host_keys(&self) -> BackendResult<Vec<String>> {
        self.0
            .call("github.meta", "ssh_keys", false, |_| {
                Ok(GITHUB_HOST_KEYS.iter().map(|k| k.to_string()).collect())
            })
            .await
    }

    async fn list_keys(&self, scope: &KeyScope) -> BackendResult<Vec<GithubKeyInfo>> {
        self.0
            .call("github.list_keys", &label(scope), false, |s| {
                Ok(s.github_keys
                    .iter()
                    .filter(|(sc, _)| sc == scope)
                    .map(|(_, k)| k.clone())
                    .collect())
            })
            .await
    }

    async fn add_key(
        &self,
        scope: &KeyScope,
        title: &str,
        key: &str,
        read_only: bool,
    ) -> BackendResult<GithubKeyInfo> {
        self.0
            .call("github.add_key", &label(scope), true, |s| {
                if s.github_keys.iter().any(|(_, k)| k.key == key) {
                    return Err(BackendError::AlreadyExists {
                        resource: "GitHub key (key is already in use)".into(),
                    });
                }
                let info = GithubKeyInfo {
                    id: s.id(),
                    title: title.into(),
                    key: key.into(),
                    read_only,
                };
                s.github_keys.push((scope.clone(), info.clone()));
                Ok(info)
            })
            .await
    }

    async fn delete_key(&self, scope: &KeyScope, id: u64) -> BackendResult<()> {
        self.0
            .call("github.delete_key", &label(scope), true, |s| {
                let before = s.github_keys.len();
                s.github_keys.retain(|(sc, k)| !(sc == scope && k.id == id));
                if s.github_keys.len() == before {
                    Err(BackendError::NotFound {
                        resource: format!("GitHub key {id}"),
                    })
                } else {
                    Ok(())
                }
            })
            .await
    }
}

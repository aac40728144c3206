//! The mock GitHub backend: keys per scope, rejecting a key already in use (GitHub's 422).

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

#[async_trait]
impl GitHub for MockGitHub {
    async fn list_keys(&self, scope: &KeyScope) -> BackendResult<Vec<GithubKeyInfo>> {
        self.0
            .call("github.list_keys", &label(scope), false, |s| {
                Ok(s.github_keys.iter().filter(|(sc, _)| sc == scope).map(|(_, k)| k.clone()).collect())
            })
            .await
    }

    async fn add_key(&self, scope: &KeyScope, title: &str, key: &str, read_only: bool) -> BackendResult<GithubKeyInfo> {
        self.0
            .call("github.add_key", &label(scope), true, |s| {
                if s.github_keys.iter().any(|(_, k)| k.key == key) {
                    return Err(BackendError::AlreadyExists { resource: "GitHub key (key is already in use)".into() });
                }
                let info = GithubKeyInfo { id: s.id(), title: title.into(), key: key.into(), read_only };
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
                    Err(BackendError::NotFound { resource: format!("GitHub key {id}") })
                } else {
                    Ok(())
                }
            })
            .await
    }
}

//! The GitHub keys backend trait: deploy keys on a repository, or keys on the user.

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

/// GitHub's keys API.
#[async_trait]
pub trait GitHub: Send + Sync {
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

//! The GitHub key spec (guide step 3): an SSH key made on the host and registered on GitHub.

use serde::{Deserialize, Serialize};

use crate::error::ValidationError;

/// A validated GitHub key spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct GithubKey {
    /// `owner/name` for a deploy key; `None` for a key on the user's account.
    pub repo: Option<String>,
    /// Read-only deploy key (the default: least privilege).
    pub read_only: bool,
    /// Title shown on GitHub (defaults to `kgenv-<env>`).
    pub title: String,
}

/// Builder for [`GithubKey`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[must_use]
pub struct GithubKeyBuilder {
    repo: Option<String>,
    read_only: Option<bool>,
    title: Option<String>,
}

impl GithubKey {
    /// A builder; without `repo` the key goes on the user's account.
    pub fn builder() -> GithubKeyBuilder {
        GithubKeyBuilder::default()
    }
}

impl GithubKeyBuilder {
    /// Registers a deploy key on `owner/name`.
    pub fn repo(mut self, v: impl Into<String>) -> Self {
        self.repo = Some(v.into());
        self
    }
    /// Read-only (default true).
    pub fn read_only(mut self, v: bool) -> Self {
        self.read_only = Some(v);
        self
    }
    /// Key title.
    pub fn title(mut self, v: impl Into<String>) -> Self {
        self.title = Some(v.into());
        self
    }
    pub(crate) fn default_title(mut self, env: &str) -> Self {
        self.title.get_or_insert_with(|| format!("kgenv-{env}"));
        self
    }

    /// Validates and returns the spec.
    pub fn build(self) -> Result<GithubKey, ValidationError> {
        if let Some(repo) = &self.repo {
            let ok = repo.split_once('/').is_some_and(|(o, n)| {
                let part = |s: &str| {
                    !s.is_empty()
                        && s.chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                };
                part(o) && part(n) && !n.contains('/')
            });
            if !ok {
                return Err(ValidationError::new(
                    "repo",
                    format!("`{repo}` is not a repository like `owner/name`"),
                ));
            }
        }
        let title = self.title.unwrap_or_else(|| "kgenv".into());
        if title.is_empty() || title.len() > 100 || title.chars().any(char::is_control) {
            return Err(ValidationError::new(
                "title",
                "must be 1-100 printable characters",
            ));
        }
        let read_only = self.read_only.unwrap_or(true);
        if self.repo.is_none() && self.read_only == Some(true) {
            return Err(ValidationError::new("read_only", "only deploy keys can be read-only: set `repo = \"owner/name\"`, or drop read_only for a user key"));
        }
        Ok(GithubKey {
            read_only: read_only && self.repo.is_some(),
            repo: self.repo,
            title,
        })
    }
}

//! GitHub's JSON as kgenv reads it: keys, `/meta`, and error bodies (no I/O here).

use serde::Deserialize;

use crate::backends::github::GithubKeyInfo;

/// A deploy key or user key.
#[derive(Deserialize)]
pub(super) struct KeyJson {
    id: u64,
    #[serde(default)]
    title: Option<String>,
    key: String,
    #[serde(default)]
    read_only: Option<bool>,
}

impl From<KeyJson> for GithubKeyInfo {
    fn from(k: KeyJson) -> Self {
        Self {
            id: k.id,
            title: k.title.unwrap_or_default(),
            key: k.key,
            read_only: k.read_only.unwrap_or(false),
        }
    }
}

/// `/meta` (only the SSH host keys).
#[derive(Deserialize)]
pub(super) struct MetaJson {
    #[serde(default)]
    pub(super) ssh_keys: Option<Vec<String>>,
}

/// `{"message": ..., "errors": [...]}`.
#[derive(Deserialize, Default)]
pub(super) struct ErrorJson {
    #[serde(default)]
    message: String,
    #[serde(default)]
    errors: Vec<ErrorItem>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ErrorItem {
    Detail {
        #[serde(default)]
        message: Option<String>,
        #[serde(default)]
        code: Option<String>,
    },
    Text(String),
}

impl ErrorJson {
    /// The error body, or an empty one when it is not GitHub's JSON.
    pub(super) fn parse(body: &[u8]) -> Self {
        serde_json::from_slice(body).unwrap_or_default()
    }

    /// GitHub's message with the details of `errors`, e.g. `Validation Failed: key is already in use`.
    pub(super) fn text(&self) -> String {
        let details: Vec<String> = self
            .errors
            .iter()
            .filter_map(|e| match e {
                ErrorItem::Detail { message, code } => message.clone().or_else(|| code.clone()),
                ErrorItem::Text(t) => Some(t.clone()),
            })
            .collect();
        match (self.message.is_empty(), details.is_empty()) {
            (true, true) => "no message".into(),
            (false, true) => self.message.clone(),
            (true, false) => details.join("; "),
            (false, false) => format!("{}: {}", self.message, details.join("; ")),
        }
    }
}

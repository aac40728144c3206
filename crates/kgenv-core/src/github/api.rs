//! GitHub's keys and meta endpoints as kgenv uses them: paths, request bodies, decoded
//! answers, and the mapping of GitHub's statuses to typed [`BackendError`]s with messages
//! that say what to do. No I/O here: [`super::transport`] sends.

use reqwest::StatusCode;
use serde::Deserialize;

use super::transport::RawResponse;
use crate::backends::github::{GithubKeyInfo, KeyScope};
use crate::error::BackendError;

/// The path of the keys collection of `scope`.
pub fn keys_path(scope: &KeyScope) -> String {
    match scope {
        KeyScope::Repo(r) => format!("/repos/{r}/keys"),
        KeyScope::User => "/user/keys".into(),
    }
}

/// The path of one key.
pub fn key_path(scope: &KeyScope, id: u64) -> String {
    format!("{}/{id}", keys_path(scope))
}

/// The body of `POST` on [`keys_path`]. `read_only` only exists for deploy keys.
pub fn add_key_body(
    scope: &KeyScope,
    title: &str,
    key: &str,
    read_only: bool,
) -> serde_json::Value {
    match scope {
        KeyScope::Repo(_) => {
            serde_json::json!({ "title": title, "key": key.trim(), "read_only": read_only })
        }
        KeyScope::User => serde_json::json!({ "title": title, "key": key.trim() }),
    }
}

#[derive(Deserialize)]
struct KeyJson {
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

#[derive(Deserialize)]
struct MetaJson {
    #[serde(default)]
    ssh_keys: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
struct ErrorJson {
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
    fn parse(body: &[u8]) -> Self {
        serde_json::from_slice(body).unwrap_or_default()
    }

    /// GitHub's message with the details of `errors`, e.g. `Validation Failed: key is already in use`.
    fn text(&self) -> String {
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

/// What a call was about, for error messages.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    /// The scope of the keys call (`None` for `/meta`).
    pub scope: Option<&'a KeyScope>,
    /// `GET /repos/o/r/keys`, for messages.
    pub what: String,
}

fn resource(call: &Call<'_>) -> String {
    match call.scope {
        Some(KeyScope::Repo(r)) => format!("GitHub deploy keys of {r}"),
        Some(KeyScope::User) => "GitHub SSH keys of the token's user".into(),
        None => "GitHub /meta".into(),
    }
}

fn token_scope_hint(scope: Option<&KeyScope>) -> &'static str {
    match scope {
        Some(KeyScope::Repo(_)) => "a fine-grained token with the repository's \"Administration: read and write\" permission, or a classic token with the `repo` scope",
        Some(KeyScope::User) => "a fine-grained token with the account permission \"Git SSH keys: read and write\", or a classic token with the `admin:public_key` scope",
        None => "no token",
    }
}

/// Maps a non-2xx answer to a typed error.
pub fn error_for(call: &Call<'_>, r: &RawResponse) -> BackendError {
    let gh = ErrorJson::parse(&r.body);
    let text = gh.text();
    let status = r.status;
    match status {
        StatusCode::UNAUTHORIZED => BackendError::Unauthenticated {
            service: "github",
            message: format!("{} answered 401 ({text}): GITHUB_TOKEN is wrong, expired or revoked; make a new one with {}", call.what, token_scope_hint(call.scope)),
        },
        StatusCode::FORBIDDEN | StatusCode::TOO_MANY_REQUESTS if r.rate_limit_spent || status == StatusCode::TOO_MANY_REQUESTS || text.to_ascii_lowercase().contains("rate limit") => {
            BackendError::RateLimited { service: "github", retry_after: r.retry_after }
        }
        StatusCode::FORBIDDEN => BackendError::PermissionDenied {
            resource: resource(call),
            message: format!("{} answered 403 ({text}): the token needs {}", call.what, token_scope_hint(call.scope)),
        },
        StatusCode::NOT_FOUND => match call.scope {
            Some(KeyScope::Repo(r)) => BackendError::PermissionDenied {
                resource: format!("GitHub repository {r}"),
                message: format!("{} answered 404: the repository does not exist or GITHUB_TOKEN cannot see it (GitHub answers 404 to both); check `github_key.repo` and give the token access to {r} with {}", call.what, token_scope_hint(call.scope)),
            },
            _ => BackendError::NotFound { resource: format!("{} ({})", resource(call), call.what) },
        },
        StatusCode::UNPROCESSABLE_ENTITY if text.contains("already in use") => BackendError::AlreadyExists {
            resource: format!("GitHub key (GitHub: {text}; a key can be registered once across GitHub, as one deploy key or one user key)"),
        },
        StatusCode::UNPROCESSABLE_ENTITY | StatusCode::BAD_REQUEST => BackendError::InvalidArgument { resource: resource(call), message: format!("{} answered {} ({text})", call.what, status.as_u16()) },
        s if s.is_server_error() => BackendError::transient("github", format!("{} answered {} ({text})", call.what, s.as_u16())),
        s => BackendError::other(format!("{} answered {} ({text})", call.what, s.as_u16())),
    }
}

fn decode_json<T: serde::de::DeserializeOwned>(
    call: &Call<'_>,
    r: &RawResponse,
) -> Result<T, BackendError> {
    serde_json::from_slice(&r.body).map_err(|e| BackendError::Other {
        message: format!("{}: GitHub's answer is not the expected JSON", call.what),
        source: Some(Box::new(e)),
    })
}

/// Decodes a key list (200).
pub fn decode_keys(call: &Call<'_>, r: RawResponse) -> Result<Vec<GithubKeyInfo>, BackendError> {
    if r.status != StatusCode::OK {
        return Err(error_for(call, &r));
    }
    Ok(decode_json::<Vec<KeyJson>>(call, &r)?
        .into_iter()
        .map(Into::into)
        .collect())
}

/// Decodes a created key (201).
pub fn decode_created(call: &Call<'_>, r: RawResponse) -> Result<GithubKeyInfo, BackendError> {
    if r.status != StatusCode::CREATED && r.status != StatusCode::OK {
        return Err(error_for(call, &r));
    }
    Ok(decode_json::<KeyJson>(call, &r)?.into())
}

/// Decodes a deletion (204).
pub fn decode_deleted(call: &Call<'_>, r: RawResponse) -> Result<(), BackendError> {
    if r.status.is_success() {
        return Ok(());
    }
    Err(match r.status {
        // The key is gone already (or never was): what `delete` wants.
        StatusCode::NOT_FOUND => BackendError::NotFound {
            resource: format!("GitHub key ({})", call.what),
        },
        _ => error_for(call, &r),
    })
}

/// Decodes `/meta`'s SSH host keys, each checked to be one OpenSSH public key.
pub fn decode_meta_ssh_keys(call: &Call<'_>, r: RawResponse) -> Result<Vec<String>, BackendError> {
    if r.status != StatusCode::OK {
        return Err(error_for(call, &r));
    }
    let keys = decode_json::<MetaJson>(call, &r)?
        .ssh_keys
        .unwrap_or_default();
    if keys.is_empty() {
        return Err(BackendError::NotFound { resource: format!("`ssh_keys` in {} (this GitHub publishes no SSH host keys; kgenv pins them instead of trusting the first connection, so add the server's keys to the host's known_hosts yourself)", call.what) });
    }
    keys.into_iter()
        .map(|k| {
            let k = k.trim().to_string();
            match ssh_key::PublicKey::from_openssh(&k) {
                Ok(_) if !k.contains(['\n', '\r']) => Ok(k),
                _ => Err(BackendError::other(format!(
                    "{}: `{k}` is not an SSH public key",
                    call.what
                ))),
            }
        })
        .collect()
}

//! The data agent's wire protocol, and nothing else: the one JSON [`AgentRequest`] the
//! client writes to the agent's stdin, and the tagged JSON lines ([`AgentLine`]) the agent
//! prints back. Both sides are the same kgenv build (the client copies its own binary), so
//! the protocol is versioned only to reject stray output, not for compatibility.
//!
//! The request carries the Kaggle credentials when the operation needs them (listing,
//! fetching): it travels on stdin only, and its `Debug` hides them. The operations that only
//! look ([`AgentOp::Present`], [`AgentOp::Space`]) need none, and `plan` and `status` send
//! none.

use serde::{Deserialize, Serialize};

use crate::backends::kaggle::{DataFile, FetchOptions};
use crate::error::BackendError;
use crate::kaggle::credentials::{Credentials, Secret};
use crate::kaggle::env::KaggleEndpoint;

/// Tag on every agent output line, so other output (a login banner) is ignored.
const TAG: &str = "kgenv_agent";

/// Credentials on the wire to the agent (stdin only).
#[derive(Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(super) enum WireCredentials {
    Token {
        token: String,
        source: String,
    },
    ApiKey {
        username: String,
        key: String,
        source: String,
    },
}

impl From<&Credentials> for WireCredentials {
    fn from(c: &Credentials) -> Self {
        match c {
            Credentials::Token { token, source } => Self::Token {
                token: token.expose().into(),
                source: format!("{source} (forwarded)"),
            },
            Credentials::ApiKey {
                username,
                key,
                source,
            } => Self::ApiKey {
                username: username.clone(),
                key: key.expose().into(),
                source: format!("{source} (forwarded)"),
            },
        }
    }
}

impl From<WireCredentials> for Credentials {
    fn from(w: WireCredentials) -> Self {
        match w {
            WireCredentials::Token { token, source } => Self::Token {
                token: Secret::new(token),
                source,
            },
            WireCredentials::ApiKey {
                username,
                key,
                source,
            } => Self::ApiKey {
                username,
                key: Secret::new(key),
                source,
            },
        }
    }
}

/// What the agent is asked to do.
#[derive(Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum AgentOp {
    /// List a competition's files.
    List {
        /// Competition.
        competition: String,
    },
    /// Is `file` fully at `dest`?
    Present {
        /// Destination.
        dest: String,
        /// File.
        file: String,
    },
    /// Free space at `dest` and what partial downloads of `files` hold there (answered
    /// with a [`DestSpace`](crate::backends::kaggle::DestSpace), or `null` for `gs://`).
    Space {
        /// Destination.
        dest: String,
        /// Listed names of the files about to be fetched.
        files: Vec<String>,
    },
    /// Fetch `file` as `opts` say (destination and extraction are per call, like
    /// [`Kaggle::fetch`](crate::backends::Kaggle::fetch)'s).
    Fetch {
        /// Competition.
        competition: String,
        /// File.
        file: DataFile,
        /// Destination and extraction.
        opts: FetchOptions,
    },
}

/// One request to the agent, read from its stdin. Holds the Kaggle credentials: never log it.
#[derive(Clone, Serialize, Deserialize)]
pub struct AgentRequest {
    pub(super) op: AgentOp,
    pub(super) endpoint: KaggleEndpoint,
    /// `None` for the operations that only look.
    #[serde(default)]
    pub(super) credentials: Option<WireCredentials>,
    pub(super) concurrency: usize,
    pub(super) chunk_size: u64,
}

impl std::fmt::Debug for AgentRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentRequest")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// A typed error on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct WireError {
    kind: String,
    resource: Option<String>,
    message: String,
}

impl From<&BackendError> for WireError {
    fn from(e: &BackendError) -> Self {
        let (resource, message) = match e {
            BackendError::NotFound { resource } => (Some(resource.clone()), String::new()),
            BackendError::PermissionDenied { resource, message }
            | BackendError::InvalidArgument { resource, message } => {
                (Some(resource.clone()), message.clone())
            }
            BackendError::Unauthenticated { message, .. } => (None, message.clone()),
            other => (None, other.to_string()),
        };
        Self {
            kind: e.kind().into(),
            resource,
            message,
        }
    }
}

impl WireError {
    pub(super) fn into_error(self, host: &str) -> BackendError {
        let on = |m: String| format!("{m} (on {host})");
        match self.kind.as_str() {
            "not_found" => BackendError::NotFound {
                resource: on(self.resource.unwrap_or(self.message)),
            },
            "permission_denied" => BackendError::PermissionDenied {
                resource: self.resource.unwrap_or_default(),
                message: self.message,
            },
            "invalid_argument" => BackendError::InvalidArgument {
                resource: self.resource.unwrap_or_default(),
                message: self.message,
            },
            "unauthenticated" => BackendError::Unauthenticated {
                service: "kaggle",
                message: self.message,
            },
            "transient" | "rate_limited" | "connection" | "timeout" => {
                BackendError::transient("kaggle", on(self.message))
            }
            _ => BackendError::other(on(self.message)),
        }
    }
}

/// One line the agent prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum AgentLine {
    Progress {
        item: String,
        done: u64,
        total: Option<u64>,
        bytes_per_sec: u64,
        eta_secs: Option<u64>,
    },
    Log {
        line: String,
    },
    Result(serde_json::Value),
    Error(WireError),
}

#[derive(Serialize, Deserialize)]
struct Tagged {
    #[serde(rename = "kgenv_agent")]
    version: u32,
    #[serde(flatten)]
    line: AgentLine,
}

pub(super) fn encode(line: AgentLine) -> String {
    serde_json::to_string(&Tagged { version: 1, line }).unwrap_or_default()
}

pub(super) fn decode(line: &str) -> Option<AgentLine> {
    // The line may carry a prefix (a test harness, a shell); the JSON starts at the tag.
    let start = line.find(&format!("{{\"{TAG}\""))?;
    serde_json::from_str::<Tagged>(line[start..].trim())
        .ok()
        .map(|t| t.line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_ignore_noise() {
        let l = encode(AgentLine::Progress {
            item: "a".into(),
            done: 5,
            total: Some(9),
            bytes_per_sec: 3,
            eta_secs: Some(2),
        });
        assert!(matches!(
            decode(&l),
            Some(AgentLine::Progress { done: 5, .. })
        ));
        assert!(decode("Welcome to Ubuntu").is_none());
        assert!(matches!(
            decode(&format!("test agent ... {l}")),
            Some(AgentLine::Progress { done: 5, .. })
        ));
        assert!(decode("{\"kgenv_agent\": 1, \"bogus\": {}}").is_none());
    }

    #[test]
    fn a_fetch_carries_its_own_extract_choice() {
        let op = AgentOp::Fetch {
            competition: "c".into(),
            file: DataFile {
                name: "train.csv".into(),
                size: 3,
            },
            opts: FetchOptions::new("/data/c").extract(true),
        };
        let back: AgentOp =
            serde_json::from_value(serde_json::to_value(&op).expect("encode")).expect("decode");
        match back {
            AgentOp::Fetch { opts, .. } => {
                assert_eq!(opts, FetchOptions::new("/data/c").extract(true));
            }
            _ => panic!("not a fetch"),
        }
    }

    #[test]
    fn a_looking_request_travels_without_credentials() {
        let req = AgentRequest {
            op: AgentOp::Space {
                dest: "/data/c".into(),
                files: vec!["train.csv".into()],
            },
            endpoint: KaggleEndpoint::prod(),
            credentials: None,
            concurrency: 1,
            chunk_size: 1,
        };
        let wire = serde_json::to_value(&req).expect("encode");
        assert_eq!(wire["credentials"], serde_json::Value::Null);
        let mut bare = wire.clone();
        bare.as_object_mut().expect("object").remove("credentials");
        let back: AgentRequest = serde_json::from_value(bare).expect("no credentials field");
        assert!(back.credentials.is_none());
        assert!(matches!(back.op, AgentOp::Space { files, .. } if files == ["train.csv"]));
    }

    #[test]
    fn request_debug_hides_credentials() {
        let req = AgentRequest {
            op: AgentOp::List {
                competition: "c".into(),
            },
            endpoint: KaggleEndpoint::prod(),
            credentials: Some(WireCredentials::Token {
                token: "sekrit-token".into(),
                source: "x".into(),
            }),
            concurrency: 1,
            chunk_size: 1,
        };
        assert!(!format!("{req:?}").contains("sekrit"));
    }
}

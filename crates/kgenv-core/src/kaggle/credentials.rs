//! Kaggle credentials, found in the official client's order:
//!
//! 1. `KAGGLE_API_TOKEN`: the token itself, or the path of a file holding it;
//! 2. `~/.kaggle/access_token` (then `~/.kaggle/access_token.txt`);
//! 3. the legacy API key: `kaggle.json` in `KAGGLE_CONFIG_DIR` (default `~/.kaggle`, or
//!    `$XDG_CONFIG_HOME/kaggle` on Linux when `~/.kaggle` does not exist), with
//!    `KAGGLE_USERNAME` / `KAGGLE_KEY` overriding its fields; sent as HTTP Basic auth.
//!
//! Tokens are sent as `Authorization: Bearer` (see [`Credentials::token_source`]), and only
//! to the API's origin. No secret is ever logged: `Debug` and [`Credentials::describe`] show
//! only where the credentials came from.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::backends::BackendResult;
use crate::error::BackendError;
use crate::http::TokenSource;

/// Kaggle's secrets are the shared [`crate::http::Secret`] (kept at this path for the
/// remote agent).
pub use crate::http::Secret;

/// How kgenv authenticates to Kaggle. Deliberately not `Serialize`: the only place the
/// secret leaves the process is the remote agent's stdin (see [`super::agent`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credentials {
    /// An API token (`Authorization: Bearer`).
    Token {
        /// The token.
        token: Secret,
        /// Where it came from (`KAGGLE_API_TOKEN`, `~/.kaggle/access_token`).
        source: String,
    },
    /// A legacy username and API key (HTTP Basic).
    ApiKey {
        /// Kaggle user name.
        username: String,
        /// The key.
        key: Secret,
        /// Where they came from.
        source: String,
    },
}

impl Credentials {
    /// Where the credentials came from, for messages.
    pub fn describe(&self) -> String {
        match self {
            Self::Token { source, .. } => format!("token from {source}"),
            Self::ApiKey {
                username, source, ..
            } => format!("API key of `{username}` from {source}"),
        }
    }

    /// What the API client sends: the token as a bearer, the legacy key as HTTP Basic.
    pub fn token_source(&self) -> TokenSource {
        match self {
            Self::Token { token, .. } => TokenSource::Static(token.clone()),
            Self::ApiKey { username, key, .. } => TokenSource::Basic {
                username: username.clone(),
                password: key.clone(),
            },
        }
    }

    /// Finds credentials in the process environment and the home directory.
    pub fn from_env() -> BackendResult<Self> {
        let home = dirs::home_dir().unwrap_or_else(|| PathBuf::from("/"));
        Self::discover(&|k| std::env::var(k).ok(), &home, cfg!(target_os = "linux"))
    }

    /// Finds credentials with variables read through `var` and `home` as the home
    /// directory (`linux` selects the XDG fallback for `kaggle.json`).
    pub fn discover(
        var: &dyn Fn(&str) -> Option<String>,
        home: &Path,
        linux: bool,
    ) -> BackendResult<Self> {
        let var = |k: &str| var(k).filter(|v| !v.is_empty());
        let read_token = |p: &Path| {
            std::fs::read_to_string(p)
                .ok()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
        };
        let mut token_tried = false;
        if let Some(v) = var("KAGGLE_API_TOKEN") {
            token_tried = true;
            let p = Path::new(&v);
            if p.exists() {
                if let Some(t) = read_token(p) {
                    return Ok(Self::Token {
                        token: Secret::new(t),
                        source: format!("the file named by KAGGLE_API_TOKEN ({})", p.display()),
                    });
                }
            } else {
                return Ok(Self::Token {
                    token: Secret::new(v.trim()),
                    source: "KAGGLE_API_TOKEN".into(),
                });
            }
        }
        if !token_tried {
            for name in ["access_token", "access_token.txt"] {
                let p = home.join(".kaggle").join(name);
                if let Some(t) = read_token(&p) {
                    return Ok(Self::Token {
                        token: Secret::new(t),
                        source: p.display().to_string(),
                    });
                }
            }
        }
        let dir = match var("KAGGLE_CONFIG_DIR") {
            Some(d) => PathBuf::from(d),
            None => {
                let dot = home.join(".kaggle");
                if linux && !dot.exists() {
                    var("XDG_CONFIG_HOME")
                        .map_or_else(|| home.join(".config"), PathBuf::from)
                        .join("kaggle")
                } else {
                    dot
                }
            }
        };
        let file = dir.join("kaggle.json");
        let (mut username, mut key, mut source) = (None, None, String::new());
        if let Ok(text) = std::fs::read_to_string(&file) {
            #[derive(Deserialize)]
            struct KaggleJson {
                username: Option<String>,
                key: Option<String>,
            }
            match serde_json::from_str::<KaggleJson>(&text) {
                Ok(j) => {
                    username = j.username;
                    key = j.key;
                    source = file.display().to_string();
                }
                Err(e) => {
                    return Err(BackendError::Unauthenticated {
                        service: "kaggle",
                        message: format!("{} is not valid JSON ({e}); it should hold {{\"username\": ..., \"key\": ...}}", file.display()),
                    })
                }
            }
        }
        if let Some(u) = var("KAGGLE_USERNAME") {
            username = Some(u);
            source = "KAGGLE_USERNAME/KAGGLE_KEY".into();
        }
        if let Some(k) = var("KAGGLE_KEY") {
            key = Some(k);
            source = "KAGGLE_USERNAME/KAGGLE_KEY".into();
        }
        if let (Some(username), Some(key)) = (username, key) {
            return Ok(Self::ApiKey {
                username,
                key: Secret::new(key),
                source,
            });
        }
        Err(BackendError::Unauthenticated {
            service: "kaggle",
            message: format!(
                "no Kaggle credentials: set KAGGLE_API_TOKEN, or put a token in {}, or the API key from https://www.kaggle.com/settings in {} (or KAGGLE_USERNAME and KAGGLE_KEY)",
                home.join(".kaggle/access_token").display(),
                file.display()
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn discover(vars: &[(&str, &str)], home: &Path) -> BackendResult<Credentials> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Credentials::discover(&|k| map.get(k).cloned(), home, true)
    }

    #[test]
    fn order_matches_the_official_client() {
        let home = tempfile::tempdir().expect("tempdir");
        let h = home.path();
        assert!(discover(&[], h).expect_err("nothing").is_auth());

        std::fs::create_dir_all(h.join(".kaggle")).expect("mkdir");
        std::fs::write(
            h.join(".kaggle/kaggle.json"),
            r#"{"username":"ann","key":"k1"}"#,
        )
        .expect("write");
        match discover(&[], h).expect("kaggle.json") {
            Credentials::ApiKey { username, key, .. } => {
                assert_eq!((username.as_str(), key.expose()), ("ann", "k1"))
            }
            other => panic!("{other:?}"),
        }
        match discover(&[("KAGGLE_KEY", "k2")], h).expect("env overrides file") {
            Credentials::ApiKey { username, key, .. } => {
                assert_eq!((username.as_str(), key.expose()), ("ann", "k2"))
            }
            other => panic!("{other:?}"),
        }
        std::fs::write(h.join(".kaggle/access_token"), "tok-file\n").expect("write");
        match discover(&[], h).expect("access_token beats kaggle.json") {
            Credentials::Token { token, .. } => assert_eq!(token.expose(), "tok-file"),
            other => panic!("{other:?}"),
        }
        match discover(&[("KAGGLE_API_TOKEN", "tok-env")], h).expect("env token first") {
            Credentials::Token { token, source } => assert_eq!(
                (token.expose(), source.as_str()),
                ("tok-env", "KAGGLE_API_TOKEN")
            ),
            other => panic!("{other:?}"),
        }
        let tf = h.join("tokfile");
        std::fs::write(&tf, " tok-path \n").expect("write");
        match discover(&[("KAGGLE_API_TOKEN", tf.to_str().expect("utf8"))], h).expect("token path")
        {
            Credentials::Token { token, .. } => assert_eq!(token.expose(), "tok-path"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn debug_never_shows_secrets() {
        let c = Credentials::ApiKey {
            username: "ann".into(),
            key: Secret::new("very-secret-key"),
            source: "x".into(),
        };
        let t = Credentials::Token {
            token: Secret::new("very-secret-token"),
            source: "y".into(),
        };
        for s in [
            format!("{c:?}"),
            format!("{t:?}"),
            c.describe(),
            t.describe(),
            format!("{:?}", c.token_source()),
            format!("{:?}", t.token_source()),
        ] {
            assert!(!s.contains("very-secret"), "{s}");
        }
    }
}

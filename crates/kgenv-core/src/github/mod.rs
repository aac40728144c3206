//! The real GitHub backend: the REST API's deploy keys (`/repos/{owner}/{repo}/keys`),
//! user keys (`/user/keys`) and `/meta`, with `GITHUB_TOKEN` and `GITHUB_API_URL` (GitHub
//! Enterprise) as GitHub's own tools read them.
//!
//! [`transport`] sends requests (token, headers, retries); [`api`] knows the endpoints and
//! maps GitHub's answers to typed errors: 401 → [`BackendError::Unauthenticated`], 404 on a
//! repository → [`BackendError::PermissionDenied`] (no access or no such repository), 422
//! "key is already in use" → [`BackendError::AlreadyExists`].
//!
//! Without a token, key calls return [`BackendError::Unavailable`] (never a request GitHub
//! would refuse): the github-key step then prints the public key and the settings page to
//! paste it into instead of failing. `/meta` needs no token.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kgenv_core::BackendError> {
//! use kgenv_core::backends::github::{GitHub, KeyScope};
//! let github = kgenv_core::github::GitHubClient::from_env()?;
//! for key in github.list_keys(&KeyScope::Repo("octo/kaggle".into())).await? {
//!     println!("{} {}", key.id, key.title);
//! }
//! # Ok(()) }
//! ```

pub mod api;
pub mod transport;

use async_trait::async_trait;
use reqwest::Method;
use tokio::sync::OnceCell;

use crate::backends::github::{GitHub, GithubKeyInfo, KeyScope};
use crate::backends::BackendResult;
use crate::error::BackendError;
use api::Call;
use transport::{Http, Token};

/// GitHub.com's API.
pub const DEFAULT_API_URL: &str = "https://api.github.com";

/// Where GitHub is and who calls it.
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct GitHubConfig {
    /// API base URL (`https://api.github.com`, or `https://HOST/api/v3` for Enterprise).
    pub api_url: Option<String>,
    /// Web URL (`https://github.com`); derived from the API URL when absent.
    pub web_url: Option<String>,
    /// Token; `None` leaves key calls unavailable (the step prints manual instructions).
    pub token: Option<String>,
}

impl std::fmt::Debug for GitHubConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHubConfig")
            .field("api_url", &self.api_url)
            .field("web_url", &self.web_url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl GitHubConfig {
    /// From the environment: `GITHUB_TOKEN`, `GITHUB_API_URL`, `GITHUB_SERVER_URL` (the
    /// names GitHub's CLI and Actions use).
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        Self {
            api_url: var("GITHUB_API_URL"),
            web_url: var("GITHUB_SERVER_URL"),
            token: var("GITHUB_TOKEN"),
        }
    }

    /// With this API URL.
    #[must_use]
    pub fn with_api_url(mut self, url: impl Into<String>) -> Self {
        self.api_url = Some(url.into());
        self
    }

    /// With this token.
    #[must_use]
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// With this web URL.
    #[must_use]
    pub fn with_web_url(mut self, url: impl Into<String>) -> Self {
        self.web_url = Some(url.into());
        self
    }
}

/// The web URL that goes with an API URL: `api.github.com` → `https://github.com`;
/// Enterprise `https://HOST/api/v3` → `https://HOST`; anything else → the API URL itself.
pub fn web_url_for(api_url: &str) -> String {
    let api = api_url.trim_end_matches('/');
    if let Some(rest) = api.strip_prefix("https://api.github.com") {
        if rest.is_empty() {
            return "https://github.com".into();
        }
    }
    api.strip_suffix("/api/v3").unwrap_or(api).to_string()
}

/// GitHub's REST API, implementing [`GitHub`].
#[derive(Debug)]
pub struct GitHubClient {
    http: Http,
    web_url: String,
    meta: OnceCell<Vec<String>>,
}

impl GitHubClient {
    /// A client for `config`.
    pub fn new(config: GitHubConfig) -> Result<Self, BackendError> {
        let api = config.api_url.unwrap_or_else(|| DEFAULT_API_URL.into());
        if !(api.starts_with("https://") || api.starts_with("http://")) {
            return Err(BackendError::InvalidArgument {
                resource: "GITHUB_API_URL".into(),
                message: format!(
                    "`{api}` is not an http(s) URL like https://ghe.example.com/api/v3"
                ),
            });
        }
        let web_url = config
            .web_url
            .unwrap_or_else(|| web_url_for(&api))
            .trim_end_matches('/')
            .to_string();
        Ok(Self {
            http: Http::new(&api, config.token.and_then(Token::new))?,
            web_url,
            meta: OnceCell::new(),
        })
    }

    /// A client configured from the environment ([`GitHubConfig::from_env`]).
    pub fn from_env() -> Result<Self, BackendError> {
        Self::new(GitHubConfig::from_env())
    }

    /// Whether a token is configured (key calls need one).
    pub fn has_token(&self) -> bool {
        self.http.has_token()
    }

    /// Gives up after `n` retries of a retryable failure (default 3).
    #[must_use]
    pub fn retries(mut self, n: usize) -> Self {
        self.http = self.http.retries(n);
        self
    }

    fn require_token(&self, scope: &KeyScope) -> Result<(), BackendError> {
        if self.http.has_token() {
            return Ok(());
        }
        Err(BackendError::Unavailable {
            backend: "github",
            hint: format!("GITHUB_TOKEN is not set: export a token to let kgenv register the key, or add it by hand at {}", scope.settings_url(&self.web_url)),
        })
    }
}

#[async_trait]
impl GitHub for GitHubClient {
    fn web_url(&self) -> String {
        self.web_url.clone()
    }

    async fn ssh_host_keys(&self) -> BackendResult<Vec<String>> {
        let keys = self
            .meta
            .get_or_try_init(|| async {
                let call = Call {
                    scope: None,
                    what: format!("GET {}/meta", self.http.base()),
                };
                self.http
                    .call(Method::GET, "/meta", None, |r| {
                        api::decode_meta_ssh_keys(&call, r)
                    })
                    .await
            })
            .await?;
        Ok(keys.clone())
    }

    async fn list_keys(&self, scope: &KeyScope) -> BackendResult<Vec<GithubKeyInfo>> {
        self.require_token(scope)?;
        let path = api::keys_path(scope);
        let call = Call {
            scope: Some(scope),
            what: format!("GET {path}"),
        };
        // 100 per page is GitHub's maximum; follow pages until a short one.
        let mut all = Vec::new();
        for page in 1..=50 {
            let p = format!("{path}?per_page=100&page={page}");
            let keys = self
                .http
                .call(Method::GET, &p, None, |r| api::decode_keys(&call, r))
                .await?;
            let n = keys.len();
            all.extend(keys);
            if n < 100 {
                break;
            }
        }
        Ok(all)
    }

    async fn add_key(
        &self,
        scope: &KeyScope,
        title: &str,
        key: &str,
        read_only: bool,
    ) -> BackendResult<GithubKeyInfo> {
        self.require_token(scope)?;
        let path = api::keys_path(scope);
        let call = Call {
            scope: Some(scope),
            what: format!("POST {path}"),
        };
        let body = api::add_key_body(scope, title, key, read_only);
        self.http
            .call(Method::POST, &path, Some(body), |r| {
                api::decode_created(&call, r)
            })
            .await
    }

    async fn delete_key(&self, scope: &KeyScope, id: u64) -> BackendResult<()> {
        self.require_token(scope)?;
        let path = api::key_path(scope, id);
        let call = Call {
            scope: Some(scope),
            what: format!("DELETE {path}"),
        };
        self.http
            .call(Method::DELETE, &path, None, |r| {
                api::decode_deleted(&call, r)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn web_urls_follow_api_urls() {
        assert_eq!(web_url_for("https://api.github.com"), "https://github.com");
        assert_eq!(web_url_for("https://api.github.com/"), "https://github.com");
        assert_eq!(
            web_url_for("https://ghe.corp.example/api/v3"),
            "https://ghe.corp.example"
        );
        assert_eq!(
            web_url_for("http://127.0.0.1:9000"),
            "http://127.0.0.1:9000"
        );
    }

    #[test]
    fn token_never_in_debug() {
        let c = GitHubConfig::default().with_token("ghp_secret123");
        assert!(!format!("{c:?}").contains("ghp_secret123"));
        let client = GitHubClient::new(c).expect("client");
        assert!(!format!("{client:?}").contains("ghp_secret123"));
    }
}

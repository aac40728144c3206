//! [`GitHubClient`]: the real [`GitHub`] backend on the shared [`Transport`] — the token
//! (`GITHUB_TOKEN`) as a bearer [`Secret`], retries of rate limits, 5xx and dropped
//! connections ([`RETRY`]), and a rate limit that resets in more than a minute returned at
//! once (with the time it resets) rather than waited for; key lists follow GitHub's `Link`
//! pagination.

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::OnceCell;

use super::api::{self, Call};
use crate::backends::github::{GitHub, GithubKeyInfo, KeyScope};
use crate::backends::BackendResult;
use crate::error::BackendError;
use crate::http::{RetryPolicy, Secret, TokenSource, Transport, TransportConfig};

/// GitHub's retry policy: exponential backoff from 200 ms to 20 s with full jitter, at most
/// 3 retries; a rate limit is waited for only when it resets within 60 s.
pub const RETRY: RetryPolicy =
    RetryPolicy::new(Duration::from_millis(200), Duration::from_secs(20), 3)
        .with_max_retry_after(Duration::from_secs(60));

/// The most pages of keys kgenv reads (100 keys a page).
const MAX_PAGES: usize = 100;

/// GitHub.com's API.
pub const DEFAULT_API_URL: &str = "https://api.github.com";

/// Where GitHub is and who calls it.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct GitHubConfig {
    /// API base URL (`https://api.github.com`, or `https://HOST/api/v3` for Enterprise).
    pub api_url: Option<String>,
    /// Web URL (`https://github.com`); derived from the API URL when absent.
    pub web_url: Option<String>,
    /// Token; `None` leaves key calls unavailable (the step prints manual instructions).
    pub token: Option<Secret>,
}

impl GitHubConfig {
    /// From the environment: `GITHUB_TOKEN`, `GITHUB_API_URL`, `GITHUB_SERVER_URL` (the
    /// names GitHub's CLI and Actions use).
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        Self {
            api_url: var("GITHUB_API_URL"),
            web_url: var("GITHUB_SERVER_URL"),
            token: var("GITHUB_TOKEN").and_then(|t| Secret::non_empty(&t)),
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
        self.token = Secret::non_empty(&token.into());
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
    transport: Transport,
    /// The API base, without a trailing slash.
    base: String,
    web_url: String,
    meta: OnceCell<Vec<String>>,
}

impl GitHubClient {
    /// A client for `config`.
    pub fn new(config: GitHubConfig) -> Result<Self, BackendError> {
        let api = config.api_url.unwrap_or_else(|| DEFAULT_API_URL.into());
        let secure = reqwest::Url::parse(api.trim_end_matches('/'))
            .is_ok_and(|u| crate::http::allows_credentials(&u));
        if !secure {
            return Err(BackendError::InvalidArgument {
                resource: "GITHUB_API_URL".into(),
                message: format!(
                    "`{api}` is not an https:// URL like https://ghe.example.com/api/v3 (plain http only on a loopback address such as http://127.0.0.1:PORT, since the GitHub token travels with every request)"
                ),
            });
        }
        let web_url = config
            .web_url
            .unwrap_or_else(|| web_url_for(&api))
            .trim_end_matches('/')
            .to_string();
        let base = api.trim_end_matches('/').to_string();
        let base_url = reqwest::Url::parse(&base).map_err(|e| BackendError::InvalidArgument {
            resource: "GITHUB_API_URL".into(),
            message: format!("`{api}` is not a URL: {e}"),
        })?;
        let http = crate::http::build_client(
            "github",
            crate::http::client_builder(&base)
                .connect_timeout(Duration::from_secs(10))
                .timeout(Duration::from_secs(60)),
        )?;
        let transport = Transport::new(
            http,
            TransportConfig {
                service: "github",
                base: base_url,
                auth: config.token.map_or(TokenSource::None, TokenSource::Static),
                retry: RETRY,
                connect_hint: Some("could not reach GitHub (check GITHUB_API_URL and the network)"),
            },
        );
        Ok(Self {
            transport,
            base,
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
        !self.transport.auth().is_none()
    }

    /// Gives up after `n` retries of a retryable failure (default 3).
    #[must_use]
    pub fn retries(mut self, n: usize) -> Self {
        let policy = self.transport.retry_policy().with_max_retries(n);
        self.transport = self.transport.with_retry_policy(policy);
        self
    }

    /// The API base URL, without a trailing slash.
    pub fn api_url(&self) -> &str {
        &self.base
    }

    fn require_token(&self, scope: &KeyScope) -> Result<(), BackendError> {
        if self.has_token() {
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
                    what: format!("GET {}/meta", self.base),
                };
                self.transport
                    .call(&api::meta(&self.base)?, |r| {
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
        // 100 per page is GitHub's maximum; the pages are followed by their `Link` header
        // (a short page is not proof of the last one). A list longer than MAX_PAGES pages
        // is an error rather than a silent cut: a key missed would be registered again.
        let mut all = Vec::new();
        let mut req = api::list_keys(&self.base, scope, 1)?;
        for _ in 0..MAX_PAGES {
            let (keys, next) = self
                .transport
                .call(&req, |r| {
                    let next = api::next_link(&r);
                    api::decode_keys(&call, r).map(|k| (k, next))
                })
                .await?;
            all.extend(keys);
            match next {
                Some(url) => req = api::page(&self.base, &url)?,
                None => return Ok(all),
            }
        }
        Err(BackendError::other(format!(
            "{}: more than {MAX_PAGES} pages of keys; kgenv stops there rather than miss one",
            call.what
        )))
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
        let req = api::add_key(&self.base, scope, title, key, read_only)?;
        self.transport
            .call(&req, |r| api::decode_created(&call, r))
            .await
    }

    async fn delete_key(&self, scope: &KeyScope, id: u64) -> BackendResult<()> {
        self.require_token(scope)?;
        let path = api::key_path(scope, id);
        let call = Call {
            scope: Some(scope),
            what: format!("DELETE {path}"),
        };
        self.transport
            .call(&api::delete_key(&self.base, scope, id)?, |r| {
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
    fn the_token_never_goes_over_plain_http_off_this_machine() {
        for url in [
            "http://ghe.example.com/api/v3",
            "http://10.0.0.5:9000",
            "ftp://127.0.0.1",
            "not a url",
        ] {
            let e = GitHubClient::new(
                GitHubConfig::default()
                    .with_api_url(url)
                    .with_token("ghp_x"),
            )
            .expect_err(url);
            assert!(
                matches!(&e, BackendError::InvalidArgument { resource, message }
                    if resource == "GITHUB_API_URL" && message.contains("https://")),
                "{url}: {e:?}"
            );
        }
        for url in [
            "http://127.0.0.1:9000",
            "http://[::1]:9000/",
            "https://ghe.example.com/api/v3",
        ] {
            assert!(
                GitHubClient::new(GitHubConfig::default().with_api_url(url)).is_ok(),
                "{url}"
            );
        }
    }

    #[test]
    fn token_never_in_debug() {
        let c = GitHubConfig::default().with_token("ghp_secret123");
        assert!(!format!("{c:?}").contains("ghp_secret123"));
        let client = GitHubClient::new(c).expect("client");
        assert!(client.has_token());
        assert!(!format!("{client:?}").contains("ghp_secret123"));
        assert!(!GitHubClient::new(GitHubConfig::default().with_token(" "))
            .expect("client")
            .has_token());
    }

    #[test]
    fn github_keeps_its_retry_budget() {
        assert_eq!(
            RETRY
                .ceilings()
                .map(|d| (d.as_secs_f64() * 1e3).round() as u64)
                .collect::<Vec<_>>(),
            [200, 400, 800]
        );
        assert_eq!(RETRY.max_retry_after, Some(Duration::from_secs(60)));
        assert_eq!(RETRY.max_elapsed, None);
    }
}

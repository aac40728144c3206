//! The HTTP transport of the GitHub client: one reqwest client with GitHub's headers, the
//! token kept out of Debug output, retries with backoff for rate limits and 5xx, and raw
//! responses handed back to [`super::api`] to decode. No endpoint knowledge lives here.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use reqwest::{header, Method, StatusCode};

use crate::error::BackendError;

/// GitHub's REST API version kgenv speaks.
pub const API_VERSION: &str = "2022-11-28";

/// A bearer token that never shows in Debug output or errors.
#[derive(Clone)]
pub struct Token(String);

impl Token {
    /// Wraps a token; `None` when empty.
    pub fn new(token: impl Into<String>) -> Option<Self> {
        let t = token.into().trim().to_string();
        (!t.is_empty()).then_some(Self(t))
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// A raw HTTP answer.
#[derive(Debug)]
pub struct RawResponse {
    /// Status code.
    pub status: StatusCode,
    /// `Retry-After` (seconds), or the wait until `x-ratelimit-reset` when the limit is spent.
    pub retry_after: Option<Duration>,
    /// Whether `x-ratelimit-remaining` said 0.
    pub rate_limit_spent: bool,
    /// Body bytes.
    pub body: Vec<u8>,
}

/// The transport: base URL, token, HTTP client.
#[derive(Debug, Clone)]
pub struct Http {
    client: reqwest::Client,
    base: String,
    token: Option<Token>,
    retries: usize,
}

pub use crate::http::ensure_crypto_provider;

impl Http {
    /// A transport for the API at `base` (no trailing slash needed).
    pub fn new(base: &str, token: Option<Token>) -> Result<Self, BackendError> {
        let client = crate::http::client_builder(base)
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| BackendError::Other {
                message: "github: building the HTTP client".into(),
                source: Some(Box::new(e)),
            })?;
        Ok(Self {
            client,
            base: base.trim_end_matches('/').to_string(),
            token,
            retries: 3,
        })
    }

    /// Gives up after `n` retries of a retryable failure (default 3).
    #[must_use]
    pub fn retries(mut self, n: usize) -> Self {
        self.retries = n;
        self
    }

    /// Whether a token is configured.
    pub fn has_token(&self) -> bool {
        self.token.is_some()
    }

    /// The API base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    async fn send_once(
        &self,
        method: &Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<RawResponse, BackendError> {
        let url = format!("{}{path}", self.base);
        let mut req = self
            .client
            .request(method.clone(), &url)
            .header(header::ACCEPT, "application/vnd.github+json")
            .header("X-GitHub-Api-Version", API_VERSION);
        if let Some(t) = &self.token {
            req = req.bearer_auth(&t.0);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| {
            let endpoint = format!("{method} {url}");
            if e.is_timeout() {
                BackendError::Transient {
                    service: "github",
                    message: format!("{endpoint} timed out"),
                    source: Some(Box::new(e)),
                }
            } else {
                BackendError::Connection {
                    endpoint,
                    message: "could not reach GitHub (check GITHUB_API_URL and the network)".into(),
                    source: Some(Box::new(e)),
                }
            }
        })?;
        let status = resp.status();
        let headers = resp.headers();
        let num = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let rate_limit_spent = num("x-ratelimit-remaining") == Some(0);
        let retry_after = num("retry-after").map(Duration::from_secs).or_else(|| {
            let reset = num("x-ratelimit-reset").filter(|_| rate_limit_spent)?;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .ok()?
                .as_secs();
            Some(Duration::from_secs(reset.saturating_sub(now)))
        });
        let body = resp
            .bytes()
            .await
            .map_err(|e| BackendError::Transient {
                service: "github",
                message: format!("reading the answer to {method} {url}"),
                source: Some(Box::new(e)),
            })?
            .to_vec();
        Ok(RawResponse {
            status,
            retry_after,
            rate_limit_spent,
            body,
        })
    }

    /// Sends a request, then lets `decode` turn the answer into a value or a typed error;
    /// retryable errors (rate limits, 5xx, dropped connections) are retried with backoff.
    pub async fn call<T>(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
        decode: impl Fn(RawResponse) -> Result<T, BackendError>,
    ) -> Result<T, BackendError> {
        let attempt = || async { decode(self.send_once(&method, path, body.as_ref()).await?) };
        attempt
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(200))
                    .with_max_delay(Duration::from_secs(20))
                    .with_max_times(self.retries)
                    .with_jitter(),
            )
            .sleep(tokio::time::sleep)
            .when(|e: &BackendError| match e {
                // A rate limit that resets in more than a minute is not worth waiting for.
                BackendError::RateLimited {
                    retry_after: Some(d),
                    ..
                } => *d <= Duration::from_secs(60),
                e => e.is_retryable(),
            })
            .adjust(|e: &BackendError, d| match e {
                BackendError::RateLimited {
                    retry_after: Some(ra),
                    ..
                } => d.map(|d| d.max(*ra)),
                _ => d,
            })
            .await
    }
}

//! The Compute client's transport: one `reqwest` client, the service root (overridable with
//! `CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE`, gcloud's name), bearer tokens, and retries.
//!
//! Retries cover what may pass on its own — 429, 5xx, 403 rate-limit reasons, dropped
//! connections, timeouts — with exponential backoff and full jitter (`backon` computes the
//! capped exponential ceiling, the delay is uniform in `[0, ceiling]`), honour `Retry-After`,
//! and stop when the next wait would cross the policy's time budget. A mutating call carries
//! one `requestId` (a UUID) on every attempt, so Compute Engine treats a retried insert whose
//! first attempt landed as the same request and never creates a second instance.

use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use serde::de::DeserializeOwned;

use super::api::{ApiRequest, LONG_POLL_TIMEOUT};
use super::auth::TokenSource;
use super::errors;
use crate::backends::BackendResult;
use crate::error::BackendError;

/// The public service root.
pub const DEFAULT_BASE_URL: &str = "https://compute.googleapis.com/compute/v1/";
/// gcloud's override of the service root (`https://host/compute/v1/`), used by tests and emulators.
pub const BASE_URL_ENV: &str = "CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE";

/// How a call is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The first backoff ceiling.
    pub initial_delay: Duration,
    /// The largest backoff ceiling.
    pub max_delay: Duration,
    /// At most this many retries after the first attempt.
    pub max_retries: usize,
    /// No retry starts after this much time since the first attempt.
    pub max_elapsed: Duration,
    /// Timeout of one ordinary attempt (long-polls get [`LONG_POLL_TIMEOUT`]).
    pub attempt_timeout: Duration,
}

impl Default for RetryPolicy {
    /// Google's advice for Compute: truncated exponential backoff from 1 s to 32 s.
    fn default() -> Self {
        Self {
            initial_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(32),
            max_retries: 10,
            max_elapsed: Duration::from_secs(180),
            attempt_timeout: Duration::from_secs(60),
        }
    }
}

/// Sends [`ApiRequest`]s to Compute Engine. Cheap to clone.
#[derive(Clone)]
pub struct Transport {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base: String,
    auth: TokenSource,
    retry: RetryPolicy,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("base", &self.inner.base)
            .field("auth", &self.inner.auth)
            .finish_non_exhaustive()
    }
}

/// Whether `host` is this machine (plain HTTP is allowed only there: tokens must not
/// cross a network in clear).
use crate::http::is_loopback;

/// Checks a service root and gives it a trailing slash.
pub fn normalize_base_url(url: &str) -> BackendResult<String> {
    let parsed = reqwest::Url::parse(url.trim()).map_err(|e| BackendError::InvalidArgument {
        resource: format!("compute endpoint `{url}` (from {BASE_URL_ENV} or the client builder)"),
        message: format!("is not a URL ({e}); use e.g. {DEFAULT_BASE_URL}"),
    })?;
    let host = parsed.host_str().unwrap_or_default();
    let ok = match parsed.scheme() {
        "https" => !host.is_empty(),
        "http" => is_loopback(host),
        _ => false,
    };
    if !ok || parsed.query().is_some() {
        return Err(BackendError::InvalidArgument {
            resource: format!("compute endpoint `{url}`"),
            message: "must be https://… (plain http only on a loopback address, since the access token travels with every request) and have no query".into(),
        });
    }
    let mut s = parsed.to_string();
    if !s.ends_with('/') {
        s.push('/');
    }
    Ok(s)
}

/// A delay uniform in `[0, ceiling]` (full jitter).
fn full_jitter(ceiling: Duration) -> Duration {
    ceiling.mul_f64(fastrand::f64())
}

/// The wait before the next attempt: full jitter under `ceiling`, and never less than what
/// the server asked for with `Retry-After`.
fn delay_for(err: &BackendError, ceiling: Duration) -> Duration {
    let jittered = full_jitter(ceiling);
    match err {
        BackendError::RateLimited {
            retry_after: Some(ra),
            ..
        } => jittered.max(*ra),
        _ => jittered,
    }
}

/// `Retry-After: <seconds>` (the HTTP-date form is rare from Google and is ignored).
fn retry_after(h: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = h.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    v.trim()
        .parse::<u64>()
        .ok()
        .map(|s| Duration::from_secs(s.min(3600)))
}

impl Transport {
    /// A transport to `base_url` authenticating with `auth`.
    pub fn new(base_url: &str, auth: TokenSource, retry: RetryPolicy) -> BackendResult<Self> {
        let base = normalize_base_url(base_url)?;
        let http = crate::http::client_builder(&base)
            .connect_timeout(Duration::from_secs(15))
            .build()
            .map_err(|e| BackendError::Other {
                message: "building the HTTP client".into(),
                source: Some(Box::new(e)),
            })?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base,
                auth,
                retry,
            }),
        })
    }

    /// The service root, with a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.inner.base
    }

    /// The underlying HTTP client (shares its connection pool).
    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    /// Sends `req`, retrying what may pass, and decodes the JSON answer.
    pub async fn send<T: DeserializeOwned>(&self, req: &ApiRequest) -> BackendResult<T> {
        // One id for every attempt of this call: that is what makes the retries safe.
        let request_id = req.mutating.then(|| uuid::Uuid::new_v4().to_string());
        let policy = self.inner.retry;
        let started = Instant::now();
        let backoff = ExponentialBuilder::default()
            .with_min_delay(policy.initial_delay)
            .with_max_delay(policy.max_delay)
            .with_factor(2.0)
            .with_max_times(policy.max_retries);
        let bytes = (|| self.send_once(req, request_id.as_deref()))
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .when(BackendError::is_retryable)
            .adjust(|err, ceiling| {
                let wait = delay_for(err, ceiling?);
                (started.elapsed() + wait <= policy.max_elapsed).then_some(wait)
            })
            .notify(|err, wait| {
                tracing::debug!(method = %req.method, path = %req.path, "retrying in {:.2}s after: {err}", wait.as_secs_f64());
            })
            .await?;
        serde_json::from_slice(&bytes).map_err(|e| BackendError::Other {
            message: format!(
                "{}: unexpected answer from Compute Engine to {} {}",
                req.resource, req.method, req.path
            ),
            source: Some(Box::new(e)),
        })
    }

    async fn send_once(
        &self,
        req: &ApiRequest,
        request_id: Option<&str>,
    ) -> BackendResult<Vec<u8>> {
        let token = self.inner.auth.token().await?;
        let mut url =
            reqwest::Url::parse(&format!("{}{}", self.inner.base, req.path)).map_err(|e| {
                BackendError::InvalidArgument {
                    resource: req.resource.clone(),
                    message: format!("bad request path: {e}"),
                }
            })?;
        if !req.query.is_empty() || request_id.is_some() {
            let mut q = url.query_pairs_mut();
            for (k, v) in &req.query {
                q.append_pair(k, v);
            }
            if let Some(id) = request_id {
                q.append_pair("requestId", id);
            }
        }
        let timeout = if req.long_poll {
            LONG_POLL_TIMEOUT
        } else {
            self.inner.retry.attempt_timeout
        };
        let mut rb = self
            .inner
            .http
            .request(req.method.clone(), url)
            .bearer_auth(token.expose())
            .timeout(timeout);
        rb = match &req.body {
            Some(b) => {
                let bytes = serde_json::to_vec(b).map_err(|e| {
                    BackendError::other(format!("encoding the request for {}: {e}", req.resource))
                })?;
                rb.header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(bytes)
            }
            // Compute's POST actions (start, stop, wait) take an empty body with a length.
            None if req.method == reqwest::Method::POST => rb.body(Vec::<u8>::new()),
            None => rb,
        };
        let resp = rb
            .send()
            .await
            .map_err(|e| self.map_reqwest(e, req, timeout))?;
        let status = resp.status();
        let after = retry_after(resp.headers());
        let body = resp
            .bytes()
            .await
            .map_err(|e| self.map_reqwest(e, req, timeout))?;
        if status.is_success() {
            Ok(body.to_vec())
        } else {
            Err(errors::from_http(
                status.as_u16(),
                &body,
                after,
                &req.resource,
            ))
        }
    }

    fn map_reqwest(&self, e: reqwest::Error, req: &ApiRequest, timeout: Duration) -> BackendError {
        let endpoint = format!("{}{}", self.inner.base, req.path);
        if e.is_timeout() {
            BackendError::Timeout {
                what: format!("{} {endpoint}", req.method),
                after: timeout,
                last_seen: None,
            }
        } else if e.is_connect() {
            BackendError::Connection {
                endpoint,
                message: "could not connect to Compute Engine".into(),
                source: Some(Box::new(e)),
            }
        } else {
            BackendError::Transient {
                service: "compute",
                message: format!("{} {endpoint}: the exchange failed", req.method),
                source: Some(Box::new(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_on_loopback() {
        assert_eq!(
            normalize_base_url("http://127.0.0.1:8080/compute/v1").expect("loopback"),
            "http://127.0.0.1:8080/compute/v1/"
        );
        assert!(normalize_base_url("http://[::1]:1/compute/v1/").is_ok());
        assert!(normalize_base_url("http://localhost:1/compute/v1/").is_ok());
        assert!(normalize_base_url("http://compute.example.com/compute/v1/").is_err());
        assert!(normalize_base_url("ftp://127.0.0.1/").is_err());
        assert!(normalize_base_url("https://compute.googleapis.com/compute/v1/?x=1").is_err());
        assert_eq!(
            normalize_base_url(DEFAULT_BASE_URL).expect("default"),
            DEFAULT_BASE_URL
        );
    }

    #[test]
    fn delays_are_jittered_under_the_ceiling_and_honour_retry_after() {
        let ceiling = Duration::from_millis(800);
        let t = BackendError::transient("compute", "503");
        let samples: Vec<Duration> = (0..200).map(|_| delay_for(&t, ceiling)).collect();
        assert!(samples.iter().all(|d| *d <= ceiling));
        assert!(
            samples.iter().any(|d| *d < ceiling / 2),
            "full jitter reaches the lower half"
        );
        let rl = BackendError::RateLimited {
            service: "compute",
            retry_after: Some(Duration::from_secs(5)),
        };
        assert!((0..50).all(|_| delay_for(&rl, ceiling) >= Duration::from_secs(5)));
    }
}

//! The transport every REST client shares: a built [`Request`] (no I/O to make one) goes
//! out with the client's credentials, within the attempt timeout, and comes back as a
//! [`Response`] with its body read, or as a typed error; [`Transport::call`] retries under
//! the client's [`RetryPolicy`] while the service's decoder says what the answer means.
//!
//! Credentials only ever go to the origin (scheme, host, port) the transport was made for:
//! a request to anywhere else — a storage host a redirect or a signed URL points at — is
//! sent without them.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE};
use reqwest::{Method, StatusCode, Url};

use super::{map_reqwest, retry_after, Failure, RetryPolicy, TokenSource};
use crate::error::BackendError;

/// A request body.
#[derive(Debug, Clone, Default)]
pub enum Body {
    /// No body.
    #[default]
    None,
    /// An empty body sent with `Content-Length: 0` (Compute's bodiless POSTs).
    Empty,
    /// JSON bytes (`Content-Type: application/json`).
    Json(Bytes),
    /// Raw bytes.
    Bytes(Bytes),
}

/// One HTTP request, built by a service's request builders without any I/O.
#[derive(Clone)]
pub struct Request {
    /// The method.
    pub method: Method,
    /// The full URL.
    pub url: Url,
    /// Extra headers (credentials are added by the transport, never here).
    pub headers: HeaderMap,
    /// The body.
    pub body: Body,
    /// This request's timeout, overriding the policy's attempt timeout (long-polls).
    pub timeout: Option<Duration>,
    /// The call, for error messages (`GET https://…`, `bucket b`).
    pub what: String,
    /// Where a connection goes, for connection errors (default: `what`).
    pub endpoint: Option<String>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The query may be a capability (an upload session, a signed URL): not shown.
        let mut shown = self.url.clone();
        shown.set_query(None);
        f.debug_struct("Request")
            .field("method", &self.method)
            .field("url", &shown.as_str())
            .field("what", &self.what)
            .finish_non_exhaustive()
    }
}

fn bad_header(what: &str, name: &HeaderName) -> BackendError {
    BackendError::InvalidArgument {
        resource: what.to_string(),
        message: format!("the value of header {name} is not valid in HTTP"),
    }
}

impl Request {
    /// A request of `method` to `url`; `what` names it in errors.
    pub fn new(method: Method, url: Url, what: impl Into<String>) -> Self {
        Self {
            method,
            url,
            headers: HeaderMap::new(),
            body: Body::None,
            timeout: None,
            what: what.into(),
            endpoint: None,
        }
    }

    /// With a header.
    pub fn header(mut self, name: HeaderName, value: &str) -> Result<Self, BackendError> {
        let v = HeaderValue::from_str(value).map_err(|_| bad_header(&self.what, &name))?;
        self.headers.insert(name, v);
        Ok(self)
    }

    /// With a JSON body.
    pub fn json(mut self, body: &impl serde::Serialize) -> Result<Self, BackendError> {
        let bytes = serde_json::to_vec(body).map_err(|e| {
            BackendError::other(format!("encoding the request for {}: {e}", self.what))
        })?;
        self.body = Body::Json(bytes.into());
        Ok(self)
    }

    /// With an already encoded JSON body.
    #[must_use]
    pub fn json_value(mut self, body: &serde_json::Value) -> Self {
        self.body = Body::Json(body.to_string().into_bytes().into());
        self
    }

    /// With raw bytes as the body.
    #[must_use]
    pub fn bytes(mut self, body: Bytes) -> Self {
        self.body = Body::Bytes(body);
        self
    }

    /// With an empty body and `Content-Length: 0`.
    #[must_use]
    pub fn empty_body(mut self) -> Self {
        self.body = Body::Empty;
        self
    }

    /// With this timeout for each attempt.
    #[must_use]
    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }

    /// With this endpoint in connection errors.
    #[must_use]
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }
}

/// An answer with its body read.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status.
    pub status: StatusCode,
    /// The headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
    /// The URL that answered.
    pub url: Url,
}

impl Response {
    /// The wait `Retry-After` asks for.
    pub fn retry_after(&self) -> Option<Duration> {
        retry_after(&self.headers)
    }

    /// The body as text for messages: [`redact`](super::redact)ed (an answer may hold a
    /// signed URL), at most `max` characters.
    pub fn snippet(&self, max: usize) -> String {
        super::redact(&String::from_utf8_lossy(&self.body))
            .chars()
            .take(max)
            .collect()
    }

    /// Decodes the JSON body; `what` names the call and `peer` the service in the error.
    pub fn json<T: serde::de::DeserializeOwned>(
        &self,
        what: &str,
        peer: &str,
    ) -> Result<T, BackendError> {
        serde_json::from_slice(&self.body).map_err(|e| BackendError::Other {
            message: format!(
                "{what}: unexpected answer from {peer}: {}",
                self.snippet(200)
            ),
            source: Some(Box::new(super::RedactedError::of(&e))),
        })
    }
}

/// What a transport is made of.
#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// The service, for errors (`compute`, `storage`, `github`, `kaggle`).
    pub service: &'static str,
    /// The service root; credentials go only to its origin.
    pub base: Url,
    /// The credentials.
    pub auth: TokenSource,
    /// The retry policy.
    pub retry: RetryPolicy,
    /// What to tell a user who cannot connect (replaces reqwest's words).
    pub connect_hint: Option<&'static str>,
}

/// Sends [`Request`]s; cheap to clone.
#[derive(Clone)]
pub struct Transport {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    http: reqwest::Client,
    config: TransportConfig,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("service", &self.inner.config.service)
            .field("base", &self.inner.config.base.as_str())
            .field("auth", &self.inner.config.auth)
            .finish_non_exhaustive()
    }
}

impl Transport {
    /// A transport sending with `http` (built by [`super::client_builder`]).
    pub fn new(http: reqwest::Client, config: TransportConfig) -> Self {
        Self {
            inner: Arc::new(Inner { http, config }),
        }
    }

    /// The same transport with another retry policy.
    #[must_use]
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        Arc::make_mut(&mut self.inner).config.retry = retry;
        self
    }

    /// The HTTP client (shares the connection pool; sends no credentials by itself).
    pub fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    /// The service root.
    pub fn base(&self) -> &Url {
        &self.inner.config.base
    }

    /// The credentials.
    pub fn auth(&self) -> &TokenSource {
        &self.inner.config.auth
    }

    /// The retry policy.
    pub fn retry_policy(&self) -> &RetryPolicy {
        &self.inner.config.retry
    }

    /// The service name.
    pub fn service(&self) -> &'static str {
        self.inner.config.service
    }

    fn attempt_timeout(&self, req: &Request) -> Option<Duration> {
        req.timeout.or(self.inner.config.retry.attempt_timeout)
    }

    /// Maps a reqwest error of `req`.
    pub fn map_error(&self, req: &Request, e: reqwest::Error) -> BackendError {
        map_reqwest(
            e,
            &Failure {
                service: self.inner.config.service,
                what: &req.what,
                endpoint: req.endpoint.as_deref().unwrap_or(&req.what),
                timeout: self.attempt_timeout(req),
                connect_hint: self.inner.config.connect_hint,
            },
        )
    }

    /// One attempt: credentials (for the transport's origin only), timeout, send. The
    /// status is not looked at.
    pub async fn send_once(&self, req: &Request) -> Result<reqwest::Response, BackendError> {
        let mut rb = self
            .inner
            .http
            .request(req.method.clone(), req.url.clone())
            .headers(req.headers.clone());
        if let Some(t) = self.attempt_timeout(req) {
            rb = rb.timeout(t);
        }
        rb = match &req.body {
            Body::None => rb,
            Body::Empty => rb.body(Vec::<u8>::new()),
            Body::Json(b) => rb.header(CONTENT_TYPE, "application/json").body(b.clone()),
            Body::Bytes(b) => rb.body(b.clone()),
        };
        if req.url.origin() == self.inner.config.base.origin() {
            rb = self.inner.config.auth.authorize(rb).await?;
        } else if !self.inner.config.auth.is_none() {
            tracing::debug!(what = %req.what, "request leaves the service's origin: sent without credentials");
        }
        rb.send().await.map_err(|e| self.map_error(req, e))
    }

    /// One attempt with the body read.
    pub async fn fetch_once(&self, req: &Request) -> Result<Response, BackendError> {
        let resp = self.send_once(req).await?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let url = resp.url().clone();
        let body = resp.bytes().await.map_err(|e| self.map_error(req, e))?;
        Ok(Response {
            status,
            headers,
            body,
            url,
        })
    }

    /// Sends `req` until `decode` accepts an answer or the retry policy gives up; `decode`
    /// turns each answer into a value or a typed error (retried when retryable).
    pub async fn call<T>(
        &self,
        req: &Request,
        decode: impl Fn(Response) -> Result<T, BackendError> + Send + Sync,
    ) -> Result<T, BackendError> {
        self.call_numbered(req, |r, _| decode(r)).await
    }

    /// As [`Self::call`], `decode` also getting the attempt number (1 for the first): a
    /// later attempt follows one that failed in a way that may have reached the server, which
    /// a non-idempotent call reads its answer in the light of.
    pub async fn call_numbered<T>(
        &self,
        req: &Request,
        decode: impl Fn(Response, u32) -> Result<T, BackendError> + Send + Sync,
    ) -> Result<T, BackendError> {
        let attempts = std::sync::atomic::AtomicU32::new(0);
        let (attempts, decode) = (&attempts, &decode);
        let policy = self.inner.config.retry;
        policy
            .run(&req.what, || async move {
                let n = attempts.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                decode(self.fetch_once(req).await?, n)
            })
            .await
    }

    /// Sends `req` until it gets a success status (retrying under the policy) and returns the
    /// response unread, for streaming its body; an error status is read and turned into an
    /// error by `error`.
    pub async fn open(
        &self,
        req: &Request,
        error: impl Fn(Response) -> BackendError + Send + Sync,
    ) -> Result<reqwest::Response, BackendError> {
        let policy = self.inner.config.retry;
        let error = &error;
        policy
            .run(&req.what, || async move {
                let resp = self.send_once(req).await?;
                if resp.status().is_success() {
                    return Ok(resp);
                }
                let status = resp.status();
                let headers = resp.headers().clone();
                let url = resp.url().clone();
                let body = resp.bytes().await.unwrap_or_default();
                Err(error(Response {
                    status,
                    headers,
                    body,
                    url,
                }))
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use axum::http::HeaderMap as AxumHeaders;
    use axum::routing::get;

    use super::*;
    use crate::http::{client_builder, Secret};

    const TOKEN: &str = "tok-very-secret";

    #[test]
    fn an_answer_holding_a_signed_url_is_not_quoted_in_errors() {
        let signed = "https://storage.example/b/o?X-Goog-Signature=feedface&sig=beef";
        let answer = |body: String| Response {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::from(body),
            url: Url::parse("https://api.example/v1/x").expect("url"),
        };
        // Not the JSON expected: the message quotes the body, the source serde's words.
        for body in [format!(r#"{{"url":"{signed}"}}"#), format!(r#""{signed}""#)] {
            let e = answer(body.clone())
                .json::<Vec<u64>>("GET x", "the fake")
                .expect_err("not a list");
            let chain = crate::error::error_chain(&e);
            assert!(
                !chain.contains("feedface") && !chain.contains("beef"),
                "{body}: {chain}"
            );
            assert!(
                chain.contains("https://storage.example/b/o?<redacted>"),
                "{chain}"
            );
        }
        assert!(!answer(signed.into()).snippet(300).contains("feedface"));
    }

    struct Peer {
        port: u16,
        flaky: Arc<AtomicU32>,
        _task: tokio::task::JoinHandle<()>,
    }

    /// `/auth` echoes the Authorization header; `/flaky` answers 503 until its counter is
    /// spent; `/slow` never answers in time.
    async fn peer() -> Peer {
        let flaky = Arc::new(AtomicU32::new(0));
        let f = flaky.clone();
        let app = axum::Router::new()
            .route(
                "/auth",
                get(|h: AxumHeaders| async move {
                    h.get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("none")
                        .to_string()
                }),
            )
            .route(
                "/flaky",
                get(move || {
                    let f = f.clone();
                    async move {
                        if f.fetch_sub(1, Ordering::SeqCst) > 0 {
                            (axum::http::StatusCode::SERVICE_UNAVAILABLE, "busy")
                        } else {
                            (axum::http::StatusCode::OK, "fine")
                        }
                    }
                }),
            )
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "late"
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Peer {
            port,
            flaky,
            _task: task,
        }
    }

    fn transport(base: &str, retry: RetryPolicy) -> Transport {
        Transport::new(
            client_builder(base).build().expect("client"),
            TransportConfig {
                service: "test",
                base: base.parse().expect("base"),
                auth: TokenSource::Static(Secret::new(TOKEN)),
                retry,
                connect_hint: None,
            },
        )
    }

    fn get_req(url: String) -> Request {
        let url: Url = url.parse().expect("url");
        Request::new(Method::GET, url.clone(), format!("GET {url}"))
    }

    fn text(r: Response) -> Result<String, BackendError> {
        if r.status.is_success() {
            Ok(r.snippet(100))
        } else {
            Err(BackendError::transient(
                "test",
                format!("HTTP {}", r.status),
            ))
        }
    }

    #[tokio::test]
    async fn credentials_go_to_the_services_origin_only() {
        let p = peer().await;
        let same = transport(
            &format!("http://127.0.0.1:{}/", p.port),
            RetryPolicy::never(),
        );
        let other = transport(
            &format!("http://localhost:{}/", p.port),
            RetryPolicy::never(),
        );
        let url = format!("http://127.0.0.1:{}/auth", p.port);
        assert_eq!(
            same.call(&get_req(url.clone()), text)
                .await
                .expect("answer"),
            format!("Bearer {TOKEN}")
        );
        assert_eq!(
            other.call(&get_req(url), text).await.expect("answer"),
            "none",
            "another host (a storage URL) gets no credentials"
        );
        assert!(!format!("{same:?}").contains(TOKEN));
    }

    #[tokio::test]
    async fn calls_are_retried_and_numbered() {
        let p = peer().await;
        p.flaky.store(2, Ordering::SeqCst);
        let t = transport(
            &format!("http://127.0.0.1:{}/", p.port),
            RetryPolicy::new(Duration::from_millis(1), Duration::from_millis(5), 3),
        );
        let seen = std::sync::Mutex::new(Vec::new());
        let body = t
            .call_numbered(
                &get_req(format!("http://127.0.0.1:{}/flaky", p.port)),
                |r, n| {
                    seen.lock().map(|mut s| s.push(n)).ok();
                    text(r)
                },
            )
            .await
            .expect("third time lucky");
        assert_eq!(body, "fine");
        assert_eq!(*seen.lock().expect("lock"), [1, 2, 3]);
    }

    #[tokio::test]
    async fn errors_never_carry_the_token() {
        let p = peer().await;
        let t = transport(
            &format!("http://127.0.0.1:{}/", p.port),
            RetryPolicy::never().with_attempt_timeout(Duration::from_millis(100)),
        );
        let e = t
            .call(&get_req(format!("http://127.0.0.1:{}/slow", p.port)), text)
            .await
            .expect_err("too slow");
        assert!(matches!(e, BackendError::Timeout { .. }), "{e:?}");
        let closed = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let t = transport(&format!("http://127.0.0.1:{closed}/"), RetryPolicy::never());
        let e2 = t
            .call(&get_req(format!("http://127.0.0.1:{closed}/x?k=v")), text)
            .await
            .expect_err("nothing listens");
        assert!(matches!(e2, BackendError::Connection { .. }), "{e2:?}");
        for e in [e, e2] {
            let all = format!("{e} {e:?} {}", crate::error::error_chain(&e));
            assert!(!all.contains(TOKEN), "{all}");
        }
    }
}

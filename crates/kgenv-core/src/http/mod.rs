//! The one HTTP layer under kgenv's REST clients (Compute, Storage, GitHub, Kaggle) and
//! its downloader:
//!
//! - [`client_builder`]: every `reqwest` client, with rustls on ring, kgenv's user agent,
//!   and no proxy for loopback endpoints (emulators, test fakes);
//! - [`Secret`]: the one wrapper for tokens and keys, never shown by `Debug` or `Display`;
//! - [`TokenSource`]: what a client authenticates with — nothing, a static secret, or a
//!   [`TokenProvider`] (Google's credentials, a layer above, implement one);
//! - [`RetryPolicy`]: exponential backoff with full jitter, `Retry-After` as a floor, a
//!   retry count, a time budget and a cap on how long a server may ask to wait;
//! - [`retry_after`]: the one `Retry-After` parser (seconds or an HTTP-date);
//! - [`map_reqwest`]: the one mapping of transport failures to [`crate::BackendError`] kinds;
//! - [`Transport`]: sends a [`Request`] — built by a service's request builders without
//!   any I/O — with credentials and retries, and hands the [`Response`] to the service's
//!   decoder, which alone knows what a status means.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kgenv_core::BackendError> {
//! use kgenv_core::http::{client_builder, Request, RetryPolicy, TokenSource, Transport, TransportConfig};
//! use std::time::Duration;
//! let base: reqwest::Url = "https://api.example.com/".parse().expect("url");
//! let http = client_builder(base.as_str()).build().expect("client");
//! let transport = Transport::new(http, TransportConfig {
//!     service: "example",
//!     base: base.clone(),
//!     auth: TokenSource::bearer("token"),
//!     retry: RetryPolicy::new(Duration::from_millis(200), Duration::from_secs(20), 3),
//!     connect_hint: None,
//! });
//! let req = Request::new(reqwest::Method::GET, base.join("things").expect("url"), "GET things");
//! let n = transport.call(&req, |r| Ok(r.body.len())).await?;
//! # Ok(()) }
//! ```

mod client;
mod errors;
mod retry;
mod retry_after;
mod secret;
mod token;
mod transport;

pub use client::{
    allows_credentials, build_client, client_builder, ensure_crypto_provider, is_loopback,
};
pub use errors::{map_reqwest, Failure};
pub use retry::{full_jitter, RetryPolicy};
pub use retry_after::{parse_retry_after, retry_after};
pub use secret::{redact, RedactedError, Secret};
pub use token::{TokenProvider, TokenSource};
pub use transport::{Body, Request, Response, Transport, TransportConfig};

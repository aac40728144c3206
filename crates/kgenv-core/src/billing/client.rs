//! [`BillingClient`]: the real [`Billing`] backend on the shared [`Transport`]. A listing
//! is one request per page, each retried on its own ([`RETRY`]), following
//! `nextPageToken` until the API sends none.

use std::time::Duration;

use async_trait::async_trait;

use super::api;
use crate::backends::billing::{Billing, Sku};
use crate::backends::BackendResult;
use crate::error::BackendError;
use crate::google_auth;
use crate::http::{allows_credentials, RetryPolicy, TokenSource, Transport, TransportConfig};

/// The public service root.
pub const DEFAULT_BASE_URL: &str = crate::backends::billing::DEFAULT_ENDPOINT;
/// gcloud's override of the service root, used by tests and emulators.
pub const BASE_URL_ENV: &str = crate::backends::billing::ENDPOINT_ENV;

/// The Catalog's retry policy: exponential backoff from 500 ms to 8 s with full jitter, at
/// most 4 retries within 30 s and 30 s per page: a price is a nicety of `plan` and
/// `status`, which must not hang on it.
pub const RETRY: RetryPolicy =
    RetryPolicy::new(Duration::from_millis(500), Duration::from_secs(8), 4)
        .with_budget(Duration::from_secs(30))
        .with_attempt_timeout(Duration::from_secs(30));

/// The most pages kgenv reads (Compute Engine has a few thousand SKUs, 5000 a page by
/// default): a server that keeps sending tokens cannot loop kgenv forever.
const MAX_PAGES: usize = 1000;

/// The Cloud Billing Catalog API; cheap to clone.
#[derive(Clone, Debug)]
pub struct BillingClient {
    transport: Transport,
    base: String,
    page_size: Option<u32>,
}

/// Builder for [`BillingClient`] (tests, emulators).
#[derive(Debug, Default)]
#[must_use]
pub struct BillingClientBuilder {
    base_url: Option<String>,
    token: Option<TokenSource>,
    retry: Option<RetryPolicy>,
    page_size: Option<u32>,
}

impl BillingClientBuilder {
    /// The service root, e.g. `http://127.0.0.1:8080/` (default: the public one).
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }
    /// The credentials (Compute's: see [`crate::wiring`]).
    pub fn token_source(mut self, source: TokenSource) -> Self {
        self.token = Some(source);
        self
    }
    /// A fixed bearer token.
    pub fn static_token(self, token: &str) -> Self {
        self.token_source(TokenSource::bearer(token))
    }
    /// The retry policy (default [`RETRY`]).
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }
    /// SKUs per page (default: the API's, 5000).
    pub fn page_size(mut self, n: u32) -> Self {
        self.page_size = Some(n);
        self
    }
    /// The client; `Unauthenticated` without a token source, `InvalidArgument` for a
    /// service root that is not `https://` (plain `http://` only on a loopback address:
    /// the token travels with every request).
    pub fn build(self) -> BackendResult<BillingClient> {
        let token = self.token.ok_or_else(|| BackendError::Unauthenticated {
            service: api::SERVICE,
            message: format!(
                "no token source given to the client builder; {}",
                google_auth::HOW_TO_AUTH
            ),
        })?;
        let raw = self.base_url.as_deref().unwrap_or(DEFAULT_BASE_URL).trim();
        let mut base = reqwest::Url::parse(raw).map_err(|e| BackendError::InvalidArgument {
            resource: format!(
                "billing endpoint `{raw}` (from {BASE_URL_ENV} or the client builder)"
            ),
            message: format!("is not a URL ({e}); use e.g. {DEFAULT_BASE_URL}"),
        })?;
        if !allows_credentials(&base) || base.query().is_some() {
            return Err(BackendError::InvalidArgument {
                resource: format!("billing endpoint `{raw}`"),
                message:
                    "must be https://… (plain http only on a loopback address) and have no query"
                        .into(),
            });
        }
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        let http = crate::http::build_client(
            api::SERVICE,
            crate::http::client_builder(base.as_str()).connect_timeout(Duration::from_secs(10)),
        )?;
        let transport = Transport::new(
            http,
            TransportConfig {
                service: api::SERVICE,
                base: base.clone(),
                auth: token,
                retry: self.retry.unwrap_or(RETRY),
                connect_hint: Some("could not connect to the Cloud Billing Catalog API"),
            },
        );
        Ok(BillingClient {
            transport,
            base: base.to_string(),
            page_size: self.page_size,
        })
    }
}

impl BillingClient {
    /// A builder.
    pub fn builder() -> BillingClientBuilder {
        BillingClientBuilder::default()
    }

    /// The client with `token` (the one Compute uses) and the service root from
    /// `CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDBILLING` when set.
    pub fn with_token_source(token: TokenSource) -> BackendResult<Self> {
        let mut b = Self::builder().token_source(token);
        if let Some(url) = std::env::var(BASE_URL_ENV)
            .ok()
            .filter(|v| !v.trim().is_empty())
        {
            b = b.base_url(url);
        }
        b.build()
    }

    /// The client from the environment alone: `GOOGLE_OAUTH_ACCESS_TOKEN`, else Application
    /// Default Credentials looked for on the first call.
    pub fn from_env() -> BackendResult<Self> {
        Self::with_token_source(google_auth::lazy_token_source(
            api::SERVICE,
            google_auth::CLOUD_PLATFORM,
        ))
    }

    /// The service root, with a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base
    }
}

#[async_trait]
impl Billing for BillingClient {
    fn cache_key(&self) -> Option<String> {
        Some(self.base.clone())
    }

    async fn compute_skus(&self) -> BackendResult<Vec<Sku>> {
        let mut skus = Vec::new();
        let mut token: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let req = api::list_skus(&self.base, token.as_deref(), self.page_size)?;
            let page = self.transport.call(&req, api::decode_page).await?;
            skus.extend(page.skus);
            match page.next_page_token.filter(|t| !t.is_empty()) {
                Some(next) if token.as_deref() == Some(next.as_str()) => {
                    return Err(BackendError::other(
                        "the Cloud Billing Catalog API sent the same page token twice; not followed",
                    ))
                }
                Some(next) => token = Some(next),
                None => return Ok(skus),
            }
        }
        Err(BackendError::other(format!(
            "the Cloud Billing Catalog API sent more than {MAX_PAGES} pages of SKUs; stopped"
        )))
    }
}

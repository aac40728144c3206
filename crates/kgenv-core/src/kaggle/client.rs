//! The Kaggle API client: JSON `POST`s with the user's credentials on the shared
//! [`Transport`], typed errors (a 403 on a competition's data means its rules are not
//! accepted yet, and the message says where to accept them), retries of transient failures
//! ([`RETRY`]), and the signed storage URL that the download methods answer with.
//!
//! Redirects are never followed: a download method's 3xx (or its `HttpRedirect` body) names
//! the signed storage URL, which is returned, not fetched. Kaggle's credentials go only to
//! the API's origin; the storage URL is fetched by the [`crate::download`] client, which has
//! none.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::header::LOCATION;
use reqwest::{StatusCode, Url};
use serde::Serialize;

use super::api::{self, ApiError, HttpRedirect};
use super::credentials::Credentials;
use super::env::KaggleEndpoint;
use crate::backends::kaggle::DataFile;
use crate::backends::BackendResult;
use crate::download::UrlSource;
use crate::error::BackendError;
use crate::http::{Response, RetryPolicy, Transport, TransportConfig};

const SERVICE: &str = "kaggle";

/// Kaggle's retry policy: exponential backoff from 500 ms (up to 60 s) with full jitter, at
/// most 5 retries; a `Retry-After` longer than a minute is not waited for.
pub const RETRY: RetryPolicy =
    RetryPolicy::new(Duration::from_millis(500), Duration::from_secs(60), 5)
        .with_max_retry_after(Duration::from_secs(60));

/// A Kaggle API client; cheap to clone. Never logs or shows its credentials.
#[derive(Clone)]
pub struct KaggleClient {
    transport: Transport,
    endpoint: KaggleEndpoint,
    creds: Arc<Credentials>,
}

impl std::fmt::Debug for KaggleClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KaggleClient")
            .field("api", &self.endpoint.api_base)
            .field("credentials", &self.creds.describe())
            .finish()
    }
}

impl KaggleClient {
    /// A client for `endpoint` with `creds`.
    pub fn new(endpoint: KaggleEndpoint, creds: Credentials) -> BackendResult<Self> {
        let base = Url::parse(&endpoint.api_base).map_err(|e| BackendError::InvalidArgument {
            resource: "Kaggle endpoint".into(),
            message: format!("`{}` is not a URL: {e}", endpoint.api_base),
        })?;
        if !crate::http::allows_credentials(&base) {
            return Err(BackendError::InvalidArgument {
                resource: "Kaggle endpoint (KGENV_KAGGLE_ENDPOINT or KAGGLE_API_ENVIRONMENT)".into(),
                message: format!(
                    "`{}` must be https://… (plain http only on a loopback address such as http://127.0.0.1:PORT, since the Kaggle credentials travel with every request)",
                    endpoint.api_base
                ),
            });
        }
        let http = crate::http::build_client(
            SERVICE,
            crate::http::client_builder(&endpoint.api_base)
                .connect_timeout(Duration::from_secs(30))
                .timeout(Duration::from_secs(120))
                .redirect(reqwest::redirect::Policy::none()),
        )?;
        let transport = Transport::new(
            http,
            TransportConfig {
                service: SERVICE,
                base,
                auth: creds.token_source(),
                retry: RETRY,
                connect_hint: None,
            },
        );
        Ok(Self {
            transport,
            endpoint,
            creds: Arc::new(creds),
        })
    }

    /// A client configured like the official one: endpoint from `KAGGLE_API_ENVIRONMENT`
    /// (or `KGENV_KAGGLE_ENDPOINT`), credentials in the official order.
    pub fn from_env() -> BackendResult<Self> {
        Self::new(KaggleEndpoint::from_env()?, Credentials::from_env()?)
    }

    /// The same client with another retry policy (default: from 500 ms, 5 retries,
    /// `Retry-After` waited up to a minute).
    #[must_use]
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.transport = self.transport.with_retry_policy(policy);
        self
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &KaggleEndpoint {
        &self.endpoint
    }

    /// The credentials (for handing to the remote agent).
    pub fn credentials(&self) -> &Credentials {
        &self.creds
    }

    /// Calls `method`, retrying transient failures; a success or a redirect is the answer.
    async fn post<B: Serialize + ?Sized + Sync>(
        &self,
        method: &str,
        body: &B,
        competition: &str,
    ) -> BackendResult<Response> {
        let req = api::request(&self.endpoint, method, &body)?;
        self.transport
            .call(&req, |r| {
                if r.status.is_success() || r.status.is_redirection() {
                    Ok(r)
                } else {
                    Err(self.error(&r, method, competition))
                }
            })
            .await
    }

    /// The typed error of a failed call about `competition`.
    fn error(&self, r: &Response, method: &str, competition: &str) -> BackendError {
        // Kaggle's message, or the body: either redacted, as they may quote a signed URL.
        let said = serde_json::from_slice::<ApiError>(&r.body)
            .map(|e| crate::http::redact(&e.message))
            .unwrap_or_else(|_| r.snippet(200));
        let resource = format!("competition {competition}");
        match r.status {
            StatusCode::UNAUTHORIZED => BackendError::Unauthenticated {
                service: SERVICE,
                message: format!(
                    "Kaggle rejected the {} ({said}); create a new API token at https://www.kaggle.com/settings",
                    self.creds.describe()
                ),
            },
            StatusCode::FORBIDDEN => BackendError::PermissionDenied {
                resource,
                message: format!(
                    "you must accept this competition's rules before downloading its data: open {} , accept them, and run again (Kaggle said: {said})",
                    self.endpoint.rules_url(competition)
                ),
            },
            StatusCode::NOT_FOUND => BackendError::NotFound { resource: if said.is_empty() { resource } else { format!("{resource} ({said})") } },
            StatusCode::TOO_MANY_REQUESTS => BackendError::RateLimited { service: SERVICE, retry_after: r.retry_after() },
            s if s.is_server_error() => BackendError::transient(SERVICE, format!("Kaggle {method}: HTTP {s}: {said}")),
            s => BackendError::InvalidArgument { resource, message: format!("Kaggle {method}: HTTP {s}: {said}") },
        }
    }

    /// Every data file of `competition` (all pages).
    pub async fn list_files(&self, competition: &str) -> BackendResult<Vec<DataFile>> {
        let mut files = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let req = api::ListDataFilesRequest {
                competition_name: competition.into(),
                page_size: Some(200),
                page_token: token.clone(),
            };
            let resp = self.post("ListDataFiles", &req, competition).await?;
            let page: api::ListDataFilesResponse = json(&resp, "ListDataFiles")?;
            files.extend(page.files.into_iter().map(DataFile::from));
            match page.next_page_token.filter(|t| !t.is_empty()) {
                Some(t) if Some(&t) != token.as_ref() => token = Some(t),
                _ => break,
            }
        }
        Ok(files)
    }

    async fn redirect(
        &self,
        method: &str,
        body: &(impl Serialize + Sync),
        competition: &str,
    ) -> BackendResult<Url> {
        let resp = self.post(method, body, competition).await?;
        let bad = |e: &dyn std::fmt::Display| {
            BackendError::other(format!("Kaggle {method}: bad redirect: {e}"))
        };
        if resp.status.is_redirection() {
            let loc = resp
                .headers
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| {
                    BackendError::other(format!("Kaggle {method}: redirect without a Location"))
                })?;
            return resp.url.join(loc).map_err(|e| bad(&e));
        }
        let r: HttpRedirect = json(&resp, method)?;
        resp.url.join(&r.url).map_err(|e| bad(&e))
    }

    /// The signed URL of one data file.
    pub async fn data_file_url(&self, competition: &str, file: &str) -> BackendResult<Url> {
        let req = api::DownloadDataFileRequest {
            competition_name: competition.into(),
            file_name: file.into(),
        };
        self.redirect("DownloadDataFile", &req, competition)
            .await
            .map_err(|e| match e {
                BackendError::NotFound { .. } => BackendError::NotFound {
                    resource: format!("file `{file}` of competition {competition}"),
                },
                e => e,
            })
    }

    /// The signed URL of the whole competition's data as one archive.
    pub async fn data_files_url(&self, competition: &str) -> BackendResult<Url> {
        let req = api::DownloadDataFilesRequest {
            competition_name: competition.into(),
        };
        self.redirect("DownloadDataFiles", &req, competition).await
    }

    /// A [`UrlSource`] for one file: the first URL is `first` when given (already fetched),
    /// later calls ask Kaggle for a fresh signed URL.
    pub fn file_source(
        &self,
        competition: &str,
        file: &str,
        first: Option<Url>,
    ) -> Arc<dyn UrlSource> {
        Arc::new(FileSource {
            client: self.clone(),
            competition: competition.into(),
            file: file.into(),
            first: std::sync::Mutex::new(first),
        })
    }
}

/// Decodes the JSON answer to `method`.
fn json<T: serde::de::DeserializeOwned>(resp: &Response, method: &str) -> BackendResult<T> {
    serde_json::from_slice(&resp.body).map_err(|e| BackendError::Other {
        message: format!("Kaggle {method}: unexpected answer: {}", resp.snippet(200)),
        source: Some(Box::new(crate::http::RedactedError::of(&e))),
    })
}

struct FileSource {
    client: KaggleClient,
    competition: String,
    file: String,
    first: std::sync::Mutex<Option<Url>>,
}

#[async_trait]
impl UrlSource for FileSource {
    async fn url(&self) -> BackendResult<Url> {
        let cached = self.first.lock().map(|mut g| g.take()).unwrap_or(None);
        match cached {
            Some(u) => Ok(u),
            None => {
                self.client
                    .data_file_url(&self.competition, &self.file)
                    .await
            }
        }
    }
    fn describe(&self) -> String {
        format!("{}/{}", self.competition, self.file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Secret;

    fn creds() -> Credentials {
        Credentials::Token {
            token: Secret::new("KGAT_secret"),
            source: "test".into(),
        }
    }

    #[test]
    fn credentials_never_go_over_plain_http_off_this_machine() {
        for url in ["http://kaggle.example.com", "http://10.0.0.5:7777"] {
            let endpoint = KaggleEndpoint::custom(url).expect("a URL");
            let e = KaggleClient::new(endpoint, creds()).expect_err(url);
            assert!(
                matches!(&e, BackendError::InvalidArgument { resource, message }
                    if resource.contains("KGENV_KAGGLE_ENDPOINT") && message.contains("https://")),
                "{url}: {e:?}"
            );
        }
        for url in [
            "http://127.0.0.1:7777",
            "http://localhost",
            "https://kaggle.example.com",
        ] {
            let endpoint = KaggleEndpoint::custom(url).expect("a URL");
            assert!(KaggleClient::new(endpoint, creds()).is_ok(), "{url}");
        }
        assert!(KaggleClient::new(KaggleEndpoint::prod(), creds()).is_ok());
    }
}

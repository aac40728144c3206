//! The Kaggle API transport: JSON `POST`s with the user's credentials, typed errors (a 403
//! on a competition's data means its rules are not accepted yet, and the message says where
//! to accept them), retries of transient failures, and the signed storage URL that the
//! download methods answer with.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};
use reqwest::header::LOCATION;
use reqwest::{StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::api::{self, ApiError, HttpRedirect};
use super::credentials::Credentials;
use super::env::KaggleEndpoint;
use crate::backends::kaggle::DataFile;
use crate::backends::BackendResult;
use crate::download::UrlSource;
use crate::error::BackendError;

const SERVICE: &str = "kaggle";

/// A Kaggle API client; cheap to clone. Never logs or shows its credentials.
#[derive(Clone)]
pub struct KaggleClient {
    http: reqwest::Client,
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
        let http = crate::http::client_builder(&endpoint.api_base)
            .connect_timeout(Duration::from_secs(30))
            .timeout(Duration::from_secs(120))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| BackendError::Other {
                message: "building the HTTP client".into(),
                source: Some(Box::new(e)),
            })?;
        Ok(Self {
            http,
            endpoint,
            creds: Arc::new(creds),
        })
    }

    /// A client configured like the official one: endpoint from `KAGGLE_API_ENVIRONMENT`
    /// (or `KGENV_KAGGLE_ENDPOINT`), credentials in the official order.
    pub fn from_env() -> BackendResult<Self> {
        Self::new(KaggleEndpoint::from_env()?, Credentials::from_env()?)
    }

    /// The endpoint.
    pub fn endpoint(&self) -> &KaggleEndpoint {
        &self.endpoint
    }

    /// The credentials (for handing to the remote agent).
    pub fn credentials(&self) -> &Credentials {
        &self.creds
    }

    async fn post_once<B: Serialize + ?Sized>(
        &self,
        method: &str,
        body: &B,
        competition: &str,
    ) -> BackendResult<reqwest::Response> {
        let url = self.endpoint.method_url(api::SERVICE, method)?;
        let req = self.creds.apply(self.http.post(url).json(body));
        let resp = req
            .send()
            .await
            .map_err(|e| crate::download::map_reqwest(SERVICE, &format!("Kaggle {method}"), e))?;
        let status = resp.status();
        if status.is_success() || status.is_redirection() {
            return Ok(resp);
        }
        Err(self.error(resp, method, competition).await)
    }

    async fn post<B: Serialize + ?Sized>(
        &self,
        method: &str,
        body: &B,
        competition: &str,
    ) -> BackendResult<reqwest::Response> {
        (|| self.post_once(method, body, competition))
            .retry(
                ExponentialBuilder::default()
                    .with_min_delay(Duration::from_millis(500))
                    .with_max_times(5)
                    .with_jitter(),
            )
            .when(BackendError::is_retryable)
            .notify(|e, d| tracing::debug!(error = %e, "Kaggle {method} failed; retrying in {d:?}"))
            .await
    }

    async fn error(
        &self,
        resp: reqwest::Response,
        method: &str,
        competition: &str,
    ) -> BackendError {
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .map(Duration::from_secs);
        let text = resp.text().await.unwrap_or_default();
        let said = serde_json::from_str::<ApiError>(&text)
            .map(|e| e.message)
            .unwrap_or_else(|_| text.chars().take(200).collect());
        let resource = format!("competition {competition}");
        match status {
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
            StatusCode::TOO_MANY_REQUESTS => BackendError::RateLimited { service: SERVICE, retry_after },
            s if s.is_server_error() => BackendError::transient(SERVICE, format!("Kaggle {method}: HTTP {s}: {said}")),
            s => BackendError::InvalidArgument { resource, message: format!("Kaggle {method}: HTTP {s}: {said}") },
        }
    }

    async fn json<T: DeserializeOwned>(resp: reqwest::Response, method: &str) -> BackendResult<T> {
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| crate::download::map_reqwest(SERVICE, &format!("Kaggle {method}"), e))?;
        serde_json::from_slice(&bytes).map_err(|e| BackendError::Other {
            message: format!(
                "Kaggle {method}: unexpected answer: {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            ),
            source: Some(Box::new(e)),
        })
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
            let page: api::ListDataFilesResponse = Self::json(resp, "ListDataFiles").await?;
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
        let base = resp.url().clone();
        if resp.status().is_redirection() {
            let loc = resp
                .headers()
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| {
                    BackendError::other(format!("Kaggle {method}: redirect without a Location"))
                })?;
            return base
                .join(loc)
                .map_err(|e| BackendError::other(format!("Kaggle {method}: bad redirect: {e}")));
        }
        let r: HttpRedirect = Self::json(resp, method).await?;
        base.join(&r.url)
            .map_err(|e| BackendError::other(format!("Kaggle {method}: bad redirect: {e}")))
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

//! The GCS transport: base URL (Google or the emulator), authentication, request sending
//! and the mapping of HTTP answers to [`BackendError`] kinds.

use std::sync::Arc;
use std::time::Duration;

use reqwest::{Method, RequestBuilder, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::OnceCell;

use super::api::ErrorBody;
use crate::backends::BackendResult;
use crate::error::BackendError;

const SERVICE: &str = "storage";
const SCOPE: &str = "https://www.googleapis.com/auth/devstorage.full_control";

enum Auth {
    /// The emulator takes no credentials.
    None,
    /// `GOOGLE_OAUTH_ACCESS_TOKEN`.
    Static(String),
    /// Application Default Credentials, found on first use.
    Adc(OnceCell<Arc<dyn gcp_auth::TokenProvider>>),
}

/// A GCS JSON API client; cheap to clone. Implements [`crate::backends::Storage`].
#[derive(Clone)]
pub struct GcsClient {
    http: reqwest::Client,
    base: Url,
    auth: Arc<Auth>,
    emulated: bool,
}

impl std::fmt::Debug for GcsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let auth = match *self.auth {
            Auth::None => "none (emulator)",
            Auth::Static(_) => "GOOGLE_OAUTH_ACCESS_TOKEN",
            Auth::Adc(_) => "application default credentials",
        };
        f.debug_struct("GcsClient")
            .field("base", &self.base.as_str())
            .field("auth", &auth)
            .finish()
    }
}

pub(super) fn map_err(what: &str, e: reqwest::Error) -> BackendError {
    crate::download::map_reqwest(SERVICE, what, e)
}

impl GcsClient {
    /// A client configured from the environment (see the module docs).
    pub fn from_env() -> BackendResult<Self> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        if let Some(host) = var("STORAGE_EMULATOR_HOST") {
            return Self::emulator(&host);
        }
        let auth = match var("GOOGLE_OAUTH_ACCESS_TOKEN") {
            Some(t) => Auth::Static(t.trim().to_string()),
            None => Auth::Adc(OnceCell::new()),
        };
        let base = Url::parse("https://storage.googleapis.com/")
            .map_err(|e| BackendError::other(e.to_string()))?;
        Self::build(base, auth, false)
    }

    /// A client for an emulator at `host` (`127.0.0.1:4443` or a URL), without credentials.
    pub fn emulator(host: &str) -> BackendResult<Self> {
        let with_scheme = if host.contains("://") {
            host.to_string()
        } else {
            format!("http://{host}")
        };
        let base = Url::parse(&with_scheme).map_err(|e| BackendError::InvalidArgument {
            resource: "STORAGE_EMULATOR_HOST".into(),
            message: format!("`{host}` is not a host:port or URL: {e}"),
        })?;
        Self::build(base, Auth::None, true)
    }

    /// A client for real GCS with a static access token.
    pub fn with_token(token: impl Into<String>) -> BackendResult<Self> {
        let base = Url::parse("https://storage.googleapis.com/")
            .map_err(|e| BackendError::other(e.to_string()))?;
        Self::build(base, Auth::Static(token.into()), false)
    }

    fn build(base: Url, auth: Auth, emulated: bool) -> BackendResult<Self> {
        let http = crate::http::client_builder(base.as_str())
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(300))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| BackendError::Other {
                message: "building the HTTP client".into(),
                source: Some(Box::new(e)),
            })?;
        Ok(Self {
            http,
            base,
            auth: Arc::new(auth),
            emulated,
        })
    }

    /// Whether requests go to an emulator (`STORAGE_EMULATOR_HOST`).
    pub fn is_emulated(&self) -> bool {
        self.emulated
    }

    pub(super) fn url(&self, segments: &[&str], query: &[(&str, &str)]) -> BackendResult<Url> {
        let mut u = self.base.clone();
        {
            let mut p = u
                .path_segments_mut()
                .map_err(|_| BackendError::other("GCS base URL cannot take a path"))?;
            p.pop_if_empty();
            p.extend(segments);
        }
        if !query.is_empty() {
            u.query_pairs_mut().extend_pairs(query);
        }
        Ok(u)
    }

    async fn bearer(&self) -> BackendResult<Option<String>> {
        match &*self.auth {
            Auth::None => Ok(None),
            Auth::Static(t) => Ok(Some(t.clone())),
            Auth::Adc(cell) => {
                let provider = cell
                    .get_or_try_init(|| async {
                        crate::gce::auth::adc_provider().await.map_err(|message| {
                            BackendError::Unauthenticated {
                                service: SERVICE,
                                message,
                            }
                        })
                    })
                    .await?;
                let token =
                    provider
                        .token(&[SCOPE])
                        .await
                        .map_err(|e| BackendError::Unauthenticated {
                            service: SERVICE,
                            message: format!("could not get an access token: {e}"),
                        })?;
                Ok(Some(token.as_str().to_string()))
            }
        }
    }

    pub(super) async fn request(&self, method: Method, url: Url) -> BackendResult<RequestBuilder> {
        let mut req = self.http.request(method, url);
        if let Some(t) = self.bearer().await? {
            req = req.bearer_auth(t);
        }
        Ok(req)
    }

    /// Sends and turns error statuses into typed errors (`what` names the resource).
    pub(super) async fn send(
        &self,
        req: RequestBuilder,
        what: &str,
    ) -> BackendResult<reqwest::Response> {
        let resp = req.send().await.map_err(|e| map_err(what, e))?;
        if resp.status().is_success() || resp.status() == StatusCode::PERMANENT_REDIRECT {
            return Ok(resp);
        }
        Err(status_error(resp, what).await)
    }

    pub(super) async fn get_json<T: DeserializeOwned>(
        &self,
        segs: &[&str],
        query: &[(&str, &str)],
        what: &str,
    ) -> BackendResult<T> {
        let req = self.request(Method::GET, self.url(segs, query)?).await?;
        decode(self.send(req, what).await?, what).await
    }

    pub(super) async fn get_raw(
        &self,
        segs: &[&str],
        query: &[(&str, &str)],
        what: &str,
    ) -> BackendResult<reqwest::Response> {
        let req = self.request(Method::GET, self.url(segs, query)?).await?;
        self.send(req, what).await
    }

    pub(super) async fn post_json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        segs: &[&str],
        query: &[(&str, &str)],
        body: &B,
        what: &str,
    ) -> BackendResult<T> {
        let req = self
            .request(Method::POST, self.url(segs, query)?)
            .await?
            .json(body);
        decode(self.send(req, what).await?, what).await
    }

    pub(super) async fn delete(&self, segs: &[&str], what: &str) -> BackendResult<()> {
        let req = self.request(Method::DELETE, self.url(segs, &[])?).await?;
        self.send(req, what).await.map(|_| ())
    }
}

pub(super) async fn decode<T: DeserializeOwned>(
    resp: reqwest::Response,
    what: &str,
) -> BackendResult<T> {
    let bytes = resp.bytes().await.map_err(|e| map_err(what, e))?;
    serde_json::from_slice(&bytes).map_err(|e| BackendError::Other {
        message: format!(
            "{what}: unexpected answer from GCS: {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
        ),
        source: Some(Box::new(e)),
    })
}

/// The typed error for a non-success answer.
pub(super) async fn status_error(resp: reqwest::Response, what: &str) -> BackendError {
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .map(Duration::from_secs);
    let text = resp.text().await.unwrap_or_default();
    let message = serde_json::from_str::<ErrorBody>(&text)
        .map(|b| b.error.message)
        .unwrap_or_else(|_| text.chars().take(200).collect());
    match status.as_u16() {
        404 => BackendError::NotFound {
            resource: what.to_string(),
        },
        409 => BackendError::AlreadyExists {
            resource: what.to_string(),
        },
        401 => BackendError::Unauthenticated {
            service: SERVICE,
            message: format!("{what}: {message}"),
        },
        403 => BackendError::PermissionDenied {
            resource: what.to_string(),
            message,
        },
        429 => BackendError::RateLimited {
            service: SERVICE,
            retry_after,
        },
        400 | 411 | 412 | 413 | 416 => BackendError::InvalidArgument {
            resource: what.to_string(),
            message,
        },
        s if s >= 500 => BackendError::transient(SERVICE, format!("{what}: HTTP {s}: {message}")),
        s => BackendError::other(format!("{what}: HTTP {s}: {message}")),
    }
}

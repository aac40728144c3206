//! Google credentials for the clients that talk to Google (Compute, Storage, and the
//! registries Docker pulls from), as Google's own tools find them:
//!
//! 1. `GOOGLE_OAUTH_ACCESS_TOKEN`: a static access token (the name Terraform's google
//!    provider reads);
//! 2. Application Default Credentials through `gcp_auth`, the source chosen locally first
//!    ([`adc_provider`]): a service-account key in `GOOGLE_APPLICATION_CREDENTIALS`,
//!    `gcloud auth application-default login`, the metadata server — only on a GCE VM —,
//!    then a logged-in `gcloud` CLI.
//!
//! The caller chooses the OAuth scope (Compute asks for `cloud-platform`, Storage for
//! `devstorage.full_control`, registry pulls for `devstorage.read_only`). `gcp_auth` asks for
//! that scope with a service-account key; the other sources hand out tokens with the scope
//! of the login itself. Tokens are [`Secret`]s: never in `Debug`
//! output, logs or errors.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kgenv_core::BackendError> {
//! use kgenv_core::google_auth::{self, CLOUD_PLATFORM};
//! let source = google_auth::token_source("compute", CLOUD_PLATFORM).await?;
//! let token = source.bearer_token().await?; // a Secret: `{token:?}` prints no token
//! # Ok(()) }
//! ```

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::OnceCell;

use crate::error::{error_chain, BackendError};
use crate::http::{Secret, TokenProvider, TokenSource};

/// The broad scope: Compute Engine needs it.
pub const CLOUD_PLATFORM: &str = "https://www.googleapis.com/auth/cloud-platform";

/// Read-only Cloud Storage: what pulling from gcr.io and Artifact Registry needs (Google's
/// "Deploying to Compute Engine" page for Artifact Registry names this scope for pulls), so
/// a registry token can read images and write nothing.
pub const DEVSTORAGE_READ_ONLY: &str = "https://www.googleapis.com/auth/devstorage.read_only";

/// Full control of Cloud Storage buckets and objects.
pub const DEVSTORAGE_FULL_CONTROL: &str = "https://www.googleapis.com/auth/devstorage.full_control";

/// The environment variable holding a static access token.
pub const TOKEN_ENV: &str = "GOOGLE_OAUTH_ACCESS_TOKEN";

/// What to tell a user who has no credentials.
pub const HOW_TO_AUTH: &str = "run `gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file, or GOOGLE_OAUTH_ACCESS_TOKEN to an access token (e.g. `export GOOGLE_OAUTH_ACCESS_TOKEN=$(gcloud auth print-access-token)`)";

/// `GOOGLE_OAUTH_ACCESS_TOKEN`, trimmed, when set and not empty.
pub fn token_from_env() -> Option<Secret> {
    std::env::var(TOKEN_ENV)
        .ok()
        .and_then(|t| Secret::non_empty(&t))
}

/// `GOOGLE_OAUTH_ACCESS_TOKEN` when set, else Application Default Credentials looked for
/// now: `Unauthenticated` (for `service`, saying how to log in) when there are none.
pub async fn token_source(
    service: &'static str,
    scope: &'static str,
) -> Result<TokenSource, BackendError> {
    if let Some(t) = token_from_env() {
        return Ok(TokenSource::Static(t));
    }
    Ok(TokenSource::Provider(Arc::new(
        Adc::discover(service, scope).await?,
    )))
}

/// `GOOGLE_OAUTH_ACCESS_TOKEN` when set, else Application Default Credentials looked for
/// on first use (for clients built without `await`, and those that may never need a token).
pub fn lazy_token_source(service: &'static str, scope: &'static str) -> TokenSource {
    match token_from_env() {
        Some(t) => TokenSource::Static(t),
        None => TokenSource::Provider(Arc::new(Adc::lazy(service, scope))),
    }
}

/// A token that can do no more than `scope`, for credentials kgenv hands to someone else
/// (a registry login given to a host's Docker engine): what [`lazy_token_source`] gives only
/// where the scope is really narrowed, and an error saying what to do elsewhere.
///
/// - a service-account key (`GOOGLE_APPLICATION_CREDENTIALS`): `gcp_auth` asks for `scope`;
/// - gcloud's application-default login (an `authorized_user` file): kgenv refreshes it
///   itself with `scope` in the request, which Google's token endpoint honours for any
///   subset of the login's scopes (as Google's own auth libraries do); `gcp_auth` would
///   return a token with every scope of the login;
/// - the metadata server on a GCE VM: the VM's own identity with the scopes the VM was given;
/// - `GOOGLE_OAUTH_ACCESS_TOKEN` or the gcloud CLI's login: refused — their tokens carry
///   whatever they were minted with, often the whole project.
pub fn narrowed_token_source(service: &'static str, scope: &'static str) -> TokenSource {
    TokenSource::Provider(Arc::new(Narrowed {
        service,
        scope,
        cached: tokio::sync::Mutex::new(None),
        adc: Adc::lazy(service, scope),
    }))
}

/// The [`TokenProvider`] of [`narrowed_token_source`].
struct Narrowed {
    service: &'static str,
    scope: &'static str,
    /// A narrowed token and when it stops being good (a minute before it expires).
    cached: tokio::sync::Mutex<Option<(Secret, std::time::Instant)>>,
    /// A service-account key or the VM's identity, found once.
    adc: Adc,
}

/// Google's OAuth token endpoint, for an `authorized_user` file that names none.
const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

/// The fields of gcloud's `application_default_credentials.json` kgenv reads.
#[derive(serde::Deserialize)]
struct AuthorizedUser {
    #[serde(rename = "type")]
    kind: String,
    client_id: Option<String>,
    client_secret: Option<String>,
    refresh_token: Option<String>,
    token_uri: Option<String>,
}

/// gcloud's configuration directory (`CLOUDSDK_CONFIG`, else `~/.config/gcloud`).
fn gcloud_dir() -> Option<std::path::PathBuf> {
    std::env::var_os("CLOUDSDK_CONFIG")
        .map(std::path::PathBuf::from)
        .or_else(|| dirs::config_dir().map(|d| d.join("gcloud")))
}

/// gcloud's application-default credentials file, when there is one.
fn adc_file() -> Option<std::path::PathBuf> {
    gcloud_dir()
        .map(|d| d.join("application_default_credentials.json"))
        .filter(|f| f.is_file())
}

impl Narrowed {
    fn refused(&self, message: String) -> BackendError {
        BackendError::Unauthenticated {
            service: self.service,
            message,
        }
    }

    /// The credentials in gcloud's ADC `file`.
    fn read_adc(&self, file: &std::path::Path) -> Result<AuthorizedUser, BackendError> {
        let text = std::fs::read_to_string(file)
            .map_err(|e| self.refused(format!("reading {}: {e}; {HOW_TO_AUTH}", file.display())))?;
        serde_json::from_str(&text).map_err(|e| {
            self.refused(format!(
                "{} is not a credentials file ({e}); {HOW_TO_AUTH}",
                file.display()
            ))
        })
    }

    /// Refreshes gcloud's user login (`user`, read from `file`) for `self.scope` only.
    async fn refresh_narrowed(
        &self,
        file: &std::path::Path,
        user: AuthorizedUser,
    ) -> Result<(Secret, std::time::Instant), BackendError> {
        let (Some(id), Some(secret), Some(refresh)) =
            (user.client_id, user.client_secret, user.refresh_token)
        else {
            return Err(self.refused(format!(
                "{} lacks client_id, client_secret or refresh_token; {HOW_TO_AUTH}",
                file.display()
            )));
        };
        let uri = user.token_uri.unwrap_or_else(|| GOOGLE_TOKEN_URI.into());
        let url = reqwest::Url::parse(&uri)
            .ok()
            .filter(crate::http::allows_credentials)
            .ok_or_else(|| {
                self.refused(format!(
                    "{}: token_uri `{uri}` is not https (plain http only to this machine)",
                    file.display()
                ))
            })?;
        let http = crate::http::client_builder(url.as_str())
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| BackendError::other(format!("HTTP client: {e}")))?;
        let resp = http
            .post(url)
            .form(&[
                ("grant_type", "refresh_token"),
                ("client_id", id.as_str()),
                ("client_secret", secret.as_str()),
                ("refresh_token", refresh.as_str()),
                ("scope", self.scope),
            ])
            .send()
            .await
            .map_err(|e| BackendError::Connection {
                endpoint: uri.clone(),
                message: "refreshing the application-default login for a narrower token".into(),
                source: Some(Box::new(e)),
            })?;
        let status = resp.status();
        #[derive(serde::Deserialize)]
        struct Answer {
            access_token: Option<String>,
            expires_in: Option<u64>,
            error: Option<String>,
        }
        let answer: Answer = resp.json().await.unwrap_or(Answer {
            access_token: None,
            expires_in: None,
            error: None,
        });
        match answer.access_token.as_deref().and_then(Secret::non_empty) {
            Some(token) if status.is_success() => {
                let life = answer.expires_in.unwrap_or(3600).saturating_sub(60);
                Ok((
                    token,
                    std::time::Instant::now() + std::time::Duration::from_secs(life),
                ))
            }
            _ => Err(self.refused(format!(
                "Google refused a token limited to {} ({status}{}); {HOW_TO_AUTH}",
                self.scope,
                answer
                    .error
                    .map(|e| format!(": {}", crate::http::redact(&e)))
                    .unwrap_or_default()
            ))),
        }
    }
}

#[async_trait]
impl TokenProvider for Narrowed {
    async fn token(&self) -> Result<Secret, BackendError> {
        if token_from_env().is_some() {
            return Err(self.refused(format!(
                "{TOKEN_ENV} is set, and its token carries whatever scopes it was made with: kgenv gives a registry only a token limited to {}. Unset {TOKEN_ENV} for this run so kgenv narrows your application-default login, or set GOOGLE_APPLICATION_CREDENTIALS to a service-account key",
                self.scope
            )));
        }
        if std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS").is_none() {
            if let Some(file) = adc_file() {
                let mut cached = self.cached.lock().await;
                if let Some((token, until)) = cached.as_ref() {
                    if std::time::Instant::now() < *until {
                        return Ok(token.clone());
                    }
                }
                let user = self.read_adc(&file)?;
                if user.kind == "authorized_user" {
                    let (token, until) = self.refresh_narrowed(&file, user).await?;
                    *cached = Some((token.clone(), until));
                    return Ok(token);
                }
            } else if !on_gce() {
                return Err(self.refused(format!(
                    "only a gcloud CLI login (or none) was found, and its tokens cannot be limited to {}: run `gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS to a service-account key",
                    self.scope
                )));
            }
        }
        // A service-account key (gcp_auth asks for the scope) or the VM's own identity.
        self.adc.token().await
    }

    fn describe(&self) -> String {
        format!("application default credentials limited to {}", self.scope)
    }
}

/// Application Default Credentials for one scope, as a [`TokenProvider`]; `gcp_auth`
/// caches and refreshes the tokens.
pub struct Adc {
    service: &'static str,
    scope: &'static str,
    provider: OnceCell<Arc<dyn gcp_auth::TokenProvider>>,
}

impl std::fmt::Debug for Adc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Adc")
            .field("service", &self.service)
            .field("scope", &self.scope)
            .field("found", &self.provider.initialized())
            .finish()
    }
}

impl Adc {
    /// Credentials for `service` (named in errors) with `scope`, looked for on first use.
    pub fn lazy(service: &'static str, scope: &'static str) -> Self {
        Self {
            service,
            scope,
            provider: OnceCell::new(),
        }
    }

    /// Credentials looked for now.
    pub async fn discover(
        service: &'static str,
        scope: &'static str,
    ) -> Result<Self, BackendError> {
        let adc = Self::lazy(service, scope);
        adc.provider().await?;
        Ok(adc)
    }

    async fn provider(&self) -> Result<&Arc<dyn gcp_auth::TokenProvider>, BackendError> {
        self.provider
            .get_or_try_init(|| async {
                adc_provider()
                    .await
                    .map_err(|message| BackendError::Unauthenticated {
                        service: self.service,
                        message,
                    })
            })
            .await
    }
}

#[async_trait]
impl TokenProvider for Adc {
    async fn token(&self) -> Result<Secret, BackendError> {
        match self.provider().await?.token(&[self.scope]).await {
            Ok(t) => Ok(Secret::new(t.as_str())),
            Err(e) => Err(BackendError::Unauthenticated {
                service: self.service,
                message: format!(
                    "could not get an access token ({}); {HOW_TO_AUTH}",
                    error_chain(&e)
                ),
            }),
        }
    }

    fn describe(&self) -> String {
        "application default credentials".into()
    }
}

/// Application Default Credentials, choosing the source locally first: a key file
/// (`GOOGLE_APPLICATION_CREDENTIALS`), gcloud's ADC file, the metadata server only on a GCE
/// VM, then a logged-in gcloud CLI. gcp_auth's own discovery probes the metadata server on
/// any machine; off GCE that is a link-local address kgenv has no business contacting.
pub async fn adc_provider() -> Result<Arc<dyn gcp_auth::TokenProvider>, String> {
    let fail =
        |what: &str, e: gcp_auth::Error| format!("{what}: {}; {HOW_TO_AUTH}", error_chain(&e));
    if std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS").is_some() {
        return match gcp_auth::CustomServiceAccount::from_env() {
            Ok(Some(p)) => Ok(Arc::new(p)),
            Ok(None) => Err(format!(
                "GOOGLE_APPLICATION_CREDENTIALS is empty; {HOW_TO_AUTH}"
            )),
            Err(e) => Err(fail("reading GOOGLE_APPLICATION_CREDENTIALS", e)),
        };
    }
    let gcloud_dir = gcloud_dir();
    if gcloud_dir
        .as_ref()
        .is_some_and(|d| d.join("application_default_credentials.json").is_file())
    {
        return gcp_auth::ConfigDefaultCredentials::new()
            .await
            .map(|p| Arc::new(p) as _)
            .map_err(|e| fail("gcloud's application default credentials", e));
    }
    if on_gce() {
        return gcp_auth::MetadataServiceAccount::new()
            .await
            .map(|p| Arc::new(p) as _)
            .map_err(|e| fail("the VM's service account", e));
    }
    if gcloud_dir.is_some_and(|d| d.join("credentials.db").is_file()) {
        return gcp_auth::GCloudAuthorizedUser::new()
            .await
            .map(|p| Arc::new(p) as _)
            .map_err(|e| fail("the gcloud CLI's login", e));
    }
    Err(format!(
        "no Google Cloud credentials found on this machine; {HOW_TO_AUTH}"
    ))
}

/// Whether this machine is a GCE VM (from its DMI product name; no network call).
fn on_gce() -> bool {
    std::fs::read_to_string("/sys/class/dmi/id/product_name").is_ok_and(|p| p.contains("Google"))
}

//! Where the Compute client's bearer tokens come from: a static token from
//! `GOOGLE_OAUTH_ACCESS_TOKEN` (the name Terraform's google provider reads), or Application
//! Default Credentials through `gcp_auth` (a service-account key in
//! `GOOGLE_APPLICATION_CREDENTIALS`, `gcloud auth application-default login`, the metadata
//! server, or the `gcloud` CLI). Tokens never appear in `Debug` output or errors.

use std::sync::Arc;

use crate::error::BackendError;

/// The OAuth scope kgenv asks for: Compute Engine needs `cloud-platform` or `compute`.
pub const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// The environment variable holding a static access token.
pub const TOKEN_ENV: &str = "GOOGLE_OAUTH_ACCESS_TOKEN";

/// A secret string whose `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// A source of bearer tokens.
#[derive(Clone)]
pub enum TokenSource {
    /// One fixed token (`GOOGLE_OAUTH_ACCESS_TOKEN`, tests, emulators).
    Static(Secret),
    /// Application Default Credentials; `gcp_auth` caches and refreshes the token.
    Provider(Arc<dyn gcp_auth::TokenProvider>),
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Static(_) => f.write_str("TokenSource::Static(***)"),
            Self::Provider(_) => f.write_str("TokenSource::Provider(ADC)"),
        }
    }
}

/// What to tell a user who has no credentials.
pub(crate) const HOW_TO_AUTH: &str = "run `gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS to a service-account key file, or GOOGLE_OAUTH_ACCESS_TOKEN to an access token (e.g. `export GOOGLE_OAUTH_ACCESS_TOKEN=$(gcloud auth print-access-token)`)";

impl TokenSource {
    /// `GOOGLE_OAUTH_ACCESS_TOKEN` when set and not empty, else Application Default Credentials.
    pub async fn from_env() -> Result<Self, BackendError> {
        if let Some(t) = std::env::var(TOKEN_ENV)
            .ok()
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
        {
            return Ok(Self::Static(Secret::new(t)));
        }
        match adc_provider().await {
            Ok(p) => Ok(Self::Provider(p)),
            Err(message) => Err(BackendError::Unauthenticated {
                service: "compute",
                message,
            }),
        }
    }

    /// A bearer token valid now.
    pub async fn token(&self) -> Result<Secret, BackendError> {
        match self {
            Self::Static(s) => Ok(s.clone()),
            Self::Provider(p) => match p.token(&[SCOPE]).await {
                Ok(t) => Ok(Secret::new(t.as_str())),
                Err(e) => Err(BackendError::Unauthenticated {
                    service: "compute",
                    message: format!(
                        "could not get an access token ({}); {HOW_TO_AUTH}",
                        crate::error::error_chain(&e)
                    ),
                }),
            },
        }
    }
}

/// Application Default Credentials, choosing the source locally first: a key file
/// (`GOOGLE_APPLICATION_CREDENTIALS`), gcloud's ADC file, the metadata server only on a GCE
/// VM, then a logged-in gcloud CLI. gcp_auth's own discovery probes the metadata server on
/// any machine; off GCE that is a link-local address kgenv has no business contacting.
pub async fn adc_provider() -> Result<Arc<dyn gcp_auth::TokenProvider>, String> {
    let fail = |what: &str, e: gcp_auth::Error| {
        format!("{what}: {}; {HOW_TO_AUTH}", crate::error::error_chain(&e))
    };
    if std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS").is_some() {
        return match gcp_auth::CustomServiceAccount::from_env() {
            Ok(Some(p)) => Ok(Arc::new(p)),
            Ok(None) => Err(format!(
                "GOOGLE_APPLICATION_CREDENTIALS is empty; {HOW_TO_AUTH}"
            )),
            Err(e) => Err(fail("reading GOOGLE_APPLICATION_CREDENTIALS", e)),
        };
    }
    let gcloud_dir = std::env::var_os("CLOUDSDK_CONFIG")
        .map(std::path::PathBuf::from)
        .or_else(|| dirs::config_dir().map(|d| d.join("gcloud")));
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

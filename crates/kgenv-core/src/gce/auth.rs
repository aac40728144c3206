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
        if !credentials_source_present() {
            // gcp_auth would fall through to the GCE metadata server; off GCE that is a
            // probe of a link-local address kgenv has no business contacting.
            return Err(BackendError::Unauthenticated {
                service: "compute",
                message: format!("no Google Cloud credentials found on this machine; {HOW_TO_AUTH}"),
            });
        }
        match gcp_auth::provider().await {
            Ok(p) => Ok(Self::Provider(p)),
            Err(e) => Err(BackendError::Unauthenticated {
                service: "compute",
                message: format!(
                    "no Google Cloud credentials found ({}); {HOW_TO_AUTH}",
                    crate::plan::error_chain(&e)
                ),
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
                        crate::plan::error_chain(&e)
                    ),
                }),
            },
        }
    }
}

/// Whether any source Application Default Credentials would use exists, checked locally
/// with no network call: a key file, gcloud's ADC file, the gcloud CLI, or a GCE VM (where
/// the metadata server answers).
pub fn credentials_source_present() -> bool {
    let file = |p: std::path::PathBuf| p.is_file();
    if std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS").is_some_and(|p| file(p.into())) {
        return true;
    }
    let gcloud_dir = std::env::var_os("CLOUDSDK_CONFIG")
        .map(std::path::PathBuf::from)
        .or_else(|| dirs::config_dir().map(|d| d.join("gcloud")));
    if gcloud_dir.is_some_and(|d| file(d.join("application_default_credentials.json"))) {
        return true;
    }
    let on_path = |name: &str| {
        std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|d| file(d.join(name))))
    };
    if on_path("gcloud") {
        return true;
    }
    std::fs::read_to_string("/sys/class/dmi/id/product_name").is_ok_and(|p| p.contains("Google"))
}

//! Wiring: builds the real backends from the environment (credentials, endpoint overrides,
//! the user's home directory). The one module that knows every client; the surfaces call it
//! once and hand the [`Backends`] to a [`crate::runner::Runner`].
//!
//! A system kgenv cannot reach (no credentials, not in this build) answers with
//! [`BackendError::Unavailable`](crate::error::BackendError::Unavailable) and a hint on its
//! first call, so `plan` still runs without credentials.

use std::sync::Arc;

use crate::backends::unavailable::Unavailable;
use crate::backends::{Backends, Billing, Kaggle, SshAliases};

/// The real backends: Compute and Storage (Application Default Credentials or
/// `GOOGLE_OAUTH_ACCESS_TOKEN`, endpoint overrides), SSH, Docker, Kaggle (credentials read on
/// first use), GitHub (`GITHUB_TOKEN`) and the Billing Catalog (Compute's credentials,
/// `CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDBILLING`), and the user's `~/.ssh/config` for the
/// `ssh <env>` alias.
pub async fn from_env() -> Backends {
    let gce = crate::gce::GceCompute::from_env().await;
    // Prices are read with Compute's credentials: without them the catalog is unavailable
    // too, and `plan` says the price is unknown.
    let billing: Arc<dyn Billing> = match &gce {
        Ok(c) => {
            match crate::billing::BillingClient::with_token_source(c.transport().auth().clone()) {
                Ok(b) => Arc::new(b),
                Err(e) => Unavailable::arc("billing", e.to_string()),
            }
        }
        Err(e) => Unavailable::arc("billing", e.to_string()),
    };
    Backends {
        compute: match gce {
            Ok(c) => Arc::new(c),
            Err(e) => Unavailable::arc("compute", e.to_string()),
        },
        storage: match crate::gcs::GcsClient::from_env() {
            Ok(c) => Arc::new(c),
            Err(e) => Unavailable::arc("storage", e.to_string()),
        },
        remote: Arc::new(crate::ssh::SshConnector::new()),
        engine: Arc::new(crate::docker::DockerConnector::new()),
        kaggle: kaggle_from_env(),
        github: match crate::github::GitHubClient::from_env() {
            Ok(c) => Arc::new(c),
            Err(e) => Unavailable::arc("github", e.to_string()),
        },
        billing,
        ssh_aliases: ssh_aliases(),
    }
}

/// The real Kaggle backend alone (for `data list`/`data pull`, which need no environment).
/// Credentials are read on first use, so building it never fails.
pub fn kaggle_from_env() -> Arc<dyn Kaggle> {
    Arc::new(crate::kaggle::LazyKaggle::new(
        crate::download::DownloadOptions::default(),
    ))
}

/// The user's `~/.ssh/config` and kgenv's own file beside it, or `None` (with a warning in
/// the logs) on a machine with no home directory.
fn ssh_aliases() -> Option<Arc<dyn SshAliases>> {
    match crate::ssh::SshConfigFiles::default_paths() {
        Ok(files) => Some(Arc::new(files)),
        Err(e) => {
            tracing::warn!("`ssh <env>` aliases are off: {e}");
            None
        }
    }
}

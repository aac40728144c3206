//! Registry credentials for pulls: Google's registries (gcr.io, `*.gcr.io`, Artifact
//! Registry's `*-docker.pkg.dev`) take an OAuth access token as the password of the user
//! `oauth2accesstoken`, which is what `gcloud auth configure-docker` sets up.
//!
//! The token comes from `GOOGLE_OAUTH_ACCESS_TOKEN` when set (Terraform's convention), else
//! from Application Default Credentials through `gcp_auth`. Without either, the pull is
//! anonymous, which is enough for Kaggle's public images. The token is only ever put in the
//! `X-Registry-Auth` header of that one pull: never logged, never in an error.

use bollard::auth::DockerCredentials;
use tokio::sync::OnceCell;

/// The scope a registry pull needs.
const SCOPE: &str = "https://www.googleapis.com/auth/cloud-platform";

/// Where registry tokens come from.
pub struct RegistryAuth {
    static_token: Option<String>,
    use_adc: bool,
    provider: OnceCell<Option<std::sync::Arc<dyn gcp_auth::TokenProvider>>>,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field(
                "static_token",
                &self.static_token.as_ref().map(|_| "<redacted>"),
            )
            .field("use_adc", &self.use_adc)
            .finish()
    }
}

impl Default for RegistryAuth {
    fn default() -> Self {
        Self::from_env()
    }
}

impl RegistryAuth {
    /// `GOOGLE_OAUTH_ACCESS_TOKEN` if set, else Application Default Credentials.
    pub fn from_env() -> Self {
        let static_token = std::env::var("GOOGLE_OAUTH_ACCESS_TOKEN")
            .ok()
            .filter(|t| !t.trim().is_empty());
        Self {
            static_token,
            use_adc: true,
            provider: OnceCell::new(),
        }
    }

    /// Always anonymous pulls.
    pub fn anonymous() -> Self {
        Self {
            static_token: None,
            use_adc: false,
            provider: OnceCell::new(),
        }
    }

    /// This token for Google's registries.
    pub fn token(token: impl Into<String>) -> Self {
        Self {
            static_token: Some(token.into()),
            use_adc: false,
            provider: OnceCell::new(),
        }
    }

    /// Credentials for pulling `image`, or `None` for an anonymous pull.
    pub async fn credentials_for(&self, image: &str) -> Option<DockerCredentials> {
        let host = google_registry(image)?;
        let token = match &self.static_token {
            Some(t) => t.clone(),
            None if self.use_adc => self.adc_token().await?,
            None => return None,
        };
        Some(DockerCredentials {
            username: Some("oauth2accesstoken".into()),
            password: Some(token),
            serveraddress: Some(format!("https://{host}")),
            ..Default::default()
        })
    }

    async fn adc_token(&self) -> Option<String> {
        let provider = self
            .provider
            .get_or_init(|| async {
                match crate::gce::auth::adc_provider().await {
                    Ok(p) => Some(p),
                    Err(e) => {
                        tracing::debug!(
                            "no Google credentials for the registry ({e}); pulling anonymously"
                        );
                        None
                    }
                }
            })
            .await
            .clone()?;
        match provider.token(&[SCOPE]).await {
            Ok(t) => Some(t.as_str().to_string()),
            Err(e) => {
                tracing::debug!(
                    "could not get a Google token for the registry ({e}); pulling anonymously"
                );
                None
            }
        }
    }
}

/// The registry host of `image` when it is one of Google's (gcr.io, `*.gcr.io`,
/// `*-docker.pkg.dev`).
pub fn google_registry(image: &str) -> Option<&str> {
    let (host, rest) = image.split_once('/')?;
    if rest.is_empty() {
        return None;
    }
    let name = host.split(':').next().unwrap_or(host);
    let google = name == "gcr.io" || name.ends_with(".gcr.io") || name.ends_with("-docker.pkg.dev");
    google.then_some(host)
}

/// Splits `repo[:tag][@digest]` into the `fromImage` and `tag` of `POST /images/create`.
pub fn split_reference(reference: &str) -> (&str, &str) {
    if let Some((repo, digest)) = reference.split_once('@') {
        return (repo, digest);
    }
    // A `:` after the last `/` is a tag; one before it is a registry port.
    let last_slash = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[last_slash..].rfind(':') {
        Some(i) => (
            &reference[..last_slash + i],
            &reference[last_slash + i + 1..],
        ),
        None => (reference, "latest"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn google_registries_are_recognised() {
        assert_eq!(
            google_registry("gcr.io/kaggle-gpu-images/python:latest"),
            Some("gcr.io")
        );
        assert_eq!(google_registry("us.gcr.io/p/i"), Some("us.gcr.io"));
        assert_eq!(
            google_registry("us-central1-docker.pkg.dev/p/repo/img:v1"),
            Some("us-central1-docker.pkg.dev")
        );
        assert_eq!(google_registry("docker.io/library/busybox"), None);
        assert_eq!(google_registry("busybox"), None);
        assert_eq!(google_registry("127.0.0.1:5000/x"), None);
        assert_eq!(google_registry("evilgcr.io.example.com/x"), None);
    }

    #[tokio::test]
    async fn a_static_token_is_used_only_for_google_registries() {
        let auth = RegistryAuth::token("ya29.secret");
        let c = auth
            .credentials_for("gcr.io/kaggle-images/python")
            .await
            .expect("credentials");
        assert_eq!(c.username.as_deref(), Some("oauth2accesstoken"));
        assert_eq!(c.password.as_deref(), Some("ya29.secret"));
        assert_eq!(c.serveraddress.as_deref(), Some("https://gcr.io"));
        assert!(auth
            .credentials_for("docker.io/library/busybox")
            .await
            .is_none());
        assert!(
            !format!("{auth:?}").contains("ya29"),
            "Debug never shows the token"
        );
        assert!(RegistryAuth::anonymous()
            .credentials_for("gcr.io/x/y")
            .await
            .is_none());
    }

    #[test]
    fn references_split_into_repo_and_tag() {
        assert_eq!(
            split_reference("gcr.io/kaggle-gpu-images/python:v150"),
            ("gcr.io/kaggle-gpu-images/python", "v150")
        );
        assert_eq!(split_reference("busybox"), ("busybox", "latest"));
        assert_eq!(
            split_reference("127.0.0.1:5000/kgenv/bb"),
            ("127.0.0.1:5000/kgenv/bb", "latest")
        );
        assert_eq!(
            split_reference("127.0.0.1:5000/kgenv/bb:v1"),
            ("127.0.0.1:5000/kgenv/bb", "v1")
        );
        assert_eq!(split_reference("img@sha256:abc"), ("img", "sha256:abc"));
    }
}

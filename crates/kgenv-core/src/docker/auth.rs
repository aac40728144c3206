//! Registry credentials for pulls: Google's registries (gcr.io, `*.gcr.io`, Artifact
//! Registry's `*-docker.pkg.dev`) take an OAuth access token as the password of the user
//! `oauth2accesstoken`, which is what `gcloud auth configure-docker` sets up.
//!
//! The token comes from `GOOGLE_OAUTH_ACCESS_TOKEN` when set (Terraform's convention), else
//! from Application Default Credentials ([`crate::google_auth`]). Without either, the pull is
//! anonymous, which is enough for Kaggle's public images. The token is only ever put in the
//! `X-Registry-Auth` header of that one pull: never logged, never in an error.

use bollard::auth::DockerCredentials;

use crate::google_auth;
use crate::http::{Secret, TokenSource};

/// Where registry tokens come from.
#[derive(Debug)]
pub struct RegistryAuth {
    source: TokenSource,
}

impl Default for RegistryAuth {
    fn default() -> Self {
        Self::from_env()
    }
}

impl RegistryAuth {
    /// `GOOGLE_OAUTH_ACCESS_TOKEN` if set, else Application Default Credentials (scope
    /// `cloud-platform`), looked for at the first pull from a Google registry.
    pub fn from_env() -> Self {
        Self {
            source: google_auth::lazy_token_source("docker", google_auth::CLOUD_PLATFORM),
        }
    }

    /// Always anonymous pulls.
    pub fn anonymous() -> Self {
        Self {
            source: TokenSource::None,
        }
    }

    /// This token for Google's registries.
    pub fn token(token: impl Into<String>) -> Self {
        Self {
            source: TokenSource::Static(Secret::new(token)),
        }
    }

    /// Credentials for pulling `image`, or `None` for an anonymous pull.
    pub async fn credentials_for(&self, image: &str) -> Option<DockerCredentials> {
        let host = google_registry(image)?;
        let token = match self.source.bearer_token().await {
            Ok(t) => t?,
            Err(e) => {
                tracing::debug!("no Google token for the registry ({e}); pulling anonymously");
                return None;
            }
        };
        Some(DockerCredentials {
            username: Some("oauth2accesstoken".into()),
            password: Some(token.expose().to_string()),
            serveraddress: Some(format!("https://{host}")),
            ..Default::default()
        })
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

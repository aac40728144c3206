//! Registry credentials for pulls, handed to the engine only when a registry asks.
//!
//! Every pull goes anonymously first: Kaggle's images are public, and a credential given to
//! the engine (on a remote host, a VM the user may share) is a credential exposed there. Only
//! when the engine reports that the registry refused the anonymous pull (see
//! `errors::refused_anonymous`) does [`DockerEngine::pull_image`](super::DockerEngine) retry once with
//! what [`RegistryAuth::credentials_for`] gives:
//!
//! - for Google's registries (gcr.io, `*.gcr.io`, Artifact Registry's `*-docker.pkg.dev`) an
//!   OAuth access token as the password of the user `oauth2accesstoken` (what
//!   `gcloud auth configure-docker` sets up), asked for with the read-only storage scope
//!   [`DEVSTORAGE_READ_ONLY`](crate::google_auth::DEVSTORAGE_READ_ONLY): Google documents it as
//!   the scope a VM needs to pull from Artifact Registry (which also serves gcr.io now), so the
//!   token can read images and nothing else where the key allows narrowing (see below);
//! - for any other registry, the user and password given with [`RegistryAuth::login`].
//!
//! The Google token is [`google_auth::narrowed_token_source`]'s: really limited to that
//! scope (a service-account key, or gcloud's application-default login refreshed by kgenv with
//! the scope in the request), or the VM's own identity when kgenv runs on GCE; a static
//! `GOOGLE_OAUTH_ACCESS_TOKEN` or the gcloud CLI's login, whose tokens cannot be narrowed, are
//! refused with what to do instead. A secret is only ever put
//! in the `X-Registry-Auth` header of that one retry: never logged, never in an error.

use bollard::auth::DockerCredentials;

use crate::error::BackendError;
use crate::google_auth;
use crate::http::{Secret, TokenSource};

/// Where registry credentials come from.
#[derive(Debug)]
pub struct RegistryAuth {
    google: TokenSource,
    logins: Vec<Login>,
}

/// A user and password for one registry host.
struct Login {
    host: String,
    username: String,
    password: Secret,
}

impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Login({}@{}, <redacted>)", self.username, self.host)
    }
}

impl Default for RegistryAuth {
    fn default() -> Self {
        Self::from_env()
    }
}

impl RegistryAuth {
    /// A token limited to `devstorage.read_only` for Google's registries
    /// ([`google_auth::narrowed_token_source`]), looked for only when a Google registry
    /// refuses an anonymous pull.
    pub fn from_env() -> Self {
        Self {
            google: google_auth::narrowed_token_source("docker", google_auth::DEVSTORAGE_READ_ONLY),
            logins: Vec::new(),
        }
    }

    /// Always anonymous pulls.
    pub fn anonymous() -> Self {
        Self {
            google: TokenSource::None,
            logins: Vec::new(),
        }
    }

    /// This token for Google's registries.
    pub fn token(token: impl Into<String>) -> Self {
        Self {
            google: TokenSource::Static(Secret::new(token)),
            logins: Vec::new(),
        }
    }

    /// Also these credentials for the registry at `host` (`registry.example.com`,
    /// `127.0.0.1:5000`), for when it refuses an anonymous pull.
    #[must_use]
    pub fn login(
        mut self,
        host: impl Into<String>,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        self.logins.push(Login {
            host: host.into(),
            username: username.into(),
            password: Secret::new(password),
        });
        self
    }

    /// Credentials for pulling `image` once its registry refused an anonymous pull:
    /// `Ok(None)` when kgenv has none for that registry, an `Unauthenticated` error (saying
    /// how to log in) when it should have a Google token but cannot get one.
    pub async fn credentials_for(
        &self,
        image: &str,
    ) -> Result<Option<DockerCredentials>, BackendError> {
        let host = registry_host(image);
        if let Some(login) = self.logins.iter().find(|l| Some(l.host.as_str()) == host) {
            return Ok(Some(DockerCredentials {
                username: Some(login.username.clone()),
                password: Some(login.password.expose().to_string()),
                serveraddress: Some(login.host.clone()),
                ..Default::default()
            }));
        }
        let Some(host) = google_registry(image) else {
            return Ok(None);
        };
        let Some(token) = self.google.bearer_token().await? else {
            return Ok(None);
        };
        Ok(Some(DockerCredentials {
            username: Some("oauth2accesstoken".into()),
            password: Some(token.expose().to_string()),
            serveraddress: Some(format!("https://{host}")),
            ..Default::default()
        }))
    }
}

/// The registry host of `image` when it names one (`gcr.io/p/i`, `127.0.0.1:5000/x`): a
/// first path component with a `.` or `:`, or `localhost`, as Docker reads references.
pub fn registry_host(image: &str) -> Option<&str> {
    let (host, rest) = image.split_once('/')?;
    let named = host.contains('.') || host.contains(':') || host == "localhost";
    (named && !rest.is_empty()).then_some(host)
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

    async fn creds(auth: &RegistryAuth, image: &str) -> Option<DockerCredentials> {
        auth.credentials_for(image).await.expect("no token error")
    }

    #[tokio::test]
    async fn a_static_token_is_used_only_for_google_registries() {
        let auth = RegistryAuth::token("ya29.secret");
        let c = creds(&auth, "gcr.io/kaggle-images/python")
            .await
            .expect("credentials");
        assert_eq!(c.username.as_deref(), Some("oauth2accesstoken"));
        assert_eq!(c.password.as_deref(), Some("ya29.secret"));
        assert_eq!(c.serveraddress.as_deref(), Some("https://gcr.io"));
        assert!(creds(&auth, "docker.io/library/busybox").await.is_none());
        assert!(
            !format!("{auth:?}").contains("ya29"),
            "Debug never shows the token"
        );
        assert!(creds(&RegistryAuth::anonymous(), "gcr.io/x/y")
            .await
            .is_none());
    }

    #[tokio::test]
    async fn a_login_is_used_only_for_its_registry() {
        let auth = RegistryAuth::anonymous().login("127.0.0.1:5000", "ann", "pw-secret");
        let c = creds(&auth, "127.0.0.1:5000/team/img:v1")
            .await
            .expect("credentials");
        assert_eq!(c.username.as_deref(), Some("ann"));
        assert_eq!(c.password.as_deref(), Some("pw-secret"));
        assert_eq!(c.serveraddress.as_deref(), Some("127.0.0.1:5000"));
        assert!(creds(&auth, "127.0.0.1:5001/team/img").await.is_none());
        assert!(creds(&auth, "gcr.io/p/i").await.is_none());
        assert!(!format!("{auth:?}").contains("pw-secret"), "{auth:?}");
        assert_eq!(registry_host("busybox"), None);
        assert_eq!(registry_host("library/busybox"), None);
        assert_eq!(registry_host("localhost/x"), Some("localhost"));
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

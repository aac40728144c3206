//! Where a client's credentials come from, as one type every service authenticates with:
//! none (emulators, anonymous calls), one static secret (a bearer token, or a Kaggle
//! username and key as HTTP Basic), or a provider that hands out fresh bearer tokens
//! (Google's Application Default Credentials implement one, a layer above).

use std::sync::Arc;

use async_trait::async_trait;

use super::Secret;
use crate::error::BackendError;

/// Hands out bearer tokens valid now (caching and refreshing them as it sees fit).
#[async_trait]
pub trait TokenProvider: Send + Sync {
    /// A token valid now.
    async fn token(&self) -> Result<Secret, BackendError>;
    /// Where the tokens come from, for `Debug` and messages (never a token).
    fn describe(&self) -> String;
}

/// The credentials a client sends.
#[derive(Clone, Default)]
pub enum TokenSource {
    /// No credentials (an emulator, a public endpoint).
    #[default]
    None,
    /// One fixed bearer token (`GOOGLE_OAUTH_ACCESS_TOKEN`, `GITHUB_TOKEN`, a Kaggle API
    /// token, tests).
    Static(Secret),
    /// A user name and key sent as HTTP Basic (Kaggle's legacy API key).
    Basic {
        /// The user name.
        username: String,
        /// The key.
        password: Secret,
    },
    /// Fresh bearer tokens from a provider.
    Provider(Arc<dyn TokenProvider>),
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => f.write_str("TokenSource::None"),
            Self::Static(_) => f.write_str("TokenSource::Static(<redacted>)"),
            Self::Basic { username, .. } => write!(f, "TokenSource::Basic({username}, <redacted>)"),
            Self::Provider(p) => write!(f, "TokenSource::Provider({})", p.describe()),
        }
    }
}

impl TokenSource {
    /// A static bearer token; [`TokenSource::None`] when `token` is empty.
    pub fn bearer(token: &str) -> Self {
        Secret::non_empty(token).map_or(Self::None, Self::Static)
    }

    /// Whether no credentials are sent.
    pub fn is_none(&self) -> bool {
        matches!(self, Self::None)
    }

    /// The bearer token to send now: `None` without credentials or for HTTP Basic.
    pub async fn bearer_token(&self) -> Result<Option<Secret>, BackendError> {
        match self {
            Self::None | Self::Basic { .. } => Ok(None),
            Self::Static(s) => Ok(Some(s.clone())),
            Self::Provider(p) => p.token().await.map(Some),
        }
    }

    /// Adds the credentials to a request.
    pub async fn authorize(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder, BackendError> {
        Ok(match self {
            Self::None => req,
            Self::Basic { username, password } => req.basic_auth(username, Some(password.expose())),
            Self::Static(_) | Self::Provider(_) => match self.bearer_token().await? {
                Some(t) => req.bearer_auth(t.expose()),
                None => req,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed;

    #[async_trait]
    impl TokenProvider for Fixed {
        async fn token(&self) -> Result<Secret, BackendError> {
            Ok(Secret::new("from-provider"))
        }
        fn describe(&self) -> String {
            "a test provider".into()
        }
    }

    #[tokio::test]
    async fn tokens_and_their_debug() {
        let sources = [
            TokenSource::bearer("tok-static"),
            TokenSource::Basic {
                username: "ann".into(),
                password: Secret::new("key-basic"),
            },
            TokenSource::Provider(Arc::new(Fixed)),
        ];
        for s in &sources {
            let d = format!("{s:?}");
            assert!(
                !d.contains("tok-") && !d.contains("key-") && !d.contains("from-"),
                "{d}"
            );
        }
        assert!(TokenSource::bearer("  ").is_none());
        let got = |s: &TokenSource| {
            let s = s.clone();
            async move {
                s.bearer_token()
                    .await
                    .expect("token")
                    .map(|t| t.expose().to_string())
            }
        };
        assert_eq!(got(&sources[0]).await.as_deref(), Some("tok-static"));
        assert_eq!(got(&sources[1]).await, None);
        assert_eq!(got(&sources[2]).await.as_deref(), Some("from-provider"));
    }
}

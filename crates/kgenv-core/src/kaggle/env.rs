//! Which Kaggle API kgenv talks to, decided the way the official `kaggle` client
//! (`kagglesdk.kaggle_env`) decides it:
//!
//! | `KAGGLE_API_ENVIRONMENT` | API base | web pages |
//! | --- | --- | --- |
//! | unset or `PROD` | `https://api.kaggle.com/v1` | `https://www.kaggle.com` |
//! | `LOCALHOST` | `http://localhost/api/v1` | `http://localhost` |
//! | `TEST` | `http://localhost:7777/api/v1` | `http://localhost:7777` |
//! | `STAGING`, `ADMIN`, `QA` | `https://{staging,admin,qa}.kaggle.com/api/v1` | same host |
//!
//! Any other value is an error, as in the official client. kgenv adds one variable of its
//! own for tests and local fakes on a free port: `KGENV_KAGGLE_ENDPOINT=http://127.0.0.1:PORT`
//! serves the API at `<url>/api/v1` like the non-production environments; it wins over
//! `KAGGLE_API_ENVIRONMENT`.

use reqwest::Url;
use serde::{Deserialize, Serialize};

use crate::backends::BackendResult;
use crate::error::BackendError;

/// Where the Kaggle API and its web pages are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KaggleEndpoint {
    /// Base of the API calls, ending in `/v1/` (`<base><service>/<method>`).
    pub api_base: String,
    /// Base of web pages such as a competition's rules, ending in `/`.
    pub web_base: String,
}

impl KaggleEndpoint {
    /// Production: `https://api.kaggle.com/v1/`.
    pub fn prod() -> Self {
        Self {
            api_base: "https://api.kaggle.com/v1/".into(),
            web_base: "https://www.kaggle.com/".into(),
        }
    }

    /// A server at `url` laid out like the non-production environments (`<url>/api/v1/`).
    pub fn custom(url: &str) -> BackendResult<Self> {
        let base = url.trim_end_matches('/');
        Url::parse(base).map_err(|e| BackendError::InvalidArgument {
            resource: "Kaggle endpoint".into(),
            message: format!("`{url}` is not a URL: {e}"),
        })?;
        Ok(Self {
            api_base: format!("{base}/api/v1/"),
            web_base: format!("{base}/"),
        })
    }

    /// The endpoint for a `KAGGLE_API_ENVIRONMENT` value (`None`: unset).
    pub fn for_environment(value: Option<&str>) -> BackendResult<Self> {
        let host = match value {
            None | Some("PROD") => return Ok(Self::prod()),
            Some("LOCALHOST") => "http://localhost",
            Some("TEST") => "http://localhost:7777",
            Some("STAGING") => "https://staging.kaggle.com",
            Some("ADMIN") => "https://admin.kaggle.com",
            Some("QA") => "https://qa.kaggle.com",
            Some(other) => {
                return Err(BackendError::InvalidArgument {
                    resource: "KAGGLE_API_ENVIRONMENT".into(),
                    message: format!("unrecognized value `{other}` (the official client accepts PROD, LOCALHOST, TEST, STAGING, ADMIN, QA)"),
                })
            }
        };
        Self::custom(host)
    }

    /// From `KGENV_KAGGLE_ENDPOINT`, else `KAGGLE_API_ENVIRONMENT`.
    pub fn from_env() -> BackendResult<Self> {
        Self::from_vars(&|k| std::env::var(k).ok())
    }

    /// As [`Self::from_env`], with variables read through `var`.
    pub fn from_vars(var: &dyn Fn(&str) -> Option<String>) -> BackendResult<Self> {
        if let Some(url) = var("KGENV_KAGGLE_ENDPOINT").filter(|v| !v.trim().is_empty()) {
            return Self::custom(url.trim());
        }
        Self::for_environment(var("KAGGLE_API_ENVIRONMENT").as_deref())
    }

    /// URL of an API method, e.g. `competitions.CompetitionApiService`, `ListDataFiles`.
    pub fn method_url(&self, service: &str, method: &str) -> BackendResult<Url> {
        Url::parse(&format!("{}{service}/{method}", self.api_base))
            .map_err(|e| BackendError::other(format!("bad Kaggle API URL: {e}")))
    }

    /// The page where a competition's rules are accepted.
    pub fn rules_url(&self, competition: &str) -> String {
        format!("{}competitions/{competition}/rules", self.web_base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environments_match_the_official_client() {
        let e = |v: Option<&str>| KaggleEndpoint::for_environment(v).expect("env");
        assert_eq!(
            e(None)
                .method_url("competitions.CompetitionApiService", "ListDataFiles")
                .expect("url")
                .as_str(),
            "https://api.kaggle.com/v1/competitions.CompetitionApiService/ListDataFiles"
        );
        assert_eq!(e(Some("PROD")), e(None));
        assert_eq!(
            e(Some("LOCALHOST"))
                .method_url("s", "M")
                .expect("url")
                .as_str(),
            "http://localhost/api/v1/s/M"
        );
        assert_eq!(
            e(Some("TEST")).method_url("s", "M").expect("url").as_str(),
            "http://localhost:7777/api/v1/s/M"
        );
        assert_eq!(
            e(Some("STAGING")).api_base,
            "https://staging.kaggle.com/api/v1/"
        );
        assert_eq!(
            e(None).rules_url("titanic"),
            "https://www.kaggle.com/competitions/titanic/rules"
        );
        assert_eq!(
            e(Some("TEST")).rules_url("titanic"),
            "http://localhost:7777/competitions/titanic/rules"
        );
        assert!(
            KaggleEndpoint::for_environment(Some("prod")).is_err(),
            "values are case-sensitive, as in kagglesdk"
        );
    }

    #[test]
    fn kgenv_override_wins() {
        let vars = |k: &str| match k {
            "KGENV_KAGGLE_ENDPOINT" => Some("http://127.0.0.1:9/".to_string()),
            "KAGGLE_API_ENVIRONMENT" => Some("BOGUS".to_string()),
            _ => None,
        };
        let e = KaggleEndpoint::from_vars(&vars).expect("endpoint");
        assert_eq!(e.api_base, "http://127.0.0.1:9/api/v1/");
    }
}

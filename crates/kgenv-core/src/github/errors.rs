//! GitHub's statuses → typed [`BackendError`]s with messages that say what to do: 401 →
//! [`BackendError::Unauthenticated`], a spent rate limit (403/429 with
//! `x-ratelimit-remaining: 0`, or a message saying so) → [`BackendError::RateLimited`] with
//! the wait from `Retry-After` or `x-ratelimit-reset` (a minute when neither; a wait longer
//! than the client takes → an error naming the reset time), 404 on a repository →
//! [`BackendError::PermissionDenied`] (no access or no such repository), 422 "key is already
//! in use" → [`BackendError::AlreadyExists`], 5xx → transient.

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;

use super::api::Call;
use super::model::ErrorJson;
use crate::backends::github::KeyScope;
use crate::error::BackendError;
use crate::http::Response;

/// What an answer says about GitHub's rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RateLimit {
    /// Whether `x-ratelimit-remaining` said 0.
    pub(super) spent: bool,
    /// `Retry-After`, or the wait until `x-ratelimit-reset` when the limit is spent.
    pub(super) retry_after: Option<Duration>,
}

impl RateLimit {
    /// Reads the headers of `r` as seen at `now`.
    pub(super) fn of(r: &Response, now: SystemTime) -> Self {
        let num = |name: &str| {
            r.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        let spent = num("x-ratelimit-remaining") == Some(0);
        let retry_after = r.retry_after().or_else(|| {
            let reset = num("x-ratelimit-reset").filter(|_| spent)?;
            let now = now.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_secs();
            Some(Duration::from_secs(reset.saturating_sub(now)))
        });
        Self { spent, retry_after }
    }
}

fn resource(call: &Call<'_>) -> String {
    match call.scope {
        Some(KeyScope::Repo(r)) => format!("GitHub deploy keys of {r}"),
        Some(KeyScope::User) => "GitHub SSH keys of the token's user".into(),
        None => "GitHub /meta".into(),
    }
}

fn token_scope_hint(scope: Option<&KeyScope>) -> &'static str {
    match scope {
        Some(KeyScope::Repo(_)) => "a fine-grained token with the repository's \"Administration: read and write\" permission, or a classic token with the `repo` scope",
        Some(KeyScope::User) => "a fine-grained token with the account permission \"Git SSH keys: read and write\", or a classic token with the `admin:public_key` scope",
        None => "no token",
    }
}

/// How long GitHub's docs say to wait after a rate limit that names no time ("Otherwise,
/// wait for at least one minute before retrying": troubleshooting the REST API).
pub const UNTIMED_RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);

/// A rate-limit answer, read as GitHub's docs ("Rate limits for the REST API") say: wait
/// `retry-after` seconds when sent; else, with `x-ratelimit-remaining: 0`, until
/// `x-ratelimit-reset` (UTC epoch seconds); else at least a minute. A wait the client's
/// retry policy takes ([`super::client::RETRY`], up to a minute) is a
/// [`BackendError::RateLimited`] it retries after; a longer one (a primary limit resetting
/// in up to an hour) fails at once with the time it resets and what to do, the
/// `RateLimited` kept as its source.
fn rate_limited(
    call: &Call<'_>,
    status: StatusCode,
    text: &str,
    limit: RateLimit,
    now: SystemTime,
) -> BackendError {
    let wait = limit.retry_after.unwrap_or(UNTIMED_RATE_LIMIT_WAIT);
    let limited = BackendError::RateLimited {
        service: "github",
        retry_after: Some(wait),
    };
    match super::client::RETRY.max_retry_after {
        Some(cap) if wait > cap => {
            let which = if limit.spent {
                "API rate limit"
            } else {
                "secondary rate limit"
            };
            BackendError::Other {
                message: format!(
                    "{} answered {} ({text}): GitHub's {which} for this GITHUB_TOKEN holds until {} (in about {} min), longer than kgenv waits; run kgenv again after that time, or use another token",
                    call.what,
                    status.as_u16(),
                    httpdate::fmt_http_date(now + wait),
                    wait.as_secs().div_ceil(60),
                ),
                source: Some(Box::new(limited)),
            }
        }
        _ => limited,
    }
}

/// Maps a non-2xx answer to a typed error.
pub fn error_for(call: &Call<'_>, r: &Response) -> BackendError {
    let gh = ErrorJson::parse(&r.body);
    let text = gh.text();
    let status = r.status;
    let limit = RateLimit::of(r, SystemTime::now());
    match status {
        StatusCode::UNAUTHORIZED => BackendError::Unauthenticated {
            service: "github",
            message: format!("{} answered 401 ({text}): GITHUB_TOKEN is wrong, expired or revoked; make a new one with {}", call.what, token_scope_hint(call.scope)),
        },
        StatusCode::FORBIDDEN | StatusCode::TOO_MANY_REQUESTS if limit.spent || status == StatusCode::TOO_MANY_REQUESTS || text.to_ascii_lowercase().contains("rate limit") => {
            rate_limited(call, status, &text, limit, SystemTime::now())
        }
        StatusCode::FORBIDDEN => BackendError::PermissionDenied {
            resource: resource(call),
            message: format!("{} answered 403 ({text}): the token needs {}", call.what, token_scope_hint(call.scope)),
        },
        StatusCode::NOT_FOUND => match call.scope {
            Some(KeyScope::Repo(r)) => BackendError::PermissionDenied {
                resource: format!("GitHub repository {r}"),
                message: format!("{} answered 404: the repository does not exist or GITHUB_TOKEN cannot see it (GitHub answers 404 to both); check `github_key.repo` and give the token access to {r} with {}", call.what, token_scope_hint(call.scope)),
            },
            _ => BackendError::NotFound { resource: format!("{} ({})", resource(call), call.what) },
        },
        StatusCode::UNPROCESSABLE_ENTITY if text.contains("already in use") => BackendError::AlreadyExists {
            resource: format!("GitHub key (GitHub: {text}; a key can be registered once across GitHub, as one deploy key or one user key)"),
        },
        StatusCode::UNPROCESSABLE_ENTITY | StatusCode::BAD_REQUEST => BackendError::InvalidArgument { resource: resource(call), message: format!("{} answered {} ({text})", call.what, status.as_u16()) },
        s if s.is_server_error() => BackendError::transient("github", format!("{} answered {} ({text})", call.what, s.as_u16())),
        s => BackendError::other(format!("{} answered {} ({text})", call.what, s.as_u16())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderMap, HeaderValue};

    fn answer(status: u16, headers: &[(&'static str, &str)]) -> Response {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(*k, HeaderValue::from_str(v).expect("value"));
        }
        Response {
            status: StatusCode::from_u16(status).expect("status"),
            headers: h,
            body: bytes::Bytes::from_static(br#"{"message":"API rate limit exceeded"}"#),
            url: "https://api.github.com/user/keys".parse().expect("url"),
        }
    }

    #[test]
    fn spent_rate_limits_wait_until_the_reset() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let r = answer(
            403,
            &[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "1700000042"),
            ],
        );
        assert_eq!(
            RateLimit::of(&r, now),
            RateLimit {
                spent: true,
                retry_after: Some(Duration::from_secs(42))
            }
        );
        let r = answer(
            429,
            &[("retry-after", "7"), ("x-ratelimit-reset", "1700000042")],
        );
        assert_eq!(
            RateLimit::of(&r, now).retry_after,
            Some(Duration::from_secs(7))
        );
        let r = answer(
            403,
            &[
                ("x-ratelimit-remaining", "10"),
                ("x-ratelimit-reset", "1700000042"),
            ],
        );
        assert_eq!(
            RateLimit::of(&r, now),
            RateLimit {
                spent: false,
                retry_after: None
            }
        );
        let call = Call {
            scope: Some(&KeyScope::User),
            what: "GET /user/keys".into(),
        };
        assert!(matches!(
            error_for(&call, &answer(403, &[("x-ratelimit-remaining", "0")])),
            BackendError::RateLimited {
                service: "github",
                ..
            }
        ));
    }

    #[test]
    fn a_rate_limit_without_a_time_waits_a_minute_and_a_far_reset_fails_naming_it() {
        let call = Call {
            scope: Some(&KeyScope::User),
            what: "GET /user/keys".into(),
        };
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        // A secondary limit with no retry-after and requests left: at least a minute.
        let r = answer(403, &[("x-ratelimit-remaining", "4000")]);
        let e = rate_limited(&call, r.status, "secondary", RateLimit::of(&r, now), now);
        assert!(
            matches!(e, BackendError::RateLimited { retry_after: Some(d), .. } if d == UNTIMED_RATE_LIMIT_WAIT),
            "{e:?}"
        );
        // A primary limit resetting in an hour: not waited for, the reset time named.
        let r = answer(
            403,
            &[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", "1700003600"),
            ],
        );
        let e = rate_limited(
            &call,
            r.status,
            "API rate limit exceeded",
            RateLimit::of(&r, now),
            now,
        );
        let msg = e.to_string();
        assert!(
            msg.contains("Tue, 14 Nov 2023 23:13:20 GMT")
                && msg.contains("in about 60 min")
                && msg.contains("GITHUB_TOKEN"),
            "{msg}"
        );
        assert!(!e.is_retryable(), "{e:?}");
        let source = std::error::Error::source(&e).expect("the rate limit kept as the source");
        assert!(
            source
                .to_string()
                .contains("rate limited, retry after 3600s"),
            "{source}"
        );
    }
}

//! GitHub's keys and meta endpoints as kgenv uses them: paths, request builders (GitHub's
//! `Accept` and API version headers on each), request bodies, and decoded answers. No I/O
//! here: [`super::GitHubClient`] sends on the shared transport; [`super::errors`] maps the
//! statuses.

use reqwest::header::{HeaderName, ACCEPT};
use reqwest::{Method, StatusCode, Url};

use super::errors::error_for;
use super::model::{KeyJson, MetaJson};
use crate::backends::github::{GithubKeyInfo, KeyScope};
use crate::error::BackendError;
use crate::http::{Request, Response};

/// GitHub's REST API version kgenv speaks.
pub const API_VERSION: &str = "2022-11-28";

/// The path of the keys collection of `scope` ([`KeyScope::keys_path`]).
pub fn keys_path(scope: &KeyScope) -> String {
    scope.keys_path()
}

/// The path of one key.
pub fn key_path(scope: &KeyScope, id: u64) -> String {
    format!("{}/{id}", keys_path(scope))
}

/// The body of `POST` on [`keys_path`]. `read_only` only exists for deploy keys.
pub fn add_key_body(
    scope: &KeyScope,
    title: &str,
    key: &str,
    read_only: bool,
) -> serde_json::Value {
    match scope {
        KeyScope::Repo(_) => {
            serde_json::json!({ "title": title, "key": key.trim(), "read_only": read_only })
        }
        KeyScope::User => serde_json::json!({ "title": title, "key": key.trim() }),
    }
}

/// A request of `method` to `path` (with its query) under the API base `base` (no trailing
/// slash), with GitHub's headers.
pub fn request(base: &str, method: Method, path: &str) -> Result<Request, BackendError> {
    let url = format!("{base}{path}");
    let parsed = Url::parse(&url).map_err(|e| BackendError::InvalidArgument {
        resource: "GITHUB_API_URL".into(),
        message: format!("`{url}` is not a URL: {e}"),
    })?;
    with_headers(Request::new(
        method.clone(),
        parsed,
        format!("{method} {url}"),
    ))
}

fn with_headers(r: Request) -> Result<Request, BackendError> {
    r.header(ACCEPT, "application/vnd.github+json")?
        .header(HeaderName::from_static("x-github-api-version"), API_VERSION)
}

/// The `rel="next"` URL of an answer's `Link` header: GitHub's pagination, which its docs
/// tell clients to follow rather than build page URLs or guess the last page from a short
/// one ("Using pagination in the REST API").
pub fn next_link(r: &Response) -> Option<String> {
    let v = r.headers.get(reqwest::header::LINK)?.to_str().ok()?;
    // `<url>; rel="next", <url>; rel="last"`: each link is `<…>` then `;`-separated params.
    v.split(',').find_map(|link| {
        let (target, params) = link.trim().strip_prefix('<')?.split_once('>')?;
        params
            .split(';')
            .filter_map(|p| p.trim().strip_prefix("rel="))
            .any(|rel| {
                rel.trim_matches('"')
                    .split_whitespace()
                    .any(|r| r == "next")
            })
            .then(|| target.to_string())
    })
}

/// `GET` of a page a `Link` header named. It must lie under the API base `base`: the
/// token goes with it.
pub fn page(base: &str, url: &str) -> Result<Request, BackendError> {
    let parsed = Url::parse(url).map_err(|e| {
        BackendError::other(format!(
            "GitHub's Link header names `{url}`, not a URL: {e}"
        ))
    })?;
    let under = Url::parse(&format!("{base}/"))
        .is_ok_and(|b| b.origin() == parsed.origin() && parsed.path().starts_with(b.path()));
    if !under {
        return Err(BackendError::other(format!(
            "GitHub's Link header points outside {base}: `{}`; not followed",
            crate::http::redact(url)
        )));
    }
    with_headers(Request::new(Method::GET, parsed, format!("GET {url}")))
}

/// `GET /meta`.
pub fn meta(base: &str) -> Result<Request, BackendError> {
    request(base, Method::GET, "/meta")
}

/// `GET` one page (1-based, 100 keys, GitHub's most) of the keys of `scope`; the next
/// pages come from [`next_link`].
pub fn list_keys(base: &str, scope: &KeyScope, page: u32) -> Result<Request, BackendError> {
    request(
        base,
        Method::GET,
        &format!("{}?per_page=100&page={page}", keys_path(scope)),
    )
}

/// `POST` a key to `scope`.
pub fn add_key(
    base: &str,
    scope: &KeyScope,
    title: &str,
    key: &str,
    read_only: bool,
) -> Result<Request, BackendError> {
    Ok(request(base, Method::POST, &keys_path(scope))?
        .json_value(&add_key_body(scope, title, key, read_only)))
}

/// `DELETE` key `id` of `scope`.
pub fn delete_key(base: &str, scope: &KeyScope, id: u64) -> Result<Request, BackendError> {
    request(base, Method::DELETE, &key_path(scope, id))
}

/// What a call was about, for error messages.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    /// The scope of the keys call (`None` for `/meta`).
    pub scope: Option<&'a KeyScope>,
    /// `GET /repos/o/r/keys`, for messages.
    pub what: String,
}

fn decode_json<T: serde::de::DeserializeOwned>(
    call: &Call<'_>,
    r: &Response,
) -> Result<T, BackendError> {
    serde_json::from_slice(&r.body).map_err(|e| BackendError::Other {
        message: format!("{}: GitHub's answer is not the expected JSON", call.what),
        source: Some(Box::new(crate::http::RedactedError::of(&e))),
    })
}

/// Decodes a key list (200).
pub fn decode_keys(call: &Call<'_>, r: Response) -> Result<Vec<GithubKeyInfo>, BackendError> {
    if r.status != StatusCode::OK {
        return Err(error_for(call, &r));
    }
    Ok(decode_json::<Vec<KeyJson>>(call, &r)?
        .into_iter()
        .map(Into::into)
        .collect())
}

/// Decodes a created key (201).
pub fn decode_created(call: &Call<'_>, r: Response) -> Result<GithubKeyInfo, BackendError> {
    if r.status != StatusCode::CREATED && r.status != StatusCode::OK {
        return Err(error_for(call, &r));
    }
    Ok(decode_json::<KeyJson>(call, &r)?.into())
}

/// Decodes a deletion (204).
pub fn decode_deleted(call: &Call<'_>, r: Response) -> Result<(), BackendError> {
    if r.status.is_success() {
        return Ok(());
    }
    Err(match r.status {
        // The key is gone already (or never was): what `delete` wants.
        StatusCode::NOT_FOUND => BackendError::NotFound {
            resource: format!("GitHub key ({})", call.what),
        },
        _ => error_for(call, &r),
    })
}

/// Decodes `/meta`'s SSH host keys, each checked to be one OpenSSH public key.
pub fn decode_meta_ssh_keys(call: &Call<'_>, r: Response) -> Result<Vec<String>, BackendError> {
    if r.status != StatusCode::OK {
        return Err(error_for(call, &r));
    }
    let keys = decode_json::<MetaJson>(call, &r)?
        .ssh_keys
        .unwrap_or_default();
    if keys.is_empty() {
        return Err(BackendError::NotFound { resource: format!("`ssh_keys` in {} (this GitHub publishes no SSH host keys; kgenv pins them instead of trusting the first connection, so add the server's keys to the host's known_hosts yourself)", call.what) });
    }
    keys.into_iter()
        .map(|k| {
            let k = k.trim().to_string();
            match ssh_key::PublicKey::from_openssh(&k) {
                Ok(_) if !k.contains(['\n', '\r']) => Ok(k),
                _ => Err(BackendError::other(format!(
                    "{}: `{k}` is not an SSH public key",
                    call.what
                ))),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_page_is_the_link_headers() {
        let answer = |link: &str| Response {
            status: StatusCode::OK,
            headers: [(
                reqwest::header::LINK,
                reqwest::header::HeaderValue::from_str(link).expect("value"),
            )]
            .into_iter()
            .collect(),
            body: bytes::Bytes::new(),
            url: "https://api.github.com/user/keys".parse().expect("url"),
        };
        let gh = r#"<https://api.github.com/user/keys?per_page=100&page=2>; rel="next", <https://api.github.com/user/keys?per_page=100&page=5>; rel="last""#;
        assert_eq!(
            next_link(&answer(gh)).as_deref(),
            Some("https://api.github.com/user/keys?per_page=100&page=2")
        );
        let last = r#"<https://api.github.com/user/keys?page=4>; rel="prev", <https://api.github.com/user/keys?page=1>; rel="first""#;
        assert_eq!(next_link(&answer(last)), None);
        assert!(page(
            "https://api.github.com",
            "https://api.github.com/user/keys?page=2"
        )
        .is_ok());
        assert!(page(
            "https://ghe.example/api/v3",
            "https://ghe.example/api/v3/user/keys?page=2"
        )
        .is_ok());
        for outside in [
            "https://evil.example/user/keys?page=2",
            "https://ghe.example/other/user/keys",
        ] {
            assert!(
                page("https://ghe.example/api/v3", outside).is_err(),
                "{outside}"
            );
        }
    }

    #[test]
    fn requests_carry_githubs_headers() {
        let r = list_keys(
            "https://ghe.example/api/v3",
            &KeyScope::Repo("o/r".into()),
            2,
        )
        .expect("request");
        assert_eq!(
            r.url.as_str(),
            "https://ghe.example/api/v3/repos/o/r/keys?per_page=100&page=2"
        );
        assert_eq!(
            r.what,
            "GET https://ghe.example/api/v3/repos/o/r/keys?per_page=100&page=2"
        );
        assert_eq!(
            r.headers.get("x-github-api-version").map(|v| v.as_bytes()),
            Some(API_VERSION.as_bytes())
        );
        assert_eq!(
            r.headers.get(ACCEPT).map(|v| v.as_bytes()),
            Some(&b"application/vnd.github+json"[..])
        );
        let r = add_key(
            "https://api.github.com",
            &KeyScope::User,
            "t",
            "ssh-ed25519 AAAA k\n",
            true,
        )
        .expect("request");
        match &r.body {
            crate::http::Body::Json(b) => assert_eq!(
                serde_json::from_slice::<serde_json::Value>(b).expect("json"),
                serde_json::json!({"title": "t", "key": "ssh-ed25519 AAAA k"})
            ),
            other => panic!("{other:?}"),
        }
    }
}

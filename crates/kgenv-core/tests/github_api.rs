//! The real GitHub client and the github-key step against a local fake of GitHub's
//! documented endpoints (`/repos/{owner}/{repo}/keys`, `/user/keys`, `/meta`) on 127.0.0.1:
//! 201 created, 422 key already in use, 401 bad token, 404 no repository access, 5xx
//! retried; rate limits as GitHub sends them and pagination by `Link` header; the step is
//! idempotent by fingerprint, finds its key on any page, prints manual instructions without
//! a token, and pins the host keys `/meta` publishes.
//!
//! The fake follows GitHub's REST docs:
//! - "Using pagination in the REST API": `per_page` (default 30, at most 100) and `page`,
//!   and a `Link` header with `rel="next"`, `"prev"`, `"first"`, `"last"` URLs, which the
//!   docs tell clients to follow rather than build page URLs themselves;
//! - "Rate limits for the REST API" / "Troubleshooting the REST API": a spent primary limit
//!   is `403` (or `429`) with `x-ratelimit-remaining: 0` and `x-ratelimit-reset` in UTC epoch
//!   seconds, every answer carries the `x-ratelimit-*` headers; a secondary limit is `403`
//!   or `429` with a message saying so and, here, `retry-after`. The limits are held: a
//!   request made before the reset or the retry-after is refused again and counted as
//!   early, so a client that does not wait fails the test.

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{OriginalUri, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};

use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde_json::{json, Value};
use sha2::Digest;

use kgenv_core::backends::github::{key_fingerprint, ssh_host, GitHub, KeyScope};
use kgenv_core::github::{GitHubClient, GitHubConfig};
use kgenv_core::mock::{MockWorld, GITHUB_HOST_KEYS};
use kgenv_core::runner::{Event, Outcome, RunOptions, Runner};
use kgenv_core::spec::{Env, GithubKey, SshHost, Target};
use kgenv_core::steps::github_key::GithubKeyStep;
use kgenv_core::BackendError;

const TOKEN: &str = "ghp_test_token_0123456789";

#[derive(Clone, Debug)]
struct FakeKey {
    scope: String,
    id: u64,
    title: String,
    key: String,
    read_only: bool,
}

/// A primary rate limit window: `limit` requests an hour, `remaining` of them left until
/// `reset` (UTC epoch seconds), when the window starts again.
#[derive(Clone, Copy, Debug)]
struct Primary {
    limit: u32,
    remaining: u32,
    reset: u64,
    /// The client has been told the limit is spent (a request after that, before the
    /// reset, is early).
    told: bool,
}

/// One request as it arrived.
#[derive(Clone, Debug)]
struct Arrival {
    at: Instant,
    wall: SystemTime,
    /// `METHOD /path?query`.
    request: String,
}

#[derive(Default)]
struct Fake {
    repos: BTreeSet<String>,
    keys: Vec<FakeKey>,
    next_id: u64,
    requests: Vec<String>,
    arrivals: Vec<Arrival>,
    fail_next: u32,
    /// The largest `per_page` honoured (GitHub: 100).
    max_per_page: usize,
    /// The SSH host keys `/meta` publishes.
    host_keys: Vec<String>,
    /// The primary rate limit, when one is set.
    primary: Option<Primary>,
    /// Secondary limits the next requests hit, as their `retry-after` seconds.
    secondary: VecDeque<u64>,
    /// A secondary limit holds until then.
    secondary_until: Option<Instant>,
    /// Requests made while a limit the client had been told of still held.
    early: u32,
}

type Shared = Arc<Mutex<Fake>>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, Fake> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

fn err(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

fn epoch(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The `x-ratelimit-*` headers GitHub sends with every answer while a window is set.
fn rate_headers(p: &Primary) -> [(&'static str, String); 5] {
    [
        ("x-ratelimit-limit", p.limit.to_string()),
        ("x-ratelimit-remaining", p.remaining.to_string()),
        ("x-ratelimit-used", (p.limit - p.remaining).to_string()),
        ("x-ratelimit-reset", p.reset.to_string()),
        ("x-ratelimit-resource", "core".to_string()),
    ]
}

/// Records the request and answers what GitHub answers before routing: injected 502s, 401
/// for a missing or wrong token, and the rate limits.
fn gate(
    s: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    needs_auth: bool,
) -> Option<Response> {
    let mut f = lock(s);
    let (at, wall) = (Instant::now(), SystemTime::now());
    f.requests.push(format!("{method} {}", uri.path()));
    f.arrivals.push(Arrival {
        at,
        wall,
        request: format!("{method} {uri}"),
    });
    if f.fail_next > 0 {
        f.fail_next -= 1;
        return Some(err(
            StatusCode::BAD_GATEWAY,
            json!({ "message": "Server Error" }),
        ));
    }
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if needs_auth && auth != format!("Bearer {TOKEN}") {
        return Some(err(
            StatusCode::UNAUTHORIZED,
            json!({ "message": "Bad credentials", "documentation_url": "https://docs.github.com/rest" }),
        ));
    }
    // Secondary limit: held until its retry-after has passed.
    let secondary = |secs: u64| {
        let mut r = err(
            StatusCode::TOO_MANY_REQUESTS,
            json!({ "message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.", "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits" }),
        );
        r.headers_mut()
            .insert("retry-after", HeaderValue::from(secs.max(1)));
        r
    };
    if let Some(until) = f.secondary_until {
        if at < until {
            f.early += 1;
            return Some(secondary((until - at).as_secs_f64().ceil() as u64));
        }
        f.secondary_until = None;
    }
    if let Some(secs) = f.secondary.pop_front() {
        f.secondary_until = Some(at + Duration::from_secs(secs));
        return Some(secondary(secs));
    }
    // Primary limit: a window of `limit` requests, refused until its reset once spent.
    if let Some(p) = f.primary.as_mut() {
        if epoch(wall) >= p.reset {
            *p = Primary {
                limit: p.limit,
                remaining: p.limit,
                reset: epoch(wall) + 3600,
                told: false,
            };
        }
        if p.remaining == 0 {
            let early = p.told;
            p.told = true;
            let mut r = err(
                StatusCode::FORBIDDEN,
                json!({ "message": "API rate limit exceeded for user ID 1.", "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api" }),
            );
            for (k, v) in rate_headers(p) {
                r.headers_mut()
                    .insert(k, HeaderValue::from_str(&v).expect("header"));
            }
            f.early += u32::from(early);
            return Some(r);
        }
        p.remaining -= 1;
    }
    None
}

/// Adds the `x-ratelimit-*` headers of the current window to an answer that has none.
async fn with_rate_headers(State(s): State<Shared>, mut r: Response) -> Response {
    if let Some(p) = lock(&s).primary {
        if !r.headers().contains_key("x-ratelimit-remaining") {
            for (k, v) in rate_headers(&p) {
                r.headers_mut()
                    .insert(k, HeaderValue::from_str(&v).expect("header"));
            }
        }
    }
    r
}

fn key_json(k: &FakeKey) -> Value {
    json!({ "id": k.id, "key": k.key, "title": k.title, "read_only": k.read_only, "verified": true, "created_at": "2024-01-01T00:00:00Z" })
}

fn blob(key: &str) -> String {
    key.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}

/// One page of the keys of `scope`, with GitHub's `Link` header.
fn list(
    s: &Shared,
    scope: &str,
    q: &std::collections::HashMap<String, String>,
    uri: &Uri,
    headers: &HeaderMap,
) -> Response {
    let f = lock(s);
    let per_page: usize = q
        .get("per_page")
        .and_then(|v| v.parse().ok())
        .unwrap_or(30)
        .clamp(1, f.max_per_page);
    let page: usize = q
        .get("page")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    let all: Vec<&FakeKey> = f.keys.iter().filter(|k| k.scope == scope).collect();
    let keys: Vec<Value> = all
        .iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|k| key_json(k))
        .collect();
    let last = all.len().div_ceil(per_page).max(1);
    let host = headers
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("127.0.0.1");
    let url = |n: usize| format!("http://{host}{}?per_page={per_page}&page={n}", uri.path());
    let mut links = Vec::new();
    if page < last {
        links.push(format!("<{}>; rel=\"next\"", url(page + 1)));
        links.push(format!("<{}>; rel=\"last\"", url(last)));
    }
    if page > 1 {
        links.push(format!("<{}>; rel=\"prev\"", url(page - 1)));
        links.push(format!("<{}>; rel=\"first\"", url(1)));
    }
    let mut r = Json(keys).into_response();
    if !links.is_empty() {
        r.headers_mut().insert(
            "link",
            HeaderValue::from_str(&links.join(", ")).expect("link"),
        );
    }
    r
}

fn add(s: &Shared, scope: &str, body: &Value) -> Response {
    let mut f = lock(s);
    let key = body["key"].as_str().unwrap_or_default().to_string();
    if key_fingerprint(&key).is_none() {
        return err(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({ "message": "Validation Failed", "errors": [{ "resource": "PublicKey", "code": "custom", "field": "key", "message": "key is invalid. You must supply a key in OpenSSH public key format" }] }),
        );
    }
    if f.keys.iter().any(|k| blob(&k.key) == blob(&key)) {
        return err(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({ "message": "Validation Failed", "errors": [{ "resource": "PublicKey", "code": "custom", "field": "key", "message": "key is already in use" }] }),
        );
    }
    f.next_id += 1;
    let k = FakeKey {
        scope: scope.into(),
        id: 100 + f.next_id,
        title: body["title"].as_str().unwrap_or_default().into(),
        key: blob(&key),
        read_only: body["read_only"].as_bool().unwrap_or(false),
    };
    f.keys.push(k.clone());
    (StatusCode::CREATED, Json(key_json(&k))).into_response()
}

fn remove(s: &Shared, scope: &str, id: u64) -> Response {
    let mut f = lock(s);
    let before = f.keys.len();
    f.keys.retain(|k| !(k.scope == scope && k.id == id));
    if f.keys.len() == before {
        return err(StatusCode::NOT_FOUND, json!({ "message": "Not Found" }));
    }
    StatusCode::NO_CONTENT.into_response()
}

type Q = Query<std::collections::HashMap<String, String>>;

async fn repo_keys(
    State(s): State<Shared>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    Path((owner, repo)): Path<(String, String)>,
    q: Q,
    body: Option<Json<Value>>,
) -> Response {
    if let Some(r) = gate(&s, &method, &uri, &headers, true) {
        return r;
    }
    let full = format!("{owner}/{repo}");
    if !lock(&s).repos.contains(&full) {
        return err(StatusCode::NOT_FOUND, json!({ "message": "Not Found" }));
    }
    match method {
        Method::GET => list(&s, &full, &q, &uri, &headers),
        _ => add(&s, &full, &body.map(|b| b.0).unwrap_or_default()),
    }
}

async fn repo_key(
    State(s): State<Shared>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    Path((owner, repo, id)): Path<(String, String, u64)>,
) -> Response {
    if let Some(r) = gate(&s, &method, &uri, &headers, true) {
        return r;
    }
    let full = format!("{owner}/{repo}");
    if !lock(&s).repos.contains(&full) {
        return err(StatusCode::NOT_FOUND, json!({ "message": "Not Found" }));
    }
    remove(&s, &full, id)
}

async fn user_keys(
    State(s): State<Shared>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    q: Q,
    body: Option<Json<Value>>,
) -> Response {
    if let Some(r) = gate(&s, &method, &uri, &headers, true) {
        return r;
    }
    match method {
        Method::GET => list(&s, "user", &q, &uri, &headers),
        _ => add(&s, "user", &body.map(|b| b.0).unwrap_or_default()),
    }
}

async fn user_key(
    State(s): State<Shared>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    Path(id): Path<u64>,
) -> Response {
    if let Some(r) = gate(&s, &method, &uri, &headers, true) {
        return r;
    }
    remove(&s, "user", id)
}

async fn meta(
    State(s): State<Shared>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = gate(&s, &method, &uri, &headers, false) {
        return r;
    }
    let keys = lock(&s).host_keys.clone();
    Json(json!({ "verifiable_password_authentication": false, "ssh_keys": keys, "git": ["192.30.252.0/22"] })).into_response()
}

/// The fake GitHub on a free 127.0.0.1 port, served at `/` and at `/api/v3` (Enterprise).
struct FakeGitHub {
    state: Shared,
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeGitHub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeGitHub {
    async fn start() -> Self {
        let state: Shared = Arc::default();
        {
            let mut f = lock(&state);
            f.repos.insert("octo/kaggle".into());
            f.max_per_page = 100;
            // Host keys of its own, not the mock GitHub's: what reaches the host is
            // what this server published.
            f.host_keys = (0..2).map(|_| blob(&new_public_key())).collect();
        }
        let api = Router::new()
            .route("/meta", get(meta))
            .route("/repos/{owner}/{repo}/keys", get(repo_keys).post(repo_keys))
            .route("/repos/{owner}/{repo}/keys/{id}", delete(repo_key))
            .route("/user/keys", get(user_keys).post(user_keys))
            .route("/user/keys/{id}", delete(user_key));
        let app = Router::new()
            .nest("/api/v3", api.clone())
            .merge(api)
            .layer(axum::middleware::map_response_with_state(
                state.clone(),
                with_rate_headers,
            ))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1");
        let url = format!("http://{}", listener.local_addr().expect("local addr"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { state, url, task }
    }

    fn client(&self, token: Option<&str>) -> GitHubClient {
        let mut c = GitHubConfig::default().with_api_url(&self.url);
        if let Some(t) = token {
            c = c.with_token(t);
        }
        GitHubClient::new(c).expect("client").retries(2)
    }

    fn requests(&self) -> Vec<String> {
        lock(&self.state).requests.clone()
    }

    fn keys(&self) -> Vec<FakeKey> {
        lock(&self.state).keys.clone()
    }

    fn host_keys(&self) -> Vec<String> {
        lock(&self.state).host_keys.clone()
    }

    fn arrivals(&self) -> Vec<Arrival> {
        lock(&self.state).arrivals.clone()
    }

    fn early(&self) -> u32 {
        lock(&self.state).early
    }

    /// Registers `n` keys of `scope` straight into the fake (others' keys, for paging).
    fn seed_keys(&self, scope: &str, n: usize) {
        let mut f = lock(&self.state);
        for i in 0..n {
            f.next_id += 1;
            let id = 100 + f.next_id;
            f.keys.push(FakeKey {
                scope: scope.into(),
                id,
                title: format!("other-{i}"),
                key: blob(&new_public_key()),
                read_only: true,
            });
        }
    }
}

fn new_public_key() -> String {
    let k = ssh_key::PrivateKey::random(&mut rand_core::OsRng, ssh_key::Algorithm::Ed25519)
        .expect("keygen");
    k.public_key().to_openssh().expect("openssh")
}

#[tokio::test]
async fn deploy_key_created_listed_deleted() {
    let gh = FakeGitHub::start().await;
    let client = gh.client(Some(TOKEN));
    let scope = KeyScope::Repo("octo/kaggle".into());
    let key = format!("{} kgenv-test", new_public_key());
    let info = client
        .add_key(&scope, "kgenv-test", &key, true)
        .await
        .expect("201 created");
    assert!(info.read_only);
    assert_eq!(key_fingerprint(&info.key), key_fingerprint(&key));
    let listed = client.list_keys(&scope).await.expect("list");
    assert_eq!(
        listed.iter().map(|k| k.id).collect::<Vec<_>>(),
        vec![info.id]
    );
    client.delete_key(&scope, info.id).await.expect("204");
    assert!(client.list_keys(&scope).await.expect("list").is_empty());
    let again = client.delete_key(&scope, info.id).await.expect_err("gone");
    assert!(again.is_not_found(), "{again}");
    assert!(
        gh.requests()
            .contains(&"POST /repos/octo/kaggle/keys".to_string()),
        "{:?}",
        gh.requests()
    );
}

#[tokio::test]
async fn user_keys_and_pagination() {
    let gh = FakeGitHub::start().await;
    let client = gh.client(Some(TOKEN));
    for i in 0..3 {
        client
            .add_key(&KeyScope::User, &format!("k{i}"), &new_public_key(), false)
            .await
            .expect("201");
    }
    gh.seed_keys("user", 247);
    let listed = client.list_keys(&KeyScope::User).await.expect("list");
    let ids: BTreeSet<u64> = listed.iter().map(|k| k.id).collect();
    assert_eq!(
        (listed.len(), ids.len()),
        (250, 250),
        "every key, once, over three pages"
    );
    let gets: Vec<String> = gh
        .arrivals()
        .into_iter()
        .map(|a| a.request)
        .filter(|r| r.starts_with("GET /user/keys"))
        .collect();
    assert_eq!(
        gets,
        [1, 2, 3]
            .map(|p| format!("GET /user/keys?per_page=100&page={p}"))
            .to_vec(),
        "100 a page, GitHub's most, and no request past the last page"
    );
}

/// GitHub's docs: follow the `Link` header; a page shorter than asked is not the last one
/// by itself. A server paging by 30 (GitHub's default size) whatever `per_page` asks still
/// yields every key.
#[tokio::test]
async fn pages_are_followed_by_their_link_header_not_their_length() {
    let gh = FakeGitHub::start().await;
    lock(&gh.state).max_per_page = 30;
    gh.seed_keys("octo/kaggle", 95);
    let listed = gh
        .client(Some(TOKEN))
        .list_keys(&KeyScope::Repo("octo/kaggle".into()))
        .await
        .expect("list");
    assert_eq!(listed.len(), 95, "all four pages of 30, 30, 30 and 5");
    assert_eq!(
        gh.requests()
            .iter()
            .filter(|r| *r == "GET /repos/octo/kaggle/keys")
            .count(),
        4
    );
}

/// A secondary rate limit (429 with `retry-after`) is waited for, then the call passes:
/// the fake refuses (and counts) any request before the retry-after has passed, and its
/// arrival times show the wait.
#[tokio::test]
async fn a_secondary_rate_limit_is_waited_for_as_retry_after_says() {
    let gh = FakeGitHub::start().await;
    lock(&gh.state).secondary.push_back(1);
    let client = gh.client(Some(TOKEN));
    assert!(client
        .list_keys(&KeyScope::User)
        .await
        .expect("passes after the wait")
        .is_empty());
    let a = gh.arrivals();
    assert_eq!(a.len(), 2, "{a:?}");
    assert!(
        a[1].at - a[0].at >= Duration::from_secs(1),
        "retried {:?} after a retry-after of 1 s",
        a[1].at - a[0].at
    );
    assert_eq!(gh.early(), 0, "no request while the limit held");
}

/// A spent primary limit that resets within the minute kgenv waits: the retry comes at or
/// after `x-ratelimit-reset` (by the fake's clock) and passes.
#[tokio::test]
async fn a_primary_rate_limit_resetting_soon_is_waited_for() {
    let gh = FakeGitHub::start().await;
    let reset = epoch(SystemTime::now()) + 1;
    lock(&gh.state).primary = Some(Primary {
        limit: 5000,
        remaining: 0,
        reset,
        told: false,
    });
    gh.client(Some(TOKEN))
        .list_keys(&KeyScope::User)
        .await
        .expect("passes after the reset");
    let a = gh.arrivals();
    assert_eq!(a.len(), 2, "{a:?}");
    assert!(
        epoch(a[1].wall) >= reset,
        "retried at {} before the reset at {reset}",
        epoch(a[1].wall)
    );
    assert_eq!(gh.early(), 0);
}

/// A spent primary limit resetting in an hour is not waited for: one request, then an
/// error that names the reset time and what to do; not retryable within the run.
#[tokio::test]
async fn a_primary_rate_limit_an_hour_away_fails_at_once_naming_the_reset() {
    let gh = FakeGitHub::start().await;
    let reset = epoch(SystemTime::now()) + 3600;
    lock(&gh.state).primary = Some(Primary {
        limit: 60,
        remaining: 0,
        reset,
        told: false,
    });
    let e = gh
        .client(Some(TOKEN))
        .list_keys(&KeyScope::Repo("octo/kaggle".into()))
        .await
        .expect_err("rate limited for an hour");
    assert_eq!(gh.requests().len(), 1, "{:?}", gh.requests());
    assert!(!e.is_retryable(), "{e:?}");
    let msg = e.to_string();
    let when = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(reset));
    assert!(
        msg.contains(&when) && msg.contains("API rate limit") && msg.contains("run kgenv again"),
        "{msg}"
    );
    assert!(
        kgenv_core::error::error_chain(&e).contains("rate limited, retry after"),
        "{e:?}"
    );
}

#[tokio::test]
async fn key_in_use_is_already_exists() {
    let gh = FakeGitHub::start().await;
    let client = gh.client(Some(TOKEN));
    let key = new_public_key();
    client
        .add_key(&KeyScope::User, "first", &key, false)
        .await
        .expect("201");
    let e = client
        .add_key(&KeyScope::Repo("octo/kaggle".into()), "second", &key, true)
        .await
        .expect_err("422");
    assert!(matches!(e, BackendError::AlreadyExists { .. }), "{e:?}");
    assert!(e.to_string().contains("key is already in use"), "{e}");
    let bad = client
        .add_key(&KeyScope::User, "bad", "not a key", false)
        .await
        .expect_err("422 invalid");
    assert!(
        matches!(bad, BackendError::InvalidArgument { .. }),
        "{bad:?}"
    );
    assert!(bad.to_string().contains("key is invalid"), "{bad}");
}

#[tokio::test]
async fn bad_token_is_unauthenticated_with_a_hint() {
    let gh = FakeGitHub::start().await;
    let client = gh.client(Some("ghp_wrong_secret_value"));
    let e = client
        .list_keys(&KeyScope::Repo("octo/kaggle".into()))
        .await
        .expect_err("401");
    assert!(
        matches!(
            e,
            BackendError::Unauthenticated {
                service: "github",
                ..
            }
        ),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("401")
            && msg.contains("Bad credentials")
            && msg.contains("GITHUB_TOKEN")
            && msg.contains("Administration"),
        "{msg}"
    );
    assert!(
        !msg.contains("ghp_wrong_secret_value")
            && !format!("{e:?}").contains("ghp_wrong_secret_value"),
        "token leaked: {msg}"
    );
    assert_eq!(gh.requests().len(), 1, "401 is not retried");
}

#[tokio::test]
async fn unknown_repo_means_no_access() {
    let gh = FakeGitHub::start().await;
    let client = gh.client(Some(TOKEN));
    let e = client
        .list_keys(&KeyScope::Repo("octo/secret".into()))
        .await
        .expect_err("404");
    assert!(matches!(e, BackendError::PermissionDenied { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("octo/secret") && msg.contains("404") && msg.contains("cannot see it"),
        "{msg}"
    );
}

#[tokio::test]
async fn server_errors_are_retried() {
    let gh = FakeGitHub::start().await;
    lock(&gh.state).fail_next = 2;
    let client = gh.client(Some(TOKEN));
    assert!(client
        .list_keys(&KeyScope::User)
        .await
        .expect("third try passes")
        .is_empty());
    assert_eq!(gh.requests().len(), 3);
    lock(&gh.state).fail_next = 10;
    let e = client
        .list_keys(&KeyScope::User)
        .await
        .expect_err("gives up");
    assert!(e.is_retryable(), "{e:?}");
}

#[tokio::test]
async fn no_token_is_unavailable_and_sends_nothing() {
    let gh = FakeGitHub::start().await;
    let client = gh.client(None);
    let e = client
        .list_keys(&KeyScope::Repo("octo/kaggle".into()))
        .await
        .expect_err("no token");
    assert!(
        matches!(
            e,
            BackendError::Unavailable {
                backend: "github",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .contains(&format!("{}/octo/kaggle/settings/keys/new", gh.url)),
        "{e}"
    );
    assert!(gh.requests().is_empty(), "{:?}", gh.requests());
    // /meta needs no token.
    let keys = client.ssh_host_keys().await.expect("meta");
    assert_eq!(keys, gh.host_keys());
}

#[tokio::test]
async fn enterprise_api_url_and_web_url() {
    let gh = FakeGitHub::start().await;
    let client = GitHubClient::new(
        GitHubConfig::default()
            .with_api_url(format!("{}/api/v3", gh.url))
            .with_token(TOKEN),
    )
    .expect("client");
    assert_eq!(client.web_url(), gh.url, "web URL of an Enterprise API URL");
    client
        .add_key(&KeyScope::User, "ghe", &new_public_key(), false)
        .await
        .expect("201 via /api/v3");
    assert!(
        gh.requests().iter().any(|r| r == "POST /api/v3/user/keys"),
        "{:?}",
        gh.requests()
    );
}

// ---- the github-key step, with the mock host and the real client on the fake ----

fn env(repo: Option<&str>, title: &str) -> Env {
    let mut key = GithubKey::builder().title(title);
    if let Some(r) = repo {
        key = key.repo(r);
    }
    Env::builder("gh-test")
        .target(Target::Ssh(
            SshHost::parse("kgenv@host.test").expect("ssh host"),
        ))
        .github_key(key)
        .build()
        .expect("env")
}

struct Run {
    world: MockWorld,
    runner: Runner,
    events: Arc<Mutex<Vec<Event>>>,
    _state: tempfile::TempDir,
}

fn run(env: Env, world: MockWorld, client: GitHubClient, state: tempfile::TempDir) -> Run {
    let mut backends = world.backends();
    backends.github = Arc::new(client);
    let runner = Runner::new(env, backends).state_dir(state.path());
    Run {
        world,
        runner,
        events: Arc::default(),
        _state: state,
    }
}

impl Run {
    async fn up(&self) -> kgenv_core::Result<kgenv_core::runner::Report> {
        let ev = self.events.clone();
        self.runner
            .up(RunOptions::default(), move |e| {
                ev.lock().unwrap_or_else(|p| p.into_inner()).push(e)
            })
            .await
    }
    async fn down(&self) -> kgenv_core::Result<kgenv_core::runner::Report> {
        let ev = self.events.clone();
        self.runner
            .down(RunOptions::default(), move |e| {
                ev.lock().unwrap_or_else(|p| p.into_inner()).push(e)
            })
            .await
    }
    fn warnings(&self) -> Vec<String> {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(|e| {
                if let Event::Warning { message, .. } = e {
                    Some(message.clone())
                } else {
                    None
                }
            })
            .collect()
    }
    fn host_file(&self, path: &str) -> Option<String> {
        self.world
            .state()
            .host_files
            .get(path)
            .map(|(c, _)| String::from_utf8_lossy(c).into_owned())
    }
}

const PUB: &str = "/var/lib/kgenv/gh-test/github/id_ed25519.pub";

#[tokio::test]
async fn step_registers_once_by_fingerprint_and_removes_on_down() {
    let gh = FakeGitHub::start().await;
    let r = run(
        env(Some("octo/kaggle"), "kgenv-gh-test"),
        MockWorld::new(),
        gh.client(Some(TOKEN)),
        tempfile::tempdir().expect("tmp"),
    );
    let report = r.up().await.expect("first up");
    assert_eq!(report.outcome("github-key"), Some(&Outcome::Changed));
    let public = r.host_file(PUB).expect("key generated on the host");
    let keys = gh.keys();
    assert_eq!(keys.len(), 1);
    assert_eq!(
        (keys[0].scope.as_str(), keys[0].read_only),
        ("octo/kaggle", true)
    );
    assert_eq!(key_fingerprint(&keys[0].key), key_fingerprint(&public));
    assert_eq!(posts(&gh), 1);

    // Second run: satisfied by fingerprint, nothing posted.
    let report = r.up().await.expect("second up");
    assert_eq!(report.outcome("github-key"), Some(&Outcome::Satisfied));
    assert_eq!(posts(&gh), 1);

    // A changed title does not make it a different key: nothing new is posted (the mock
    // host re-applies the script because its text changed; the real script keeps the key).
    let r2 = run(
        env(Some("octo/kaggle"), "renamed"),
        r.world.clone(),
        gh.client(Some(TOKEN)),
        tempfile::tempdir().expect("tmp"),
    );
    r2.up().await.expect("renamed");
    assert_eq!(posts(&gh), 1);
    assert_eq!(
        r.host_file(PUB).as_deref(),
        Some(public.as_str()),
        "same key on the host"
    );

    let report = r.down().await.expect("down");
    assert_eq!(report.outcome("github-key"), Some(&Outcome::Removed));
    assert!(gh.keys().is_empty(), "deleted on GitHub");
    assert!(gh
        .requests()
        .iter()
        .any(|q| q.starts_with("DELETE /repos/octo/kaggle/keys/")));
    assert!(r.host_file(PUB).is_none(), "key removed from the host");
}

/// The step's key registered after 230 others is on the third page: the second `up` finds
/// it there (satisfied, nothing posted), a run with a lost state file adopts it from there,
/// and `down` deletes it and no other.
#[tokio::test]
async fn step_finds_its_key_past_the_first_page() {
    let gh = FakeGitHub::start().await;
    gh.seed_keys("octo/kaggle", 230);
    let world = MockWorld::new();
    let r = run(
        env(Some("octo/kaggle"), "kgenv"),
        world.clone(),
        gh.client(Some(TOKEN)),
        tempfile::tempdir().expect("tmp"),
    );
    assert_eq!(
        r.up().await.expect("up").outcome("github-key"),
        Some(&Outcome::Changed)
    );
    assert_eq!(
        r.up().await.expect("again").outcome("github-key"),
        Some(&Outcome::Satisfied)
    );
    let lost = run(
        env(Some("octo/kaggle"), "kgenv"),
        world,
        gh.client(Some(TOKEN)),
        tempfile::tempdir().expect("tmp"),
    );
    lost.up().await.expect("adopts");
    assert_eq!(posts(&gh), 1, "registered once");
    assert!(
        gh.arrivals()
            .iter()
            .any(|a| a.request.ends_with("per_page=100&page=3")),
        "the third page was read"
    );
    lost.down().await.expect("down");
    assert_eq!(gh.keys().len(), 230, "only the step's key deleted");
}

/// How many keys were registered (POSTs to GitHub).
fn posts(gh: &FakeGitHub) -> usize {
    gh.requests()
        .iter()
        .filter(|r| r.starts_with("POST"))
        .count()
}

#[tokio::test]
async fn step_adopts_its_key_after_lost_state() {
    let gh = FakeGitHub::start().await;
    let world = MockWorld::new();
    let first = run(
        env(Some("octo/kaggle"), "kgenv"),
        world.clone(),
        gh.client(Some(TOKEN)),
        tempfile::tempdir().expect("tmp"),
    );
    first.up().await.expect("up");
    // Same host and GitHub, new state dir: the key is found by fingerprint, not re-added,
    // and recorded, so this state's `down` can remove it.
    let second = run(
        env(Some("octo/kaggle"), "kgenv"),
        world,
        gh.client(Some(TOKEN)),
        tempfile::tempdir().expect("tmp"),
    );
    assert_eq!(
        second.up().await.expect("up").outcome("github-key"),
        Some(&Outcome::Changed),
        "adopted into the new state"
    );
    assert_eq!(gh.keys().len(), 1);
    assert_eq!(posts(&gh), 1, "not registered twice");
    assert_eq!(
        second.up().await.expect("again").outcome("github-key"),
        Some(&Outcome::Satisfied)
    );
    second.down().await.expect("down");
    assert!(
        gh.keys().is_empty(),
        "the adopted key is removed by its `down`"
    );
}

#[tokio::test]
async fn step_key_used_elsewhere_fails_clearly() {
    let gh = FakeGitHub::start().await;
    let world = MockWorld::new();
    let user = run(
        env(None, "kgenv"),
        world.clone(),
        gh.client(Some(TOKEN)),
        tempfile::tempdir().expect("tmp"),
    );
    user.up().await.expect("user key registered");
    let deploy = run(
        env(Some("octo/kaggle"), "kgenv"),
        world,
        gh.client(Some(TOKEN)),
        tempfile::tempdir().expect("tmp"),
    );
    let e = deploy
        .up()
        .await
        .expect_err("same host key as a deploy key");
    let chain = kgenv_core::error::error_chain(&e);
    assert!(
        chain.contains("already in use")
            && chain.contains("registered elsewhere")
            && chain.contains("SHA256:"),
        "{chain}"
    );
}

#[tokio::test]
async fn step_without_token_prints_key_and_settings_page() {
    let gh = FakeGitHub::start().await;
    let r = run(
        env(Some("octo/kaggle"), "kgenv"),
        MockWorld::new(),
        gh.client(None),
        tempfile::tempdir().expect("tmp"),
    );
    let report = r.up().await.expect("no token is not a failure");
    assert_eq!(report.outcome("github-key"), Some(&Outcome::Changed));
    let public = r.host_file(PUB).expect("key generated");
    let warnings = r.warnings();
    let w = warnings
        .iter()
        .find(|w| w.contains("GITHUB_TOKEN"))
        .expect("a warning about the token");
    assert!(w.contains(public.trim()), "{w}");
    assert!(
        w.contains(&format!("{}/octo/kaggle/settings/keys/new", gh.url)),
        "{w}"
    );
    assert!(w.contains("SHA256:"), "{w}");
    assert_eq!(
        gh.requests(),
        vec!["GET /meta".to_string()],
        "no key call without a token"
    );
    // Re-run: nothing to change, and the instructions are given again (without a token
    // the step cannot see GitHub's side).
    r.events.lock().unwrap_or_else(|p| p.into_inner()).clear();
    let report = r.up().await.expect("second up");
    assert_eq!(report.outcome("github-key"), Some(&Outcome::Satisfied));
    let again = r.warnings();
    assert_eq!(
        again
            .iter()
            .filter(|w| w.contains("GITHUB_TOKEN") && w.contains(public.trim()))
            .count(),
        1,
        "the instructions once per run: {again:?}"
    );
    // GitHub's host keys from /meta (needing no token) reached the host: the script applied
    // there is exactly the one rendered with the fake's keys, whose known_hosts pins each
    // of them under GitHub's SSH host name, and none of the mock GitHub's.
    let e = env(Some("octo/kaggle"), "kgenv");
    let spec = GithubKeyStep::new(&e, e.github_key.clone().expect("github_key"))
        .script_spec(&gh.url, gh.host_keys());
    let pinned: Vec<String> = spec.known_hosts().lines().map(str::to_string).collect();
    assert_eq!(
        pinned,
        gh.host_keys()
            .iter()
            .map(|k| format!("{} {k}", ssh_host(&gh.url)))
            .collect::<Vec<_>>()
    );
    assert!(GITHUB_HOST_KEYS
        .iter()
        .all(|k| !spec.known_hosts().contains(k)));
    let applied = r
        .world
        .state()
        .host_scripts
        .get("github-key")
        .cloned()
        .expect("github-key script applied");
    assert_eq!(
        applied,
        hex::encode(sha2::Sha256::digest(spec.render().text.as_bytes())),
        "the applied script carries /meta's keys"
    );
}

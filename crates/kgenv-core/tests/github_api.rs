//! The real GitHub client and the github-key step against a local fake of GitHub's
//! documented endpoints (`/repos/{owner}/{repo}/keys`, `/user/keys`, `/meta`) on 127.0.0.1:
//! 201 created, 422 key already in use, 401 bad token, 404 no repository access, 5xx
//! retried; the step is idempotent by fingerprint and prints manual instructions without a
//! token.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use axum::extract::{OriginalUri, Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};

use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde_json::{json, Value};

use kgenv_core::backends::github::{key_fingerprint, GitHub, KeyScope};
use kgenv_core::github::{GitHubClient, GitHubConfig};
use kgenv_core::mock::{MockWorld, GITHUB_HOST_KEYS};
use kgenv_core::runner::{Event, Outcome, RunOptions, Runner};
use kgenv_core::spec::{Env, GithubKey, SshHost, Target};
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

#[derive(Default)]
struct Fake {
    repos: BTreeSet<String>,
    keys: Vec<FakeKey>,
    next_id: u64,
    requests: Vec<String>,
    fail_next: u32,
}

type Shared = Arc<Mutex<Fake>>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, Fake> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

fn err(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

/// Records the request and answers what GitHub answers before routing: injected 502s and
/// 401 for a missing or wrong token.
fn gate(
    s: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    needs_auth: bool,
) -> Option<Response> {
    let mut f = lock(s);
    f.requests.push(format!("{method} {}", uri.path()));
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
    None
}

fn key_json(k: &FakeKey) -> Value {
    json!({ "id": k.id, "key": k.key, "title": k.title, "read_only": k.read_only, "verified": true, "created_at": "2024-01-01T00:00:00Z" })
}

fn blob(key: &str) -> String {
    key.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}

fn list(s: &Shared, scope: &str, q: &std::collections::HashMap<String, String>) -> Response {
    let f = lock(s);
    let per_page: usize = q.get("per_page").and_then(|v| v.parse().ok()).unwrap_or(30);
    let page: usize = q.get("page").and_then(|v| v.parse().ok()).unwrap_or(1);
    let keys: Vec<Value> = f
        .keys
        .iter()
        .filter(|k| k.scope == scope)
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(key_json)
        .collect();
    Json(keys).into_response()
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
        Method::GET => list(&s, &full, &q),
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
        Method::GET => list(&s, "user", &q),
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
    Json(json!({ "verifiable_password_authentication": false, "ssh_keys": GITHUB_HOST_KEYS, "git": ["192.30.252.0/22"] })).into_response()
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
        lock(&state).repos.insert("octo/kaggle".into());
        let api = Router::new()
            .route("/meta", get(meta))
            .route("/repos/{owner}/{repo}/keys", get(repo_keys).post(repo_keys))
            .route("/repos/{owner}/{repo}/keys/{id}", delete(repo_key))
            .route("/user/keys", get(user_keys).post(user_keys))
            .route("/user/keys/{id}", delete(user_key));
        let app = Router::new()
            .nest("/api/v3", api.clone())
            .merge(api)
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
    for i in 0..103 {
        client
            .add_key(&KeyScope::User, &format!("k{i}"), &new_public_key(), false)
            .await
            .expect("201");
    }
    assert_eq!(
        client.list_keys(&KeyScope::User).await.expect("list").len(),
        103,
        "all pages followed"
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
    assert_eq!(
        keys,
        GITHUB_HOST_KEYS
            .iter()
            .map(|k| k.to_string())
            .collect::<Vec<_>>()
    );
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
    // Re-run: nothing to change, the instructions are repeated.
    let report = r.up().await.expect("second up");
    assert_eq!(report.outcome("github-key"), Some(&Outcome::Satisfied));
    assert!(r.warnings().len() >= 2);
    // The host's known_hosts and ssh config come from /meta through the script's variables.
    let script = r.world.state().host_scripts.get("github-key").cloned();
    assert!(script.is_some(), "github-key script applied");
}

//! The GCS client's retries against a small local fake of the JSON API's bucket and object
//! metadata endpoints that can fail on cue (fake-gcs-server cannot inject faults): a 503
//! then success on a bucket get, `Retry-After` as an HTTP-date, the time budget, and the
//! non-idempotent answers — a retried bucket insert whose first attempt landed is a
//! creation, not a conflict; a conflict with a bucket that was there before stays one; a
//! retried delete whose first attempt landed is done.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use kgenv_core::backends::Storage;
use kgenv_core::gcs::GcsClient;
use kgenv_core::http::RetryPolicy;
use kgenv_core::BackendError;

/// A failure the fake answers with instead of the real answer.
#[derive(Clone)]
struct Fault {
    status: StatusCode,
    retry_after: Option<String>,
    /// Do the work first, then answer with the failure (an answer lost on the way back).
    landed: bool,
}

impl Fault {
    fn unavailable() -> Self {
        Self {
            status: StatusCode::SERVICE_UNAVAILABLE,
            retry_after: None,
            landed: false,
        }
    }
    fn lost_answer() -> Self {
        Self {
            landed: true,
            ..Self::unavailable()
        }
    }
}

#[derive(Clone)]
struct FakeBucket {
    location: String,
    created: SystemTime,
}

#[derive(Default)]
struct Fake {
    buckets: BTreeMap<String, FakeBucket>,
    objects: BTreeMap<(String, String), u64>,
    faults: HashMap<&'static str, VecDeque<Fault>>,
    requests: Vec<String>,
}

type Shared = Arc<Mutex<Fake>>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, Fake> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": status.as_u16(), "message": message}})),
    )
        .into_response()
}

fn fault_response(f: &Fault) -> Response {
    let mut r = error(f.status, "injected");
    if let Some(ra) = &f.retry_after {
        if let Ok(v) = header::HeaderValue::from_str(ra) {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    r
}

fn bucket_json(name: &str, b: &FakeBucket) -> Value {
    json!({
        "kind": "storage#bucket",
        "name": name,
        "location": b.location.to_uppercase(),
        "timeCreated": chrono::DateTime::<chrono::Utc>::from(b.created).to_rfc3339(),
        "iamConfiguration": { "uniformBucketLevelAccess": { "enabled": true } },
    })
}

/// Records the call and takes the next fault of `route`, if any.
fn enter(s: &Shared, route: &'static str, what: String) -> Option<Fault> {
    let mut f = lock(s);
    f.requests.push(what);
    f.faults.get_mut(route).and_then(VecDeque::pop_front)
}

async fn get_bucket(State(s): State<Shared>, Path(name): Path<String>) -> Response {
    let fault = enter(&s, "bucket.get", format!("GET b/{name}"));
    if let Some(f) = fault {
        return fault_response(&f);
    }
    match lock(&s).buckets.get(&name) {
        Some(b) => Json(bucket_json(&name, b)).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "The specified bucket does not exist.",
        ),
    }
}

async fn insert_bucket(State(s): State<Shared>, Json(body): Json<Value>) -> Response {
    let name = body["name"].as_str().unwrap_or_default().to_string();
    let fault = enter(&s, "bucket.insert", format!("POST b {name}"));
    if let Some(f) = fault.as_ref().filter(|f| !f.landed) {
        return fault_response(f);
    }
    let mut f = lock(&s);
    if f.buckets.contains_key(&name) {
        return error(
            StatusCode::CONFLICT,
            "Your previous request to create the named bucket succeeded and you already own it.",
        );
    }
    let b = FakeBucket {
        location: body["location"].as_str().unwrap_or("US").to_string(),
        created: SystemTime::now(),
    };
    let answer = bucket_json(&name, &b);
    f.buckets.insert(name, b);
    match fault {
        Some(lost) => fault_response(&lost),
        None => Json(answer).into_response(),
    }
}

async fn delete_bucket(State(s): State<Shared>, Path(name): Path<String>) -> Response {
    let fault = enter(&s, "bucket.delete", format!("DELETE b/{name}"));
    if let Some(f) = fault.as_ref().filter(|f| !f.landed) {
        return fault_response(f);
    }
    let removed = lock(&s).buckets.remove(&name).is_some();
    match (fault, removed) {
        (Some(lost), _) => fault_response(&lost),
        (None, true) => StatusCode::NO_CONTENT.into_response(),
        (None, false) => error(
            StatusCode::NOT_FOUND,
            "The specified bucket does not exist.",
        ),
    }
}

async fn get_object(
    State(s): State<Shared>,
    Path((bucket, object)): Path<(String, String)>,
) -> Response {
    let fault = enter(&s, "object.get", format!("GET b/{bucket}/o/{object}"));
    if let Some(f) = fault {
        return fault_response(&f);
    }
    match lock(&s).objects.get(&(bucket.clone(), object.clone())) {
        Some(size) => Json(json!({"name": object, "bucket": bucket, "size": size.to_string()}))
            .into_response(),
        None => error(StatusCode::NOT_FOUND, "No such object."),
    }
}

struct Server {
    state: Shared,
    host: String,
    _task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start() -> Self {
        let state = Shared::default();
        let app = Router::new()
            .route("/storage/v1/b", post(insert_bucket))
            .route(
                "/storage/v1/b/{name}",
                get(get_bucket).delete(delete_bucket),
            )
            .route("/storage/v1/b/{bucket}/o/{object}", get(get_object))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let host = listener.local_addr().expect("addr").to_string();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            state,
            host,
            _task: task,
        }
    }

    /// A client for this fake with retries in milliseconds.
    fn client(&self) -> GcsClient {
        GcsClient::emulator(&self.host)
            .expect("client")
            .retry_policy(fast())
    }

    fn inject(&self, route: &'static str, faults: impl IntoIterator<Item = Fault>) {
        lock(&self.state)
            .faults
            .entry(route)
            .or_default()
            .extend(faults);
    }

    fn requests(&self) -> Vec<String> {
        lock(&self.state).requests.clone()
    }

    fn add_bucket(&self, name: &str, location: &str, age: Duration) {
        lock(&self.state).buckets.insert(
            name.into(),
            FakeBucket {
                location: location.into(),
                created: SystemTime::now() - age,
            },
        );
    }
}

fn fast() -> RetryPolicy {
    RetryPolicy::new(Duration::from_millis(5), Duration::from_millis(50), 6)
        .with_budget(Duration::from_secs(20))
}

#[tokio::test]
async fn a_503_then_success_on_a_bucket_get_is_retried() {
    let fake = Server::start().await;
    fake.add_bucket("bk", "us-central1", Duration::from_secs(60));
    fake.inject("bucket.get", [Fault::unavailable()]);
    let b = fake
        .client()
        .get_bucket("bk")
        .await
        .expect("retried to success")
        .expect("the bucket");
    assert_eq!((b.name.as_str(), b.uniform_access), ("bk", true));
    assert_eq!(fake.requests(), ["GET b/bk", "GET b/bk"]);
}

#[tokio::test]
async fn what_retrying_cannot_fix_is_returned_at_once() {
    let fake = Server::start().await;
    fake.inject(
        "bucket.get",
        [Fault {
            status: StatusCode::FORBIDDEN,
            ..Fault::unavailable()
        }],
    );
    let e = fake.client().get_bucket("bk").await.expect_err("forbidden");
    assert!(
        matches!(&e, BackendError::PermissionDenied { resource, .. } if resource == "bucket bk"),
        "{e:?}"
    );
    assert_eq!(fake.requests().len(), 1);
    assert!(
        fake.client().get_bucket("bk").await.expect("get").is_none(),
        "404 on get is None"
    );
}

#[tokio::test]
async fn retries_stop_within_the_time_budget() {
    let fake = Server::start().await;
    fake.inject(
        "bucket.get",
        std::iter::repeat_n(Fault::unavailable(), 10_000),
    );
    let client = fake.client().retry_policy(
        RetryPolicy::new(Duration::from_millis(5), Duration::from_millis(40), 10_000)
            .with_budget(Duration::from_millis(300)),
    );
    let started = Instant::now();
    let e = client.get_bucket("bk").await.expect_err("keeps failing");
    assert!(e.is_retryable(), "the last transient error: {e}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let n = fake.requests().len();
    assert!((2..=200).contains(&n), "retried, but bounded: {n} requests");
}

#[tokio::test]
async fn retry_after_as_an_http_date_is_honoured() {
    let fake = Server::start().await;
    lock(&fake.state)
        .objects
        .insert(("bk".into(), "data/train.csv".into()), 42);
    let at = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(2));
    fake.inject(
        "object.get",
        [Fault {
            status: StatusCode::TOO_MANY_REQUESTS,
            retry_after: Some(at),
            landed: false,
        }],
    );
    let started = Instant::now();
    let o = fake
        .client()
        .get_object("bk", "data/train.csv")
        .await
        .expect("retried")
        .expect("the object");
    assert_eq!(o.size, 42);
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "waited for the date the server gave: {:?}",
        started.elapsed()
    );
    assert_eq!(fake.requests().len(), 2);
}

#[tokio::test]
async fn a_retried_insert_that_landed_is_a_creation_not_a_conflict() {
    let fake = Server::start().await;
    fake.inject("bucket.insert", [Fault::lost_answer()]);
    let b = fake
        .client()
        .create_bucket("my-project", "kgenv-data", "us-central1")
        .await
        .expect("the bucket the first attempt made is ours");
    assert_eq!(b.name, "kgenv-data");
    assert_eq!(b.location, "US-CENTRAL1");
    assert_eq!(
        fake.requests(),
        ["POST b kgenv-data", "POST b kgenv-data", "GET b/kgenv-data"],
        "the 409 of the retry was checked against the bucket"
    );
}

#[tokio::test]
async fn a_conflict_with_a_bucket_that_was_there_before_stays_a_conflict() {
    let fake = Server::start().await;
    fake.add_bucket("taken", "us-central1", Duration::from_secs(86_400));
    let e = fake
        .client()
        .create_bucket("my-project", "taken", "us-central1")
        .await
        .expect_err("conflict");
    assert!(matches!(e, BackendError::AlreadyExists { .. }), "{e:?}");
    assert_eq!(
        fake.requests(),
        ["POST b taken"],
        "a first-attempt 409 needs no check"
    );

    // The retry of an attempt that did not land meets someone else's older bucket.
    fake.inject("bucket.insert", [Fault::unavailable()]);
    let e = fake
        .client()
        .create_bucket("my-project", "taken", "us-central1")
        .await
        .expect_err("still a conflict");
    assert!(matches!(e, BackendError::AlreadyExists { .. }), "{e:?}");

    // Same age, other location: not what we asked for either.
    fake.add_bucket("elsewhere", "europe-west1", Duration::ZERO);
    fake.inject("bucket.insert", [Fault::unavailable()]);
    let e = fake
        .client()
        .create_bucket("my-project", "elsewhere", "us-central1")
        .await
        .expect_err("a conflict");
    assert!(matches!(e, BackendError::AlreadyExists { .. }), "{e:?}");
}

#[tokio::test]
async fn a_retried_delete_that_landed_is_done() {
    let fake = Server::start().await;
    fake.add_bucket("bk", "us-central1", Duration::from_secs(60));
    fake.inject("bucket.delete", [Fault::lost_answer()]);
    fake.client()
        .delete_bucket("bk")
        .await
        .expect("the first attempt deleted it");
    assert_eq!(fake.requests(), ["DELETE b/bk", "DELETE b/bk"]);
    assert!(lock(&fake.state).buckets.is_empty());
    let e = fake
        .client()
        .delete_bucket("bk")
        .await
        .expect_err("nothing to delete");
    assert!(e.is_not_found(), "{e:?}");
}

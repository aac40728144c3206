//! A local fake of Kaggle's competition data API and of the storage server its signed URLs
//! point at, for kgenv's tests, end-to-end tests and benchmarks.
//!
//! Two listeners, two origins, as on the real service (`api.kaggle.com` hands out signed
//! `storage.googleapis.com` URLs):
//!
//! - the API (`endpoint()`, `http://127.0.0.1:PORT`):
//!   `POST {/api,}/v1/competitions.CompetitionApiService/ListDataFiles` (paged, at most
//!   `page_cap` files a page), `DownloadDataFile`, `DownloadDataFiles`. The latter two answer
//!   with a signed URL on the storage origin, in either shape the real API uses
//!   ([`RedirectShape`]): a `302` with `Location` (what the official client's `requests`
//!   session follows), or a `200` JSON `HttpRedirect` body `{"url": …, "permanent": false}`
//!   (`kagglesdk/common/types/http_redirect.py` in Kaggle/kaggle-api);
//! - the storage (`storage_base()`, `http://localhost:OTHER_PORT`: another host name and
//!   port, so another origin): `GET /storage/<competition>/<file>?expires=<ms>&sig=<hex>`, a
//!   range-capable file server with ETag, Last-Modified, `x-goog-hash: crc32c=…` and
//!   `If-Range` (RFC 9110 §13.1.5: a validator that no longer matches gets the whole current
//!   file, `200`), like GCS. A request carrying an `Authorization` header is refused with
//!   `401 AuthenticationRequired`, as GCS refuses a signed URL that also carries a bearer
//!   (stackoverflow.com/questions/59749131, answer 59765842), and is counted in
//!   `storage_auth_seen`: a credential that leaks to the storage host fails the download
//!   and the test.
//!
//! Knobs for failure tests: signed URL lifetime, a per-response throttle, no range support,
//! ignoring `If-Range`, corrupting the next responses, refusing every signature (with an
//! error body that quotes the signed URL), competitions whose rules are not accepted,
//! queued `429`/`5xx` answers (with `Retry-After`) on either listener ([`Fault`]), a storage
//! that goes down after a number of requests, and files whose bytes, size and validators
//! change — at once or after a number of storage requests, so mid-transfer
//! ([`FakeKaggle::change_file`], [`FakeKaggle::change_file_after`]). A new version is a
//! new generation: a stream already in flight keeps reading the old bytes, as GCS serves a
//! generation to the end. Counters: bytes served, signed URLs issued, expired URLs refused,
//! requests; and a request log with arrival times ([`Logged`]), so tests check waits the
//! client made (a `Retry-After` honoured) from the server's side.
//!
//! Use it from a test file with `#[path = "support/kaggle_fake.rs"] mod kaggle_fake;`.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine;
use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// Credentials the fake accepts.
#[derive(Debug, Clone)]
pub enum FakeAuth {
    /// `Authorization: Bearer <token>`.
    Token(String),
    /// HTTP Basic `<user>:<key>`.
    ApiKey(String, String),
}

/// How `DownloadDataFile(s)` hands out the signed URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirectShape {
    /// `302 Found` with `Location` (the default).
    Location,
    /// `200` with a JSON `HttpRedirect` body (`{"url": …, "permanent": false}`).
    JsonBody,
}

/// One queued error answer: the next request to that listener gets it instead of its
/// normal answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// The status (`429`, `500`, `503`, …).
    pub status: u16,
    /// `Retry-After` in seconds, when sent.
    pub retry_after: Option<u64>,
}

impl Fault {
    /// `429 Too Many Requests` with `Retry-After: secs`.
    pub fn too_many(secs: u64) -> Self {
        Self {
            status: 429,
            retry_after: Some(secs),
        }
    }
    /// A `5xx` without `Retry-After`.
    pub fn server(status: u16) -> Self {
        Self {
            status,
            retry_after: None,
        }
    }
}

/// Which listener a logged request reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The API origin.
    Api,
    /// The storage origin.
    Storage,
}

/// One request as the fake saw it.
#[derive(Debug, Clone)]
pub struct Logged {
    /// When it arrived (before any answer was decided).
    pub at: Instant,
    /// Which listener.
    pub side: Side,
    /// The API method (`ListDataFiles`, …) or the storage path (no query).
    pub what: String,
    /// `Range` sent.
    pub range: Option<String>,
    /// `If-Range` sent.
    pub if_range: Option<String>,
    /// Whether an `Authorization` header came with it.
    pub authorization: bool,
    /// The status answered.
    pub status: u16,
    /// The ETag answered (storage).
    pub etag: Option<String>,
    /// The `Retry-After` answered, in seconds.
    pub retry_after: Option<u64>,
}

/// A file a competition serves.
#[derive(Debug, Clone)]
pub struct FakeFile {
    /// Listed name.
    pub name: String,
    /// Bytes on disk that are served.
    pub path: PathBuf,
    /// Served size.
    pub size: u64,
    /// Size listed by ListDataFiles (the unzipped size for zipped files).
    pub listed_size: u64,
    /// CRC32C of the served bytes.
    pub crc32c: u32,
    /// Served as `<name>.zip`.
    pub zipped: bool,
    /// Bumped by every change of the file (its ETag and Last-Modified follow).
    pub generation: u64,
}

impl FakeFile {
    /// The ETag the storage sends for this version.
    pub fn etag(&self) -> String {
        format!("\"{:08x}-{}-{}\"", self.crc32c, self.size, self.generation)
    }

    /// The Last-Modified the storage sends for this version (an HTTP-date one second per
    /// generation after 2025-01-01).
    pub fn last_modified(&self) -> String {
        let g = self.generation;
        format!(
            "Wed, 01 Jan 2025 {:02}:{:02}:{:02} GMT",
            (g / 3600) % 24,
            (g / 60) % 60,
            g % 60
        )
    }

    fn served_name(&self) -> String {
        if self.zipped {
            format!("{}.zip", self.name)
        } else {
            self.name.clone()
        }
    }
}

/// A change of a file waiting for the storage to have answered `after` requests.
struct PendingChange {
    competition: String,
    name: String,
    path: PathBuf,
    after: u64,
}

/// The fake's state and knobs.
pub struct FakeState {
    storage_base: Mutex<String>,
    secret: String,
    auth: FakeAuth,
    competitions: Mutex<HashMap<String, Vec<FakeFile>>>,
    rules_required: Mutex<HashSet<String>>,
    pending: Mutex<Vec<PendingChange>>,
    log: Mutex<Vec<Logged>>,
    /// The shape of the signed URL answers.
    pub redirect: Mutex<RedirectShape>,
    /// Error answers the next API calls get, in order.
    pub api_faults: Mutex<VecDeque<Fault>>,
    /// Error answers the next storage requests get, in order.
    pub storage_faults: Mutex<VecDeque<Fault>>,
    /// Storage requests still answered before every later one gets `503` (`None`: no
    /// outage).
    pub storage_up_for: Mutex<Option<u64>>,
    /// Files per ListDataFiles page at most.
    pub page_cap: AtomicU64,
    /// Honour `Range` (else always 200 with the whole file).
    pub ranges: AtomicBool,
    /// Ignore `If-Range` (serve the range of the current version whatever validator came).
    pub ignore_if_range: AtomicBool,
    /// Send `x-goog-hash`.
    pub announce_crc: AtomicBool,
    /// Signed URL lifetime in ms (0: never expires).
    pub url_ttl_ms: AtomicU64,
    /// Per-response rate limit in bytes/s (0: none).
    pub throttle_bps: AtomicU64,
    /// Corrupt one byte of the next N storage responses longer than one byte.
    pub corrupt: AtomicU32,
    /// Refuse every storage GET with 403 `SignatureDoesNotMatch`, the error's details
    /// quoting the request's signed URL (as a storage server's error body may).
    pub refuse_signatures: AtomicBool,
    /// Body bytes handed to the connection by the storage server.
    pub bytes_served: AtomicU64,
    /// Signed URLs issued (DownloadDataFile/DownloadDataFiles calls that succeeded).
    pub signed_urls: AtomicU64,
    /// Storage requests refused because their URL had expired.
    pub expired_hits: AtomicU64,
    /// Storage GETs.
    pub storage_requests: AtomicU64,
    /// Storage requests that carried an `Authorization` header (refused with 401).
    pub storage_auth_seen: AtomicU64,
    /// API calls.
    pub api_calls: AtomicU64,
}

/// A running fake; stops when dropped.
pub struct FakeKaggle {
    /// Where the API listens.
    pub addr: SocketAddr,
    /// Where the storage listens.
    pub storage_addr: SocketAddr,
    /// State, knobs and counters.
    pub state: Arc<FakeState>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for FakeKaggle {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl FakeKaggle {
    /// Starts on free ports of 127.0.0.1.
    pub async fn start(auth: FakeAuth) -> Self {
        Self::start_on("127.0.0.1:0".parse().expect("addr"), auth).await
    }

    /// Starts the API on `addr` and the storage on a free port of the same address.
    pub async fn start_on(addr: SocketAddr, auth: FakeAuth) -> Self {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind the fake Kaggle API");
        let addr = listener.local_addr().expect("local addr");
        let storage_listener = tokio::net::TcpListener::bind(SocketAddr::new(addr.ip(), 0))
            .await
            .expect("bind the fake Kaggle storage");
        let storage_addr = storage_listener.local_addr().expect("local addr");
        // Another host name than the API's when the client resolves it (`localhost` is this
        // machine's loopback whichever address the API has), and another port: another
        // origin either way.
        let storage_host = if addr.ip().is_loopback() || addr.ip().is_unspecified() {
            "localhost".to_string()
        } else {
            addr.ip().to_string()
        };
        let state = Arc::new(FakeState {
            storage_base: Mutex::new(format!("http://{storage_host}:{}", storage_addr.port())),
            secret: format!("{:x}", sha2::Sha256::digest(format!("{addr}{}", now_ms()))),
            auth,
            competitions: Mutex::new(HashMap::new()),
            rules_required: Mutex::new(HashSet::new()),
            pending: Mutex::new(Vec::new()),
            log: Mutex::new(Vec::new()),
            redirect: Mutex::new(RedirectShape::Location),
            api_faults: Mutex::new(VecDeque::new()),
            storage_faults: Mutex::new(VecDeque::new()),
            storage_up_for: Mutex::new(None),
            page_cap: AtomicU64::new(20),
            ranges: AtomicBool::new(true),
            ignore_if_range: AtomicBool::new(false),
            announce_crc: AtomicBool::new(true),
            url_ttl_ms: AtomicU64::new(0),
            throttle_bps: AtomicU64::new(0),
            corrupt: AtomicU32::new(0),
            refuse_signatures: AtomicBool::new(false),
            bytes_served: AtomicU64::new(0),
            signed_urls: AtomicU64::new(0),
            expired_hits: AtomicU64::new(0),
            storage_requests: AtomicU64::new(0),
            storage_auth_seen: AtomicU64::new(0),
            api_calls: AtomicU64::new(0),
        });
        let api_app = Router::new()
            .route(
                "/api/v1/competitions.CompetitionApiService/{method}",
                post(api),
            )
            .route("/v1/competitions.CompetitionApiService/{method}", post(api))
            .with_state(state.clone());
        let storage_app = Router::new()
            .route("/storage/{*path}", get(storage))
            .with_state(state.clone());
        let tasks = vec![
            tokio::spawn(async move {
                let _ = axum::serve(listener, api_app).await;
            }),
            tokio::spawn(async move {
                let _ = axum::serve(storage_listener, storage_app).await;
            }),
        ];
        Self {
            addr,
            storage_addr,
            state,
            tasks,
        }
    }

    /// The base URL (`KaggleEndpoint::custom` / `KGENV_KAGGLE_ENDPOINT`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The storage's base URL, as the signed URLs spell it.
    pub fn storage_base(&self) -> String {
        self.state.storage_base.lock().expect("lock").clone()
    }

    /// Registers `path` as `name` of `competition`.
    pub fn add_file(&self, competition: &str, name: &str, path: &Path) -> FakeFile {
        self.add(competition, name, path, false, None)
    }

    /// Registers `zip_path` (a zip holding `name`) served as `<name>.zip`, listed with
    /// `listed_size`.
    pub fn add_zipped(
        &self,
        competition: &str,
        name: &str,
        zip_path: &Path,
        listed_size: u64,
    ) -> FakeFile {
        self.add(competition, name, zip_path, true, Some(listed_size))
    }

    fn add(
        &self,
        competition: &str,
        name: &str,
        path: &Path,
        zipped: bool,
        listed: Option<u64>,
    ) -> FakeFile {
        let (size, crc) = file_crc(path);
        let f = FakeFile {
            name: name.into(),
            path: path.into(),
            size,
            listed_size: listed.unwrap_or(size),
            crc32c: crc,
            zipped,
            generation: 1,
        };
        self.state
            .competitions
            .lock()
            .expect("lock")
            .entry(competition.into())
            .or_default()
            .push(f.clone());
        f
    }

    /// Replaces the bytes of `name` of `competition` with those at `path` now: a new
    /// generation, with its own size, CRC32C, ETag and Last-Modified. Returns the new
    /// version.
    pub fn change_file(&self, competition: &str, name: &str, path: &Path) -> FakeFile {
        change(&self.state, competition, name, path)
    }

    /// As [`Self::change_file`], once the storage has answered `requests` more requests
    /// (counted from now): the requests before see the old version, the next the new.
    pub fn change_file_after(&self, competition: &str, name: &str, path: &Path, requests: u64) {
        let after = self.state.storage_requests.load(Ordering::SeqCst) + requests;
        self.state
            .pending
            .lock()
            .expect("lock")
            .push(PendingChange {
                competition: competition.into(),
                name: name.into(),
                path: path.into(),
                after,
            });
    }

    /// The current version of `name` of `competition`.
    pub fn file(&self, competition: &str, name: &str) -> FakeFile {
        self.state
            .competitions
            .lock()
            .expect("lock")
            .get(competition)
            .and_then(|fs| fs.iter().find(|f| f.name == name).cloned())
            .expect("a registered file")
    }

    /// Adds an empty competition (so listing it works).
    pub fn add_competition(&self, competition: &str) {
        self.state
            .competitions
            .lock()
            .expect("lock")
            .entry(competition.into())
            .or_default();
    }

    /// Requires the rules of `competition` to be accepted (downloads answer 403).
    pub fn require_rules(&self, competition: &str) {
        self.state
            .rules_required
            .lock()
            .expect("lock")
            .insert(competition.into());
    }

    /// Answers the signed URL requests in `shape` from now on.
    pub fn redirect_with(&self, shape: RedirectShape) {
        *self.state.redirect.lock().expect("lock") = shape;
    }

    /// Queues error answers for the next API calls.
    pub fn fail_api(&self, faults: impl IntoIterator<Item = Fault>) {
        self.state.api_faults.lock().expect("lock").extend(faults);
    }

    /// Queues error answers for the next storage requests.
    pub fn fail_storage(&self, faults: impl IntoIterator<Item = Fault>) {
        self.state
            .storage_faults
            .lock()
            .expect("lock")
            .extend(faults);
    }

    /// Every request so far, in arrival order.
    pub fn log(&self) -> Vec<Logged> {
        self.state.log.lock().expect("lock").clone()
    }

    /// Forgets the requests logged so far.
    pub fn clear_log(&self) {
        self.state.log.lock().expect("lock").clear();
    }

    /// Bytes served so far.
    pub fn served(&self) -> u64 {
        self.state.bytes_served.load(Ordering::SeqCst)
    }

    /// Fails the calling test when any request to the storage carried an `Authorization`
    /// header (a Kaggle credential leaving the API's origin).
    pub fn assert_no_credentials_reached_storage(&self) {
        let leaked: Vec<String> = self
            .log()
            .into_iter()
            .filter(|l| l.side == Side::Storage && l.authorization)
            .map(|l| l.what)
            .collect();
        assert!(
            leaked.is_empty() && self.state.storage_auth_seen.load(Ordering::SeqCst) == 0,
            "an Authorization header reached the storage host with: {leaked:?}"
        );
        assert!(
            self.state.storage_requests.load(Ordering::SeqCst) > 0,
            "the check needs at least one storage request to mean anything"
        );
    }
}

fn change(state: &FakeState, competition: &str, name: &str, path: &Path) -> FakeFile {
    let (size, crc) = file_crc(path);
    let mut comps = state.competitions.lock().expect("lock");
    let f = comps
        .get_mut(competition)
        .and_then(|fs| fs.iter_mut().find(|f| f.name == name))
        .expect("a registered file to change");
    f.path = path.into();
    f.size = size;
    if !f.zipped {
        f.listed_size = size;
    }
    f.crc32c = crc;
    f.generation += 1;
    f.clone()
}

fn apply_pending(state: &FakeState, answered: u64) {
    let due: Vec<PendingChange> = {
        let mut p = state.pending.lock().expect("lock");
        let (due, keep) = p.drain(..).partition(|c| c.after <= answered);
        *p = keep;
        due
    };
    for c in due {
        change(state, &c.competition, &c.name, &c.path);
    }
}

fn record(state: &FakeState, entry: Logged) {
    state.log.lock().expect("lock").push(entry);
}

/// Writes `size` deterministic pseudo-random bytes (from `seed`) to `path`; returns their
/// SHA-256 hex.
pub fn generate(path: &Path, size: u64, seed: u64) -> String {
    use std::io::Write;
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    let mut f = std::io::BufWriter::with_capacity(
        1 << 20,
        std::fs::File::create(path).expect("create test data"),
    );
    let mut h = sha2::Sha256::new();
    let mut x = seed ^ 0x9E37_79B9_7F4A_7C15;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        for w in buf[..n].chunks_mut(8) {
            // splitmix64
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            w.copy_from_slice(&z.to_le_bytes()[..w.len()]);
        }
        f.write_all(&buf[..n]).expect("write test data");
        h.update(&buf[..n]);
        left -= n as u64;
    }
    f.flush().expect("flush");
    hex::encode(h.finalize())
}

/// SHA-256 hex of a file.
pub fn sha256_file(path: &Path) -> String {
    use std::io::Read;
    let mut f = std::fs::File::open(path).expect("open for hashing");
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).expect("read for hashing");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    hex::encode(h.finalize())
}

fn file_crc(path: &Path) -> (u64, u32) {
    use std::io::Read;
    let mut f = std::fs::File::open(path).expect("open served file");
    let mut buf = vec![0u8; 1 << 20];
    let (mut size, mut crc) = (0u64, 0u32);
    loop {
        let n = f.read(&mut buf).expect("read served file");
        if n == 0 {
            break;
        }
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        size += n as u64;
    }
    (size, crc)
}

fn json_error(code: StatusCode, message: &str) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        serde_json::json!({"code": code.as_u16(), "message": message}).to_string(),
    )
        .into_response()
}

fn xml_error(code: StatusCode, name: &str, message: &str) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/xml; charset=UTF-8")],
        format!("<?xml version='1.0' encoding='UTF-8'?><Error><Code>{name}</Code><Message>{message}</Message></Error>"),
    )
        .into_response()
}

/// The answer to a queued fault: the status, `Retry-After` when set, and the body the
/// side sends (Kaggle's JSON error, the storage's XML one).
fn fault_response(f: Fault, side: Side) -> Response {
    let code = StatusCode::from_u16(f.status).expect("a valid fault status");
    let mut r = match (side, f.status) {
        (Side::Api, 429) => json_error(code, "Too many requests"),
        (Side::Api, _) => json_error(code, "The service is unavailable, try again later"),
        (Side::Storage, 429) => xml_error(code, "SlowDown", "Please reduce your request rate."),
        (Side::Storage, _) => xml_error(
            code,
            "ServiceUnavailable",
            "Service Unavailable. Please try again.",
        ),
    };
    if let Some(s) = f.retry_after {
        r.headers_mut().insert(
            header::RETRY_AFTER,
            s.to_string().parse().expect("retry-after"),
        );
    }
    r
}

fn authorized(state: &FakeState, headers: &HeaderMap) -> bool {
    let Some(v) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    match &state.auth {
        FakeAuth::Token(t) => v == format!("Bearer {t}"),
        FakeAuth::ApiKey(u, k) => {
            v == format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{k}"))
            )
        }
    }
}

fn sign(state: &FakeState, path: &str, expires: u64) -> String {
    hex::encode(&sha2::Sha256::digest(format!("{}|{path}|{expires}", state.secret))[..16])
}

fn encode_segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn retry_after_of(r: &Response) -> Option<u64> {
    r.headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

async fn api(
    State(state): State<Arc<FakeState>>,
    UrlPath(method): UrlPath<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let at = Instant::now();
    state.api_calls.fetch_add(1, Ordering::SeqCst);
    let resp = api_answer(&state, &method, &headers, &body);
    record(
        &state,
        Logged {
            at,
            side: Side::Api,
            what: method,
            range: None,
            if_range: None,
            authorization: headers.contains_key(header::AUTHORIZATION),
            status: resp.status().as_u16(),
            etag: None,
            retry_after: retry_after_of(&resp),
        },
    );
    resp
}

fn api_answer(state: &FakeState, method: &str, headers: &HeaderMap, body: &str) -> Response {
    if let Some(f) = state.api_faults.lock().expect("lock").pop_front() {
        return fault_response(f, Side::Api);
    }
    if !authorized(state, headers) {
        return json_error(
            StatusCode::UNAUTHORIZED,
            "Unauthenticated: bad or missing credentials",
        );
    }
    let req: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let comp = req["competitionName"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let files = match state.competitions.lock().expect("lock").get(&comp) {
        Some(f) => f.clone(),
        None => {
            return json_error(
                StatusCode::NOT_FOUND,
                &format!("Competition '{comp}' not found"),
            )
        }
    };
    match method {
        "ListDataFiles" => {
            let cap = state.page_cap.load(Ordering::SeqCst).max(1);
            let size = req["pageSize"].as_u64().unwrap_or(20).clamp(1, cap) as usize;
            let start: usize = req["pageToken"]
                .as_str()
                .and_then(|t| t.parse().ok())
                .unwrap_or(0);
            let page: Vec<_> = files
                .iter()
                .skip(start)
                .take(size)
                .map(|f| serde_json::json!({"ref": f.name, "name": f.name, "totalBytes": f.listed_size, "creationDate": "2025-01-01T00:00:00Z"}))
                .collect();
            let next = if start + size < files.len() {
                (start + size).to_string()
            } else {
                String::new()
            };
            axum::Json(serde_json::json!({"files": page, "nextPageToken": next})).into_response()
        }
        "DownloadDataFile" | "DownloadDataFiles" => {
            if state.rules_required.lock().expect("lock").contains(&comp) {
                return json_error(StatusCode::FORBIDDEN, "You must accept this competition's rules before you'll be able to download files.");
            }
            let wanted = if method == "DownloadDataFile" {
                req["fileName"].as_str().unwrap_or_default().to_string()
            } else {
                format!("{comp}.zip")
            };
            let Some(f) = files.iter().find(|f| f.name == wanted) else {
                return json_error(StatusCode::NOT_FOUND, &format!("File '{wanted}' not found"));
            };
            let path = format!(
                "/storage/{}/{}",
                encode_segment(&comp),
                f.served_name()
                    .split('/')
                    .map(encode_segment)
                    .collect::<Vec<_>>()
                    .join("/")
            );
            let ttl = state.url_ttl_ms.load(Ordering::SeqCst);
            let expires = if ttl == 0 {
                u64::MAX / 2
            } else {
                now_ms() + ttl
            };
            let sig = sign(state, &path, expires);
            state.signed_urls.fetch_add(1, Ordering::SeqCst);
            let base = state.storage_base.lock().expect("lock").clone();
            let url = format!("{base}{path}?expires={expires}&sig={sig}");
            match *state.redirect.lock().expect("lock") {
                RedirectShape::Location => {
                    (StatusCode::FOUND, [(header::LOCATION, url)]).into_response()
                }
                // kagglesdk's `HttpRedirect` fields: url, permanent, bypassEncoding, expiry.
                RedirectShape::JsonBody => axum::Json(serde_json::json!({
                    "url": url,
                    "permanent": false,
                    "bypassEncoding": true,
                }))
                .into_response(),
            }
        }
        _ => json_error(StatusCode::NOT_FOUND, &format!("no method {method}")),
    }
}

fn parse_range(v: &str, size: u64) -> Option<(u64, u64)> {
    let r = v.strip_prefix("bytes=")?;
    let (a, b) = r.split_once('-')?;
    let start: u64 = a.trim().parse().ok()?;
    let end = if b.trim().is_empty() {
        size.checked_sub(1)?
    } else {
        b.trim().parse::<u64>().ok()?.min(size.checked_sub(1)?)
    };
    (start <= end).then_some((start, end + 1))
}

async fn storage(
    State(state): State<Arc<FakeState>>,
    UrlPath(path): UrlPath<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let at = Instant::now();
    let answered = state.storage_requests.fetch_add(1, Ordering::SeqCst);
    apply_pending(&state, answered);
    let resp = storage_answer(&state, &path, &q, &headers);
    record(
        &state,
        Logged {
            at,
            side: Side::Storage,
            what: format!("/storage/{path}"),
            range: header_str(&headers, header::RANGE),
            if_range: header_str(&headers, header::IF_RANGE),
            authorization: headers.contains_key(header::AUTHORIZATION),
            status: resp.status().as_u16(),
            etag: header_str(resp.headers(), header::ETAG),
            retry_after: retry_after_of(&resp),
        },
    );
    resp
}

fn storage_answer(
    state: &Arc<FakeState>,
    path: &str,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Response {
    if headers.contains_key(header::AUTHORIZATION) {
        // A signed URL is its own credential; GCS refuses one that also carries a bearer.
        state.storage_auth_seen.fetch_add(1, Ordering::SeqCst);
        return xml_error(
            StatusCode::UNAUTHORIZED,
            "AuthenticationRequired",
            "Authentication required.",
        );
    }
    if let Some(f) = state.storage_faults.lock().expect("lock").pop_front() {
        return fault_response(f, Side::Storage);
    }
    {
        let mut up = state.storage_up_for.lock().expect("lock");
        match up.as_mut() {
            Some(0) => return fault_response(Fault::server(503), Side::Storage),
            Some(n) => *n -= 1,
            None => {}
        }
    }
    let raw_path = format!(
        "/storage/{}",
        path.split('/')
            .map(encode_segment)
            .collect::<Vec<_>>()
            .join("/")
    );
    let expires: u64 = q.get("expires").and_then(|e| e.parse().ok()).unwrap_or(0);
    if state.refuse_signatures.load(Ordering::SeqCst) {
        let base = state.storage_base.lock().expect("lock").clone();
        let sig = q.get("sig").cloned().unwrap_or_default();
        return (
            StatusCode::FORBIDDEN,
            format!("<Error><Code>SignatureDoesNotMatch</Code><Details>GET {base}{raw_path}?expires={expires}&sig={sig}</Details><Query>expires={expires}&sig={sig}</Query></Error>"),
        )
            .into_response();
    }
    if q.get("sig").map(String::as_str) != Some(sign(state, &raw_path, expires).as_str()) {
        return (
            StatusCode::FORBIDDEN,
            "<Error><Code>SignatureDoesNotMatch</Code></Error>",
        )
            .into_response();
    }
    if now_ms() > expires {
        state.expired_hits.fetch_add(1, Ordering::SeqCst);
        return (StatusCode::BAD_REQUEST, "<Error><Code>ExpiredToken</Code><Message>The provided token has expired.</Message></Error>").into_response();
    }
    let Some((comp, served)) = path.split_once('/') else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let file = state
        .competitions
        .lock()
        .expect("lock")
        .get(comp)
        .and_then(|fs| fs.iter().find(|f| f.served_name() == served).cloned());
    let Some(f) = file else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let (etag, last_modified) = (f.etag(), f.last_modified());
    let mut h = HeaderMap::new();
    h.insert(header::ETAG, etag.parse().expect("etag"));
    h.insert(header::LAST_MODIFIED, last_modified.parse().expect("date"));
    h.insert(
        header::CONTENT_TYPE,
        "application/octet-stream".parse().expect("ct"),
    );
    if state.announce_crc.load(Ordering::SeqCst) {
        let crc = base64::engine::general_purpose::STANDARD.encode(f.crc32c.to_be_bytes());
        h.insert(
            "x-goog-hash",
            format!("crc32c={crc}").parse().expect("hash"),
        );
    }
    let ranges = state.ranges.load(Ordering::SeqCst);
    let mut status = StatusCode::OK;
    let (mut start, mut end) = (0, f.size);
    if ranges {
        h.insert(header::ACCEPT_RANGES, "bytes".parse().expect("ar"));
        // RFC 9110 §13.1.5: a validator that does not match the current version means the
        // Range is ignored and the whole current file is sent (200).
        let if_range_ok = state.ignore_if_range.load(Ordering::SeqCst)
            || headers
                .get(header::IF_RANGE)
                .and_then(|v| v.to_str().ok())
                .is_none_or(|v| v == etag || v == last_modified);
        if let (Some(r), true) = (
            headers.get(header::RANGE).and_then(|v| v.to_str().ok()),
            if_range_ok,
        ) {
            match parse_range(r, f.size) {
                Some((s, e)) => {
                    status = StatusCode::PARTIAL_CONTENT;
                    (start, end) = (s, e);
                    h.insert(
                        header::CONTENT_RANGE,
                        format!("bytes {s}-{}/{}", e - 1, f.size)
                            .parse()
                            .expect("cr"),
                    );
                }
                None => {
                    h.insert(
                        header::CONTENT_RANGE,
                        format!("bytes */{}", f.size).parse().expect("cr"),
                    );
                    return (StatusCode::RANGE_NOT_SATISFIABLE, h).into_response();
                }
            }
        }
    }
    h.insert(
        header::CONTENT_LENGTH,
        (end - start).to_string().parse().expect("cl"),
    );
    let corrupt = end - start > 1
        && state
            .corrupt
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |c| c.checked_sub(1))
            .is_ok();
    let body = Body::from_stream(serve_stream(
        state.clone(),
        f.path.clone(),
        start,
        end,
        corrupt,
    ));
    (status, h, body).into_response()
}

fn serve_stream(
    state: Arc<FakeState>,
    path: PathBuf,
    start: u64,
    end: u64,
    corrupt: bool,
) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> {
    futures::stream::unfold(
        (None::<tokio::fs::File>, start, corrupt),
        move |(file, pos, corrupt)| {
            let (state, path) = (state.clone(), path.clone());
            async move {
                if pos >= end {
                    return None;
                }
                let mut file = match file {
                    Some(f) => f,
                    None => {
                        let mut f = match tokio::fs::File::open(&path).await {
                            Ok(f) => f,
                            Err(e) => return Some((Err(e), (None, end, false))),
                        };
                        if let Err(e) = f.seek(std::io::SeekFrom::Start(pos)).await {
                            return Some((Err(e), (None, end, false)));
                        }
                        f
                    }
                };
                let n = (end - pos).min(256 * 1024) as usize;
                let mut buf = vec![0u8; n];
                if let Err(e) = file.read_exact(&mut buf).await {
                    return Some((Err(e), (None, end, false)));
                }
                if corrupt {
                    buf[n / 2] ^= 0xFF;
                }
                let rate = state.throttle_bps.load(Ordering::SeqCst);
                if rate > 0 {
                    tokio::time::sleep(Duration::from_secs_f64(n as f64 / rate as f64)).await;
                }
                state.bytes_served.fetch_add(n as u64, Ordering::SeqCst);
                Some((
                    Ok(bytes::Bytes::from(buf)),
                    (Some(file), pos + n as u64, false),
                ))
            }
        },
    )
}

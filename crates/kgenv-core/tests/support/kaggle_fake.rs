//! A local fake of Kaggle's competition data API and of the storage server its signed URLs
//! point at, for kgenv's tests, end-to-end tests and benchmarks.
//!
//! - `POST {/api,}/v1/competitions.CompetitionApiService/ListDataFiles` (paged, at most
//!   `page_cap` files a page), `DownloadDataFile`, `DownloadDataFiles`: the latter two
//!   answer `302` to a signed URL on the same server, as the real API does;
//! - `GET /storage/<competition>/<file>?expires=<ms>&sig=<hex>`: a range-capable file
//!   server with ETag, Last-Modified, `x-goog-hash: crc32c=…` and `If-Range`, like GCS.
//!
//! Knobs for failure tests: signed URL lifetime, a per-response throttle, no range support,
//! corrupting the next responses, refusing every signature (with an error body that quotes
//! the signed URL), competitions whose rules are not accepted. Counters:
//! bytes served, signed URLs issued, expired URLs refused, requests.
//!
//! Use it from a test file with `#[path = "support/kaggle_fake.rs"] mod kaggle_fake;`.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
}

/// The fake's state and knobs.
pub struct FakeState {
    base: Mutex<String>,
    secret: String,
    auth: FakeAuth,
    competitions: Mutex<HashMap<String, Vec<FakeFile>>>,
    rules_required: Mutex<HashSet<String>>,
    /// Files per ListDataFiles page at most.
    pub page_cap: AtomicU64,
    /// Honour `Range` (else always 200 with the whole file).
    pub ranges: AtomicBool,
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
    /// API calls.
    pub api_calls: AtomicU64,
}

/// A running fake; stops when dropped.
pub struct FakeKaggle {
    /// Where it listens.
    pub addr: SocketAddr,
    /// State, knobs and counters.
    pub state: Arc<FakeState>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeKaggle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

const LAST_MODIFIED: &str = "Wed, 01 Jan 2025 00:00:00 GMT";

impl FakeKaggle {
    /// Starts on a free port of 127.0.0.1.
    pub async fn start(auth: FakeAuth) -> Self {
        Self::start_on("127.0.0.1:0".parse().expect("addr"), auth).await
    }

    /// Starts on `addr`.
    pub async fn start_on(addr: SocketAddr, auth: FakeAuth) -> Self {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind the fake Kaggle server");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(FakeState {
            base: Mutex::new(format!("http://{addr}")),
            secret: format!("{:x}", sha2::Sha256::digest(format!("{addr}{}", now_ms()))),
            auth,
            competitions: Mutex::new(HashMap::new()),
            rules_required: Mutex::new(HashSet::new()),
            page_cap: AtomicU64::new(20),
            ranges: AtomicBool::new(true),
            announce_crc: AtomicBool::new(true),
            url_ttl_ms: AtomicU64::new(0),
            throttle_bps: AtomicU64::new(0),
            corrupt: AtomicU32::new(0),
            refuse_signatures: AtomicBool::new(false),
            bytes_served: AtomicU64::new(0),
            signed_urls: AtomicU64::new(0),
            expired_hits: AtomicU64::new(0),
            storage_requests: AtomicU64::new(0),
            api_calls: AtomicU64::new(0),
        });
        let app = Router::new()
            .route(
                "/api/v1/competitions.CompetitionApiService/{method}",
                post(api),
            )
            .route("/v1/competitions.CompetitionApiService/{method}", post(api))
            .route("/storage/{*path}", get(storage))
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, state, task }
    }

    /// The base URL (`KaggleEndpoint::custom` / `KGENV_KAGGLE_ENDPOINT`).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
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

    /// Bytes served so far.
    pub fn served(&self) -> u64 {
        self.state.bytes_served.load(Ordering::SeqCst)
    }
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

async fn api(
    State(state): State<Arc<FakeState>>,
    UrlPath(method): UrlPath<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    state.api_calls.fetch_add(1, Ordering::SeqCst);
    if !authorized(&state, &headers) {
        return json_error(
            StatusCode::UNAUTHORIZED,
            "Unauthenticated: bad or missing credentials",
        );
    }
    let req: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
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
    match method.as_str() {
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
            let served = if f.zipped {
                format!("{}.zip", f.name)
            } else {
                f.name.clone()
            };
            let path = format!(
                "/storage/{}/{}",
                encode_segment(&comp),
                served
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
            let sig = sign(&state, &path, expires);
            state.signed_urls.fetch_add(1, Ordering::SeqCst);
            let base = state.base.lock().expect("lock").clone();
            (
                StatusCode::FOUND,
                [(
                    header::LOCATION,
                    format!("{base}{path}?expires={expires}&sig={sig}"),
                )],
            )
                .into_response()
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
    state.storage_requests.fetch_add(1, Ordering::SeqCst);
    let raw_path = format!(
        "/storage/{}",
        path.split('/')
            .map(encode_segment)
            .collect::<Vec<_>>()
            .join("/")
    );
    let expires: u64 = q.get("expires").and_then(|e| e.parse().ok()).unwrap_or(0);
    if state.refuse_signatures.load(Ordering::SeqCst) {
        let base = state.base.lock().expect("lock").clone();
        let sig = q.get("sig").cloned().unwrap_or_default();
        return (
            StatusCode::FORBIDDEN,
            format!("<Error><Code>SignatureDoesNotMatch</Code><Details>GET {base}{raw_path}?expires={expires}&sig={sig}</Details><Query>expires={expires}&sig={sig}</Query></Error>"),
        )
            .into_response();
    }
    if q.get("sig").map(String::as_str) != Some(sign(&state, &raw_path, expires).as_str()) {
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
        .and_then(|fs| {
            fs.iter()
                .find(|f| {
                    (if f.zipped {
                        format!("{}.zip", f.name)
                    } else {
                        f.name.clone()
                    }) == served
                })
                .cloned()
        });
    let Some(f) = file else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let etag = format!("\"{:08x}-{}\"", f.crc32c, f.size);
    let mut h = HeaderMap::new();
    h.insert(header::ETAG, etag.parse().expect("etag"));
    h.insert(header::LAST_MODIFIED, LAST_MODIFIED.parse().expect("date"));
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
        let if_range_ok = headers
            .get(header::IF_RANGE)
            .and_then(|v| v.to_str().ok())
            .is_none_or(|v| v == etag || v == LAST_MODIFIED);
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

//! Transport of the downloader: the URL cell that re-fetches an expired signed URL, the
//! probe request that learns size, validator and range support, and the ranged GET of one
//! byte range that survives dropped connections and expiring URLs by continuing from the
//! last byte it received.
//!
//! A `429` or `5xx` is retried after the backoff's wait, or after the server's
//! `Retry-After` when that is longer (up to [`MAX_RETRY_AFTER`]; a server asking for more
//! fails the transfer with [`BackendError::RateLimited`] rather than hold it for hours).
//! A `206` is taken only from the version the transfer started on: `If-Range` asks for
//! that, and the answer's own ETag (or Last-Modified) is checked too, since a server that
//! ignores `If-Range` would otherwise splice the new version's bytes onto the old ones.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use reqwest::header::{
    HeaderMap, CONTENT_LENGTH, CONTENT_RANGE, ETAG, IF_RANGE, LAST_MODIFIED, RANGE,
};
use reqwest::{StatusCode, Url};

use super::checksum::Announced;
use super::DownloadOptions;
use crate::backends::BackendResult;
use crate::error::BackendError;

const SERVICE: &str = "download";

/// The longest `Retry-After` a transfer waits for (Kaggle's API client waits as long).
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// What to do after a `429` or `5xx` with `headers`: `Ok(wait)` retries after at least
/// `wait` (the server's `Retry-After`, zero without one), `Err` gives up at once because the
/// server asked for longer than [`MAX_RETRY_AFTER`].
fn server_wait(headers: &HeaderMap, what: &str) -> BackendResult<Duration> {
    match crate::http::retry_after(headers) {
        Some(d) if d > MAX_RETRY_AFTER => {
            tracing::debug!(
                what,
                wait = d.as_secs(),
                "the server asks to wait longer than kgenv does"
            );
            Err(BackendError::RateLimited {
                service: SERVICE,
                retry_after: Some(d),
            })
        }
        asked => Ok(asked.unwrap_or_default()),
    }
}

/// Whether an answer's validator names the same version as `validator` (the probe's):
/// ETags are compared with ETags, dates with dates; an answer without the kind of
/// validator the probe had cannot be judged and is taken.
fn same_version(validator: &str, headers: &HeaderMap) -> bool {
    let get = |name: reqwest::header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    let is_etag = validator.starts_with('"') || validator.starts_with("W/");
    let theirs = if is_etag {
        get(ETAG)
    } else {
        get(LAST_MODIFIED)
    };
    theirs.is_none_or(|t| t == validator)
}

/// Where the bytes are: gives a URL, and a fresh one when the last has expired (a signed
/// storage URL from Kaggle's `DownloadDataFile`, for example).
#[async_trait]
pub trait UrlSource: Send + Sync {
    /// A URL to GET the file from. Called again when a URL stops working.
    async fn url(&self) -> BackendResult<Url>;
    /// What is downloaded, for messages (never the signed URL itself).
    fn describe(&self) -> String;
}

/// A fixed URL that never expires (tests, plain HTTP servers).
#[derive(Debug, Clone)]
pub struct FixedUrl(pub Url);

#[async_trait]
impl UrlSource for FixedUrl {
    async fn url(&self) -> BackendResult<Url> {
        Ok(self.0.clone())
    }
    fn describe(&self) -> String {
        let mut u = self.0.clone();
        u.set_query(None);
        u.to_string()
    }
}

/// The current URL and its generation; refreshed once per expiry however many streams see it.
pub(crate) struct UrlCell {
    source: Arc<dyn UrlSource>,
    current: std::sync::Mutex<(u64, Url)>,
    refresh: tokio::sync::Mutex<()>,
    refreshes: AtomicU32,
    max_refreshes: u32,
}

impl UrlCell {
    pub(crate) async fn new(source: Arc<dyn UrlSource>, max_refreshes: u32) -> BackendResult<Self> {
        let url = source.url().await?;
        Ok(Self {
            source,
            current: std::sync::Mutex::new((0, url)),
            refresh: tokio::sync::Mutex::new(()),
            refreshes: AtomicU32::new(0),
            max_refreshes,
        })
    }

    pub(crate) fn get(&self) -> (u64, Url) {
        self.current
            .lock()
            .map(|g| g.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// A fresh URL after generation `failed` stopped working (`why` says how).
    pub(crate) async fn refresh(&self, failed: u64, why: &str) -> BackendResult<()> {
        let _guard = self.refresh.lock().await;
        if self.get().0 != failed {
            return Ok(()); // another stream already refreshed it
        }
        let n = self.refreshes.fetch_add(1, Ordering::SeqCst) + 1;
        if n > self.max_refreshes {
            return Err(BackendError::PermissionDenied {
                resource: self.source.describe(),
                message: format!(
                    "the download URL kept failing ({why}) after {} fresh URLs",
                    self.max_refreshes
                ),
            });
        }
        tracing::debug!(what = %self.source.describe(), why, "download URL stopped working; fetching a fresh one");
        let url = self.source.url().await?;
        let mut g = self.current.lock().unwrap_or_else(|p| p.into_inner());
        *g = (failed + 1, url);
        Ok(())
    }

    pub(crate) fn describe(&self) -> String {
        self.source.describe()
    }

    /// Bytes arrived: the URL works, so the refresh budget starts again (a long download
    /// outlives many signed URLs; only refreshes that bring no progress count).
    pub(crate) fn progressed(&self) {
        if self.refreshes.load(Ordering::Relaxed) != 0 {
            self.refreshes.store(0, Ordering::Relaxed);
        }
    }
}

/// What the first request learnt about the object.
pub(crate) struct Probe {
    /// Size, when the server said it.
    pub total: Option<u64>,
    /// ETag or Last-Modified.
    pub validator: Option<String>,
    /// Whether the server honours `Range`.
    pub ranges: bool,
    /// Checksums of the whole object.
    pub announced: Announced,
    /// A server without range support answered with the whole body: read it from here.
    pub body: Option<reqwest::Response>,
}

/// Why a transfer stopped.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The object changed under the transfer (its validator no longer matches, `If-Range`
    /// missed): the file must start over.
    #[error("the file changed on the server during the download")]
    Changed,
    /// Anything else.
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// Maps a reqwest error of the download of `what` (the shared mapping; the signed URL is
/// stripped from the error).
pub(crate) fn map_reqwest(what: &str, e: reqwest::Error) -> BackendError {
    crate::http::map_reqwest(e, &crate::http::Failure::new(SERVICE, what))
}

/// The retry schedule of one request.
pub(crate) fn backoff(opts: &DownloadOptions) -> impl Iterator<Item = Duration> {
    opts.retry_policy().delays()
}

fn validator(headers: &HeaderMap) -> Option<String> {
    headers
        .get(ETAG)
        .or_else(|| headers.get(LAST_MODIFIED))
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// `bytes a-b/total` → (a, total)
fn content_range(headers: &HeaderMap) -> Option<(Option<u64>, Option<u64>)> {
    let v = headers.get(CONTENT_RANGE)?.to_str().ok()?;
    let rest = v.strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let start = range
        .split_once('-')
        .and_then(|(a, _)| a.trim().parse().ok());
    Some((start, total.trim().parse().ok()))
}

fn is_url_failure(status: StatusCode) -> bool {
    matches!(status.as_u16(), 400 | 401 | 403)
}

/// The start of an answer's body for a message, [`redact`](crate::http::redact)ed: a
/// storage error may quote the signed URL or its signing parameters.
async fn body_snippet(resp: reqwest::Response) -> String {
    let text = resp.text().await.unwrap_or_default();
    crate::http::redact(&text).chars().take(300).collect()
}

/// The first request: `Range: bytes=0-0`.
pub(crate) async fn probe(
    http: &reqwest::Client,
    url: &UrlCell,
    opts: &DownloadOptions,
) -> BackendResult<Probe> {
    let mut delays = backoff(opts);
    loop {
        let (generation, u) = url.get();
        let res = http.get(u).header(RANGE, "bytes=0-0").send().await;
        let mut floor = Duration::ZERO;
        let err = match res {
            Ok(resp) => {
                let status = resp.status();
                let headers = resp.headers().clone();
                let announced = Announced::from_headers(&headers);
                match status {
                    StatusCode::PARTIAL_CONTENT => {
                        let total = content_range(&headers).and_then(|(_, t)| t);
                        let _ = resp.bytes().await;
                        return Ok(Probe {
                            total,
                            validator: validator(&headers),
                            ranges: true,
                            announced,
                            body: None,
                        });
                    }
                    StatusCode::RANGE_NOT_SATISFIABLE => {
                        let total = content_range(&headers).and_then(|(_, t)| t).or(Some(0));
                        return Ok(Probe {
                            total,
                            validator: validator(&headers),
                            ranges: true,
                            announced,
                            body: None,
                        });
                    }
                    StatusCode::OK => {
                        let total = headers
                            .get(CONTENT_LENGTH)
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.parse().ok());
                        return Ok(Probe {
                            total,
                            validator: validator(&headers),
                            ranges: false,
                            announced,
                            body: Some(resp),
                        });
                    }
                    s if is_url_failure(s) => {
                        let why = format!("HTTP {s}: {}", body_snippet(resp).await);
                        url.refresh(generation, &why).await?;
                        continue;
                    }
                    StatusCode::NOT_FOUND => {
                        return Err(BackendError::NotFound {
                            resource: url.describe(),
                        });
                    }
                    s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
                        floor = server_wait(&headers, &url.describe())?;
                        BackendError::transient(SERVICE, format!("{}: HTTP {s}", url.describe()))
                    }
                    s => {
                        return Err(BackendError::other(format!(
                            "{}: unexpected HTTP {s}: {}",
                            url.describe(),
                            body_snippet(resp).await
                        )));
                    }
                }
            }
            Err(e) => map_reqwest(&url.describe(), e),
        };
        match delays.next() {
            Some(d) => tokio::time::sleep(d.max(floor)).await,
            None => return Err(err),
        }
    }
}

/// Receives the bytes of one range, in order.
#[async_trait]
pub(crate) trait RangeWriter: Send {
    /// Bytes at absolute `offset`.
    async fn write(&mut self, offset: u64, data: Bytes) -> BackendResult<()>;
    /// Called when the range is complete.
    async fn finish(&mut self) -> BackendResult<()>;
}

/// Fetches `[start, end)` into `w`, continuing from the last byte received when a
/// connection drops or the URL expires. Returns the range's CRC32C.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn fetch_range(
    http: &reqwest::Client,
    url: &UrlCell,
    validator: Option<&str>,
    opts: &DownloadOptions,
    start: u64,
    end: u64,
    w: &mut dyn RangeWriter,
    counter: &AtomicU64,
) -> Result<u32, TransferError> {
    let mut pos = start;
    let mut crc = 0u32;
    let mut delays = backoff(opts);
    while pos < end {
        let (generation, u) = url.get();
        let mut req = http
            .get(u)
            .header(RANGE, format!("bytes={pos}-{}", end - 1));
        if let Some(v) = validator {
            req = req.header(IF_RANGE, v);
        }
        let before = pos;
        let mut floor = Duration::ZERO;
        let err = match req.send().await {
            Ok(mut resp) => match resp.status() {
                StatusCode::PARTIAL_CONTENT => {
                    if validator.is_some_and(|v| !same_version(v, resp.headers())) {
                        // Another version than the one the transfer started on: its bytes
                        // must not be spliced onto the old ones.
                        return Err(TransferError::Changed);
                    }
                    if let Some((Some(s), _)) = content_range(resp.headers()) {
                        if s != pos {
                            return Err(BackendError::other(format!(
                                "{}: asked for bytes from {pos}, got from {s}",
                                url.describe()
                            ))
                            .into());
                        }
                    }
                    let mut failure = None;
                    url.progressed();
                    loop {
                        match resp.chunk().await {
                            Ok(Some(b)) => {
                                let take = usize::try_from(end - pos)
                                    .unwrap_or(usize::MAX)
                                    .min(b.len());
                                let b = b.slice(..take);
                                crc = crc32c::crc32c_append(crc, &b);
                                pos += b.len() as u64;
                                counter.fetch_add(b.len() as u64, Ordering::Relaxed);
                                w.write(pos - b.len() as u64, b).await?;
                                if pos >= end {
                                    break;
                                }
                            }
                            Ok(None) => break,
                            Err(e) => {
                                failure = Some(map_reqwest(&url.describe(), e));
                                break;
                            }
                        }
                    }
                    if pos >= end {
                        break;
                    }
                    failure.unwrap_or_else(|| {
                        BackendError::transient(
                            SERVICE,
                            format!("{}: response ended early at byte {pos}", url.describe()),
                        )
                    })
                }
                StatusCode::OK => return Err(TransferError::Changed),
                s if is_url_failure(s) => {
                    let why = format!("HTTP {s}: {}", body_snippet(resp).await);
                    url.refresh(generation, &why).await?;
                    continue;
                }
                StatusCode::NOT_FOUND => {
                    return Err(BackendError::NotFound {
                        resource: url.describe(),
                    }
                    .into())
                }
                StatusCode::RANGE_NOT_SATISFIABLE => return Err(TransferError::Changed),
                s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
                    floor = server_wait(resp.headers(), &url.describe())?;
                    BackendError::transient(SERVICE, format!("{}: HTTP {s}", url.describe()))
                }
                s => {
                    return Err(BackendError::other(format!(
                        "{}: unexpected HTTP {s}: {}",
                        url.describe(),
                        body_snippet(resp).await
                    ))
                    .into())
                }
            },
            Err(e) => map_reqwest(&url.describe(), e),
        };
        if pos > before {
            delays = backoff(opts); // progress was made: a fresh retry budget
        }
        tracing::debug!(error = %err, pos, end, "range fetch interrupted; retrying");
        match delays.next() {
            Some(d) => tokio::time::sleep(d.max(floor)).await,
            None => return Err(err.into()),
        }
    }
    w.finish().await?;
    Ok(crc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::{HeaderValue, RETRY_AFTER};

    fn headers(pairs: &[(reqwest::header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(k.clone(), HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    #[test]
    fn a_206_of_another_version_is_told_apart() {
        let h = headers(&[
            (ETAG, "\"v2\""),
            (LAST_MODIFIED, "Wed, 01 Jan 2025 00:00:02 GMT"),
        ]);
        assert!(same_version("\"v2\"", &h));
        assert!(!same_version("\"v1\"", &h));
        assert!(!same_version("Wed, 01 Jan 2025 00:00:01 GMT", &h));
        assert!(same_version("Wed, 01 Jan 2025 00:00:02 GMT", &h));
        assert!(
            same_version("\"v1\"", &headers(&[(LAST_MODIFIED, "x")])),
            "no ETag in the answer: nothing to judge by"
        );
    }

    #[test]
    fn retry_after_is_a_floor_up_to_a_minute() {
        assert_eq!(
            server_wait(&HeaderMap::new(), "f").ok(),
            Some(Duration::ZERO)
        );
        assert_eq!(
            server_wait(&headers(&[(RETRY_AFTER, "7")]), "f").ok(),
            Some(Duration::from_secs(7))
        );
        let e = server_wait(&headers(&[(RETRY_AFTER, "3600")]), "f").expect_err("an hour");
        assert!(
            matches!(e, BackendError::RateLimited { retry_after: Some(d), .. } if d.as_secs() == 3600),
            "{e:?}"
        );
    }
}

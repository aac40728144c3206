//! The downloader: gets one file from an HTTP URL as fast as the network allows, survives
//! interruptions, and holds constant memory whatever the file size.
//!
//! - parallel ranged GETs (`concurrency` streams of `chunk_size` chunks, HTTP/1.1 so each
//!   stream is its own TCP connection);
//! - resumable across runs: `<file>.kgenv-partial` plus a small sidecar recording done
//!   chunks and the server's validator (ETag or Last-Modified), sent back as `If-Range`;
//! - a signed URL that expires mid-download is replaced through its [`UrlSource`] and the
//!   stream continues from the byte it had reached;
//! - the size and the CRC32C the server announces (`x-goog-hash`) are verified; a mismatch
//!   drops the partial and starts the file over (up to `file_attempts` times);
//! - written to the partial name, fsynced, renamed; one process at a time per file (a lock
//!   beside the partial file), so a second download of the same file waits for the first;
//! - a server without range support is read as one stream;
//! - [`Progress::Transfer`] events carry rate and ETA.
//!
//! For destinations that take bytes in order (a GCS resumable upload), [`Transfer::stream_to`]
//! fetches chunks in parallel and hands them on in order, at most `concurrency + 1` chunks in
//! memory.
//!
//! ```no_run
//! # async fn demo() -> kgenv_core::backends::BackendResult<()> {
//! use std::sync::Arc;
//! use kgenv_core::download::{Downloader, DownloadOptions, FixedUrl};
//! let dl = Downloader::new(DownloadOptions::default())?;
//! let url = "http://127.0.0.1:8080/big.bin".parse().expect("url");
//! let landed = dl
//!     .to_file(Arc::new(FixedUrl(url)), std::path::Path::new("/data/big.bin"), "big.bin", &|p| println!("{p:?}"))
//!     .await?;
//! println!("{} bytes", landed.bytes);
//! # Ok(()) }
//! ```

pub mod checksum;
pub mod extract;
mod fetch;
mod local;
mod ordered;
pub mod sidecar;
pub mod space;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use fetch::{FixedUrl, TransferError, UrlSource};
pub use ordered::{ChunkSink, Streamed};

use self::checksum::Announced;
use self::fetch::{Probe, UrlCell};
use crate::backends::{BackendResult, Progress, ProgressFn, Stream};
use crate::error::BackendError;
use crate::http::RetryPolicy;

/// GCS resumable uploads take chunks in multiples of this.
pub const CHUNK_ALIGN: u64 = 256 * 1024;

/// How the downloader works.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DownloadOptions {
    /// Parallel streams per file (default 8).
    pub concurrency: usize,
    /// Bytes per ranged request (default 8 MiB; rounded up to a multiple of 256 KiB).
    pub chunk_size: u64,
    /// Retries of one request after transient failures (default 8, exponential backoff).
    pub max_retries: u32,
    /// First retry delay (default 200 ms).
    pub retry_min_delay: Duration,
    /// Whole-file attempts after a checksum mismatch or a changed object (default 3).
    pub file_attempts: u32,
    /// Fresh signed URLs fetched in a row without any bytes arriving before giving up
    /// (default 5); any progress resets the count.
    pub max_url_refreshes: u32,
}

impl Default for DownloadOptions {
    fn default() -> Self {
        Self {
            concurrency: 8,
            chunk_size: 8 << 20,
            max_retries: 8,
            retry_min_delay: Duration::from_millis(200),
            file_attempts: 3,
            max_url_refreshes: 5,
        }
    }
}

impl DownloadOptions {
    /// Sets the number of parallel streams (at least 1).
    #[must_use]
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Sets the chunk size (rounded up to a multiple of 256 KiB).
    #[must_use]
    pub fn chunk_size(mut self, bytes: u64) -> Self {
        self.chunk_size = bytes.max(1).div_ceil(CHUNK_ALIGN) * CHUNK_ALIGN;
        self
    }

    /// Sets the retries per request.
    #[must_use]
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }

    /// Sets the first retry delay.
    #[must_use]
    pub fn retry_min_delay(mut self, d: Duration) -> Self {
        self.retry_min_delay = d;
        self
    }

    /// Sets the whole-file attempts.
    #[must_use]
    pub fn file_attempts(mut self, n: u32) -> Self {
        self.file_attempts = n.max(1);
        self
    }

    /// The retry schedule of one request: the shared policy from `retry_min_delay` to 30 s,
    /// `max_retries` retries. The transfers keep their own loops (they resume from the
    /// last byte received rather than repeat a request) and take only its waits.
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::new(
            self.retry_min_delay,
            Duration::from_secs(30),
            self.max_retries as usize,
        )
    }
}

/// A file that landed on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Landed {
    /// Where.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Bytes that were already there from an earlier, interrupted run.
    pub resumed: u64,
    /// Its CRC32C.
    pub crc32c: u32,
    /// Whether the CRC32C was checked against one the server announced.
    pub verified: bool,
}

/// Gets files over HTTP; cheap to clone.
#[derive(Clone)]
pub struct Downloader {
    http: reqwest::Client,
    opts: DownloadOptions,
}

impl std::fmt::Debug for Downloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Downloader")
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

fn warn(progress: ProgressFn<'_>, line: String) {
    tracing::warn!("{line}");
    progress(Progress::Line {
        stream: Stream::Stderr,
        line,
    });
}

impl Downloader {
    /// A downloader with its own HTTP/1.1 connection pool.
    pub fn new(opts: DownloadOptions) -> BackendResult<Self> {
        // Signed URLs point anywhere; no base to judge proxies by.
        let http = crate::http::build_client(
            "download",
            crate::http::client_builder("")
                .http1_only()
                .connect_timeout(Duration::from_secs(30))
                .read_timeout(Duration::from_secs(120))
                .pool_max_idle_per_host(opts.concurrency.max(1) * 2),
        )?;
        let opts = DownloadOptions {
            chunk_size: opts.chunk_size.max(1).div_ceil(CHUNK_ALIGN) * CHUNK_ALIGN,
            ..opts
        };
        Ok(Self { http, opts })
    }

    /// The options in force.
    pub fn options(&self) -> &DownloadOptions {
        &self.opts
    }

    /// Opens a transfer: gets a URL from `source` and probes the object.
    pub async fn open(&self, source: Arc<dyn UrlSource>) -> BackendResult<Transfer> {
        let url = Arc::new(UrlCell::new(source, self.opts.max_url_refreshes).await?);
        let probe = fetch::probe(&self.http, &url, &self.opts).await?;
        Ok(Transfer {
            dl: self.clone(),
            url,
            probe,
        })
    }

    /// Downloads the object behind `source` to `target`, resuming a partial download left by
    /// an earlier run. `item` names the file in progress events.
    pub async fn to_file(
        &self,
        source: Arc<dyn UrlSource>,
        target: &Path,
        item: &str,
        progress: ProgressFn<'_>,
    ) -> BackendResult<Landed> {
        let partial = space::partial_path(target);
        let side = local::with_suffix(target, ".kgenv-partial.json");
        if let Some(dir) = target.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| BackendError::io(format!("creating {}", dir.display()), e))?;
        }
        // One writer per file on this machine: held until this call returns.
        let _lock = local::DownloadLock::acquire(target, &partial, item, progress).await?;
        let url = Arc::new(UrlCell::new(source, self.opts.max_url_refreshes).await?);
        let mut last = None;
        for attempt in 1..=self.opts.file_attempts {
            let mut probe = fetch::probe(&self.http, &url, &self.opts).await?;
            let announced = probe.announced;
            let result = match probe.total {
                Some(total) if probe.ranges => {
                    local::ranged(
                        &self.http, &url, &self.opts, &probe, total, &partial, &side, item,
                        progress,
                    )
                    .await
                }
                _ => {
                    local::single(
                        &self.http, &url, &mut probe, &partial, &side, item, progress,
                    )
                    .await
                }
            };
            match result {
                Ok(f) => match verify(announced, f.crc) {
                    Ok(verified) => {
                        local::finalize(partial.clone(), side.clone(), target.to_path_buf())
                            .await?;
                        return Ok(Landed {
                            path: target.to_path_buf(),
                            bytes: f.bytes,
                            resumed: f.resumed,
                            crc32c: f.crc,
                            verified,
                        });
                    }
                    Err(e) => {
                        warn(
                            progress,
                            format!(
                                "{item}: {e}; downloading it again (attempt {attempt} of {})",
                                self.opts.file_attempts
                            ),
                        );
                        last = Some(e);
                    }
                },
                Err(TransferError::Changed) => {
                    warn(
                        progress,
                        format!(
                            "{item}: changed on the server during the download; starting it over"
                        ),
                    );
                    last = Some(BackendError::transient(
                        "download",
                        format!("{item} kept changing on the server"),
                    ));
                }
                Err(TransferError::Backend(e)) => return Err(e),
            }
            let _ = tokio::fs::remove_file(&side).await;
            let _ = tokio::fs::remove_file(&partial).await;
        }
        Err(last.unwrap_or_else(|| BackendError::other(format!("{item}: download failed"))))
    }
}

/// Checks a CRC32C against the announced one: `Ok(true)` verified, `Ok(false)` nothing to
/// check against.
fn verify(announced: Announced, crc: u32) -> BackendResult<bool> {
    match announced.crc32c {
        Some(want) if want != crc => Err(BackendError::Transient {
            service: "download",
            message: format!(
                "checksum mismatch: the server announced CRC32C {}, the bytes received have {}",
                checksum::encode_crc32c(want),
                checksum::encode_crc32c(crc)
            ),
            source: None,
        }),
        Some(_) => Ok(true),
        None => Ok(false),
    }
}

/// An opened transfer: the object has been probed (size, validator, checksums, range
/// support).
pub struct Transfer {
    dl: Downloader,
    url: Arc<UrlCell>,
    probe: Probe,
}

impl std::fmt::Debug for Transfer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transfer")
            .field("what", &self.url.describe())
            .field("size", &self.probe.total)
            .field("ranges", &self.probe.ranges)
            .finish_non_exhaustive()
    }
}

impl Transfer {
    /// The object's size, when the server said it.
    pub fn size(&self) -> Option<u64> {
        self.probe.total
    }

    /// The object's ETag or Last-Modified.
    pub fn validator(&self) -> Option<&str> {
        self.probe.validator.as_deref()
    }

    /// The checksums the server announced for the whole object.
    pub fn announced(&self) -> Announced {
        self.probe.announced
    }

    /// Whether the server honours ranges (and so the transfer can start past 0).
    pub fn ranges(&self) -> bool {
        self.probe.ranges
    }

    /// Streams the object from `start` into `sink`, in order; chunks are fetched in parallel
    /// when the server supports ranges. Returns the bytes and CRC32C from `start` on.
    pub async fn stream_to(
        mut self,
        start: u64,
        sink: &mut dyn ChunkSink,
        item: &str,
        progress: ProgressFn<'_>,
    ) -> Result<Streamed, TransferError> {
        let dl = &self.dl;
        match self.probe.total {
            Some(total) if self.probe.ranges => {
                ordered::ranged(
                    &dl.http,
                    &self.url,
                    &dl.opts,
                    self.probe.validator.clone(),
                    total,
                    start,
                    sink,
                    item,
                    progress,
                )
                .await
            }
            _ => {
                ordered::single(
                    &dl.http,
                    &self.url,
                    &dl.opts,
                    &mut self.probe,
                    start,
                    sink,
                    item,
                    progress,
                )
                .await
            }
        }
    }
}

/// Checks `crc` (of the whole object) against what the transfer announced.
pub fn verify_announced(announced: Announced, crc: u32) -> BackendResult<bool> {
    verify(announced, crc)
}

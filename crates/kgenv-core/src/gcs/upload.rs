//! GCS resumable uploads: a session is opened once, then chunks (multiples of 256 KiB but
//! the last) are PUT with `Content-Range`; each 308 answer's `Range` says how much the
//! server has persisted, and the next PUT starts from there, resending what it did not
//! take. The session URI and the persisted offset can be saved and the upload continued by
//! another process.
//!
//! With a real GCS endpoint a resumed session first asks the server where it stands
//! (`Content-Range: bytes */*`). fake-gcs-server finalizes an object on that empty PUT, so
//! under `STORAGE_EMULATOR_HOST` the saved offset (taken from the last 308) is used as is.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use reqwest::header::{LOCATION, RANGE};
use reqwest::{StatusCode, Url};

use super::api;
use super::client::GcsClient;
use super::errors::status_error;
use super::model::ObjectInfo;
use crate::backends::BackendResult;
use crate::download::ChunkSink;
use crate::error::BackendError;
use crate::http::{Response, RetryPolicy};

/// The waits between tries of one chunk (the downloader's schedule: 200 ms to 30 s, 8
/// retries). They are the only retries of a chunk: each try resumes from what the server
/// says it has persisted.
const CHUNK_RETRY: RetryPolicy =
    RetryPolicy::new(Duration::from_millis(200), Duration::from_secs(30), 8);

/// An upload session. The session URI authorizes uploads by itself: it is never logged and
/// not shown by `Debug`.
pub struct ResumableUpload {
    client: GcsClient,
    session: Url,
    what: String,
    persisted: u64,
    crc: u32,
    done: Option<ObjectInfo>,
}

impl std::fmt::Debug for ResumableUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResumableUpload")
            .field("object", &self.what)
            .field("persisted", &self.persisted)
            .finish_non_exhaustive()
    }
}

fn persisted_from(resp: &Response) -> u64 {
    // `Range: bytes=0-N` → N+1 persisted; no header → nothing persisted.
    resp.headers
        .get(RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes=0-"))
        .and_then(|n| n.trim().parse::<u64>().ok())
        .map_or(0, |n| n + 1)
}

impl GcsClient {
    /// Opens a resumable upload of `bucket/name` (`size` when known), with custom metadata.
    /// Opening is retried like any JSON API call (a session opened by a lost answer is
    /// never used and expires on its own).
    pub async fn start_upload(
        &self,
        bucket: &str,
        name: &str,
        size: Option<u64>,
        metadata: &BTreeMap<String, String>,
    ) -> BackendResult<ResumableUpload> {
        let req = api::start_upload(self.base(), bucket, name, size, metadata)?;
        let what = req.what.clone();
        let session = self
            .transport()
            .call(&req, |r| {
                if !r.status.is_success() {
                    return Err(match status_error(&r, &what) {
                        BackendError::NotFound { .. } => BackendError::NotFound {
                            resource: format!("bucket {bucket}"),
                        },
                        e => e,
                    });
                }
                r.headers
                    .get(LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| Url::parse(v).ok())
                    .ok_or_else(|| {
                        BackendError::other(format!(
                            "{what}: the upload session answer had no Location"
                        ))
                    })
            })
            .await?;
        Ok(ResumableUpload {
            client: self.clone(),
            session,
            what,
            persisted: 0,
            crc: 0,
            done: None,
        })
    }

    /// Continues a saved session. `saved` says where it may stand: `persisted` bytes, or,
    /// when a chunk was in flight at the interruption, that many more. Which one is asked
    /// of the server: GCS answers a status query (`Content-Range: bytes */*`); under
    /// `STORAGE_EMULATOR_HOST` (fake-gcs-server finalizes on that query) an empty chunk at
    /// the saved offset returns the CRC32C of what the server holds, which picks the
    /// candidate. Neither matching is an error (start a new session).
    pub async fn resume_upload(
        &self,
        bucket: &str,
        name: &str,
        saved: &SavedUpload,
    ) -> BackendResult<ResumableUpload> {
        let what = api::object_what(bucket, name);
        let session = Url::parse(&saved.session).map_err(|e| BackendError::InvalidArgument {
            resource: what.clone(),
            message: format!("bad upload session URI: {e}"),
        })?;
        let mut up = ResumableUpload {
            client: self.clone(),
            session,
            what,
            persisted: saved.persisted,
            crc: saved.crc,
            done: None,
        };
        let mut candidates = vec![(saved.persisted, saved.crc)];
        if let Some((len, crc)) = saved.next {
            candidates.push((saved.persisted + len, crc));
        }
        let found = if self.is_emulated() {
            let server_crc = up.emulator_crc(saved.persisted).await?;
            candidates.into_iter().find(|&(_, c)| c == server_crc)
        } else {
            let server = up.status().await?;
            candidates.into_iter().find(|&(n, _)| n == server)
        };
        match found {
            Some((persisted, crc)) => {
                up.persisted = persisted;
                up.crc = crc;
                Ok(up)
            }
            None => Err(BackendError::transient(
                "storage",
                format!(
                    "{}: the server holds bytes kgenv has no record of; starting a new upload",
                    up.what
                ),
            )),
        }
    }
}

/// What a process records to continue an upload later.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavedUpload {
    /// Session URI (a capability: keep it private).
    pub session: String,
    /// Bytes acknowledged by the server.
    pub persisted: u64,
    /// CRC32C of those bytes.
    pub crc: u32,
    /// The chunk in flight when this was recorded: its length and the CRC32C up to its end.
    pub next: Option<(u64, u32)>,
}

impl std::fmt::Debug for SavedUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SavedUpload")
            .field("persisted", &self.persisted)
            .field("next", &self.next)
            .finish_non_exhaustive()
    }
}

impl ResumableUpload {
    /// The session URI (a capability: store it like a secret).
    pub fn session_uri(&self) -> &str {
        self.session.as_str()
    }

    /// Bytes the server has persisted.
    pub fn persisted(&self) -> u64 {
        self.persisted
    }

    /// CRC32C of the persisted bytes.
    pub fn crc32c(&self) -> u32 {
        self.crc
    }

    /// The object, once the last chunk is in.
    pub fn object(&self) -> Option<&ObjectInfo> {
        self.done.as_ref()
    }

    /// Asks the server how much it has (`Content-Range: bytes */*`). Not for
    /// fake-gcs-server, which finalizes the object on this request.
    pub async fn status(&mut self) -> BackendResult<u64> {
        let req = api::put_empty(&self.session, &self.what, "bytes */*")?;
        let resp = self.client.transport().fetch_once(&req).await?;
        match resp.status {
            StatusCode::PERMANENT_REDIRECT => Ok(persisted_from(&resp)),
            s if s.is_success() => {
                let o: ObjectInfo = resp.json(&self.what, "GCS")?;
                let n = o.size;
                self.done = Some(o);
                Ok(n)
            }
            StatusCode::NOT_FOUND | StatusCode::GONE => Err(BackendError::NotFound {
                resource: format!("upload session for {}", self.what),
            }),
            _ => Err(status_error(&resp, &self.what)),
        }
    }

    /// fake-gcs-server only: the CRC32C of what it holds, from an empty chunk at `at`
    /// (it appends nothing, does not finalize, and answers with the object so far).
    async fn emulator_crc(&mut self, at: u64) -> BackendResult<u32> {
        let range = format!("bytes {at}-{}/*", at as i64 - 1);
        let req = api::put_empty(&self.session, &self.what, &range)?;
        let resp = self.client.transport().fetch_once(&req).await?;
        match resp.status {
            StatusCode::PERMANENT_REDIRECT => {
                let o: ObjectInfo = resp.json(&self.what, "GCS")?;
                Ok(o.crc32c().unwrap_or(0))
            }
            StatusCode::NOT_FOUND | StatusCode::GONE => Err(BackendError::NotFound {
                resource: format!("upload session for {}", self.what),
            }),
            _ => Err(status_error(&resp, &self.what)),
        }
    }

    /// PUTs `data` (which starts at `offset`); `last` finalizes the object. Bytes the server
    /// already has are skipped; bytes it did not take are sent again.
    pub async fn put_chunk(&mut self, offset: u64, data: Bytes, last: bool) -> BackendResult<()> {
        if self.done.is_some() {
            return Ok(());
        }
        if offset > self.persisted {
            return Err(BackendError::other(format!(
                "{}: chunk at {offset} but only {} bytes persisted",
                self.what, self.persisted
            )));
        }
        let end = offset + data.len() as u64;
        let mut delays = CHUNK_RETRY.delays();
        loop {
            let from = self.persisted.max(offset);
            let skip = usize::try_from(from - offset)
                .unwrap_or(usize::MAX)
                .min(data.len());
            let body = data.slice(skip..);
            if body.is_empty() && !last {
                return Ok(());
            }
            let range = match (body.is_empty(), last) {
                (true, _) => format!("bytes */{end}"),
                (false, true) => format!("bytes {from}-{}/{end}", end - 1),
                (false, false) => format!("bytes {from}-{}/*", end - 1),
            };
            let req = api::put_chunk(&self.session, &self.what, &range, body.clone())?;
            let err = match self.client.transport().fetch_once(&req).await {
                Ok(resp) => match resp.status {
                    StatusCode::PERMANENT_REDIRECT => {
                        let now = persisted_from(&resp);
                        if now < self.persisted && now < offset {
                            return Err(BackendError::other(format!(
                                "{}: the server lost bytes ({now} persisted, {} before)",
                                self.what, self.persisted
                            )));
                        }
                        self.advance(&data, offset, now);
                        if self.persisted >= end && !last {
                            return Ok(());
                        }
                        continue;
                    }
                    s if s.is_success() => {
                        let o: ObjectInfo = resp.json(&self.what, "GCS")?;
                        self.advance(&data, offset, end);
                        self.done = Some(o);
                        return Ok(());
                    }
                    s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
                        BackendError::transient("storage", format!("{}: HTTP {s}", self.what))
                    }
                    _ => return Err(status_error(&resp, &self.what)),
                },
                Err(e) if e.is_retryable() => e,
                Err(e) => return Err(e),
            };
            match delays.next() {
                Some(d) => tokio::time::sleep(d).await,
                None => return Err(err),
            }
        }
    }

    /// Folds the newly persisted part of `data` into the CRC.
    fn advance(&mut self, data: &Bytes, offset: u64, now: u64) {
        let end = offset + data.len() as u64;
        let now = now.min(end);
        if now > self.persisted {
            let a = usize::try_from(self.persisted.saturating_sub(offset)).unwrap_or(0);
            let b = usize::try_from(now - offset).unwrap_or(data.len());
            self.crc = crc32c::crc32c_append(self.crc, &data[a..b]);
            self.persisted = now;
        }
    }
}

#[async_trait]
impl ChunkSink for ResumableUpload {
    async fn put(&mut self, offset: u64, data: Bytes, last: bool) -> BackendResult<()> {
        self.put_chunk(offset, data, last).await
    }
}

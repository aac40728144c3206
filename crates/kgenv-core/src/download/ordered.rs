//! Downloads in file order into a [`ChunkSink`] (a GCS resumable upload): chunks are fetched
//! in parallel into memory and handed on strictly in order. A semaphore bounds the chunks in
//! memory to `concurrency + 1`, whatever the file size.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};

use super::checksum;
use super::fetch::{fetch_range, Probe, RangeWriter, TransferError, UrlCell};
use super::DownloadOptions;
use crate::backends::Meter;
use crate::backends::{BackendResult, ProgressFn};
use crate::error::BackendError;

/// Takes a file's bytes in order, one chunk at a time.
#[async_trait]
pub trait ChunkSink: Send {
    /// The chunk at `offset`; `last` is set on the final one (which may be empty).
    async fn put(&mut self, offset: u64, data: Bytes, last: bool) -> BackendResult<()>;
}

struct MemWriter(BytesMut);

#[async_trait]
impl RangeWriter for MemWriter {
    async fn write(&mut self, _offset: u64, data: Bytes) -> BackendResult<()> {
        self.0.extend_from_slice(&data);
        Ok(())
    }
    async fn finish(&mut self) -> BackendResult<()> {
        Ok(())
    }
}

/// What an ordered transfer produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Streamed {
    /// Bytes handed to the sink (from the start offset).
    pub bytes: u64,
    /// CRC32C of those bytes.
    pub crc: u32,
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn ranged(
    http: &reqwest::Client,
    url: &Arc<UrlCell>,
    opts: &DownloadOptions,
    validator: Option<String>,
    total: u64,
    start: u64,
    sink: &mut dyn ChunkSink,
    item: &str,
    progress: ProgressFn<'_>,
) -> Result<Streamed, TransferError> {
    let cs = opts.chunk_size;
    let n = total.saturating_sub(start).div_ceil(cs);
    if n == 0 {
        sink.put(start, Bytes::new(), true).await?;
        return Ok(Streamed { bytes: 0, crc: 0 });
    }
    let range = move |i: u64| (start + i * cs, (start + (i + 1) * cs).min(total));
    let permits = Arc::new(tokio::sync::Semaphore::new(opts.concurrency.max(1) + 1));
    let next = Arc::new(AtomicU64::new(0));
    let fetched = Arc::new(AtomicU64::new(0));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..opts
        .concurrency
        .max(1)
        .min(usize::try_from(n).unwrap_or(usize::MAX))
    {
        let (http, url, opts, permits, next, fetched, tx, validator) = (
            http.clone(),
            url.clone(),
            opts.clone(),
            permits.clone(),
            next.clone(),
            fetched.clone(),
            tx.clone(),
            validator.clone(),
        );
        set.spawn(async move {
            loop {
                let permit = permits
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| BackendError::Cancelled)?;
                let idx = next.fetch_add(1, Ordering::SeqCst);
                if idx >= n {
                    return Ok::<(), TransferError>(());
                }
                let (s, e) = range(idx);
                let mut w = MemWriter(BytesMut::with_capacity(usize::try_from(e - s).unwrap_or(0)));
                let crc = fetch_range(
                    &http,
                    &url,
                    validator.as_deref(),
                    &opts,
                    s,
                    e,
                    &mut w,
                    &fetched,
                )
                .await?;
                let _ = tx.send((idx, w.0.freeze(), crc, permit));
            }
        });
    }
    drop(tx);

    let mut meter = Meter::new(item, Some(total), start);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut waiting = BTreeMap::new();
    let (mut expected, mut sunk, mut crc) = (0u64, start, 0u32);
    while expected < n {
        tokio::select! {
            msg = rx.recv() => {
                let Some((idx, data, c, permit)) = msg else {
                    return Err(BackendError::other(format!("{item}: download streams stopped before the end")).into());
                };
                waiting.insert(idx, (data, c, permit));
                while let Some((data, c, permit)) = waiting.remove(&expected) {
                    let len = data.len() as u64;
                    sink.put(sunk, data, expected + 1 == n).await?;
                    drop(permit);
                    crc = checksum::combine(crc, c, len);
                    sunk += len;
                    expected += 1;
                    meter.update(sunk);
                }
            }
            Some(joined) = set.join_next() => match joined {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(e) => return Err(BackendError::other(format!("a download stream failed: {e}")).into()),
            },
            _ = tick.tick() => {
                meter.update(sunk);
                progress(meter.progress(sunk));
            }
        }
    }
    meter.update(sunk);
    progress(meter.progress(sunk));
    Ok(Streamed {
        bytes: sunk - start,
        crc,
    })
}

/// One stream (no range support): skips to `start`, then cuts the body into chunks.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn single(
    http: &reqwest::Client,
    url: &Arc<UrlCell>,
    opts: &DownloadOptions,
    probe: &mut Probe,
    start: u64,
    sink: &mut dyn ChunkSink,
    item: &str,
    progress: ProgressFn<'_>,
) -> Result<Streamed, TransferError> {
    let mut resp = match probe.body.take() {
        Some(r) => r,
        None => {
            let (_, u) = url.get();
            http.get(u)
                .send()
                .await
                .map_err(|e| super::fetch::map_reqwest(&url.describe(), e))?
        }
    };
    let cs = usize::try_from(opts.chunk_size).unwrap_or(usize::MAX);
    let mut meter = Meter::new(item, probe.total, start);
    let (mut pos, mut sunk, mut crc) = (0u64, start, 0u32);
    let mut buf = BytesMut::with_capacity(cs);
    let mut held: Option<Bytes> = None;
    let mut last_tick = std::time::Instant::now();
    while let Some(mut b) = resp
        .chunk()
        .await
        .map_err(|e| super::fetch::map_reqwest(&url.describe(), e))?
    {
        if pos < start {
            let skip = usize::try_from(start - pos)
                .unwrap_or(usize::MAX)
                .min(b.len());
            pos += skip as u64;
            b = b.slice(skip..);
        }
        pos += b.len() as u64;
        crc = crc32c::crc32c_append(crc, &b);
        buf.extend_from_slice(&b);
        while buf.len() >= cs {
            let chunk = buf.split_to(cs).freeze();
            if let Some(prev) = held.replace(chunk) {
                let len = prev.len() as u64;
                sink.put(sunk, prev, false).await?;
                sunk += len;
            }
        }
        if last_tick.elapsed() >= Duration::from_millis(250) {
            last_tick = std::time::Instant::now();
            meter.update(sunk);
            progress(meter.progress(sunk));
        }
    }
    if let Some(t) = probe.total {
        if t != pos {
            return Err(BackendError::transient(
                "download",
                format!("{item}: got {pos} bytes, expected {t}"),
            )
            .into());
        }
    }
    // The last chunk: what is buffered, or the held full chunk when the rest is empty.
    if !buf.is_empty() {
        if let Some(prev) = held.take() {
            let len = prev.len() as u64;
            sink.put(sunk, prev, false).await?;
            sunk += len;
        }
        let rest = buf.freeze();
        let len = rest.len() as u64;
        sink.put(sunk, rest, true).await?;
        sunk += len;
    } else if let Some(prev) = held.take() {
        let len = prev.len() as u64;
        sink.put(sunk, prev, true).await?;
        sunk += len;
    } else {
        sink.put(sunk, Bytes::new(), true).await?;
    }
    meter.update(sunk);
    progress(meter.progress(sunk));
    Ok(Streamed {
        bytes: sunk - start,
        crc,
    })
}

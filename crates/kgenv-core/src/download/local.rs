//! Downloads to a local file: parallel ranged GETs written in place with positional writes
//! (memory: one small buffer per stream), a [`Sidecar`] updated as chunks finish so a later
//! run resumes, then fsync and rename to the final name. One process at a time writes a
//! given file ([`DownloadLock`]).

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::fetch::{fetch_range, Probe, RangeWriter, TransferError, UrlCell};
use super::sidecar::{Ledger, Sidecar};
use super::DownloadOptions;
use crate::backends::Meter;
use crate::backends::{BackendResult, ProgressFn};
use crate::error::BackendError;

const WRITE_BUF: usize = 1 << 20;
const FLUSH_EVERY: u64 = 64 << 20;

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BackendError {
    let context = context.into();
    move |e| BackendError::io(context, e)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> BackendResult<T> + Send + 'static,
) -> BackendResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| BackendError::other(format!("a file task failed: {e}")))?
}

/// The suffix of the lock file a download holds while it writes `<file>.kgenv-partial`.
pub(crate) const LOCK_SUFFIX: &str = ".kgenv-partial.lock";

/// An exclusive `flock` on `<target>.kgenv-partial.lock`, held while a process downloads
/// `target`: a second process downloading the same file (an agent left running by a killed
/// `up` while the next `up` starts another, two `kgenv data pull`s) waits for it instead of
/// writing the same partial file at the same time (truncating it, or writing into the
/// finished file after the first renamed it). The kernel releases the lock when its holder
/// dies, SIGKILL included, so a crashed run never blocks the next one.
///
/// The lock file goes when the partial file does (the download landed, or was dropped);
/// beside a partial file kept for resuming it stays. It is removed while still locked, and a
/// process that locked a file since unlinked tries again, so two holders never coexist.
pub(crate) struct DownloadLock {
    file: File,
    path: PathBuf,
    partial: PathBuf,
}

impl DownloadLock {
    /// Takes the lock of `target`'s download, waiting (after saying so through `progress`)
    /// while another process holds it.
    pub(crate) async fn acquire(
        target: &Path,
        partial: &Path,
        item: &str,
        progress: ProgressFn<'_>,
    ) -> BackendResult<Self> {
        use std::os::unix::fs::MetadataExt;
        let path = with_suffix(target, LOCK_SUFFIX);
        let mut said = false;
        loop {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(io_err(format!("opening {}", path.display())))?;
            let file = match file.try_lock() {
                Ok(()) => file,
                Err(std::fs::TryLockError::WouldBlock) => {
                    if !said {
                        said = true;
                        progress(crate::backends::Progress::Line {
                            stream: crate::backends::Stream::Stderr,
                            line: format!(
                                "{item}: another kgenv process is downloading it here; waiting for it to end"
                            ),
                        });
                    }
                    let p = path.clone();
                    blocking(move || {
                        file.lock()
                            .map_err(io_err(format!("locking {}", p.display())))?;
                        Ok(file)
                    })
                    .await?
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(BackendError::io(format!("locking {}", path.display()), e))
                }
            };
            // Still the file at `path`? Its last holder may have removed it meanwhile.
            let held = file
                .metadata()
                .map_err(io_err(format!("looking at {}", path.display())))?;
            let same = std::fs::metadata(&path)
                .is_ok_and(|m| m.dev() == held.dev() && m.ino() == held.ino());
            if same {
                return Ok(Self {
                    file,
                    path,
                    partial: partial.to_path_buf(),
                });
            }
        }
    }
}

impl Drop for DownloadLock {
    fn drop(&mut self) {
        // Still locked here: a waiter that gets the lock next sees the file is gone.
        if !self.partial.exists() {
            let _ = std::fs::remove_file(&self.path);
        }
        let _ = self.file.unlock();
    }
}

/// Buffers contiguous bytes and writes them at their offset.
pub(crate) struct FileWriter {
    file: Arc<File>,
    path: PathBuf,
    buf: Vec<u8>,
    at: u64,
}

impl FileWriter {
    pub(crate) fn new(file: Arc<File>, path: PathBuf) -> Self {
        Self {
            file,
            path,
            buf: Vec::with_capacity(WRITE_BUF),
            at: 0,
        }
    }

    async fn flush(&mut self) -> BackendResult<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let buf = std::mem::take(&mut self.buf);
        let (file, at, path) = (self.file.clone(), self.at, self.path.clone());
        let mut buf = blocking(move || {
            file.write_all_at(&buf, at)
                .map_err(io_err(format!("writing {}", path.display())))?;
            Ok(buf)
        })
        .await?;
        self.at += buf.len() as u64;
        buf.clear();
        self.buf = buf;
        Ok(())
    }
}

#[async_trait]
impl RangeWriter for FileWriter {
    async fn write(&mut self, offset: u64, data: Bytes) -> BackendResult<()> {
        if !self.buf.is_empty() && self.at + self.buf.len() as u64 != offset {
            self.flush().await?;
        }
        if self.buf.is_empty() {
            self.at = offset;
        }
        self.buf.extend_from_slice(&data);
        if self.buf.len() >= WRITE_BUF {
            self.flush().await?;
        }
        Ok(())
    }
    async fn finish(&mut self) -> BackendResult<()> {
        self.flush().await
    }
}

/// `path` with `suffix` appended to its file name.
pub(crate) fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// What a finished attempt produced: bytes and CRC32C of the whole partial file.
pub(crate) struct Fetched {
    pub bytes: u64,
    pub crc: u32,
    pub resumed: u64,
}

/// Parallel ranged download of the whole object into `partial`.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn ranged(
    http: &reqwest::Client,
    url: &Arc<UrlCell>,
    opts: &DownloadOptions,
    probe: &Probe,
    total: u64,
    partial: &Path,
    side: &Path,
    item: &str,
    progress: ProgressFn<'_>,
) -> Result<Fetched, TransferError> {
    let chunk = opts.chunk_size;
    let validator = probe.validator.clone();
    let partial_len = std::fs::metadata(partial).map(|m| m.len()).ok();
    let resumable = validator.as_ref().and_then(|v| {
        Sidecar::load(side).filter(|s| {
            s.validator == *v
                && s.ledger.total == total
                && s.ledger.chunk_size == chunk
                && partial_len == Some(total)
        })
    });
    let (file, mut ledger) = match resumable {
        Some(s) => {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(partial)
                .map_err(io_err(format!("opening {}", partial.display())))?;
            tracing::info!(file = %partial.display(), done = s.ledger.done_bytes(), "resuming partial download");
            (f, s.ledger)
        }
        None => {
            let f =
                File::create(partial).map_err(io_err(format!("creating {}", partial.display())))?;
            f.set_len(total)
                .map_err(io_err(format!("sizing {}", partial.display())))?;
            (f, Ledger::new(total, chunk))
        }
    };
    let file = Arc::new(file);
    let store = |ledger: &Ledger| -> Option<(Sidecar, PathBuf)> {
        validator
            .as_ref()
            .map(|v| (Sidecar::new(v.clone(), ledger.clone()), side.to_path_buf()))
    };
    if let Some((s, p)) = store(&ledger) {
        blocking(move || {
            s.store(&p)
                .map_err(io_err(format!("writing {}", p.display())))
        })
        .await?;
    }

    let resumed = ledger.done_bytes();
    let counter = Arc::new(AtomicU64::new(resumed));
    let queue: Arc<Mutex<VecDeque<u64>>> = Arc::new(Mutex::new(
        (0..ledger.chunks())
            .filter(|&i| !ledger.is_done(i))
            .collect(),
    ));
    let streams = opts
        .concurrency
        .max(1)
        .min(queue.lock().map(|q| q.len()).unwrap_or(0));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, u32)>();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..streams {
        let (http, url, opts, queue, tx, counter, file) = (
            http.clone(),
            url.clone(),
            opts.clone(),
            queue.clone(),
            tx.clone(),
            counter.clone(),
            file.clone(),
        );
        let (validator, ledger, path) = (
            validator.clone(),
            Ledger::new(total, chunk),
            partial.to_path_buf(),
        );
        set.spawn(async move {
            loop {
                let next = queue.lock().map(|mut q| q.pop_front()).unwrap_or(None);
                let Some(idx) = next else {
                    return Ok::<(), TransferError>(());
                };
                let (s, e) = ledger.range(idx);
                let mut w = FileWriter::new(file.clone(), path.clone());
                let crc = fetch_range(
                    &http,
                    &url,
                    validator.as_deref(),
                    &opts,
                    s,
                    e,
                    &mut w,
                    &counter,
                )
                .await?;
                let _ = tx.send((idx, crc));
            }
        });
    }
    drop(tx);

    let mut meter = Meter::new(item, Some(total), resumed);
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut workers_done = false;
    // Start writeback while the download runs, so the final fsync has little left to do
    // and the disk works in parallel with the network.
    let (mut since_flush, mut flushing) = (0u64, None::<tokio::task::JoinHandle<()>>);
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some((idx, crc)) => {
                    ledger.mark(idx, crc);
                    if let Some((s, p)) = store(&ledger) {
                        blocking(move || s.store(&p).map_err(io_err(format!("writing {}", p.display())))).await?;
                    }
                    let (s, e) = ledger.range(idx);
                    since_flush += e - s;
                    if since_flush >= FLUSH_EVERY && flushing.as_ref().is_none_or(|h| h.is_finished()) {
                        since_flush = 0;
                        let f = file.clone();
                        flushing = Some(tokio::task::spawn_blocking(move || {
                            let _ = f.sync_data();
                        }));
                    }
                }
                None if workers_done => break,
                None => {}
            },
            joined = set.join_next(), if !workers_done => match joined {
                None => workers_done = true,
                Some(Ok(Ok(()))) => {}
                Some(Ok(Err(e))) => {
                    // Chunks other streams finished before this failure are recorded, so
                    // the next run resumes them rather than fetch them again.
                    let mut more = false;
                    while let Ok((idx, crc)) = rx.try_recv() {
                        ledger.mark(idx, crc);
                        more = true;
                    }
                    if let Some((s, p)) = store(&ledger).filter(|_| more) {
                        let _ = blocking(move || s.store(&p).map_err(io_err(format!("writing {}", p.display())))).await;
                    }
                    return Err(e);
                }
                Some(Err(e)) => return Err(BackendError::other(format!("a download stream failed: {e}")).into()),
            },
            _ = tick.tick() => {
                let done = counter.load(Ordering::Relaxed);
                meter.update(done);
                progress(meter.progress(done));
            }
        }
    }
    if let Some(h) = flushing {
        let _ = h.await;
    }
    let done = counter.load(Ordering::Relaxed);
    meter.update(done);
    progress(meter.progress(done));
    let crc = ledger.whole_crc().ok_or_else(|| {
        BackendError::other(format!("{item}: download ended with chunks missing"))
    })?;
    Ok(Fetched {
        bytes: total,
        crc,
        resumed,
    })
}

/// One stream from the start, for servers without range support.
pub(crate) async fn single(
    http: &reqwest::Client,
    url: &Arc<UrlCell>,
    probe: &mut Probe,
    partial: &Path,
    side: &Path,
    item: &str,
    progress: ProgressFn<'_>,
) -> Result<Fetched, TransferError> {
    let _ = std::fs::remove_file(side);
    let mut resp = match probe.body.take() {
        Some(r) => r,
        None => {
            let (_, u) = url.get();
            let r = http
                .get(u)
                .send()
                .await
                .map_err(|e| super::fetch::map_reqwest(&url.describe(), e))?;
            if !r.status().is_success() {
                return Err(BackendError::transient(
                    "download",
                    format!("{}: HTTP {}", url.describe(), r.status()),
                )
                .into());
            }
            r
        }
    };
    let file =
        Arc::new(File::create(partial).map_err(io_err(format!("creating {}", partial.display())))?);
    let mut w = FileWriter::new(file, partial.to_path_buf());
    let mut meter = Meter::new(item, probe.total, 0);
    let (mut pos, mut crc) = (0u64, 0u32);
    let mut last_tick = std::time::Instant::now();
    while let Some(b) = resp
        .chunk()
        .await
        .map_err(|e| super::fetch::map_reqwest(&url.describe(), e))?
    {
        crc = crc32c::crc32c_append(crc, &b);
        pos += b.len() as u64;
        w.write(pos - b.len() as u64, b).await?;
        if last_tick.elapsed() >= Duration::from_millis(250) {
            last_tick = std::time::Instant::now();
            meter.update(pos);
            progress(meter.progress(pos));
        }
    }
    w.finish().await?;
    meter.update(pos);
    progress(meter.progress(pos));
    if let Some(t) = probe.total {
        if t != pos {
            return Err(BackendError::transient(
                "download",
                format!("{item}: got {pos} bytes, expected {t}"),
            )
            .into());
        }
    }
    Ok(Fetched {
        bytes: pos,
        crc,
        resumed: 0,
    })
}

/// Fsyncs `partial`, renames it to `target`, fsyncs the directory and drops the sidecar.
pub(crate) async fn finalize(
    partial: PathBuf,
    side: PathBuf,
    target: PathBuf,
) -> BackendResult<()> {
    blocking(move || {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&partial)
            .map_err(io_err(format!("opening {}", partial.display())))?;
        f.sync_all()
            .map_err(io_err(format!("syncing {}", partial.display())))?;
        std::fs::rename(&partial, &target).map_err(io_err(format!(
            "renaming {} to {}",
            partial.display(),
            target.display()
        )))?;
        if let Some(dir) = target.parent() {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        let _ = std::fs::remove_file(&side);
        Ok(())
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::Progress;
    use std::os::unix::fs::MetadataExt;

    /// A progress callback that forwards lines to a channel.
    fn lines(tx: std::sync::mpsc::Sender<String>) -> impl Fn(Progress) + Send + Sync {
        let tx = Mutex::new(tx);
        move |p| {
            if let Progress::Line { line, .. } = p {
                let _ = tx.lock().map(|t| t.send(line));
            }
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_second_download_of_a_file_waits_for_the_first_and_the_lock_goes_with_the_partial() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("big.bin");
        let partial = super::super::space::partial_path(&target);
        let lock_path = with_suffix(&target, LOCK_SUFFIX);
        std::fs::write(&partial, b"half").expect("a partial file");
        let first = DownloadLock::acquire(&target, &partial, "big.bin", &|_| {})
            .await
            .expect("the first lock");
        assert!(lock_path.exists(), "the lock file is made");

        // A second downloader says it waits, and waits while the first holds the lock.
        let (tx, rx) = std::sync::mpsc::channel();
        let (t, p) = (target.clone(), partial.clone());
        let second = tokio::spawn(async move {
            let say = lines(tx);
            DownloadLock::acquire(&t, &p, "big.bin", &say).await
        });
        let said = tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(10)))
            .await
            .expect("join");
        let said = said.expect("the second downloader says it waits within 10 s");
        assert!(
            said.contains("another kgenv process is downloading it"),
            "{said}"
        );
        assert!(
            !second.is_finished(),
            "it waits while the first holds the lock"
        );

        // The first ends with its partial kept: the lock file stays, the second takes it.
        let held = std::fs::metadata(&lock_path).expect("lock file").ino();
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(10), second)
            .await
            .expect("the second gets the lock once the first lets go")
            .expect("join")
            .expect("the second lock");
        assert_eq!(
            std::fs::metadata(&lock_path).expect("lock file").ino(),
            held,
            "a partial file kept for resuming keeps its lock file"
        );

        // A third waits on the second; the second's download lands (the partial is gone), so
        // it removes the lock file it holds, and the third locks a new one, not the unlinked.
        let (tx, rx) = std::sync::mpsc::channel();
        let (t, p) = (target.clone(), partial.clone());
        let third = tokio::spawn(async move {
            let say = lines(tx);
            DownloadLock::acquire(&t, &p, "big.bin", &say).await
        });
        tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(10)))
            .await
            .expect("join")
            .expect("the third downloader waits");
        std::fs::rename(&partial, &target).expect("the download lands");
        drop(second);
        let third = tokio::time::timeout(Duration::from_secs(10), third)
            .await
            .expect("the third gets the lock")
            .expect("join")
            .expect("the third lock");
        let now = std::fs::metadata(&lock_path).expect("the third's lock file");
        assert_eq!(
            (now.dev(), now.ino()),
            {
                let m = third.file.metadata().expect("held file");
                (m.dev(), m.ino())
            },
            "the third holds the lock file at the path, not the one removed"
        );
        drop(third);
        assert!(
            !lock_path.exists(),
            "no partial file, no lock file: nothing is left beside the landed file"
        );
    }
}

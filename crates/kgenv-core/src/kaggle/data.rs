//! [`KaggleData`]: the real Kaggle data work done from this process. Lists through
//! [`KaggleClient`], downloads with the [`Downloader`], and lands files in a local directory
//! (including a gcsfuse mount) or straight in `gs://bucket/prefix` through a GCS resumable
//! upload, with nothing on local disk but a small resume record.
//!
//! This file knows nothing of remote hosts: its [`Kaggle`](crate::backends::Kaggle)
//! implementation, which hands the work to a host's data agent, is in
//! [`super::backend`], above both this file and [`super::agent`] (whose server side runs
//! this code on the host).
//!
//! Kaggle wraps large files in a zip (`train.csv` arrives as `train.csv.zip`, which only the
//! signed URL's name tells); the landed name follows the URL, as in the official client.
//! A done-marker under `<dir>/.kgenv/done/` (or object metadata on GCS) remembers which
//! listed file a landed or extracted file stands for, so `present` answers for both.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::client::KaggleClient;
use crate::backends::kaggle::{DataFile, DestSpace, FetchOptions};
use crate::backends::{BackendResult, Progress, ProgressFn, Stream};
use crate::download::{self, checksum, ChunkSink, DownloadOptions, Downloader, TransferError};
use crate::error::BackendError;
use crate::gcs::{GcsClient, GsPath, ResumableUpload, SavedUpload};

/// Where files land.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    /// A directory.
    Local(PathBuf),
    /// A bucket and prefix.
    Gs(GsPath),
}

impl Dest {
    /// `gs://bucket/prefix` or a directory.
    pub fn parse(s: &str) -> BackendResult<Self> {
        if s.starts_with("gs://") {
            return GsPath::parse(s)
                .map(Self::Gs)
                .ok_or_else(|| BackendError::InvalidArgument {
                    resource: s.to_string(),
                    message: "a bucket destination looks like gs://bucket/prefix".into(),
                });
        }
        if s.is_empty() {
            return Err(BackendError::InvalidArgument {
                resource: "dest".into(),
                message: "is empty".into(),
            });
        }
        Ok(Self::Local(PathBuf::from(s)))
    }
}

/// A listed name as a relative path that cannot leave the destination.
pub fn safe_relative(name: &str) -> BackendResult<PathBuf> {
    let mut out = PathBuf::new();
    for part in name.split(['/', '\\']) {
        match part {
            "" | "." => {}
            ".." => {
                return Err(BackendError::InvalidArgument {
                    resource: format!("file `{name}`"),
                    message: "its name climbs out of the destination".into(),
                })
            }
            p => out.push(p),
        }
    }
    if out.as_os_str().is_empty() || out.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(BackendError::InvalidArgument {
            resource: format!("file `{name}`"),
            message: "not a usable file name".into(),
        });
    }
    Ok(out)
}

/// The name a file lands under: the listed path, with the `.zip` Kaggle may have wrapped it
/// in (seen in the signed URL's last path segment).
pub fn landed_name(listed: &str, url: &reqwest::Url) -> String {
    let base = listed.rsplit('/').next().unwrap_or(listed);
    let url_last = url
        .path_segments()
        .and_then(|mut s| s.next_back())
        .unwrap_or_default();
    if url_last == format!("{base}.zip") || url_last == format!("{}.zip", percent_encode_min(base))
    {
        format!("{listed}.zip")
    } else {
        listed.to_string()
    }
}

fn percent_encode_min(s: &str) -> String {
    let mut u = reqwest::Url::parse("http://x/").expect("static URL parses");
    u.path_segments_mut().expect("http URL has a path").push(s);
    u.path().trim_start_matches('/').to_string()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct DoneMarker {
    listed_size: u64,
    landed: String,
    bytes: u64,
    crc32c: u32,
    #[serde(default)]
    extracted: Vec<String>,
}

fn marker_path(dir: &Path, rel: &Path) -> PathBuf {
    let mut p = dir.join(".kgenv").join("done").join(rel).into_os_string();
    p.push(".json");
    PathBuf::from(p)
}

/// The resume record of a `gs://` upload (mode 0600: the session URI is a capability).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct UploadState {
    validator: String,
    total: u64,
    #[serde(flatten)]
    saved: SavedUpload,
}

fn upload_state_path(gs: &GsPath, object: &str) -> PathBuf {
    use sha2::Digest;
    let key = hex::encode(sha2::Sha256::digest(format!("gs://{}/{object}", gs.bucket)));
    crate::paths::state_dir()
        .join("uploads")
        .join(format!("{}.json", &key[..32]))
}

/// Saves the upload's state after every chunk, so another run continues the session.
struct RecordingSink<'a> {
    up: &'a mut ResumableUpload,
    state: PathBuf,
    validator: Option<String>,
    total: u64,
}

#[async_trait]
impl ChunkSink for RecordingSink<'_> {
    async fn put(&mut self, offset: u64, data: bytes::Bytes, last: bool) -> BackendResult<()> {
        // Recorded BEFORE the chunk goes out: where the upload stands, and where it will
        // stand if the server takes this chunk. A resumed run asks the server which.
        if let Some(v) = &self.validator {
            let persisted = self.up.persisted();
            let skip = usize::try_from(persisted.saturating_sub(offset))
                .unwrap_or(usize::MAX)
                .min(data.len());
            let rest = &data[skip..];
            let s = UploadState {
                validator: v.clone(),
                total: self.total,
                saved: SavedUpload {
                    session: self.up.session_uri().into(),
                    persisted,
                    crc: self.up.crc32c(),
                    next: (!rest.is_empty()).then(|| {
                        (
                            rest.len() as u64,
                            crc32c::crc32c_append(self.up.crc32c(), rest),
                        )
                    }),
                },
            };
            let bytes = serde_json::to_vec(&s).map_err(|e| BackendError::other(e.to_string()))?;
            let path = self.state.clone();
            tokio::task::spawn_blocking(move || crate::paths::write_atomic(&path, &bytes, 0o600))
                .await
                .map_err(|e| BackendError::other(e.to_string()))?
                .map_err(|e| BackendError::io(format!("writing {}", self.state.display()), e))?;
        }
        self.up.put_chunk(offset, data, last).await
    }
}

/// The real Kaggle backend for a local directory or a `gs://` destination.
#[derive(Debug, Clone)]
pub struct KaggleData {
    client: KaggleClient,
    dl: Downloader,
    gcs: Option<GcsClient>,
}

impl KaggleData {
    /// A backend using `client` and a downloader with `opts`. A `gs://` destination uses
    /// [`GcsClient::from_env`] unless [`Self::with_gcs`] gives one.
    pub fn new(client: KaggleClient, opts: DownloadOptions) -> BackendResult<Self> {
        Ok(Self {
            client,
            dl: Downloader::new(opts)?,
            gcs: None,
        })
    }

    /// A backend configured from the environment like the official client.
    pub fn from_env(opts: DownloadOptions) -> BackendResult<Self> {
        Self::new(KaggleClient::from_env()?, opts)
    }

    /// Uses `gcs` for `gs://` destinations.
    #[must_use]
    pub fn with_gcs(mut self, gcs: GcsClient) -> Self {
        self.gcs = Some(gcs);
        self
    }

    /// The API client.
    pub fn client(&self) -> &KaggleClient {
        &self.client
    }

    /// The downloader's settings (a host running the agent gets the same).
    pub(crate) fn download_options(&self) -> &DownloadOptions {
        self.dl.options()
    }

    fn gcs(&self) -> BackendResult<GcsClient> {
        match &self.gcs {
            Some(g) => Ok(g.clone()),
            None => GcsClient::from_env(),
        }
    }

    async fn present_local(dir: &Path, file: &str) -> BackendResult<Option<u64>> {
        let rel = safe_relative(file)?;
        if let Ok(bytes) = tokio::fs::read(marker_path(dir, &rel)).await {
            if let Ok(m) = serde_json::from_slice::<DoneMarker>(&bytes) {
                let intact = if m.extracted.is_empty() {
                    tokio::fs::metadata(dir.join(&m.landed))
                        .await
                        .is_ok_and(|md| md.len() == m.bytes)
                } else {
                    let mut all = true;
                    for f in &m.extracted {
                        all &= tokio::fs::metadata(dir.join(f)).await.is_ok();
                    }
                    all
                };
                if intact {
                    return Ok(Some(m.listed_size));
                }
            }
        }
        // A file put there by other means counts when its size is right (the caller compares).
        Ok(tokio::fs::metadata(dir.join(&rel))
            .await
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len()))
    }

    async fn fetch_local(
        &self,
        competition: &str,
        file: &DataFile,
        dir: &Path,
        extract: bool,
        progress: ProgressFn<'_>,
    ) -> BackendResult<u64> {
        let rel = safe_relative(&file.name)?;
        let url = self.client.data_file_url(competition, &file.name).await?;
        let landed = safe_relative(&landed_name(&file.name, &url))?;
        let target = dir.join(&landed);
        let source = self.client.file_source(competition, &file.name, Some(url));
        let got = self
            .dl
            .to_file(source, &target, &file.name, progress)
            .await?;
        let mut marker = DoneMarker {
            listed_size: file.size,
            landed: landed.to_string_lossy().into_owned(),
            bytes: got.bytes,
            crc32c: got.crc32c,
            extracted: Vec::new(),
        };
        if extract && target.extension().is_some_and(|e| e == "zip") {
            let into = target.parent().unwrap_or(dir).to_path_buf();
            progress(Progress::Line {
                stream: Stream::Stdout,
                line: format!("extracting {}", landed.display()),
            });
            let (files, _) = download::extract::extract_zip(&target, &into).await?;
            let base = into
                .strip_prefix(dir)
                .unwrap_or(Path::new(""))
                .to_path_buf();
            marker.extracted = files
                .iter()
                .map(|f| base.join(f).to_string_lossy().into_owned())
                .collect();
            tokio::fs::remove_file(&target)
                .await
                .map_err(|e| BackendError::io(format!("removing {}", target.display()), e))?;
        }
        let mpath = marker_path(dir, &rel);
        let bytes = serde_json::to_vec(&marker).map_err(|e| BackendError::other(e.to_string()))?;
        tokio::task::spawn_blocking(move || crate::paths::write_atomic(&mpath, &bytes, 0o644))
            .await
            .map_err(|e| BackendError::other(e.to_string()))?
            .map_err(|e| BackendError::io("writing the done marker", e))?;
        Ok(got.bytes)
    }

    async fn present_gs(gcs: &GcsClient, gs: &GsPath, file: &str) -> BackendResult<Option<u64>> {
        for name in [gs.object(file), format!("{}.zip", gs.object(file))] {
            if let Some(o) = gcs.get_object(&gs.bucket, &name).await? {
                let listed = o
                    .metadata
                    .get("kgenv-listed-size")
                    .and_then(|s| s.parse().ok());
                let ours = o
                    .metadata
                    .get("kgenv-source-file")
                    .is_some_and(|f| f == file);
                match (
                    name.ends_with(".zip") && !file.ends_with(".zip"),
                    ours,
                    listed,
                ) {
                    (true, true, Some(n)) => return Ok(Some(n)),
                    (true, _, _) => {}
                    (false, true, Some(n)) => return Ok(Some(n)),
                    (false, _, _) => return Ok(Some(o.size)),
                }
            }
        }
        Ok(None)
    }

    async fn fetch_gs(
        &self,
        competition: &str,
        file: &DataFile,
        gs: &GsPath,
        extract: bool,
        progress: ProgressFn<'_>,
    ) -> BackendResult<u64> {
        if extract {
            return Err(BackendError::InvalidArgument {
                resource: gs.to_string(),
                message: "zip extraction needs a directory destination; unpack from the bucket's gcsfuse mount instead".into(),
            });
        }
        let gcs = self.gcs()?;
        let url = self.client.data_file_url(competition, &file.name).await?;
        let object = gs.object(&landed_name(&file.name, &url));
        let state_path = upload_state_path(gs, &object);
        let metadata: BTreeMap<String, String> = [
            ("kgenv-source-file".to_string(), file.name.clone()),
            ("kgenv-listed-size".to_string(), file.size.to_string()),
            ("kgenv-competition".to_string(), competition.to_string()),
        ]
        .into();
        let mut first = Some(url);
        let attempts = self.dl.options().file_attempts;
        let mut last = None;
        for attempt in 1..=attempts {
            let source = self
                .client
                .file_source(competition, &file.name, first.take());
            let transfer = self.dl.open(source).await?;
            let total = transfer.size();
            let validator = transfer.validator().map(str::to_string);
            let saved: Option<UploadState> = std::fs::read(&state_path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            let mut resumed = None;
            if let (Some(s), Some(v), Some(t)) = (saved, &validator, total) {
                if s.validator == *v && s.total == t && transfer.ranges() {
                    match gcs.resume_upload(&gs.bucket, &object, &s.saved).await {
                        Ok(up) => resumed = Some(up),
                        Err(e) => {
                            tracing::info!(error = %e, "cannot resume the upload of {object}; starting it over")
                        }
                    }
                }
            }
            let mut up = match resumed {
                Some(up) => {
                    progress(Progress::Line {
                        stream: Stream::Stdout,
                        line: format!("{}: resuming upload at byte {}", file.name, up.persisted()),
                    });
                    up
                }
                None => {
                    gcs.start_upload(&gs.bucket, &object, total, &metadata)
                        .await?
                }
            };
            let start = up.persisted();
            let mut sink = RecordingSink {
                up: &mut up,
                state: state_path.clone(),
                validator: validator.clone(),
                total: total.unwrap_or(0),
            };
            let announced = transfer.announced();
            match transfer
                .stream_to(start, &mut sink, &file.name, progress)
                .await
            {
                Ok(streamed) => {
                    let _ = std::fs::remove_file(&state_path);
                    let uploaded = up.object().map(|o| (o.size, o.crc32c()));
                    let crc = up.crc32c();
                    let source_ok = download::verify_announced(announced, crc);
                    let gcs_ok = match uploaded {
                        Some((_, Some(g))) if g != crc => Err(BackendError::transient(
                            "storage",
                            format!(
                                "GCS stored CRC32C {} but kgenv sent {}",
                                checksum::encode_crc32c(g),
                                checksum::encode_crc32c(crc)
                            ),
                        )),
                        _ => Ok(()),
                    };
                    match source_ok.and(gcs_ok) {
                        Ok(_) => return Ok(streamed.bytes),
                        Err(e) => {
                            progress(Progress::Line {
                                stream: Stream::Stderr,
                                line: format!(
                                    "{}: {e}; uploading it again (attempt {attempt} of {attempts})",
                                    file.name
                                ),
                            });
                            let _ = gcs.delete_object(&gs.bucket, &object).await;
                            last = Some(e);
                        }
                    }
                }
                Err(TransferError::Changed) => {
                    let _ = std::fs::remove_file(&state_path);
                    last = Some(BackendError::transient(
                        "download",
                        format!("{} kept changing on the server", file.name),
                    ));
                }
                Err(TransferError::Backend(e)) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| BackendError::other(format!("{}: upload failed", file.name))))
    }

    /// The competition's files, as [`Kaggle::list_files`](crate::backends::Kaggle::list_files) answers them.
    pub(crate) async fn list(&self, competition: &str) -> BackendResult<Vec<DataFile>> {
        self.client.list_files(competition).await
    }

    /// Whether `file` is fully at `dest`, as [`Kaggle::present`](crate::backends::Kaggle::present) answers it here.
    pub(crate) async fn present_at(&self, dest: &str, file: &str) -> BackendResult<Option<u64>> {
        match Dest::parse(dest)? {
            Dest::Local(dir) => Self::present_local(&dir, file).await,
            Dest::Gs(gs) => Self::present_gs(&self.gcs()?, &gs, file).await,
        }
    }

    /// [`Self::present_at`] with no Kaggle client, for a caller that only looks (the data
    /// agent asked by `plan` or `status`, which send no credentials).
    pub(crate) async fn present_without_client(
        dest: &str,
        file: &str,
    ) -> BackendResult<Option<u64>> {
        match Dest::parse(dest)? {
            Dest::Local(dir) => Self::present_local(&dir, file).await,
            Dest::Gs(gs) => Self::present_gs(&GcsClient::from_env()?, &gs, file).await,
        }
    }

    /// Free space at `dest` and what partial downloads of `files` hold there, as
    /// [`Kaggle::space`](crate::backends::Kaggle::space) answers it here (`None` for
    /// `gs://`: a bucket has no size to run out of). Needs no Kaggle credentials.
    pub(crate) async fn space_at(dest: &str, files: &[String]) -> BackendResult<Option<DestSpace>> {
        let dir = match Dest::parse(dest)? {
            Dest::Local(dir) => dir,
            Dest::Gs(_) => return Ok(None),
        };
        // A file Kaggle wraps lands (and is partial) under `<name>.zip`.
        let mut targets = Vec::new();
        for f in files {
            let t = dir.join(safe_relative(f)?);
            let mut zipped = t.clone().into_os_string();
            zipped.push(".zip");
            targets.push(t);
            targets.push(PathBuf::from(zipped));
        }
        tokio::task::spawn_blocking(move || {
            let (at, free) = download::space::free_at(&dir)?;
            Ok(Some(DestSpace {
                path: at.display().to_string(),
                free,
                held: download::space::held_by_partials(targets.iter().map(PathBuf::as_path)),
            }))
        })
        .await
        .map_err(|e| BackendError::other(format!("free-space task failed: {e}")))?
    }

    /// Fetches `file` as `opts` say, from here, as
    /// [`Kaggle::fetch`](crate::backends::Kaggle::fetch) does it.
    pub(crate) async fn fetch_to(
        &self,
        competition: &str,
        file: &DataFile,
        opts: &FetchOptions,
        progress: ProgressFn<'_>,
    ) -> BackendResult<u64> {
        match Dest::parse(&opts.dest)? {
            Dest::Local(dir) => {
                self.fetch_local(competition, file, &dir, opts.extract, progress)
                    .await
            }
            Dest::Gs(gs) => {
                self.fetch_gs(competition, file, &gs, opts.extract, progress)
                    .await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_inside() {
        assert_eq!(
            safe_relative("train/a.png").expect("ok"),
            PathBuf::from("train/a.png")
        );
        assert_eq!(safe_relative("/x//y").expect("ok"), PathBuf::from("x/y"));
        assert!(safe_relative("../etc/passwd").is_err());
        assert!(safe_relative("a/../../b").is_err());
        assert!(safe_relative("").is_err());
    }

    #[test]
    fn zip_wrapping_follows_the_url() {
        let u = |s: &str| reqwest::Url::parse(s).expect("url");
        assert_eq!(
            landed_name("dir/train.csv", &u("http://h/s/c/dir/train.csv.zip?sig=1")),
            "dir/train.csv.zip"
        );
        assert_eq!(
            landed_name("dir/train.csv", &u("http://h/s/c/dir/train.csv?sig=1")),
            "dir/train.csv"
        );
        assert_eq!(
            landed_name("my file.csv", &u("http://h/s/my%20file.csv.zip")),
            "my file.csv.zip"
        );
        assert_eq!(landed_name("a.csv", &u("http://h/s/other.bin")), "a.csv");
    }
}

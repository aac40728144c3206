//! Unpacks the `.zip` files Kaggle serves (a large `train.csv` arrives as `train.csv.zip`)
//! into the destination directory, refusing entries that would land outside it, each entry
//! written to a temporary name and renamed so an interrupted extraction leaves no half file
//! under a real name.

use std::path::{Path, PathBuf};

use crate::backends::BackendResult;
use crate::error::BackendError;

/// Extracts `archive` into `dir`; returns the files written (relative to `dir`) and their
/// total size.
pub async fn extract_zip(archive: &Path, dir: &Path) -> BackendResult<(Vec<PathBuf>, u64)> {
    let (archive, dir) = (archive.to_path_buf(), dir.to_path_buf());
    tokio::task::spawn_blocking(move || extract_blocking(&archive, &dir))
        .await
        .map_err(|e| BackendError::other(format!("extraction task failed: {e}")))?
}

fn extract_blocking(archive: &Path, dir: &Path) -> BackendResult<(Vec<PathBuf>, u64)> {
    let ctx = |what: &str| format!("{what} {}", archive.display());
    let file = std::fs::File::open(archive).map_err(|e| BackendError::io(ctx("opening"), e))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(|e| {
        BackendError::InvalidArgument {
            resource: archive.display().to_string(),
            message: format!("not a readable zip: {e}"),
        }
    })?;
    let mut written = Vec::new();
    let mut bytes = 0u64;
    for i in 0..zip.len() {
        let mut entry = zip.by_index(i).map_err(|e| BackendError::InvalidArgument {
            resource: archive.display().to_string(),
            message: format!("entry {i}: {e}"),
        })?;
        let Some(rel) = entry.enclosed_name() else {
            return Err(BackendError::InvalidArgument {
                resource: archive.display().to_string(),
                message: format!(
                    "entry `{}` would land outside {}",
                    entry.name().unwrap_or_default(),
                    dir.display()
                ),
            });
        };
        let out = dir.join(&rel);
        if entry.is_dir() {
            std::fs::create_dir_all(&out)
                .map_err(|e| BackendError::io(format!("creating {}", out.display()), e))?;
            continue;
        }
        if let Some(parent) = out.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| BackendError::io(format!("creating {}", parent.display()), e))?;
        }
        let tmp = super::local::with_suffix(&out, ".kgenv-extract");
        let mut f = std::fs::File::create(&tmp)
            .map_err(|e| BackendError::io(format!("creating {}", tmp.display()), e))?;
        bytes += std::io::copy(&mut entry, &mut f).map_err(|e| {
            BackendError::io(
                format!("extracting {} from {}", rel.display(), archive.display()),
                e,
            )
        })?;
        f.sync_all()
            .map_err(|e| BackendError::io(format!("syncing {}", tmp.display()), e))?;
        std::fs::rename(&tmp, &out)
            .map_err(|e| BackendError::io(format!("renaming {}", tmp.display()), e))?;
        written.push(rel);
    }
    Ok((written, bytes))
}

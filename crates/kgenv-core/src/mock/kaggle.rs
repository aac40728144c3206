//! The mock Kaggle backend: competitions with files, and a record of what landed where.
//!
//! It follows the real backend's rules for what a fetch leaves behind, so a step's
//! choices can be checked without a network: a file in [`WorldState::zipped`] lands as its
//! archive, or — when the fetch asks to extract — as the archive's entries with the
//! archive gone; extraction into `gs://` is refused. The choice itself is recorded in
//! [`WorldState::extract_requested`].

use async_trait::async_trait;

use super::{MockWorld, WorldState};
use crate::backends::kaggle::{DataFile, FetchOptions, Kaggle};
use crate::backends::{BackendResult, Progress, ProgressFn};
use crate::error::BackendError;

pub(super) struct MockKaggle(pub(super) MockWorld);

/// Records in `s` what fetching `file` of `competition` with `opts` leaves at the
/// destination (see the module docs).
fn land(s: &mut WorldState, competition: &str, file: &DataFile, opts: &FetchOptions) {
    let dest = &opts.dest;
    let at = |name: &str| format!("{dest}/{name}");
    let Some(entries) = s.zipped.get(&format!("{competition}/{}", file.name)) else {
        s.data_files.insert(at(&file.name), file.size);
        return;
    };
    let archive = if file.name.ends_with(".zip") {
        file.name.clone()
    } else {
        format!("{}.zip", file.name)
    };
    if !opts.extract {
        s.data_files.insert(at(&archive), file.size);
        return;
    }
    // Entries land next to the archive, which is removed once unpacked.
    let dir = file.name.rsplit_once('/').map(|(d, _)| d);
    let entries: Vec<(String, u64)> = entries
        .iter()
        .map(|e| match dir {
            Some(d) => (at(&format!("{d}/{}", e.name)), e.size),
            None => (at(&e.name), e.size),
        })
        .collect();
    s.data_files.extend(entries);
    s.data_files.remove(&at(&archive));
}

#[async_trait]
impl Kaggle for MockKaggle {
    async fn list_files(&self, competition: &str) -> BackendResult<Vec<DataFile>> {
        self.0
            .call("kaggle.list_files", competition, false, |s| {
                s.competitions
                    .get(competition)
                    .cloned()
                    .ok_or_else(|| BackendError::NotFound {
                        resource: format!("competition {competition}"),
                    })
            })
            .await
    }

    async fn present(&self, dest: &str, file: &str) -> BackendResult<Option<u64>> {
        let k = format!("{dest}/{file}");
        self.0
            .call("kaggle.present", &k, false, |s| {
                Ok(s.landed.get(&k).copied())
            })
            .await
    }

    async fn fetch(
        &self,
        competition: &str,
        file: &DataFile,
        opts: &FetchOptions,
        progress: ProgressFn<'_>,
    ) -> BackendResult<u64> {
        let k = format!("{}/{}", opts.dest, file.name);
        let size = file.size;
        let written = self
            .0
            .call("kaggle.fetch", &k, true, |s| {
                if !s.competitions.contains_key(competition) {
                    return Err(BackendError::NotFound {
                        resource: format!("competition {competition}"),
                    });
                }
                if opts.extract && opts.dest.starts_with("gs://") {
                    return Err(BackendError::InvalidArgument {
                        resource: opts.dest.clone(),
                        message: "zip extraction needs a directory destination".into(),
                    });
                }
                if opts.extract {
                    s.extract_requested.insert(k.clone());
                }
                land(s, competition, file, opts);
                s.landed.insert(k.clone(), size);
                Ok(size)
            })
            .await?;
        progress(Progress::Bytes {
            item: file.name.clone(),
            done: written,
            total: Some(size),
        });
        Ok(written)
    }
}

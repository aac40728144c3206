//! The mock Kaggle backend: competitions with files, and a record of what landed where.

use async_trait::async_trait;

use super::MockWorld;
use crate::backends::kaggle::{DataFile, Kaggle};
use crate::backends::{BackendResult, Progress, ProgressFn};
use crate::error::BackendError;

pub(super) struct MockKaggle(pub(super) MockWorld);

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
        dest: &str,
        progress: ProgressFn<'_>,
    ) -> BackendResult<u64> {
        let k = format!("{dest}/{}", file.name);
        let size = file.size;
        let written = self
            .0
            .call("kaggle.fetch", &k, true, |s| {
                if !s.competitions.contains_key(competition) {
                    return Err(BackendError::NotFound {
                        resource: format!("competition {competition}"),
                    });
                }
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

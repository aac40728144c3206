//! The real [`Kaggle`] backend as steps and the pull see it: [`KaggleData`] working from
//! this process, handing itself to a host's data agent for [`Kaggle::on_host`], and
//! [`LazyKaggle`], which builds one from the environment on first use.
//!
//! This file sits above [`super::data`] (the local and `gs://` work) and [`super::agent`]
//! (whose server runs that work on a host): it is the one place that joins them, so
//! neither needs to import the other.

use std::sync::Arc;

use async_trait::async_trait;

use super::agent::{AgentCommand, RemoteKaggle};
use super::data::KaggleData;
use crate::backends::kaggle::{DataFile, DestSpace, FetchOptions, Kaggle};
use crate::backends::{BackendResult, ProgressFn, Remote};
use crate::download::DownloadOptions;

#[async_trait]
impl Kaggle for KaggleData {
    async fn list_files(&self, competition: &str) -> BackendResult<Vec<DataFile>> {
        self.list(competition).await
    }

    async fn present(&self, dest: &str, file: &str) -> BackendResult<Option<u64>> {
        self.present_at(dest, file).await
    }

    async fn fetch(
        &self,
        competition: &str,
        file: &DataFile,
        opts: &FetchOptions,
        progress: ProgressFn<'_>,
    ) -> BackendResult<u64> {
        self.fetch_to(competition, file, opts, progress).await
    }

    async fn space(&self, dest: &str, files: &[String]) -> BackendResult<Option<DestSpace>> {
        KaggleData::space_at(dest, files).await
    }

    fn on_host(&self, host: Arc<dyn Remote>) -> BackendResult<Option<Arc<dyn Kaggle>>> {
        let remote = RemoteKaggle::new(host, self.client(), AgentCommand::current()?)
            .download(self.download_options().clone());
        Ok(Some(Arc::new(remote)))
    }

    fn observer_on_host(&self, host: Arc<dyn Remote>) -> BackendResult<Option<Arc<dyn Kaggle>>> {
        let remote = RemoteKaggle::new(host, self.client(), AgentCommand::current()?)
            .download(self.download_options().clone())
            .observe_only();
        Ok(Some(Arc::new(remote)))
    }
}

/// A [`KaggleData`] configured from the environment on first use, so a program can build
/// its backends before knowing whether a data step will run (missing Kaggle credentials are
/// reported by the first call, not at start-up).
pub struct LazyKaggle {
    opts: DownloadOptions,
    inner: tokio::sync::OnceCell<KaggleData>,
}

impl std::fmt::Debug for LazyKaggle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyKaggle")
            .field("ready", &self.inner.initialized())
            .finish_non_exhaustive()
    }
}

impl LazyKaggle {
    /// A lazy backend with downloader settings `opts`.
    pub fn new(opts: DownloadOptions) -> Self {
        Self {
            opts,
            inner: tokio::sync::OnceCell::new(),
        }
    }

    async fn get(&self) -> BackendResult<&KaggleData> {
        self.inner
            .get_or_try_init(|| async { KaggleData::from_env(self.opts.clone()) })
            .await
    }
}

#[async_trait]
impl Kaggle for LazyKaggle {
    async fn list_files(&self, competition: &str) -> BackendResult<Vec<DataFile>> {
        self.get().await?.list_files(competition).await
    }

    async fn present(&self, dest: &str, file: &str) -> BackendResult<Option<u64>> {
        self.get().await?.present(dest, file).await
    }

    async fn fetch(
        &self,
        competition: &str,
        file: &DataFile,
        opts: &FetchOptions,
        progress: ProgressFn<'_>,
    ) -> BackendResult<u64> {
        self.get()
            .await?
            .fetch(competition, file, opts, progress)
            .await
    }

    async fn space(&self, dest: &str, files: &[String]) -> BackendResult<Option<DestSpace>> {
        // Local free space needs no credentials: do not resolve them for it.
        KaggleData::space_at(dest, files).await
    }

    fn on_host(&self, host: Arc<dyn Remote>) -> BackendResult<Option<Arc<dyn Kaggle>>> {
        // Credentials are needed to forward them: resolve them now (synchronously cheap).
        let data = match self.inner.get() {
            Some(d) => d.clone(),
            None => KaggleData::from_env(self.opts.clone())?,
        };
        data.on_host(host)
    }

    fn observer_on_host(&self, host: Arc<dyn Remote>) -> BackendResult<Option<Arc<dyn Kaggle>>> {
        let data = match self.inner.get() {
            Some(d) => d.clone(),
            None => KaggleData::from_env(self.opts.clone())?,
        };
        data.observer_on_host(host)
    }
}

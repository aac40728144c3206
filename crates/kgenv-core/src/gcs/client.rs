//! [`GcsClient`]: where requests go (Google or the emulator), how they authenticate, and
//! the [`Storage`] calls plus object metadata and content, all on the shared
//! [`Transport`] with its retries.
//!
//! Every JSON API call is retried like the other clients' calls ([`RETRY`]). Two of them
//! are not idempotent in their answers, and read a retry's answer accordingly: a bucket
//! insert answered 409 after an attempt that may have landed checks whether the bucket is
//! the one it asked for (then it is created, not a conflict), and a delete answered 404
//! after such an attempt has done its work. The resumable upload's chunk PUTs are not
//! retried here: [`super::upload`] resumes them from the server's own account.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use reqwest::Url;
use serde::de::DeserializeOwned;

use super::api;
use super::errors::{status_error, SERVICE};
use super::model::{Bucket, NewBucket, ObjectInfo, ObjectSizes};
use crate::backends::storage::{BucketInfo, BucketUsage, Storage};
use crate::backends::BackendResult;
use crate::error::BackendError;
use crate::google_auth;
use crate::http::{Request, RetryPolicy, TokenSource, Transport, TransportConfig};

/// Storage's retry policy: exponential backoff from 1 s to 32 s with full jitter, at most
/// 10 retries, none starting past 120 s (the deadline of Google's storage client libraries).
pub const RETRY: RetryPolicy =
    RetryPolicy::new(Duration::from_secs(1), Duration::from_secs(32), 10)
        .with_budget(Duration::from_secs(120));

const GOOGLE: &str = "https://storage.googleapis.com/";

/// A GCS JSON API client; cheap to clone. Implements [`crate::backends::Storage`].
#[derive(Clone)]
pub struct GcsClient {
    transport: Transport,
    emulated: bool,
}

impl std::fmt::Debug for GcsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let auth = match self.transport.auth() {
            TokenSource::None => "none (emulator)",
            TokenSource::Static(_) => "GOOGLE_OAUTH_ACCESS_TOKEN",
            TokenSource::Basic { .. } => "HTTP Basic",
            TokenSource::Provider(_) => "application default credentials",
        };
        f.debug_struct("GcsClient")
            .field("base", &self.transport.base().as_str())
            .field("auth", &auth)
            .finish()
    }
}

impl GcsClient {
    /// A client configured from the environment (see the module docs).
    pub fn from_env() -> BackendResult<Self> {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        if let Some(host) = var("STORAGE_EMULATOR_HOST") {
            return Self::emulator(&host);
        }
        let auth = google_auth::lazy_token_source(SERVICE, google_auth::DEVSTORAGE_FULL_CONTROL);
        Self::build(google_base()?, auth, false)
    }

    /// A client for an emulator at `host` (`127.0.0.1:4443` or a URL), without credentials.
    pub fn emulator(host: &str) -> BackendResult<Self> {
        let with_scheme = if host.contains("://") {
            host.to_string()
        } else {
            format!("http://{host}")
        };
        let base = Url::parse(&with_scheme).map_err(|e| BackendError::InvalidArgument {
            resource: "STORAGE_EMULATOR_HOST".into(),
            message: format!("`{host}` is not a host:port or URL: {e}"),
        })?;
        Self::build(base, TokenSource::None, true)
    }

    /// A client for real GCS with a static access token.
    pub fn with_token(token: impl Into<String>) -> BackendResult<Self> {
        Self::build(google_base()?, TokenSource::bearer(&token.into()), false)
    }

    /// The same client with another retry policy (default [`RETRY`]).
    #[must_use]
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.transport = self.transport.with_retry_policy(policy);
        self
    }

    fn build(base: Url, auth: TokenSource, emulated: bool) -> BackendResult<Self> {
        let http = crate::http::build_client(
            SERVICE,
            crate::http::client_builder(base.as_str())
                .connect_timeout(Duration::from_secs(30))
                .read_timeout(Duration::from_secs(300))
                .redirect(reqwest::redirect::Policy::none()),
        )?;
        let transport = Transport::new(
            http,
            TransportConfig {
                service: SERVICE,
                base,
                auth,
                retry: RETRY,
                connect_hint: None,
            },
        );
        Ok(Self {
            transport,
            emulated,
        })
    }

    /// Whether requests go to an emulator (`STORAGE_EMULATOR_HOST`).
    pub fn is_emulated(&self) -> bool {
        self.emulated
    }

    pub(super) fn base(&self) -> &Url {
        self.transport.base()
    }

    pub(super) fn transport(&self) -> &Transport {
        &self.transport
    }

    /// A JSON call, retried; error statuses typed.
    pub(super) async fn json<T: DeserializeOwned + Send>(&self, req: &Request) -> BackendResult<T> {
        self.transport
            .call(req, |r| {
                if r.status.is_success() {
                    r.json(&req.what, "GCS")
                } else {
                    Err(status_error(&r, &req.what))
                }
            })
            .await
    }

    /// A delete, retried: 404 after an attempt that may have landed is success.
    async fn delete(&self, req: &Request) -> BackendResult<()> {
        self.transport
            .call_numbered(req, |r, attempt| {
                if r.status.is_success() || (attempt > 1 && r.status.as_u16() == 404) {
                    Ok(())
                } else {
                    Err(status_error(&r, &req.what))
                }
            })
            .await
    }

    async fn bucket(&self, name: &str) -> BackendResult<Option<Bucket>> {
        match self
            .json::<Bucket>(&api::get_bucket(self.base(), name)?)
            .await
        {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }
}

fn google_base() -> BackendResult<Url> {
    Url::parse(GOOGLE).map_err(|e| BackendError::other(e.to_string()))
}

#[async_trait]
impl Storage for GcsClient {
    async fn get_bucket(&self, name: &str) -> BackendResult<Option<BucketInfo>> {
        Ok(self.bucket(name).await?.map(Bucket::into_info))
    }

    async fn create_bucket(
        &self,
        project: &str,
        name: &str,
        location: &str,
    ) -> BackendResult<BucketInfo> {
        let asked = SystemTime::now();
        let req = api::insert_bucket(self.base(), project, &NewBucket::uniform(name, location))?;
        let last_attempt = AtomicU32::new(0);
        let created = self
            .transport
            .call_numbered(&req, |r, attempt| {
                last_attempt.store(attempt, Ordering::Relaxed);
                if r.status.is_success() {
                    r.json::<Bucket>(&req.what, "GCS")
                } else {
                    Err(status_error(&r, &req.what))
                }
            })
            .await;
        match created {
            Ok(b) => Ok(b.into_info()),
            // An earlier attempt may have created the bucket before its answer was lost: then
            // the conflict is with ourselves.
            Err(e @ BackendError::AlreadyExists { .. })
                if last_attempt.load(Ordering::Relaxed) > 1 =>
            {
                match self.bucket(name).await? {
                    Some(b) if b.made_by_request(location, asked) => {
                        tracing::debug!("bucket {name}: a retried insert found the bucket its first attempt created");
                        Ok(b.into_info())
                    }
                    _ => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    async fn delete_bucket(&self, name: &str) -> BackendResult<()> {
        self.delete(&api::delete_bucket(self.base(), name)?).await
    }

    async fn bucket_usage(&self, name: &str) -> BackendResult<BucketUsage> {
        self.bucket_usage_paged(name, LIST_PAGE).await
    }
}

/// Objects per `objects.list` page (the API's largest).
const LIST_PAGE: u32 = 1000;

impl GcsClient {
    /// [`Storage::bucket_usage`], listing `page` objects at a time.
    pub async fn bucket_usage_paged(&self, name: &str, page: u32) -> BackendResult<BucketUsage> {
        let mut usage = BucketUsage::default();
        let mut token: Option<String> = None;
        loop {
            let req = api::list_object_sizes(self.base(), name, page, token.as_deref())?;
            let got: ObjectSizes = self.json(&req).await?;
            usage.objects += got.items.len() as u64;
            usage.bytes += got.items.iter().map(|o| o.size).sum::<u64>();
            match got.next_page_token.filter(|t| !t.is_empty()) {
                Some(t) => token = Some(t),
                None => return Ok(usage),
            }
        }
    }

    /// An object's metadata, `None` when it does not exist.
    pub async fn get_object(&self, bucket: &str, name: &str) -> BackendResult<Option<ObjectInfo>> {
        match self
            .json::<ObjectInfo>(&api::get_object(self.base(), bucket, name)?)
            .await
        {
            Ok(o) => Ok(Some(o)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Deletes an object.
    pub async fn delete_object(&self, bucket: &str, name: &str) -> BackendResult<()> {
        self.delete(&api::delete_object(self.base(), bucket, name)?)
            .await
    }

    /// Streams an object's content to `each` (tests and verification). Opening the stream
    /// is retried; a stream cut short is an error.
    pub async fn read_object(
        &self,
        bucket: &str,
        name: &str,
        each: &mut (dyn FnMut(&[u8]) + Send),
    ) -> BackendResult<u64> {
        let req = api::read_object(self.base(), bucket, name)?;
        let mut resp = self
            .transport
            .open(&req, |r| status_error(&r, &req.what))
            .await?;
        let mut n = 0u64;
        while let Some(b) = resp
            .chunk()
            .await
            .map_err(|e| self.transport.map_error(&req, e))?
        {
            n += b.len() as u64;
            each(&b);
        }
        Ok(n)
    }
}

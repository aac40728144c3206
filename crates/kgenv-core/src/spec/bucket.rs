//! The bucket mount spec (guide step 3): a GCS bucket mounted on the host with gcsfuse.
//! gcsfuse's own settings are `[bucket.gcsfuse]`, checked against its documented
//! config-file options ([`super::gcsfuse`]); `options` are mount(8) options only.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{gcsfuse, rules};
use crate::error::ValidationError;

/// A validated bucket mount spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BucketMount {
    /// Bucket name.
    pub bucket: String,
    /// Mount point on the host.
    pub mount_point: String,
    /// Extra mount(8) options for the `/etc/fstab` entry (`ro`, `noatime`, ...).
    pub options: Vec<String>,
    /// The user's gcsfuse config-file options by dotted path (`file-cache.max-size-mb`),
    /// validated against the documented names; they override kgenv's tuned defaults.
    #[serde(default)]
    pub gcsfuse: BTreeMap<String, serde_json::Value>,
    /// Create the bucket when it is missing.
    pub create: bool,
    /// Bucket location when created (defaults to the instance's region).
    pub location: Option<String>,
}

/// Builder for [`BucketMount`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[must_use]
pub struct BucketMountBuilder {
    bucket: Option<String>,
    mount_point: Option<String>,
    options: Option<Vec<String>>,
    gcsfuse: Option<serde_json::Map<String, serde_json::Value>>,
    create: Option<bool>,
    location: Option<String>,
}

impl BucketMount {
    /// A builder for `bucket`, mounted at `/mnt/gcs` by default.
    pub fn builder(bucket: impl Into<String>) -> BucketMountBuilder {
        BucketMountBuilder {
            bucket: Some(bucket.into()),
            ..Default::default()
        }
    }
}

impl BucketMountBuilder {
    /// Mount point on the host.
    pub fn mount_point(mut self, v: impl Into<String>) -> Self {
        self.mount_point = Some(v.into());
        self
    }
    /// Adds a mount(8) option to the `/etc/fstab` entry (`ro`, `noatime`, ...); gcsfuse's own
    /// settings go through [`Self::gcsfuse`].
    pub fn option(mut self, v: impl Into<String>) -> Self {
        self.options.get_or_insert_with(Vec::new).push(v.into());
        self
    }
    /// Sets a gcsfuse config-file option by its documented dotted path, e.g.
    /// `("file-cache.max-size-mb", 20480.into())`; it overrides kgenv's default.
    pub fn gcsfuse(mut self, path: &str, value: impl Into<serde_json::Value>) -> Self {
        gcsfuse::insert_path(
            self.gcsfuse.get_or_insert_with(serde_json::Map::new),
            path,
            value.into(),
        );
        self
    }
    /// Whether to create the bucket when missing (default true).
    pub fn create(mut self, v: bool) -> Self {
        self.create = Some(v);
        self
    }
    /// Location for a created bucket.
    pub fn location(mut self, v: impl Into<String>) -> Self {
        self.location = Some(v.into());
        self
    }

    /// Validates and returns the spec.
    pub fn build(self) -> Result<BucketMount, ValidationError> {
        let bucket = self
            .bucket
            .ok_or_else(|| ValidationError::new("bucket", "is required"))?;
        let bucket = bucket
            .strip_prefix("gs://")
            .unwrap_or(&bucket)
            .trim_end_matches('/')
            .to_string();
        rules::bucket_name("bucket", &bucket)?;
        let mount_point = self.mount_point.unwrap_or_else(|| "/mnt/gcs".into());
        rules::abs_path("mount_point", &mount_point)?;
        if mount_point.chars().any(char::is_control) {
            return Err(ValidationError::new(
                "mount_point",
                "must not contain control characters (it goes into /etc/fstab)",
            ));
        }
        if mount_point == "/" {
            return Err(ValidationError::new("mount_point", "cannot be `/`"));
        }
        let options = self.options.unwrap_or_default();
        for o in &options {
            if o.is_empty()
                || !o
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_=,.-/".contains(c))
            {
                return Err(ValidationError::new(
                    "options",
                    format!("`{o}` is not a mount option like `ro` or `noatime`"),
                ));
            }
            // One place for gcsfuse's settings: the config file kgenv writes. The same
            // setting as a mount option would override it silently (fstab options win).
            if let Some(path) = gcsfuse::for_mount_option(o) {
                return Err(ValidationError::new(
                    "options",
                    format!("`{o}` is a gcsfuse setting: write it under [bucket.gcsfuse] as `{path} = ...` instead"),
                ));
            }
        }
        let gcsfuse = self
            .gcsfuse
            .as_ref()
            .map(gcsfuse::validate)
            .transpose()?
            .unwrap_or_default();
        Ok(BucketMount {
            bucket,
            mount_point,
            options,
            gcsfuse,
            create: self.create.unwrap_or(true),
            location: self.location,
        })
    }
}

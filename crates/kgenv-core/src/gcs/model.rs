//! Typed bodies of the GCS JSON API calls kgenv makes (no I/O here).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::backends::storage::BucketInfo;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct NewBucket<'a> {
    pub(super) name: &'a str,
    location: &'a str,
    iam_configuration: IamConfiguration,
}

impl<'a> NewBucket<'a> {
    pub(super) fn uniform(name: &'a str, location: &'a str) -> Self {
        Self {
            name,
            location,
            iam_configuration: IamConfiguration {
                uniform_bucket_level_access: Some(Toggle { enabled: true }),
            },
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct IamConfiguration {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    uniform_bucket_level_access: Option<Toggle>,
}

#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Toggle {
    #[serde(default)]
    enabled: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Bucket {
    name: String,
    #[serde(default)]
    location: String,
    #[serde(default)]
    iam_configuration: IamConfiguration,
    /// RFC 3339.
    #[serde(default)]
    time_created: Option<String>,
}

/// How far the server's clock may be behind ours when judging whether a bucket was created
/// by a request of ours.
const CLOCK_SKEW: std::time::Duration = std::time::Duration::from_secs(600);

impl Bucket {
    /// Whether this bucket is the one an insert of ours made: in `location`, with uniform
    /// bucket-level access, and created after we first asked (`asked`, allowing for clock
    /// skew). Without a creation time nothing proves it.
    pub(super) fn made_by_request(&self, location: &str, asked: std::time::SystemTime) -> bool {
        let created = self
            .time_created
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(std::time::SystemTime::from);
        let uniform = self
            .iam_configuration
            .uniform_bucket_level_access
            .as_ref()
            .is_some_and(|t| t.enabled);
        uniform
            && self.location.eq_ignore_ascii_case(location)
            && created.is_some_and(|c| c + CLOCK_SKEW >= asked)
    }

    pub(super) fn into_info(self) -> BucketInfo {
        BucketInfo {
            name: self.name,
            location: self.location,
            uniform_access: self
                .iam_configuration
                .uniform_bucket_level_access
                .is_some_and(|t| t.enabled),
        }
    }
}

/// One page of `objects.list` with `fields=items(size),nextPageToken`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectSizes {
    /// The objects of the page (absent on an empty bucket).
    #[serde(default)]
    pub items: Vec<ObjectSize>,
    /// The next page's token, when there is one.
    #[serde(default)]
    pub next_page_token: Option<String>,
}

/// An object's size, as `objects.list` with `fields=items(size)` gives it.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ObjectSize {
    /// Size in bytes (the API sends it as a string).
    #[serde(default, deserialize_with = "de_u64_string")]
    pub size: u64,
}

/// An object's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectInfo {
    /// Object name.
    pub name: String,
    /// Bucket.
    #[serde(default)]
    pub bucket: String,
    /// Size in bytes (the API sends it as a string).
    #[serde(default, deserialize_with = "de_u64_string")]
    pub size: u64,
    /// Base64 big-endian CRC32C.
    #[serde(default)]
    pub crc32c: Option<String>,
    /// Custom metadata.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

impl ObjectInfo {
    /// The CRC32C as a number.
    pub fn crc32c(&self) -> Option<u32> {
        self.crc32c
            .as_deref()
            .and_then(crate::download::checksum::decode_crc32c)
    }
}

fn de_u64_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        S(String),
        N(u64),
    }
    match N::deserialize(d)? {
        N::S(s) => s.parse().map_err(serde::de::Error::custom),
        N::N(n) => Ok(n),
    }
}

#[derive(Debug, Serialize)]
pub(super) struct NewObject<'a> {
    pub(super) name: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) metadata: &'a BTreeMap<String, String>,
}

/// `{"error": {"code": 404, "message": "..."}}`
#[derive(Debug, Deserialize)]
pub(super) struct ErrorBody {
    pub(super) error: ErrorDetail,
}

#[derive(Debug, Deserialize)]
pub(super) struct ErrorDetail {
    #[serde(default)]
    pub(super) message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_is_ours_when_made_as_asked_after_we_asked() {
        let bucket = |created: &str, location: &str, uniform: bool| -> Bucket {
            serde_json::from_value(serde_json::json!({
                "name": "bk", "location": location, "timeCreated": created,
                "iamConfiguration": { "uniformBucketLevelAccess": { "enabled": uniform } }
            }))
            .expect("bucket")
        };
        // 2024-05-01T12:00:00Z
        let asked =
            std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_714_564_800);
        assert!(bucket("2024-05-01T12:00:03.120Z", "US-CENTRAL1", true)
            .made_by_request("us-central1", asked));
        assert!(
            bucket("2024-05-01T11:58:00Z", "US-CENTRAL1", true)
                .made_by_request("us-central1", asked),
            "within the clock skew allowed"
        );
        assert!(!bucket("2024-04-30T12:00:00Z", "US-CENTRAL1", true)
            .made_by_request("us-central1", asked));
        assert!(!bucket("2024-05-01T12:00:03Z", "EU", true).made_by_request("us-central1", asked));
        assert!(!bucket("2024-05-01T12:00:03Z", "US-CENTRAL1", false)
            .made_by_request("us-central1", asked));
        let undated: Bucket =
            serde_json::from_value(serde_json::json!({"name": "bk"})).expect("bucket");
        assert!(!undated.made_by_request("us-central1", asked));
    }

    #[test]
    fn new_buckets_ask_for_uniform_bucket_level_access() {
        let body =
            serde_json::to_value(NewBucket::uniform("kgenv-data", "us-central1")).expect("json");
        assert_eq!(
            body,
            serde_json::json!({
                "name": "kgenv-data",
                "location": "us-central1",
                "iamConfiguration": { "uniformBucketLevelAccess": { "enabled": true } }
            })
        );
    }
}

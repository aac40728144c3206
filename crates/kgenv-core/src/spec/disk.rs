//! The data disk spec (`[instance.data_disk]`): the persistent disk that holds the user's
//! work on a VM — `/kaggle/input`, `/kaggle/working` and the gcsfuse cache — so that
//! `down`, and any change that remakes the VM, keeps it.

use serde::{Deserialize, Serialize};

use crate::error::ValidationError;

/// Default data disk: room for a large competition unpacked beside its archive and the
/// user's outputs (raise it for the biggest competitions; it grows in place, never shrinks).
pub const DEFAULT_DATA_DISK_GB: u64 = 300;
/// Default data disk type: SSD-backed at a moderate price.
pub const DEFAULT_DATA_DISK_TYPE: &str = "pd-balanced";
/// Disk types GCE offers for zonal persistent disks.
pub const DISK_TYPES: [&str; 5] = [
    "pd-standard",
    "pd-balanced",
    "pd-ssd",
    "pd-extreme",
    "hyperdisk-balanced",
];

/// A validated data disk spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DataDisk {
    /// Size in GB.
    pub size_gb: u64,
    /// Disk type, e.g. `pd-balanced`.
    pub disk_type: String,
}

impl Default for DataDisk {
    fn default() -> Self {
        Self {
            size_gb: DEFAULT_DATA_DISK_GB,
            disk_type: DEFAULT_DATA_DISK_TYPE.into(),
        }
    }
}

/// `[instance.data_disk]` as written: every field optional; `enabled = false` turns the
/// data disk off (the work then lives on the boot disk, which `down` deletes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[must_use]
pub struct DataDiskBuilder {
    enabled: Option<bool>,
    size_gb: Option<u64>,
    #[serde(rename = "type")]
    disk_type: Option<String>,
}

impl DataDisk {
    /// A builder with the defaults.
    pub fn builder() -> DataDiskBuilder {
        DataDiskBuilder::default()
    }
}

impl DataDiskBuilder {
    /// Size in GB.
    pub fn size_gb(mut self, v: u64) -> Self {
        self.size_gb = Some(v);
        self
    }
    /// Disk type (`pd-balanced`, `pd-ssd`, ...).
    pub fn disk_type(mut self, v: impl Into<String>) -> Self {
        self.disk_type = Some(v.into());
        self
    }
    /// Whether the VM gets a data disk at all.
    pub fn enabled(mut self, v: bool) -> Self {
        self.enabled = Some(v);
        self
    }

    /// Validates the fields: `None` when the data disk is turned off. Fields are named
    /// `data_disk.*` (the instance builder prefixes `instance.`).
    pub fn build(self) -> Result<Option<DataDisk>, ValidationError> {
        if self.enabled == Some(false) {
            return Ok(None);
        }
        let size_gb = self.size_gb.unwrap_or(DEFAULT_DATA_DISK_GB);
        if !(10..=65_536).contains(&size_gb) {
            return Err(ValidationError::new(
                "data_disk.size_gb",
                format!("{size_gb} GB is outside GCE's 10 to 65536 GB for a persistent disk"),
            ));
        }
        let disk_type = self
            .disk_type
            .unwrap_or_else(|| DEFAULT_DATA_DISK_TYPE.into());
        if !DISK_TYPES.contains(&disk_type.as_str()) {
            return Err(ValidationError::new(
                "data_disk.type",
                format!("`{disk_type}` is not one of {}", DISK_TYPES.join(", ")),
            ));
        }
        Ok(Some(DataDisk { size_gb, disk_type }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_off_and_bad_fields() {
        let d = DataDisk::builder().build().expect("valid").expect("on");
        assert_eq!(d, DataDisk::default());
        assert_eq!(
            DataDisk::builder().enabled(false).build().expect("valid"),
            None
        );
        let e = DataDisk::builder().size_gb(5).build().expect_err("small");
        assert_eq!(e.field, "data_disk.size_gb");
        let e = DataDisk::builder()
            .disk_type("floppy")
            .build()
            .expect_err("type");
        assert_eq!(e.field, "data_disk.type");
    }
}

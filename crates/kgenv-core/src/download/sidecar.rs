//! The record beside a partial file that lets a later run resume it: which chunks are done
//! (with their CRC32C, folded into a running prefix so the record stays small whatever the
//! file size), the server's validator (ETag or Last-Modified, sent back as `If-Range`), and
//! the boot it was written in.
//!
//! The partial file is not fsynced chunk by chunk (that would cost the disk's speed). A
//! process that is killed leaves its written pages in the page cache, so the record stays
//! true; a machine that crashed or rebooted may have lost pages, so a record from another
//! boot is not trusted and the file starts over.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::checksum;

/// Which chunks of a file are done, and the CRC32C of each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ledger {
    /// Total size of the file.
    pub total: u64,
    /// Size of every chunk but the last.
    pub chunk_size: u64,
    /// Chunks `0..prefix_chunks` are done...
    pub prefix_chunks: u64,
    /// ...and this is the CRC32C of their bytes.
    pub prefix_crc: u32,
    /// Chunks done beyond the prefix (out of order), with their CRC32C.
    pub beyond: BTreeMap<u64, u32>,
}

impl Ledger {
    /// An empty ledger.
    pub fn new(total: u64, chunk_size: u64) -> Self {
        Self {
            total,
            chunk_size: chunk_size.max(1),
            prefix_chunks: 0,
            prefix_crc: 0,
            beyond: BTreeMap::new(),
        }
    }

    /// Number of chunks.
    pub fn chunks(&self) -> u64 {
        self.total.div_ceil(self.chunk_size)
    }

    /// Byte range `[start, end)` of chunk `idx`.
    pub fn range(&self, idx: u64) -> (u64, u64) {
        let start = idx * self.chunk_size;
        (start, (start + self.chunk_size).min(self.total))
    }

    /// Whether chunk `idx` is done.
    pub fn is_done(&self, idx: u64) -> bool {
        idx < self.prefix_chunks || self.beyond.contains_key(&idx)
    }

    /// Bytes in done chunks.
    pub fn done_bytes(&self) -> u64 {
        let prefix = (self.prefix_chunks * self.chunk_size).min(self.total);
        prefix
            + self
                .beyond
                .keys()
                .map(|&i| {
                    let (s, e) = self.range(i);
                    e - s
                })
                .sum::<u64>()
    }

    /// Records chunk `idx` as done with `crc`, folding the prefix forward.
    pub fn mark(&mut self, idx: u64, crc: u32) {
        if self.is_done(idx) {
            return;
        }
        self.beyond.insert(idx, crc);
        while let Some(crc) = self.beyond.remove(&self.prefix_chunks) {
            let (s, e) = self.range(self.prefix_chunks);
            self.prefix_crc = checksum::combine(self.prefix_crc, crc, e - s);
            self.prefix_chunks += 1;
        }
    }

    /// The whole file's CRC32C, once every chunk is done.
    pub fn whole_crc(&self) -> Option<u32> {
        (self.prefix_chunks >= self.chunks()).then_some(self.prefix_crc)
    }
}

/// What is persisted beside `<file>.kgenv-partial`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sidecar {
    /// Format version.
    pub version: u32,
    /// ETag (preferred) or Last-Modified of the object the bytes came from.
    pub validator: String,
    /// The boot the record was written in (`/proc/sys/kernel/random/boot_id`).
    pub boot_id: String,
    /// Done chunks.
    pub ledger: Ledger,
}

impl Sidecar {
    const VERSION: u32 = 1;

    /// A new record.
    pub fn new(validator: String, ledger: Ledger) -> Self {
        Self {
            version: Self::VERSION,
            validator,
            boot_id: boot_id(),
            ledger,
        }
    }

    /// The record at `path`, if it is readable, of this version and from this boot.
    pub fn load(path: &Path) -> Option<Self> {
        let bytes = std::fs::read(path).ok()?;
        let s: Self = serde_json::from_slice(&bytes).ok()?;
        (s.version == Self::VERSION && s.boot_id == boot_id()).then_some(s)
    }

    /// Writes the record (temp file and rename; no fsync, see the module docs).
    pub fn store(&self, path: &Path) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        let tmp = tmp_path(path);
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, path)
    }
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

/// This boot's id (empty where the system has none).
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_folds_out_of_order_chunks() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i % 253) as u8).collect();
        let mut l = Ledger::new(data.len() as u64, 3000);
        assert_eq!(l.chunks(), 4);
        for idx in [2u64, 0, 3, 1] {
            let (s, e) = l.range(idx);
            assert!(!l.is_done(idx));
            l.mark(idx, crc32c::crc32c(&data[s as usize..e as usize]));
            assert!(l.is_done(idx));
            if idx != 1 {
                assert_eq!(l.whole_crc(), None);
            }
        }
        assert_eq!(l.done_bytes(), 10_000);
        assert!(l.beyond.is_empty());
        assert_eq!(l.whole_crc(), Some(crc32c::crc32c(&data)));
    }

    #[test]
    fn sidecar_round_trips_and_rejects_other_boots() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("x.json");
        let mut l = Ledger::new(100, 10);
        l.mark(3, 7);
        let s = Sidecar::new("\"etag\"".into(), l);
        s.store(&p).expect("store");
        assert_eq!(Sidecar::load(&p), Some(s.clone()));
        let mut other = s;
        other.boot_id = "another-boot".into();
        other.store(&p).expect("store");
        assert_eq!(Sidecar::load(&p), None);
    }
}

//! How much room a directory has before a download lands there: the free bytes of its file
//! system (`statvfs`, measured at the nearest existing parent when the directory is not made
//! yet), and the bytes unfinished downloads already hold there, since resuming them needs
//! only the rest.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::backends::BackendResult;
use crate::error::BackendError;

/// The suffix of a download in progress (`<file>.kgenv-partial`).
pub const PARTIAL_SUFFIX: &str = ".kgenv-partial";

/// Where the download of `target` keeps its bytes until it is complete.
pub fn partial_path(target: &Path) -> PathBuf {
    super::local::with_suffix(target, PARTIAL_SUFFIX)
}

/// `dir`, or its nearest parent that exists: a destination made later is made on that
/// parent's file system.
fn existing_ancestor(dir: &Path) -> BackendResult<PathBuf> {
    let mut at = if dir.is_absolute() {
        dir.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| BackendError::io("finding the current directory", e))?
            .join(dir)
    };
    loop {
        match std::fs::metadata(&at) {
            Ok(_) => return Ok(at),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(BackendError::io(format!("looking at {}", at.display()), e)),
        }
        if !at.pop() {
            return Err(BackendError::NotFound {
                resource: format!("any existing parent of {}", dir.display()),
            });
        }
    }
}

/// The directory measured for `dir` and its free bytes for an unprivileged writer
/// (`f_bavail × f_frsize`, what `df` shows as available: root's reserve is not counted,
/// since the container and the agent may not run as root).
pub fn free_at(dir: &Path) -> BackendResult<(PathBuf, u64)> {
    let at = existing_ancestor(dir)?;
    let st = rustix::fs::statvfs(&at).map_err(|e| {
        BackendError::io(
            format!("measuring free space at {}", at.display()),
            e.into(),
        )
    })?;
    Ok((at, st.f_bavail.saturating_mul(st.f_frsize)))
}

/// Bytes the partial downloads of `targets` already occupy on disk. A partial file is made
/// at its full length but sparse, so its allocated blocks, not its length, are what it
/// holds.
pub fn held_by_partials<'a>(targets: impl IntoIterator<Item = &'a Path>) -> u64 {
    targets
        .into_iter()
        .filter_map(|t| std::fs::metadata(partial_path(t)).ok())
        .map(|m| m.blocks().saturating_mul(512).min(m.len()))
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_directory_is_measured_at_its_parent() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (at, free) = free_at(&dir.path().join("not/made/yet")).expect("free");
        assert_eq!(at, dir.path());
        assert!(free > 0);
    }

    #[test]
    fn partials_count_their_written_blocks_not_their_length() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("big.bin");
        let f = std::fs::File::create(partial_path(&target)).expect("create");
        f.set_len(1 << 30).expect("sparse length");
        std::os::unix::fs::FileExt::write_all_at(&f, &[7u8; 65536], 0).expect("write");
        f.sync_all().expect("sync");
        let held = held_by_partials([target.as_path(), dir.path().join("absent").as_path()]);
        assert!((65536..1 << 20).contains(&held), "held {held}");
    }
}

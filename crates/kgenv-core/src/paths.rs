//! Where kgenv keeps its files on the user's machine: config in the XDG config dir, state in
//! the XDG state dir, keys (mode 0600) under the config dir, the local target's files in the
//! XDG data dir, prices in the XDG cache dir. `KGENV_HOME` puts all of them under one
//! directory (tests, CI, several isolated setups).

use std::path::PathBuf;

use crate::error::BackendError;

fn home_override() -> Option<PathBuf> {
    std::env::var_os("KGENV_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// `$XDG_CONFIG_HOME/kgenv` (or `$KGENV_HOME/config`): keys, known_hosts, the ssh config
/// file, Jupyter tokens.
///
/// An error when no home directory is known (no `KGENV_HOME`, `XDG_CONFIG_HOME` or `HOME`,
/// and no entry for this user in the password database): there is no private place for
/// secrets then, and a shared one such as `/tmp` would let other users read a key or plant
/// a known_hosts entry.
pub fn config_dir() -> Result<PathBuf, BackendError> {
    under_home(
        home_override(),
        dirs::config_dir(),
        "config",
        "keys and known_hosts",
    )
}

/// `override/sub` when `KGENV_HOME` is set, else `base/kgenv`; `what` names the files for
/// the error when neither is known.
fn under_home(
    override_dir: Option<PathBuf>,
    base: Option<PathBuf>,
    sub: &str,
    what: &str,
) -> Result<PathBuf, BackendError> {
    match (override_dir, base) {
        (Some(h), _) => Ok(h.join(sub)),
        (None, Some(b)) => Ok(b.join("kgenv")),
        (None, None) => Err(BackendError::FailedPrecondition {
            resource: format!("kgenv's {what}"),
            message: "no home directory is known (HOME is unset and this user has none in the password database); set HOME, or KGENV_HOME to a directory only you can write (kgenv does not fall back to a shared directory like /tmp)".into(),
        }),
    }
}

/// `$XDG_STATE_HOME/kgenv` (or `$KGENV_HOME/state`).
pub fn state_dir() -> PathBuf {
    home_override().map_or_else(
        || {
            dirs::state_dir()
                .or_else(|| dirs::home_dir().map(|h| h.join(".local/state")))
                .unwrap_or_else(std::env::temp_dir)
                .join("kgenv")
        },
        |h| h.join("state"),
    )
}

/// `$XDG_DATA_HOME/kgenv` (or `$KGENV_HOME/data`): the local target's host directory
/// (workdir, data, Jupyter config) lives under it.
pub fn data_dir() -> PathBuf {
    home_override().map_or_else(
        || {
            dirs::data_dir()
                .unwrap_or_else(std::env::temp_dir)
                .join("kgenv")
        },
        |h| h.join("data"),
    )
}

/// `$XDG_CACHE_HOME/kgenv` (or `$KGENV_HOME/cache`): files kgenv can fetch again, such as
/// the Billing Catalog's prices.
pub fn cache_dir() -> PathBuf {
    home_override().map_or_else(
        || {
            dirs::cache_dir()
                .or_else(|| dirs::home_dir().map(|h| h.join(".cache")))
                .unwrap_or_else(std::env::temp_dir)
                .join("kgenv")
        },
        |h| h.join("cache"),
    )
}

/// Per-environment key directory: `<config>/keys/<env>` (an error without a home
/// directory, see [`config_dir`]).
pub fn keys_dir(env: &str) -> Result<PathBuf, BackendError> {
    Ok(config_dir()?.join("keys").join(env))
}

/// Marks kgenv's temp files: `.<target name>.kgenv-tmp-<pid>-<random>`.
const TMP_MARK: &str = ".kgenv-tmp-";

/// Whether process `pid` is alive, when this system can tell (`/proc`); `None` otherwise.
fn process_alive(pid: u32) -> Option<bool> {
    let proc = std::path::Path::new("/proc");
    proc.join("self")
        .exists()
        .then(|| proc.join(pid.to_string()).exists())
}

/// Removes the temp files in `dir` left by kgenv processes that died between creating
/// and renaming them (a SIGKILL, a power cut): such a file can never be renamed any more.
/// Files of live processes are left alone; where liveness cannot be told, nothing is removed.
pub fn sweep_stale_temps(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .split_once(TMP_MARK)
            .and_then(|(_, rest)| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if process_alive(pid) == Some(false) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Writes `bytes` to `path` atomically: a temp file in the same directory, fsynced, renamed
/// over the target, then the directory fsynced. `mode` applies on Unix (0600 for secrets).
/// Temp files of killed kgenv processes in that directory are swept first
/// ([`sweep_stale_temps`]).
pub fn write_atomic(path: &std::path::Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or_else(|| std::path::Path::new("."));
    std::fs::create_dir_all(dir)?;
    sweep_stale_temps(dir);
    let prefix = format!(
        ".{}{TMP_MARK}{}-",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    );
    let mut tmp = tempfile::Builder::new().prefix(&prefix).tempfile_in(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    #[cfg(not(unix))]
    let _ = mode;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod home_tests {
    use super::*;

    #[test]
    fn without_a_home_there_is_an_error_not_a_shared_directory() {
        let e = under_home(None, None, "config", "keys and known_hosts").expect_err("no home");
        let text = e.to_string();
        assert!(
            text.contains("keys and known_hosts") && text.contains("set HOME"),
            "{text}"
        );
        assert_eq!(
            under_home(None, Some("/home/u/.config".into()), "config", "keys").expect("xdg"),
            PathBuf::from("/home/u/.config/kgenv")
        );
        assert_eq!(
            under_home(Some("/k".into()), None, "config", "keys").expect("override"),
            PathBuf::from("/k/config")
        );
    }
}

#[cfg(test)]
mod temp_tests {
    use super::*;

    #[test]
    fn temps_of_dead_processes_are_swept_live_ones_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A pid that cannot be alive (above the kernel's pid_max of 2^22).
        let dead = dir.path().join(format!(".state.json{TMP_MARK}4294967-abc"));
        let live = dir
            .path()
            .join(format!(".state.json{TMP_MARK}{}-def", std::process::id()));
        let other = dir.path().join(".tmpXYZ");
        for p in [&dead, &live, &other] {
            std::fs::write(p, b"x").expect("write");
        }
        write_atomic(&dir.path().join("state.json"), b"{}", 0o600).expect("write_atomic");
        if process_alive(1).is_some() {
            assert!(!dead.exists(), "a dead process's temp file is swept");
        }
        assert!(live.exists(), "a live process's temp file is kept");
        assert!(other.exists(), "files that are not kgenv's temps are kept");
        assert_eq!(
            std::fs::read(dir.path().join("state.json")).expect("read"),
            b"{}"
        );
    }
}

//! Where kgenv keeps its files on the user's machine: config in the XDG config dir, state in
//! the XDG state dir, keys (mode 0600) under the config dir, the local target's files in the
//! XDG data dir. `KGENV_HOME` puts all of them under one directory (tests, CI, several
//! isolated setups).

use std::path::PathBuf;

fn home_override() -> Option<PathBuf> {
    std::env::var_os("KGENV_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// `$XDG_CONFIG_HOME/kgenv` (or `$KGENV_HOME/config`).
pub fn config_dir() -> PathBuf {
    home_override().map_or_else(
        || {
            dirs::config_dir()
                .unwrap_or_else(std::env::temp_dir)
                .join("kgenv")
        },
        |h| h.join("config"),
    )
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

/// Per-environment key directory: `<config>/keys/<env>`.
pub fn keys_dir(env: &str) -> PathBuf {
    config_dir().join("keys").join(env)
}

/// Writes `bytes` to `path` atomically: a temp file in the same directory, fsynced, renamed
/// over the target, then the directory fsynced. `mode` applies on Unix (0600 for secrets).
pub fn write_atomic(path: &std::path::Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or_else(|| std::path::Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
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

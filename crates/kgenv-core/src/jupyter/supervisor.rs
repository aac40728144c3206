//! The supervisor loop kgenv's container runs as its command when the environment has
//! Jupyter: a shell loop (quoted by the one helper) rather than a process manager, so it
//! works in any image that has `sh` and `cksum`.

use super::config::CONFIG_FILE;
use crate::shell::quote;

/// The supervisor loop the container runs: starts Jupyter once its config is there,
/// restarts it when it exits (a crash) or when a file of `config_dir` changes (a new
/// password or certificate), and stops it on `docker stop`.
pub fn supervisor_command(config_dir: &str) -> String {
    let d = quote(config_dir);
    format!(
        "trap 'kill \"$pid\" 2>/dev/null; exit 0' TERM INT; pid=; \
         while :; do \
           if [ -f {d}/{CONFIG_FILE} ]; then \
             stamp=$(cat {d}/* 2>/dev/null | cksum); \
             jupyter server --config={d}/{CONFIG_FILE} & pid=$!; \
             while kill -0 \"$pid\" 2>/dev/null; do \
               sleep 2; \
               if [ \"$(cat {d}/* 2>/dev/null | cksum)\" != \"$stamp\" ]; then kill \"$pid\"; fi; \
             done; \
             wait \"$pid\"; \
           fi; \
           sleep 2; \
         done"
    )
}

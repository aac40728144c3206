//! `kgenv plan` and `kgenv status` write nothing (issue 12, item 7), seen from the
//! binary: on the simulated world, after `up`, with the idle agent's Jupyter token gone
//! from this machine (as on a second machine), both leave `KGENV_HOME` byte for byte as
//! they found it — the old `check` made the token there.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::Digest;
use support::{example, kgenv, stderr, stdout};

/// Relative path → content hash (and mode) of every file under `root`.
fn tree(root: &Path) -> BTreeMap<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("read dir").flatten() {
            let p = e.path();
            let md = std::fs::symlink_metadata(&p).expect("metadata");
            let rel = p.strip_prefix(root).expect("under root").to_path_buf();
            let mode = md.permissions().mode();
            if md.is_dir() {
                stack.push(p);
                out.insert(rel, format!("dir {mode:o}"));
            } else {
                let bytes = std::fs::read(&p).expect("read");
                out.insert(
                    rel,
                    format!("{mode:o} {}", hex::encode(sha2::Sha256::digest(bytes))),
                );
            }
        }
    }
    out
}

#[test]
fn plan_and_status_leave_kgenv_home_unchanged() {
    let home = tempfile::tempdir().expect("home");
    let cfg = example();
    let c = cfg.to_str().expect("utf8");
    let up = kgenv(home.path(), &["--config", c, "--mock", "up"]);
    assert!(up.status.success(), "{}", stderr(&up));
    let token = home
        .path()
        .join("config/keys/kaggle-gpu/jupyter-agent-token");
    assert!(token.exists(), "up keeps the idle agent's token here");
    std::fs::remove_file(&token).expect("remove the token");

    let before = tree(home.path());
    for verb in ["plan", "status"] {
        let o = kgenv(home.path(), &["--config", c, "--mock", verb]);
        assert!(o.status.success(), "{verb}: {}", stderr(&o));
        assert_eq!(tree(home.path()), before, "`{verb}` changed KGENV_HOME");
    }
    let plan = kgenv(home.path(), &["--config", c, "--mock", "plan"]);
    let out = stdout(&plan);
    assert!(
        out.contains("no token for the idle agent kept on this machine"),
        "the missing token is shown as a difference: {out}"
    );
}

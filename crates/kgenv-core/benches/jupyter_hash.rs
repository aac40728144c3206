//! Side by side: kgenv's Jupyter password hash (Rust argon2) against jupyter_server's own
//! `passwd()` (argon2-cffi) with the same parameters, and verification of each other's
//! hashes. Prints times and ratios; asserts nothing about speed.
//!
//! Run: `cargo bench -p kgenv-core --bench jupyter_hash` (needs the venv's jupyter_server:
//! `KGENV_JUPYTER_PYTHON`, or `.venv/bin/python` from `scripts/setup/70-host.sh`).

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use kgenv_core::jupyter::{hash_password, verify_password};

fn python() -> PathBuf {
    std::env::var_os("KGENV_JUPYTER_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python"))
}

fn main() {
    const N: u32 = 20;
    let t = Instant::now();
    let mut last = String::new();
    for _ in 0..N {
        last = hash_password("bench password").expect("hash");
    }
    let rust_hash = t.elapsed().as_secs_f64() / f64::from(N);
    let t = Instant::now();
    for _ in 0..N {
        assert!(verify_password("bench password", &last));
    }
    let rust_verify = t.elapsed().as_secs_f64() / f64::from(N);

    let script = format!(
        "import time\nfrom jupyter_server.auth import passwd, passwd_check\nt=time.perf_counter()\nfor _ in range({N}): h=passwd('bench password')\na=(time.perf_counter()-t)/{N}\nt=time.perf_counter()\nfor _ in range({N}): assert passwd_check(h, 'bench password')\nb=(time.perf_counter()-t)/{N}\nassert passwd_check({last:?}, 'bench password')\nprint(a, b)"
    );
    let out = Command::new(python())
        .args(["-c", &script])
        .output()
        .expect("python with jupyter_server (scripts/setup/70-host.sh)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text
        .split_whitespace()
        .map(|v| v.parse::<f64>().expect("float"));
    let (py_hash, py_verify) = (it.next().expect("hash"), it.next().expect("verify"));
    println!("argon2id m=10240 t=10 p=8, {N} rounds each (jupyter_server accepted kgenv's hash)");
    println!(
        "hash:   kgenv {:7.2} ms   jupyter_server {:7.2} ms   ratio kgenv/jupyter {:.2}",
        rust_hash * 1e3,
        py_hash * 1e3,
        rust_hash / py_hash
    );
    println!(
        "verify: kgenv {:7.2} ms   jupyter_server {:7.2} ms   ratio kgenv/jupyter {:.2}",
        rust_verify * 1e3,
        py_verify * 1e3,
        rust_verify / py_verify
    );
}

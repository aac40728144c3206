//! 100 short commands against one real OpenSSH sshd on 127.0.0.1, three ways, with ratios:
//! kgenv over one connection (in sequence, and all at once), 100 fresh `ssh` processes, and
//! OpenSSH ControlMaster multiplexing. Run: `scripts/bench/ssh.sh` (or
//! `cargo bench -p kgenv-core --bench ssh`); `KGENV_BENCH_N` changes the count.

#[path = "../tests/support/mod.rs"]
mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kgenv_core::backends::no_progress;
use kgenv_core::backends::remote::ExecRequest;
use kgenv_core::ssh::{SshConfigFiles, SshConnector};
use support::sshd::Sshd;

fn ssh(config: &Path, extra: &[&str], cmd: &str) {
    let status = Command::new("ssh")
        .arg("-F")
        .arg(config)
        .args(["-o", "BatchMode=yes"])
        .args(extra)
        .args(["--", "bench", cmd])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .expect("ssh runs");
    assert!(status.success(), "ssh {extra:?} {cmd} failed");
}

fn row(name: &str, d: Duration, n: usize, base: Duration) {
    println!(
        "{name:<44} {:>9.1} ms total {:>8.2} ms/cmd {:>7.2}x",
        d.as_secs_f64() * 1e3,
        d.as_secs_f64() * 1e3 / n as f64,
        d.as_secs_f64() / base.as_secs_f64()
    );
}

fn main() {
    let n: usize = std::env::var("KGENV_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let sshd = Sshd::start_new();
    let files = SshConfigFiles {
        user_config: sshd.dir().join("bench_user_config"),
        kgenv_config: sshd.dir().join("bench_ssh_config"),
        known_hosts: sshd.dir().join("bench_known_hosts"),
    };
    files.write_host("bench", &sshd.addr()).expect("ssh config");
    let config = files.kgenv_config.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");

    // kgenv: connect once, then N commands in sequence, then N at once.
    let (connect, seq, par) = rt.block_on(async {
        let t = Instant::now();
        let s = SshConnector::new()
            .known_hosts(sshd.client_known_hosts())
            .open(&sshd.addr(), Duration::from_secs(20))
            .await
            .expect("connect");
        let connect = t.elapsed();
        let t = Instant::now();
        for _ in 0..n {
            let out = s
                .run(ExecRequest::new("true"), &no_progress)
                .await
                .expect("exec");
            assert!(out.success());
        }
        let seq = t.elapsed();
        let t = Instant::now();
        let all = (0..n).map(|_| s.run(ExecRequest::new("true"), &no_progress));
        for out in futures::future::join_all(all).await {
            assert!(out.expect("exec").success());
        }
        (connect, seq, t.elapsed())
    });

    // N fresh ssh processes.
    let t = Instant::now();
    for _ in 0..n {
        ssh(&config, &[], "true");
    }
    let fresh = t.elapsed();

    // ControlMaster: one master, N clients through its socket.
    let sock = sshd.dir().join("cm.sock");
    let path = format!("ControlPath={}", sock.display());
    let t = Instant::now();
    ssh(
        &config,
        &[
            "-o",
            "ControlMaster=yes",
            "-o",
            &path,
            "-o",
            "ControlPersist=120",
            "-f",
            "-N",
        ],
        "",
    );
    let master_up = t.elapsed();
    let t = Instant::now();
    for _ in 0..n {
        ssh(&config, &["-o", "ControlMaster=no", "-o", &path], "true");
    }
    let muxed = t.elapsed();
    let _ = Command::new("ssh")
        .arg("-F")
        .arg(&config)
        .args(["-o", &path, "-O", "exit", "bench"])
        .stderr(Stdio::null())
        .status();

    println!("\n{n} x `true` against OpenSSH sshd on 127.0.0.1 (ratios: time / kgenv sequential)");
    row("kgenv, one connection, sequential", seq, n, seq);
    row("kgenv, one connection, all at once", par, n, seq);
    row("ssh, a fresh process per command", fresh, n, seq);
    row("ssh ControlMaster, a client per command", muxed, n, seq);
    println!(
        "(setup, not counted above: kgenv connect {:.1} ms, ControlMaster start {:.1} ms)",
        connect.as_secs_f64() * 1e3,
        master_up.as_secs_f64() * 1e3
    );
    println!(
        "fresh ssh / kgenv = {:.1}x   ControlMaster / kgenv = {:.1}x",
        fresh.as_secs_f64() / seq.as_secs_f64(),
        muxed.as_secs_f64() / seq.as_secs_f64()
    );
}

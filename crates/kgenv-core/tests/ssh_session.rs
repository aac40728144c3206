//! The SSH Remote against a real OpenSSH sshd: exec (exit codes, stdout vs stderr, line
//! events, stdin, 50 MB, 50 at once, timeout and cancellation), files, tunnels, and the
//! quoting helper through the real remote shell.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use kgenv_core::backends::remote::{ExecRequest, Remote};
use kgenv_core::backends::{no_progress, Progress, Stream};
use kgenv_core::runner::tunnel::forward_local;
use kgenv_core::shell::{quote, Cmd};
use kgenv_core::ssh::{SshConnector, SshSession};
use support::sshd::Sshd;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn session(sshd: &Sshd) -> Arc<SshSession> {
    SshConnector::new()
        .known_hosts(sshd.client_known_hosts())
        .open(&sshd.addr(), Duration::from_secs(20))
        .await
        .unwrap_or_else(|e| panic!("connect: {e}\nsshd log:\n{}", sshd.log()))
}

async fn sh(s: &SshSession, line: &str) -> String {
    let out = s
        .run(ExecRequest::new(line), &no_progress)
        .await
        .expect("exec");
    assert!(
        out.success(),
        "`{line}` exited {}: {}",
        out.exit_code,
        out.stderr_tail()
    );
    out.stdout_text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_streams_lines_and_stdin() {
    let sshd = Sshd::start_new();
    let s = session(&sshd).await;

    let events = Mutex::new(Vec::new());
    let record = |p: Progress| events.lock().expect("lock").push(p);
    let out = s
        .run(
            ExecRequest::new("echo out1; echo err1 >&2; printf 'out2'; exit 3"),
            &record,
        )
        .await
        .expect("exec");
    assert_eq!(out.exit_code, 3);
    assert_eq!(out.stdout, b"out1\nout2");
    assert_eq!(out.stderr, b"err1\n");
    let events = events.into_inner().expect("lock");
    let lines: Vec<(Stream, String)> = events
        .into_iter()
        .filter_map(|p| match p {
            Progress::Line { stream, line } => Some((stream, line)),
            _ => None,
        })
        .collect();
    assert!(
        lines.contains(&(Stream::Stdout, "out1".into())),
        "{lines:?}"
    );
    assert!(
        lines.contains(&(Stream::Stdout, "out2".into())),
        "{lines:?}"
    );
    assert!(
        lines.contains(&(Stream::Stderr, "err1".into())),
        "{lines:?}"
    );

    // Killed by a signal: -1.
    let out = s
        .run(ExecRequest::new("kill -9 $$"), &no_progress)
        .await
        .expect("exec");
    assert_eq!(out.exit_code, -1, "{out:?}");

    // Stdin, binary, then EOF.
    let data: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    let out = s
        .run(
            ExecRequest::new("cat; echo done >&2").stdin(data.clone()),
            &no_progress,
        )
        .await
        .expect("exec");
    assert!(out.success());
    assert!(
        out.stdout == data,
        "stdin came back as {} bytes of {}",
        out.stdout.len(),
        data.len()
    );
    assert_eq!(out.stderr, b"done\n");

    // sudo: the login user is root here, so the line runs as it is (no sudo binary needed).
    let out = s
        .run(ExecRequest::new("id -u").sudo(), &no_progress)
        .await
        .expect("exec");
    assert_eq!(out.stdout_text().trim(), "0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_megabytes_of_output() {
    let sshd = Sshd::start_new();
    let s = session(&sshd).await;
    let size = 50 * 1024 * 1024;
    let lines = std::sync::atomic::AtomicUsize::new(0);
    let count = |p: Progress| {
        if let Progress::Line {
            stream: Stream::Stdout,
            ..
        } = p
        {
            lines.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    };
    // 64-byte lines: 63 characters and a newline.
    let line = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_";
    let cmd = format!("yes {} | head -c {size}", quote(line));
    let out = s.run(ExecRequest::new(cmd), &count).await.expect("exec");
    assert!(out.success(), "{}", out.stderr_tail());
    assert_eq!(out.stdout.len(), size);
    assert!(out
        .stdout
        .chunks(64)
        .all(|c| c == format!("{line}\n").as_bytes()));
    assert_eq!(lines.into_inner(), size / 64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_commands_on_one_connection() {
    // sshd keeps its default MaxSessions (10): kgenv must queue, not fail.
    let sshd = Sshd::start_new();
    let s = session(&sshd).await;
    let before = sshd.accepted_logins();
    let runs = (0..50).map(|i| {
        let s = s.clone();
        async move {
            let out = s
                .run(
                    ExecRequest::new(format!("sleep 0.2; echo {i}; echo e{i} >&2")),
                    &no_progress,
                )
                .await
                .expect("exec");
            (i, out)
        }
    });
    let results = futures::future::join_all(runs).await;
    for (i, out) in results {
        assert!(out.success(), "{i}: {}", out.stderr_tail());
        assert_eq!(out.stdout_text(), format!("{i}\n"));
        assert_eq!(out.stderr, format!("e{i}\n").into_bytes());
    }
    assert_eq!(
        sshd.accepted_logins(),
        before,
        "all 50 ran on the one connection"
    );
    assert_eq!(before, 1);
}

/// Whether a process whose command line contains `sleep SECS` runs on the host. The
/// pattern is written `sleep 3[1].25` so it does not match the pgrep command's own shell.
async fn running(s: &SshSession, secs: &str) -> bool {
    let pattern = format!("sleep {}[{}]{}", &secs[..1], &secs[1..2], &secs[2..]);
    let out = s
        .run(
            ExecRequest::new(Cmd::new("pgrep").arg("-f").arg(pattern).line()),
            &no_progress,
        )
        .await
        .expect("pgrep");
    out.success()
}

async fn eventually_gone(s: &SshSession, marker: &str) -> bool {
    for _ in 0..100 {
        if !running(s, marker).await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// A hang guard, not a timing assertion: only a bug reaches it.
const GUARD: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_and_cancellation_kill_the_remote_command() {
    let sshd = Sshd::start_new();
    let s = session(&sshd).await;

    // A total limit counts from the exec request, so on a loaded machine it can pass before
    // the command's first line arrives. Whatever the timing, the error must carry exactly
    // the lines seen before the limit (the progress sink gets each line before the limit
    // can be noticed). The limit doubles until a run printed its line in time, so the
    // "last output" part is really exercised; its expiry is what the test is about.
    let mut limit = Duration::from_millis(800);
    loop {
        let seen = Mutex::new(Vec::new());
        let record = |p: Progress| {
            if let Progress::Line { line, .. } = p {
                seen.lock().expect("lock").push(line);
            }
        };
        let err = s
            .run(
                ExecRequest::new("echo started; sleep 31.25").timeout(limit),
                &record,
            )
            .await
            .expect_err("times out");
        assert_eq!(err.kind(), "timeout", "{err}");
        let seen = seen.into_inner().expect("lock");
        let timed_out = err.command_timeout().expect("a command timeout");
        assert_eq!(timed_out.after, limit, "{err}");
        assert_eq!(
            timed_out.last_lines, seen,
            "the error keeps the lines printed before the limit: {err}"
        );
        assert!(
            eventually_gone(&s, "31.25").await,
            "timed-out command still running"
        );
        if seen == ["started"] {
            assert!(err.to_string().contains("started"), "last line seen: {err}");
            break;
        }
        assert!(seen.is_empty(), "{seen:?}");
        limit *= 2;
        assert!(
            limit <= Duration::from_millis(12_800),
            "`echo started` printed nothing within 6.4s of its exec request"
        );
    }

    // Dropping the future (cancellation) kills it too: once it is known to run.
    let first_line = tokio::sync::Notify::new();
    let on_line = |p: Progress| {
        if matches!(p, Progress::Line { .. }) {
            first_line.notify_one();
        }
    };
    let mut fut = Box::pin(s.run(ExecRequest::new("echo started; sleep 32.25"), &on_line));
    tokio::select! {
        r = &mut fut => panic!("the command ended: {r:?}"),
        () = first_line.notified() => {}
        () = tokio::time::sleep(GUARD) => panic!("no line from the command within {GUARD:?}"),
    }
    assert!(
        running(&s, "32.25").await,
        "the command runs before it is cancelled"
    );
    drop(fut);
    assert!(
        eventually_gone(&s, "32.25").await,
        "cancelled command still running"
    );

    // The connection is still good.
    assert_eq!(sh(&s, "echo ok").await, "ok\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_binary_safe_with_mode() {
    let sshd = Sshd::start_new();
    let s = session(&sshd).await;
    let base = sshd.dir().join("remote files");
    let path = format!("{}/new dir/it's $HOME.bin", base.display());

    let mut content: Vec<u8> = (0..=255u8).collect();
    content.extend(b"\0\r\n'\"$`\\ \xff\xfe end");
    content.extend((0..1_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    s.put_file(&path, &content, 0o640).await.expect("put");
    assert!(
        std::fs::read(&path).expect("local read of the remote file") == content,
        "content differs"
    );
    assert!(
        s.read_file(&path).await.expect("read") == Some(content),
        "read back differs"
    );
    let mode = sh(&s, &Cmd::new("stat").arg("-c").arg("%a").arg(&path).line()).await;
    assert_eq!(mode.trim(), "640");

    // Overwrite with different content and mode; empty files are files too.
    s.put_file(&path, b"", 0o600).await.expect("put empty");
    assert_eq!(s.read_file(&path).await.expect("read"), Some(Vec::new()));
    let mode = sh(&s, &Cmd::new("stat").arg("-c").arg("%a").arg(&path).line()).await;
    assert_eq!(mode.trim(), "600");
    // No temp file left behind.
    let listing = sh(
        &s,
        &Cmd::new("ls")
            .arg("-A")
            .arg(format!("{}/new dir", base.display()))
            .line(),
    )
    .await;
    assert_eq!(listing, "it's $HOME.bin\n");

    let absent = format!("{}/absent", base.display());
    assert_eq!(s.read_file(&absent).await.expect("read absent"), None);
    // A directory is not readable as a file: an error, not None.
    let err = s
        .read_file(&base.display().to_string())
        .await
        .expect_err("dir");
    assert_eq!(err.kind(), "command_failed", "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_to_a_full_file_system_leaves_the_old_file() {
    // A 64 KiB tmpfs, filled to the last block: the new file cannot fit.
    let sshd = Sshd::start_new();
    let s = session(&sshd).await;
    let mnt = sshd.dir().join("small fs");
    std::fs::create_dir_all(&mnt).expect("mount point");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "kgenv-test"])
        .arg(&mnt)
        .status()
        .expect("mount runs");
    assert!(
        mounted.success(),
        "mounting a tmpfs (the tests run as root)"
    );
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    let path = mnt.join("config.json");
    std::fs::write(&path, b"{\"old\": true}\n").expect("old file");
    let _ = std::process::Command::new("dd")
        .args(["if=/dev/zero", "bs=4096"])
        .arg(format!("of={}", mnt.join("filler").display()))
        .output()
        .expect("dd runs");
    let err = s
        .put_file(&path.display().to_string(), &vec![b'x'; 32 * 1024], 0o644)
        .await
        .expect_err("no room for the new file");
    assert!(
        err.to_string().contains("unchanged"),
        "the error says the file is unchanged: {err}"
    );
    assert_eq!(
        std::fs::read(&path).expect("the old file"),
        b"{\"old\": true}\n",
        "the old file is intact"
    );
    let left: Vec<_> = std::fs::read_dir(&mnt)
        .expect("dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "config.json" && n != "filler")
        .collect();
    assert!(left.is_empty(), "no temp file left: {left:?}");
}

async fn echo_tcp() -> (u16, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = l.local_addr().expect("addr").port();
    let task = tokio::spawn(async move {
        while let Ok((mut c, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = c.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    (port, task)
}

async fn round_trip(stream: &mut (impl AsyncReadExt + AsyncWriteExt + Unpin), len: usize) {
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    let (mut r, mut w) = tokio::io::split(stream);
    let send = async {
        w.write_all(&data).await.expect("write");
        w.flush().await.expect("flush");
    };
    let mut back = vec![0u8; len];
    let recv = async { r.read_exact(&mut back).await.expect("read back") };
    tokio::join!(send, recv);
    assert!(back == data, "echo differs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnels_tcp_unix_and_local_forward() {
    let sshd = Sshd::start_new();
    let s = session(&sshd).await;

    let (port, _echo) = echo_tcp().await;
    let mut stream = s.open_tcp("127.0.0.1", port).await.expect("direct-tcpip");
    round_trip(&mut stream, 1_000_000).await;

    let sock = sshd.dir().join("echo.sock");
    let ul = tokio::net::UnixListener::bind(&sock).expect("unix bind");
    let _unix_echo = tokio::spawn(async move {
        while let Ok((mut c, _)) = ul.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = c.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let mut stream = s
        .open_unix(&sock.display().to_string())
        .await
        .expect("direct-streamlocal");
    round_trip(&mut stream, 300_000).await;

    // The listener behind `kgenv jupyter`: several local connections at once.
    let remote: Arc<dyn Remote> = s.clone();
    let fwd = forward_local(
        remote,
        "127.0.0.1:0".parse().expect("addr"),
        "127.0.0.1",
        port,
    )
    .await
    .expect("forward");
    let conns = (0..5).map(|_| async {
        let mut c = tokio::net::TcpStream::connect(fwd.local_addr())
            .await
            .expect("connect local");
        round_trip(&mut c, 100_000).await;
    });
    futures::future::join_all(conns).await;
    drop(fwd);

    // Nothing listening on the host's side: a typed error.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let err = s
        .open_tcp("127.0.0.1", closed)
        .await
        .err()
        .expect("refused");
    assert_eq!(err.kind(), "connection", "{err}");
    assert_eq!(
        sshd.accepted_logins(),
        1,
        "tunnels share the one connection"
    );
}

#[test]
fn quoting_round_trips_through_the_remote_shell() {
    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let sshd = Sshd::start_new();
    let s = rt.block_on(session(&sshd));
    let arg =
        "[a-zA-Z0-9 '\"$`\\\\\n\t*?~!;&|<>(){}#%=,.:-]{0,10}|[日本語éß€ '$\n]{0,6}|-[a-z]{1,3}";
    let strategy =
        proptest::collection::vec(proptest::string::string_regex(arg).expect("regex"), 1..6);
    let mut runner = TestRunner::new(Config {
        cases: 48,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&strategy, |args| {
            let line = Cmd::new("printf").arg("%s\\0").args(&args).line();
            // Directly, and nested once more the way `sudo -n -- sh -c LINE` nests it.
            for cmd in [line.clone(), Cmd::new("sh").arg("-c").arg(&line).line()] {
                let out = rt
                    .block_on(s.run(ExecRequest::new(cmd.clone()), &no_progress))
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert!(out.success(), "`{}` failed: {}", cmd, out.stderr_tail());
                let mut expected = Vec::new();
                for a in &args {
                    expected.extend_from_slice(a.as_bytes());
                    expected.push(0);
                }
                prop_assert_eq!(&out.stdout, &expected, "line: {}", cmd);
            }
            Ok(())
        })
        .expect("every argument arrives byte for byte");
}

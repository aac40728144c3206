//! Readiness and reconnection against a real OpenSSH sshd: bounded waits that say what they
//! saw last, a late sshd, a killed sshd cutting a running command (typed error, no hang),
//! and the next command reconnecting once sshd is back.

mod support;

use std::time::Duration;

use kgenv_core::backends::remote::{ExecRequest, HostAddr};
use kgenv_core::backends::{no_progress, Progress};
use kgenv_core::ssh::SshConnector;
use support::sshd::Sshd;
use tokio::io::AsyncWriteExt;

/// A hang guard, not a timing assertion: generous, only there so a bug fails instead of
/// blocking the suite.
const GUARD: Duration = Duration::from_secs(60);

fn connector(sshd: &Sshd) -> SshConnector {
    SshConnector::new()
        .known_hosts(sshd.client_known_hosts())
        .auth_grace(Duration::ZERO)
}

fn addr_at(sshd: &Sshd, port: u16) -> HostAddr {
    HostAddr {
        port,
        ..sshd.addr()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_timeouts_say_what_was_seen_last() {
    let sshd = Sshd::prepare(&[]); // keys only; nothing listens on its port yet
    let err = connector(&sshd)
        .open(&sshd.addr(), Duration::from_secs(2))
        .await
        .expect_err("nothing listening");
    assert_eq!(err.kind(), "timeout", "{err}");
    assert!(err.to_string().contains("TCP connect"), "{err}");

    // Something accepts but never speaks SSH.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = silent.local_addr().expect("addr").port();
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((c, _)) = silent.accept().await {
            held.push(c);
        }
    });
    let err = connector(&sshd)
        .open(&addr_at(&sshd, port), Duration::from_secs(3))
        .await
        .expect_err("no banner");
    assert_eq!(err.kind(), "timeout", "{err}");
    assert!(
        err.to_string().contains("waiting for the SSH banner"),
        "{err}"
    );

    // Something that says why it will not serve, then hangs up.
    let booting = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = booting.local_addr().expect("addr").port();
    let _say = tokio::spawn(async move {
        while let Ok((mut c, _)) = booting.accept().await {
            let _ = c
                .write_all(b"System is booting up. See pam_nologin(8)\r\n")
                .await;
        }
    });
    let err = connector(&sshd)
        .open(&addr_at(&sshd, port), Duration::from_secs(2))
        .await
        .expect_err("refuses");
    assert_eq!(err.kind(), "timeout", "{err}");
    assert!(err.to_string().contains("System is booting up"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_for_an_sshd_that_starts_late() {
    let mut sshd = Sshd::prepare(&[]);
    // Until sshd starts, its port hangs up on whoever connects (a host whose sshd is not up
    // yet); sshd starts only once the connector has been turned away there at least once,
    // so the connection below proves it kept trying (a sleep could not tell).
    let early = tokio::net::TcpListener::bind(("127.0.0.1", sshd.addr().port))
        .await
        .expect("bind sshd's port before sshd");
    let conn = connector(&sshd);
    let addr = sshd.addr();
    let waiting = tokio::spawn(async move { conn.open(&addr, Duration::from_secs(45)).await });
    let (turned_away, _) = tokio::time::timeout(GUARD, early.accept())
        .await
        .expect("the connector dials the port")
        .expect("accept");
    drop(turned_away);
    drop(early);
    tokio::task::block_in_place(|| sshd.start());
    let session = tokio::time::timeout(GUARD, waiting)
        .await
        .expect("no hang")
        .expect("task")
        .unwrap_or_else(|e| panic!("connect after a late start: {e}"));
    let out = session
        .run(ExecRequest::new("echo up"), &no_progress)
        .await
        .expect("exec");
    assert_eq!(out.stdout_text(), "up\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_sshd_cuts_the_command_then_the_next_one_reconnects() {
    let mut sshd = Sshd::start_new();
    let session = connector(&sshd)
        .reconnect_within(Duration::from_secs(20))
        .open(&sshd.addr(), Duration::from_secs(20))
        .await
        .expect("connect");
    assert_eq!(
        session
            .run(ExecRequest::new("echo before"), &no_progress)
            .await
            .expect("exec")
            .stdout_text(),
        "before\n"
    );

    // sshd is killed once the command is known to run: its first line has arrived.
    let started = std::sync::Arc::new(tokio::sync::Notify::new());
    let running = {
        let s = session.clone();
        let started = started.clone();
        tokio::spawn(async move {
            let on_line = move |p: Progress| {
                if matches!(p, Progress::Line { .. }) {
                    started.notify_one();
                }
            };
            s.run(ExecRequest::new("echo started; sleep 40"), &on_line)
                .await
        })
    };
    tokio::time::timeout(GUARD, started.notified())
        .await
        .expect("the command prints its first line");
    tokio::task::block_in_place(|| sshd.stop());
    let cut = tokio::time::timeout(GUARD, running)
        .await
        .expect("a cut command returns, it does not hang")
        .expect("task");
    let err = cut.expect_err("the command was cut");
    assert_eq!(err.kind(), "connection", "{err}");
    assert!(err.is_retryable());
    assert!(
        err.to_string()
            .contains("connection lost while `echo …` was running"),
        "{err}"
    );

    tokio::task::block_in_place(|| sshd.start());
    let out = tokio::time::timeout(
        GUARD,
        session.run(ExecRequest::new("echo after"), &no_progress),
    )
    .await
    .expect("no hang")
    .unwrap_or_else(|e| panic!("reconnect: {e}\n{}", sshd.log()));
    assert_eq!(out.stdout_text(), "after\n");
    assert_eq!(
        sshd.accepted_logins(),
        2,
        "one login before the kill, one after"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sshd_that_stays_down_gives_a_typed_error_not_a_hang() {
    let mut sshd = Sshd::start_new();
    let session = connector(&sshd)
        .reconnect_within(Duration::from_secs(2))
        .open(&sshd.addr(), Duration::from_secs(20))
        .await
        .expect("connect");
    tokio::task::block_in_place(|| sshd.stop());
    // No pause: whether or not the session has noticed the drop yet, the call must dial
    // again (a channel that cannot open on the dead connection retries on a new one) and
    // fail the same way.
    let err = tokio::time::timeout(GUARD, session.run(ExecRequest::new("true"), &no_progress))
        .await
        .expect("no hang")
        .expect_err("host is down");
    assert_eq!(err.kind(), "connection", "{err}");
    let chain = format!(
        "{err} / {:?}",
        std::error::Error::source(&err).map(ToString::to_string)
    );
    assert!(
        chain.contains("re-established") && chain.contains("TCP connect"),
        "{chain}"
    );
}

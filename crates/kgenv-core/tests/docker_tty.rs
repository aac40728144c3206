//! `ContainerEngine::exec_tty` (what `kgenv shell` runs on) against the real Docker Engine,
//! three times: the local socket, the tunnelled transport over a test forward, and a real
//! OpenSSH sshd with kgenv's russh session, where the exec's hijacked connection rides a
//! `direct-streamlocal` channel. Typed bytes reach the command, its terminal has the asked
//! size and follows a resize, and its exit code comes back.

mod docker_support;

use std::collections::BTreeMap;
use std::time::Duration;

use docker_support::{base_image, engine, labels, unique, Cleanup, Via};
use futures::StreamExt;
use kgenv_core::backends::container::{ContainerRequest, TermSize, TtyExec};
use tokio::io::AsyncWriteExt;

/// How long one expected output may take (this only bounds the wait).
const WITHIN: Duration = Duration::from_secs(20);

/// Reads the terminal until it has shown `needle`; what it showed so far.
async fn read_until(tty: &mut TtyExec, shown: &mut String, needle: &str) {
    let found = tokio::time::timeout(WITHIN, async {
        while !shown.contains(needle) {
            match tty.output.next().await {
                Some(chunk) => shown.push_str(&String::from_utf8_lossy(&chunk.expect("output"))),
                None => return false,
            }
        }
        true
    })
    .await;
    assert!(
        found == Ok(true),
        "the terminal never showed {needle:?}; it showed:\n{shown}"
    );
}

async fn typed(tty: &mut TtyExec, line: &str) {
    tty.input
        .write_all(format!("{line}\r").as_bytes())
        .await
        .expect("type");
    tty.input.flush().await.expect("flush");
}

async fn a_terminal_runs_resizes_and_exits(via: Via) {
    let (engine, _remote) = engine(via).await;
    let mut cleanup = Cleanup::default();
    let name = unique(&format!("tty-{via:?}").to_lowercase());
    let req = ContainerRequest {
        name: name.clone(),
        image: base_image().await,
        gpus: None,
        ports: Vec::new(),
        mounts: Vec::new(),
        shm_size_bytes: 64 << 20,
        env: BTreeMap::new(),
        labels: labels(&[("kgenv-env", "test")]),
        command: Some(vec!["sleep".into(), "3600".into()]),
        working_dir: None,
    };
    cleanup.container(&name);
    engine.create_container(&req).await.expect("create");
    engine.start_container(&name).await.expect("start");

    let mut tty = engine
        .exec_tty(
            &name,
            &["sh".to_string()],
            &["TERM=xterm".to_string()],
            TermSize {
                rows: 30,
                cols: 100,
            },
        )
        .await
        .expect("a terminal");
    let mut shown = String::new();
    // Only the command's output has `7`: the echo of the typed line has `$((3+4))`.
    typed(&mut tty, "echo tty-$((3+4)) $TERM").await;
    read_until(&mut tty, &mut shown, "tty-7 xterm").await;
    typed(&mut tty, "stty size").await;
    read_until(&mut tty, &mut shown, "30 100").await;

    tty.control
        .resize(TermSize {
            rows: 50,
            cols: 132,
        })
        .await
        .expect("resize");
    typed(&mut tty, "stty size").await;
    read_until(&mut tty, &mut shown, "50 132").await;

    typed(&mut tty, "exit 4").await;
    let ended = tokio::time::timeout(WITHIN, async {
        while let Some(chunk) = tty.output.next().await {
            chunk.expect("output");
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the output ends when the shell exits:\n{shown}"
    );
    assert_eq!(tty.control.exit_code().await.expect("exit code"), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_terminal() {
    a_terminal_runs_resizes_and_exits(Via::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_terminal() {
    a_terminal_runs_resizes_and_exits(Via::Tunnel).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_terminal() {
    a_terminal_runs_resizes_and_exits(Via::Ssh).await;
}

#[tokio::test]
async fn an_engine_without_terminals_says_so() {
    use kgenv_core::backends::container::EngineLocation;
    let engine = kgenv_core::mock::MockWorld::new()
        .backends()
        .engine
        .connect(EngineLocation::Local)
        .await
        .expect("the simulated engine");
    let err = engine
        .exec_tty(
            "kgenv-kg",
            &["sh".into()],
            &[],
            TermSize { rows: 24, cols: 80 },
        )
        .await
        .expect_err("no terminal in the simulation");
    assert!(err.to_string().contains("kgenv exec -- CMD"), "{err}");
}

//! The Docker layer against the real Docker Engine on this machine, each test three times:
//! through the local socket; through the tunnelled transport over a test `Remote` whose
//! `open_unix` forwards to the same socket (no SSH); and through a real OpenSSH sshd on
//! 127.0.0.1 with kgenv's russh session, the engine API carried by `direct-streamlocal`
//! channels to `/var/run/docker.sock`.

mod docker_support;

use std::collections::BTreeMap;
use std::time::Duration;

use docker_support::{base_image, engine, free_port, labels, unique, Cleanup, Collect, Via};
use kgenv_core::backends::container::{
    BindMount, ContainerEngine, ContainerRequest, LogOptions, PortPublish,
};
use kgenv_core::backends::{Progress, Stream};
use kgenv_core::gpu::gpu_report;

fn request(name: &str, image: &str, command: &str) -> ContainerRequest {
    ContainerRequest {
        name: name.into(),
        image: image.into(),
        gpus: None,
        ports: Vec::new(),
        mounts: Vec::new(),
        shm_size_bytes: 128 << 20,
        env: BTreeMap::new(),
        labels: labels(&[("kgenv-env", "test")]),
        command: Some(vec!["sh".into(), "-c".into(), command.into()]),
        working_dir: None,
    }
}

const SLEEPER: &str = "trap 'exit 0' TERM; while :; do sleep 1; done";

async fn started(engine: &dyn ContainerEngine, cleanup: &mut Cleanup, req: &ContainerRequest) {
    cleanup.container(&req.name);
    engine.create_container(req).await.expect("create");
    engine.start_container(&req.name).await.expect("start");
}

async fn exec_streams_output_and_exit_code(via: Via) {
    let (engine, remote) = engine(via).await;
    let mut cleanup = Cleanup::default();
    let name = unique(&format!("exec-{via:?}").to_lowercase());
    started(
        engine.as_ref(),
        &mut cleanup,
        &request(&name, &base_image().await, SLEEPER),
    )
    .await;
    let info = engine
        .inspect_container(&name)
        .await
        .expect("inspect")
        .expect("exists");
    assert!(info.running);
    assert_eq!(
        info.labels.get("kgenv-env").map(String::as_str),
        Some("test")
    );

    let seen = Collect::default();
    let sink = seen.clone();
    let cmd: Vec<String> = [
        "sh",
        "-c",
        "echo one; echo err1 >&2; printf 'two\\nthree'; exit 3",
    ]
    .map(String::from)
    .to_vec();
    let out = engine
        .exec(&name, &cmd, &move |p| sink.push(p))
        .await
        .expect("exec");
    assert_eq!(out.exit_code, 3);
    assert_eq!(out.stdout_text(), "one\ntwo\nthree");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err1\n");
    assert_eq!(seen.lines(Stream::Stdout), vec!["one", "two", "three"]);
    assert_eq!(seen.lines(Stream::Stderr), vec!["err1"]);

    let ok = engine
        .exec(&name, &["true".to_string()], &|_| {})
        .await
        .expect("exec true");
    assert!(ok.success());
    // A command that is not there: the engine's exec fails inside, with code 126/127.
    let missing = engine
        .exec(&name, &["no-such-command".to_string()], &|_| {})
        .await;
    match missing {
        Ok(o) => assert!(o.exit_code == 126 || o.exit_code == 127, "{o:?}"),
        Err(e) => assert!(e.to_string().contains("no-such-command"), "{e}"),
    }

    // Several hijacked exec streams at once, each on its own connection.
    let runs = (0..6).map(|i| {
        let engine = engine.clone();
        let name = name.clone();
        async move {
            let cmd = vec![
                "sh".to_string(),
                "-c".to_string(),
                format!("echo n{i}; exit {i}"),
            ];
            engine.exec(&name, &cmd, &|_| {}).await
        }
    });
    for (i, r) in futures::future::join_all(runs)
        .await
        .into_iter()
        .enumerate()
    {
        let r = r.expect("concurrent exec");
        assert_eq!(
            (r.exit_code, r.stdout_text()),
            (i as i64, format!("n{i}\n"))
        );
    }

    engine.remove_container(&name).await.expect("remove");
    assert!(engine
        .inspect_container(&name)
        .await
        .expect("inspect")
        .is_none());
    assert!(engine
        .remove_container(&name)
        .await
        .expect_err("gone")
        .is_not_found());
    if let Some(r) = remote {
        // A hijacked exec upgrades its connection, which never returns to the pool: each of
        // the eight execs that ran (the first, `true`, the six at once) had a tunnel stream
        // of its own.
        assert!(
            r.opened() >= 8,
            "every hijacked exec went through its own tunnel stream ({} streams)",
            r.opened()
        );
    }
}

async fn logs_are_read_and_followed(via: Via) {
    let (engine, _) = engine(via).await;
    let mut cleanup = Cleanup::default();
    let name = unique(&format!("logs-{via:?}").to_lowercase());
    // kgenv's containers restart unless stopped: a rerun of this command would print its
    // lines again, so a rerun (marked by /ran in the container's own layer) prints nothing.
    // The second half waits for /go, which the test creates only once the follow has
    // delivered the first half: those lines did not exist when the follow began.
    let cmd = "[ -e /ran ] && exit 0; touch /ran; echo first; echo to-stderr >&2; \
               while [ ! -e /go ]; do sleep 0.1; done; echo second; echo third";
    started(
        engine.as_ref(),
        &mut cleanup,
        &request(&name, &base_image().await, cmd),
    )
    .await;

    // Following returns when the container's command ends (the engine closes a follow when
    // the container dies, even when its restart policy starts it again: docker/cli#5305),
    // with every line in order.
    let seen = Collect::default();
    let first = tokio::sync::Notify::new();
    let sink = |p: Progress| {
        let is_first = matches!(&p, Progress::Line { line, .. } if line == "first");
        seen.push(p);
        if is_first {
            first.notify_one();
        }
    };
    let follow = LogOptions {
        follow: true,
        ..Default::default()
    };
    let following =
        tokio::time::timeout(Duration::from_secs(60), engine.logs(&name, follow, &sink));
    let release = async {
        tokio::time::timeout(Duration::from_secs(60), first.notified())
            .await
            .expect("the follow delivers the first line");
        assert!(
            seen.lines(Stream::Stdout) == ["first"],
            "nothing past the first half yet: {:?}",
            seen.lines(Stream::Stdout)
        );
        let go = engine
            .exec(&name, &["touch".to_string(), "/go".to_string()], &|_| {})
            .await
            .expect("exec touch /go");
        assert!(go.success(), "{}", go.stderr_tail());
    };
    let (followed, ()) = tokio::join!(following, release);
    followed
        .expect("the follow ends when the container stops")
        .expect("logs");
    assert_eq!(seen.lines(Stream::Stdout), vec!["first", "second", "third"]);
    assert_eq!(seen.lines(Stream::Stderr), vec!["to-stderr"]);

    let tail = Collect::default();
    let sink = tail.clone();
    engine
        .logs(
            &name,
            LogOptions {
                tail: Some(1),
                ..Default::default()
            },
            &move |p| sink.push(p),
        )
        .await
        .expect("tail");
    // Reruns print nothing, so the last line is the command's last.
    let mut last = tail.lines(Stream::Stdout);
    last.extend(tail.lines(Stream::Stderr));
    assert_eq!(last, vec!["third"], "tail 1 returns the last line");
    assert!(engine
        .logs(&unique("no-such"), LogOptions::default(), &|_| {})
        .await
        .expect_err("absent")
        .is_not_found());
}

async fn bind_mount_with_rslave_sees_later_host_mounts(via: Via) {
    let (engine, _) = engine(via).await;
    let mut cleanup = Cleanup::default();
    let dir = tempfile::tempdir().expect("tempdir");
    let host = dir.path().join("bucket");
    std::fs::create_dir_all(&host).expect("mkdir");
    let host = host.to_str().expect("utf-8").to_string();
    // Like gcsfuse's mount point on a systemd host: the directory sits on a shared mount.
    let sh = |c: &str| {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(c)
            .status()
            .expect("sh")
            .success()
    };
    assert!(
        sh(&format!(
            "mount --bind {host} {host} && mount --make-shared {host}"
        )),
        "making {host} a shared mount (tests run as root)"
    );
    cleanup.unmount(&host);

    let name = unique(&format!("mount-{via:?}").to_lowercase());
    let mut req = request(&name, &base_image().await, SLEEPER);
    req.mounts.push(BindMount {
        source: host.clone(),
        target: "/mnt/bucket".into(),
        read_only: false,
        propagation: Some("rslave".into()),
    });
    started(engine.as_ref(), &mut cleanup, &req).await;

    // A mount made on the host after the container started (gcsfuse remounting) shows inside.
    assert!(
        sh(&format!(
            "mount -t tmpfs -o size=1m kgenv-test {host} && echo from-the-host > {host}/hello"
        )),
        "tmpfs on {host}"
    );
    let out = engine
        .exec(
            &name,
            &["cat".to_string(), "/mnt/bucket/hello".to_string()],
            &|_| {},
        )
        .await
        .expect("exec");
    assert_eq!(
        (out.exit_code, out.stdout_text()),
        (0, "from-the-host\n".to_string()),
        "{}",
        out.stderr_tail()
    );
    let mounts = engine
        .exec(
            &name,
            &["cat".to_string(), "/proc/self/mountinfo".to_string()],
            &|_| {},
        )
        .await
        .expect("exec");
    let line = mounts
        .stdout_text()
        .lines()
        .find(|l| l.contains(" /mnt/bucket ") && l.contains("tmpfs"))
        .map(str::to_string);
    assert!(
        line.as_deref().is_some_and(|l| l.contains("master:")),
        "the container's mount is a slave of the host's: {line:?}"
    );
    engine.remove_container(&name).await.expect("remove");
}

/// Listening sockets on `port` (IPv4), from /proc/net/tcp: `(address, port)`.
fn listeners(port: u16) -> Vec<String> {
    let text = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let (addr, p) = f.get(1)?.split_once(':')?;
            let listening = f.get(3) == Some(&"0A");
            (listening && u16::from_str_radix(p, 16).ok()? == port).then(|| {
                let a = u32::from_str_radix(addr, 16).unwrap_or(0).to_le_bytes();
                format!("{}.{}.{}.{}", a[0], a[1], a[2], a[3])
            })
        })
        .collect()
}

async fn port_is_published_on_loopback_only(via: Via) {
    let (engine, _) = engine(via).await;
    let mut cleanup = Cleanup::default();
    let name = unique(&format!("port-{via:?}").to_lowercase());
    let port = free_port();
    let mut req = request(
        &name,
        &base_image().await,
        "mkdir -p /www && echo served > /www/index.html && exec httpd -f -p 8080 -h /www",
    );
    req.ports.push(PortPublish {
        container_port: 8080,
        host_port: port,
        host_ip: "127.0.0.1".into(),
    });
    started(engine.as_ref(), &mut cleanup, &req).await;

    // Wait for httpd itself (bounded only so a broken container fails instead of hanging).
    let mut body = String::new();
    for _ in 0..300 {
        if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.expect("write");
            body.clear();
            let _ = s.read_to_string(&mut body).await;
            if body.contains("served") {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        body.contains("served"),
        "reached the container on 127.0.0.1:{port}: {body:?}"
    );
    let bound = listeners(port);
    assert!(!bound.is_empty(), "something listens on {port}");
    assert!(
        bound.iter().all(|a| a == "127.0.0.1"),
        "published on 127.0.0.1 only, found {bound:?}"
    );
    engine.remove_container(&name).await.expect("remove");
}

async fn gpu_report_sees_the_stub_and_no_gpu(via: Via) {
    let (engine, _) = engine(via).await;
    let mut cleanup = Cleanup::default();
    let name = unique(&format!("gpu-{via:?}").to_lowercase());
    // The base image lists CUDA's stub directory first in LD_LIBRARY_PATH, as Kaggle's did.
    started(
        engine.as_ref(),
        &mut cleanup,
        &request(&name, &base_image().await, SLEEPER),
    )
    .await;
    let report = gpu_report(engine.as_ref(), &name).await.expect("probe");
    assert_eq!(
        report.stub_shadowing.as_deref(),
        Some("/usr/local/cuda/lib64/stubs"),
        "{report:?}"
    );
    assert!(report.gpus.is_empty(), "{report:?}");
    assert!(
        report
            .problem
            .as_deref()
            .is_some_and(|p| p.contains("nvidia-smi")),
        "{report:?}"
    );
    assert_eq!(report.torch_cuda, None, "no python in the image");
    assert!(!report.usable());
}

async fn a_hanging_gpu_probe_is_a_typed_timeout(via: Via) {
    let (engine, _) = engine(via).await;
    let mut cleanup = Cleanup::default();
    let name = unique(&format!("gpuhang-{via:?}").to_lowercase());
    started(
        engine.as_ref(),
        &mut cleanup,
        &request(&name, &base_image().await, SLEEPER),
    )
    .await;
    // An `nvidia-smi` that never answers, as on a GPU whose driver is wedged.
    let put = engine
        .exec(
            &name,
            &[
                "sh".into(),
                "-c".into(),
                "printf '#!/bin/sh\\nsleep 600\\n' > /bin/nvidia-smi && chmod +x /bin/nvidia-smi"
                    .into(),
            ],
            &|_: Progress| {},
        )
        .await
        .expect("exec");
    assert!(put.success(), "{}", put.stderr_tail());
    let err = kgenv_core::gpu::gpu_report_within(
        engine.as_ref(),
        &name,
        Duration::from_secs(2),
        "test-host",
    )
    .await
    .expect_err("the probe hangs");
    assert!(err.is_timeout(), "a typed timeout: {err}");
    let text = err.to_string();
    assert!(
        text.contains("GPU probe in") && text.contains("test-host") && text.contains("2s"),
        "names the probe, the host and the limit: {text}"
    );
}

async fn gpu_request_on_a_host_without_nvidia_is_typed(via: Via) {
    let (engine, _) = engine(via).await;
    let info = engine.info().await.expect("info");
    assert!(
        !info.version.is_empty() && info.api_version.starts_with("1."),
        "{info:?}"
    );
    assert!(info.runtimes.iter().any(|r| r == "runc"), "{info:?}");
    let mut cleanup = Cleanup::default();
    let name = unique(&format!("gpureq-{via:?}").to_lowercase());
    let mut req = request(&name, &base_image().await, SLEEPER);
    req.gpus = Some(0);
    cleanup.container(&name);
    engine
        .create_container(&req)
        .await
        .expect("create is accepted");
    if info.has_nvidia_runtime() {
        // A GPU host (not the test machines, which have none): the same request starts.
        engine
            .start_container(&name)
            .await
            .expect("a GPU request starts where the NVIDIA runtime is installed");
        let running = engine.inspect_container(&name).await.expect("inspect");
        assert!(running.is_some_and(|c| c.running), "the GPU container runs");
        return;
    }
    let err = engine
        .start_container(&name)
        .await
        .expect_err("no nvidia device driver");
    assert!(err.is_gpu_unavailable(), "{err}");
    assert!(
        err.to_string().contains("NVIDIA Container Toolkit"),
        "{err}"
    );
}

async fn build_reports_lines_and_failures(via: Via) {
    let (engine, _) = engine(via).await;
    let mut cleanup = Cleanup::default();
    let base = base_image().await;
    let tag = format!(
        "kgenv-test/build:{}",
        unique(&format!("{via:?}").to_lowercase())
    );
    cleanup.image(&tag);
    let seen = Collect::default();
    let sink = seen.clone();
    let dockerfile = format!("FROM {base}\nRUN echo built-here > /marker && echo step-output\n");
    engine
        .build_image(
            &tag,
            &dockerfile,
            &labels(&[("kgenv.base", &base)]),
            &move |p| sink.push(p),
        )
        .await
        .expect("build");
    let lines = seen.lines(Stream::Stdout);
    assert!(lines.iter().any(|l| l == "step-output"), "{lines:?}");
    let img = engine
        .inspect_image(&tag)
        .await
        .expect("inspect")
        .expect("built");
    assert_eq!(img.labels.get("kgenv.base"), Some(&base));
    assert!(
        img.env.iter().any(|e| e.starts_with("LD_LIBRARY_PATH=")),
        "{:?}",
        img.env
    );

    let bad = format!("FROM {base}\nRUN echo about to fail && exit 7\n");
    let err = engine
        .build_image(&format!("{tag}-bad"), &bad, &BTreeMap::new(), &|_| {})
        .await
        .expect_err("the RUN fails");
    assert!(
        matches!(
            err,
            kgenv_core::BackendError::CommandFailed { exit_code: 7, .. }
        ),
        "{err}"
    );
    let missing = engine
        .build_image(
            &format!("{tag}-nobase"),
            "FROM kgenv-test/does-not-exist:1\n",
            &BTreeMap::new(),
            &|_| {},
        )
        .await;
    let missing = missing.expect_err("a missing base image fails the build");
    assert!(
        missing.to_string().contains("kgenv-test/does-not-exist"),
        "the error names the missing base: {missing}"
    );
}

async fn pull_of_a_missing_image_is_typed(via: Via) {
    let (engine, _) = engine(via).await;
    // A loopback registry port nobody listens on: a fast, local failure.
    let reference = format!("127.0.0.1:{}/kgenv-test/none:1", free_port());
    let err = engine
        .pull_image(&reference, &|_: Progress| {})
        .await
        .expect_err("nothing to pull from");
    assert!(
        err.to_string().contains(&reference),
        "the error names what could not be pulled: {err}"
    );
    assert!(engine
        .inspect_image(&reference)
        .await
        .expect("inspect")
        .is_none());
}

#[tokio::test]
async fn a_tunnel_that_cannot_reach_the_socket_says_why() {
    use kgenv_core::backends::container::EngineLocation;
    let remote = docker_support::SocketRemote::to("/nonexistent/kgenv-test/docker.sock");
    let err = kgenv_core::docker::DockerConnector::new()
        .open(EngineLocation::Remote(remote.clone()))
        .await
        .expect_err("no socket there");
    assert!(err.is_retryable(), "a connection error: {err}");
    let text = err.to_string();
    assert!(
        text.contains("test@socket-forward:0:/var/run/docker.sock"),
        "{text}"
    );
    assert!(
        text.contains("No such file or directory"),
        "the cause is kept in the message: {text}"
    );
    assert!(remote.opened() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_ssh_tunnel_that_cannot_reach_the_socket_says_why() {
    use kgenv_core::backends::container::EngineLocation;
    // sshd answers a streamlocal open it cannot connect with a bare "connect failed", for a
    // missing socket and for one the login user may not open alike: the error names the
    // socket and both causes, with the docker-group fix.
    let sshd = docker_support::start_sshd();
    let remote = docker_support::ssh_session(&sshd).await;
    let err = kgenv_core::docker::DockerConnector::new()
        .remote_socket("/nonexistent/kgenv-test/docker.sock")
        .open(EngineLocation::Remote(remote))
        .await
        .expect_err("no socket there");
    assert!(err.is_retryable(), "a connection error: {err}");
    let text = err.to_string();
    assert!(
        text.contains("/nonexistent/kgenv-test/docker.sock"),
        "names the socket: {text}"
    );
    assert!(
        text.contains("`docker` group"),
        "says how to fix access: {text}"
    );
    assert!(
        sshd.log().contains("/nonexistent/kgenv-test/docker.sock"),
        "the open reached sshd:\n{}",
        sshd.log()
    );
}

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod local {
            use super::*;
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(Via::Local).await })*
        }
        mod tunnel {
            use super::*;
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(Via::Tunnel).await })*
        }
        mod ssh {
            use super::*;
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(Via::Ssh).await })*
        }
    };
}

both!(
    exec_streams_output_and_exit_code,
    logs_are_read_and_followed,
    bind_mount_with_rslave_sees_later_host_mounts,
    port_is_published_on_loopback_only,
    gpu_report_sees_the_stub_and_no_gpu,
    gpu_request_on_a_host_without_nvidia_is_typed,
    a_hanging_gpu_probe_is_a_typed_timeout,
    build_reports_lines_and_failures,
    pull_of_a_missing_image_is_typed,
);

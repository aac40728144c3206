//! Pulls through the real engine from a real registry: Debian's `docker-registry`
//! (distribution) started by the test on 127.0.0.1 (the engine trusts 127.0.0.0/8 over plain
//! HTTP), with an image the test builds and pushes itself. Checks per-layer byte progress,
//! locally and through the tunnelled transport.

mod docker_support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use docker_support::{
    base_image, engine, free_port, require_engine, unique, Cleanup, Collect, Via,
};
use futures::StreamExt;

/// A `docker-registry serve` on a free loopback port, killed on drop.
struct Registry {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Registry {
    async fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("data").display()
        );
        let path = dir.path().join("config.yml");
        std::fs::write(&path, config).expect("registry config");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start docker-registry ({e}): install Debian's docker-registry (scripts/setup/50-docker.sh does)"));
        let reg = Self {
            child,
            port,
            _dir: dir,
        };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return reg;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("docker-registry did not listen on 127.0.0.1:{port}");
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Builds an image with a 4 MB layer on the test base and pushes it to `reg`; the local
/// copy of that tag is removed so the pull has to download it.
async fn pushed_image(reg: &Registry, cleanup: &mut Cleanup, tag: &str) -> String {
    let engine = require_engine().await;
    let reference = format!("127.0.0.1:{}/kgenv-test/pull:{tag}", reg.port);
    cleanup.image(&reference);
    let base = base_image().await;
    let dockerfile = format!("FROM {base}\nRUN head -c 4000000 /dev/urandom > /payload\n");
    use kgenv_core::backends::container::ContainerEngine;
    engine
        .build_image(&reference, &dockerfile, &Default::default(), &|_| {})
        .await
        .expect("build");
    let opts = bollard::query_parameters::PushImageOptionsBuilder::default()
        .tag(tag)
        .build();
    let repo = format!("127.0.0.1:{}/kgenv-test/pull", reg.port);
    let mut push = engine.client().push_image(&repo, Some(opts), None);
    while let Some(ev) = push.next().await {
        ev.expect("push to the local registry");
    }
    let rm = bollard::query_parameters::RemoveImageOptionsBuilder::default()
        .force(true)
        .build();
    engine
        .client()
        .remove_image(&reference, Some(rm), None)
        .await
        .expect("remove the local tag");
    reference
}

async fn pull_reports_bytes_per_layer(via: Via) {
    let reg = Registry::start().await;
    let mut cleanup = Cleanup::default();
    let reference = pushed_image(
        &reg,
        &mut cleanup,
        &unique(&format!("{via:?}").to_lowercase()),
    )
    .await;
    let (engine, remote) = engine(via).await;
    assert!(engine
        .inspect_image(&reference)
        .await
        .expect("inspect")
        .is_none());

    let seen = Collect::default();
    let sink = seen.clone();
    engine
        .pull_image(&reference, &move |p| sink.push(p))
        .await
        .expect("pull");
    let img = engine
        .inspect_image(&reference)
        .await
        .expect("inspect")
        .expect("pulled");
    assert!(img.id.starts_with("sha256:"));

    let bytes: Vec<(String, u64, Option<u64>)> = seen
        .bytes()
        .into_iter()
        .filter(|(i, _, _)| !i.ends_with("(extract)"))
        .collect();
    assert!(
        !bytes.is_empty(),
        "byte progress reported: {:?}",
        seen.0.lock().expect("lock")
    );
    // The new layer ends at its full size, which is the 4 MB payload compressed (random
    // data does not compress).
    let (item, done, total) = bytes.last().cloned().expect("a report");
    assert!(item.starts_with("layer "), "{item}");
    assert_eq!(Some(done), total, "the last report is the complete layer");
    assert!(
        (4_000_000..4_200_000).contains(&done),
        "layer of {done} bytes"
    );
    let lines = seen.lines(kgenv_core::backends::Stream::Stdout);
    assert!(
        lines.iter().any(|l| l.contains("already exists")),
        "the base layers were not downloaded again: {lines:?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("Status: Downloaded newer image")),
        "{lines:?}"
    );

    // A tag the registry does not have is a typed not-found.
    let missing = format!("127.0.0.1:{}/kgenv-test/pull:no-such-tag", reg.port);
    let err = engine
        .pull_image(&missing, &|_| {})
        .await
        .expect_err("no such tag");
    assert!(err.is_not_found(), "{err}");
    if let Some(r) = remote {
        assert!(r.opened() > 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_pull_reports_bytes_per_layer() {
    pull_reports_bytes_per_layer(Via::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_pull_reports_bytes_per_layer() {
    pull_reports_bytes_per_layer(Via::Tunnel).await;
}

//! Pulls through the real engine from a real registry: Debian's `docker-registry`
//! (distribution) started by the test on 127.0.0.1 (the engine trusts 127.0.0.0/8 over plain
//! HTTP), with an image the test builds and pushes itself. Checks per-layer byte progress,
//! locally and through the tunnelled transport, and who sees credentials: what reaches the
//! engine is read off the tunnelled connection's bytes, what the engine sends the registry
//! off the registry's own log (an htpasswd registry logs the user of each request).

mod docker_support;

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use kgenv_core::backends::container::{ContainerEngine, EngineLocation};
use kgenv_core::backends::remote::{ByteStream, ExecOutput, ExecRequest, Remote};
use kgenv_core::backends::{BackendResult, ProgressFn};
use kgenv_core::docker::{DockerConnector, RegistryAuth};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use docker_support::{
    base_image, engine, free_port, require_engine, unique, Cleanup, Collect, Via,
};
use futures::StreamExt;
use kgenv_core::docker::DockerEngine;

/// The user and password of the htpasswd registry.
const REG_USER: &str = "kgtest";
const REG_PASSWORD: &str = "kgtest-registry-pw";
/// bcrypt (cost 4, the registry checks it on every request) of [`REG_PASSWORD`], made with
/// `python3 -c "import crypt; print(crypt.crypt('kgtest-registry-pw',
/// crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16)))"`.
const REG_HTPASSWD: &str = "kgtest:$2b$04$g117hrXQw1FyOlJktyZoae1.YfXy5rK6FY5roaQhcRx8TskbrX.uK\n";

/// A `docker-registry serve` on a free loopback port, killed on drop.
struct Registry {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Registry {
    /// A registry anyone may pull from and push to.
    async fn start() -> Self {
        Self::start_with("  level: error\n", "").await
    }

    /// A registry that wants [`REG_USER`]'s password for every request, logging each
    /// request with its user to `registry.log`.
    async fn start_private() -> Self {
        Self::start_with(
            "  level: info\n  formatter: text\n",
            "auth:\n  htpasswd:\n    realm: kgenv-test\n    path: {dir}/htpasswd\n",
        )
        .await
    }

    async fn start_with(log: &str, auth: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        std::fs::write(dir.path().join("htpasswd"), REG_HTPASSWD).expect("htpasswd");
        let config = format!(
            "version: 0.1\nlog:\n{log}storage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n{}",
            dir.path().join("data").display(),
            auth.replace("{dir}", &dir.path().display().to_string()),
        );
        let path = dir.path().join("config.yml");
        std::fs::write(&path, config).expect("registry config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("log file");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start docker-registry ({e}): install Debian's docker-registry (scripts/setup/50-docker.sh does)"));
        let reg = Self { child, port, dir };
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

    /// `127.0.0.1:PORT`.
    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// What the registry logged so far.
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
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
    pushed_image_as(reg, cleanup, tag, None).await
}

/// [`pushed_image`], pushing with these credentials.
async fn pushed_image_as(
    reg: &Registry,
    cleanup: &mut Cleanup,
    tag: &str,
    credentials: Option<bollard::auth::DockerCredentials>,
) -> String {
    let engine = require_engine().await;
    let reference = format!("127.0.0.1:{}/kgenv-test/pull:{tag}", reg.port);
    cleanup.image(&reference);
    let base = base_image().await;
    let dockerfile = format!("FROM {base}\nRUN head -c 4000000 /dev/urandom > /payload\n");
    engine
        .build_image(&reference, &dockerfile, &Default::default(), &|_| {})
        .await
        .expect("build");
    let opts = bollard::query_parameters::PushImageOptionsBuilder::default()
        .tag(tag)
        .build();
    let repo = format!("127.0.0.1:{}/kgenv-test/pull", reg.port);
    let mut push = engine.client().push_image(&repo, Some(opts), credentials);
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

/// A test host whose engine connections are copied through, recording every byte kgenv
/// sends the engine: what reached it, not what kgenv meant to send.
struct Tapped {
    sent: Arc<Mutex<Vec<u8>>>,
}

impl Tapped {
    /// The `POST /images/create` requests sent, each as its header block.
    fn pulls(&self) -> Vec<String> {
        let sent = String::from_utf8_lossy(&self.sent.lock().expect("lock")).into_owned();
        sent.split("POST /")
            .filter(|r| r.contains("images/create"))
            .map(|r| r.split("\r\n\r\n").next().unwrap_or_default().to_string())
            .collect()
    }
}

#[async_trait]
impl Remote for Tapped {
    fn endpoint(&self) -> String {
        "test@tapped-socket:0".into()
    }
    async fn exec(&self, _req: ExecRequest, _p: ProgressFn<'_>) -> BackendResult<ExecOutput> {
        unreachable!("pulls run no host command")
    }
    async fn put_file(&self, _path: &str, _content: &[u8], _mode: u32) -> BackendResult<()> {
        unreachable!("pulls write no host file")
    }
    async fn read_file(&self, _path: &str) -> BackendResult<Option<Vec<u8>>> {
        unreachable!("pulls read no host file")
    }
    async fn open_tcp(&self, _host: &str, _port: u16) -> BackendResult<Box<dyn ByteStream>> {
        unreachable!("the engine is reached by its socket")
    }
    async fn open_unix(&self, path: &str) -> BackendResult<Box<dyn ByteStream>> {
        assert_eq!(path, "/var/run/docker.sock");
        let engine = tokio::net::UnixStream::connect(docker_support::local_socket())
            .await
            .expect("engine socket");
        let (ours, theirs) = tokio::io::duplex(64 * 1024);
        let sent = self.sent.clone();
        tokio::spawn(async move {
            let (mut from_kgenv, mut to_kgenv) = tokio::io::split(theirs);
            let (mut from_engine, mut to_engine) = engine.into_split();
            let up = async {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    let n = match from_kgenv.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    sent.lock().expect("lock").extend_from_slice(&buf[..n]);
                    if to_engine.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                let _ = to_engine.shutdown().await;
            };
            let down = async {
                let _ = tokio::io::copy(&mut from_engine, &mut to_kgenv).await;
                let _ = to_kgenv.shutdown().await;
            };
            tokio::join!(up, down);
        });
        Ok(Box::new(ours))
    }
}

/// An engine reached through a [`Tapped`] host, pulling with `auth`.
async fn tapped_engine(auth: RegistryAuth) -> (DockerEngine, Arc<Tapped>) {
    require_engine().await;
    let tap = Arc::new(Tapped {
        sent: Arc::default(),
    });
    let engine = DockerConnector::new()
        .registry_auth(auth)
        .open(EngineLocation::Remote(tap.clone()))
        .await
        .expect("tunnelled engine");
    (engine, tap)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_image_is_pulled_without_handing_the_engine_any_credential() {
    let reg = Registry::start().await;
    let mut cleanup = Cleanup::default();
    let reference = pushed_image(&reg, &mut cleanup, &unique("public")).await;
    // kgenv holds a login for this very registry: it must still not pass it on.
    let auth = RegistryAuth::token("ya29.user-token").login(reg.host(), REG_USER, REG_PASSWORD);
    let (engine, tap) = tapped_engine(auth).await;
    engine.pull_image(&reference, &|_| {}).await.expect("pull");
    assert!(engine
        .inspect_image(&reference)
        .await
        .expect("inspect")
        .is_some());
    let pulls = tap.pulls();
    assert_eq!(pulls.len(), 1, "one anonymous pull: {pulls:?}");
    let sent = String::from_utf8_lossy(&tap.sent.lock().expect("lock")).to_ascii_lowercase();
    assert!(
        !sent.contains("x-registry-auth"),
        "no credential header reached the engine"
    );
    assert!(!sent.contains("kgtest-registry-pw") && !sent.contains("ya29"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_image_is_pulled_anonymously_first_then_with_the_login() {
    let reg = Registry::start_private().await;
    let mut cleanup = Cleanup::default();
    let login = bollard::auth::DockerCredentials {
        username: Some(REG_USER.into()),
        password: Some(REG_PASSWORD.into()),
        serveraddress: Some(reg.host()),
        ..Default::default()
    };
    let reference = pushed_image_as(&reg, &mut cleanup, &unique("private"), Some(login)).await;

    // Without credentials for the registry: its refusal, as a typed auth error that says
    // what kgenv tried.
    let (anonymous, _) = tapped_engine(RegistryAuth::anonymous()).await;
    let err = anonymous
        .pull_image(&reference, &|_| {})
        .await
        .expect_err("the registry wants a login");
    assert!(err.is_auth(), "{err}");
    assert!(
        err.to_string().contains("no credentials for this registry"),
        "{err}"
    );

    // With a wrong password: refused twice, and said so; the registry saw the wrong one.
    let log_wrong = reg.log().len();
    let (wrong, _) =
        tapped_engine(RegistryAuth::anonymous().login(reg.host(), REG_USER, "not-the-password"))
            .await;
    let err = wrong
        .pull_image(&reference, &|_| {})
        .await
        .expect_err("a wrong password");
    assert!(err.is_auth(), "{err}");
    assert!(
        err.to_string()
            .contains("refused kgenv's read-only credentials too"),
        "{err}"
    );
    assert!(
        !err.to_string().contains("not-the-password"),
        "no secret in errors: {err}"
    );
    assert!(
        reg.log()[log_wrong..].contains("authentication failure"),
        "{}",
        reg.log()
    );

    let log_before = reg.log().len();
    let (engine, tap) =
        tapped_engine(RegistryAuth::anonymous().login(reg.host(), REG_USER, REG_PASSWORD)).await;
    let seen = Collect::default();
    let sink = seen.clone();
    engine
        .pull_image(&reference, &move |p| sink.push(p))
        .await
        .expect("pull with the login");
    assert!(engine
        .inspect_image(&reference)
        .await
        .expect("inspect")
        .is_some());
    assert!(!seen.bytes().is_empty(), "the retry reports progress");

    // What reached the engine: a pull without credentials, then one with.
    let pulls = tap.pulls();
    assert_eq!(pulls.len(), 2, "{pulls:?}");
    let has_auth = |r: &str| r.to_ascii_lowercase().contains("\r\nx-registry-auth:");
    assert!(
        !has_auth(&pulls[0]),
        "the first pull is anonymous: {}",
        pulls[0]
    );
    assert!(
        has_auth(&pulls[1]),
        "the second carries the login: {}",
        pulls[1]
    );

    // What the engine sent the registry, by its log: requests without an Authorization
    // header at all (htpasswd's "invalid authorization credential"; a wrong password would
    // be "authentication failure"), and only then the manifest fetched as an authorized
    // user, of whom the htpasswd file has one: kgtest.
    let log = reg.log()[log_before..].to_string();
    let first_authorized = log
        .lines()
        .position(|l| l.contains("authorized request") && l.contains("/manifests/"))
        .unwrap_or_else(|| panic!("the engine fetched the manifest authorized:\n{log}"));
    let anonymous_before = log
        .lines()
        .take(first_authorized)
        .filter(|l| l.contains("invalid authorization credential"))
        .count();
    assert!(
        anonymous_before > 0,
        "requests without credentials came first:\n{log}"
    );
    assert!(
        !log.contains("authentication failure"),
        "the login was right the first time it was sent:\n{log}"
    );
}

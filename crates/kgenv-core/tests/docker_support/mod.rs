//! Shared by the `docker_*` tests: the real engine, a locally built test image, a test-only
//! [`Remote`] whose `open_unix` forwards to this machine's Docker socket (the tunnelled
//! transport minus the SSH), and the real thing: a real OpenSSH sshd on 127.0.0.1
//! (`tests/support/sshd.rs`) reached with kgenv's own [`SshConnector`], whose
//! `direct-streamlocal` channels carry the Engine API to `/var/run/docker.sock`.
#![allow(dead_code)]

#[path = "../support/sshd.rs"]
pub mod sshd;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use kgenv_core::backends::container::{ContainerEngine, EngineLocation};
use kgenv_core::backends::remote::{
    ByteStream, ExecOutput, ExecRequest, HostAddr, Remote, RemoteConnector,
};
use kgenv_core::backends::{BackendResult, Progress, ProgressFn, Stream};
use kgenv_core::docker::{DockerConnector, DockerEngine};
use kgenv_core::ssh::SshConnector;
use kgenv_core::BackendError;
use sshd::Sshd;
use tokio::sync::OnceCell;

/// Where a test reaches the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The local socket.
    Local,
    /// The tunnelled transport through [`SocketRemote`].
    Tunnel,
    /// The tunnelled transport through a real sshd and kgenv's russh session.
    Ssh,
}

/// The local engine's socket path (`DOCKER_HOST=unix://…` or the default).
pub fn local_socket() -> String {
    match std::env::var("DOCKER_HOST") {
        Ok(h) if h.starts_with("unix://") => h.trim_start_matches("unix://").to_string(),
        _ => "/var/run/docker.sock".to_string(),
    }
}

/// Fails the test with how to get an engine when none answers.
pub async fn require_engine() -> DockerEngine {
    match DockerConnector::new().open(EngineLocation::Local).await {
        Ok(e) => e,
        Err(e) => panic!(
            "the docker_* tests need a running Docker Engine ({e}). Install it with `apt-get install docker.io` and start `dockerd`; scripts/setup/50-docker.sh does both"
        ),
    }
}

/// A test-only host session: commands run here, `open_unix` connects to this machine's
/// Docker socket. Counts the streams it opened.
pub struct SocketRemote {
    socket: String,
    opened: AtomicUsize,
}

impl SocketRemote {
    /// A remote forwarding to the local engine socket.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            socket: local_socket(),
            opened: AtomicUsize::new(0),
        })
    }

    /// A remote whose engine socket is at `socket` on this machine.
    pub fn to(socket: &str) -> Arc<Self> {
        Arc::new(Self {
            socket: socket.into(),
            opened: AtomicUsize::new(0),
        })
    }

    /// Streams opened so far.
    pub fn opened(&self) -> usize {
        self.opened.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Remote for SocketRemote {
    fn endpoint(&self) -> String {
        "test@socket-forward:0".into()
    }

    async fn exec(&self, req: ExecRequest, progress: ProgressFn<'_>) -> BackendResult<ExecOutput> {
        // Tests run as root, so `sudo` is not needed here.
        let out = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(&req.command)
            .output()
            .await
            .map_err(|e| BackendError::io("running a command for the test remote", e))?;
        for l in String::from_utf8_lossy(&out.stdout).lines() {
            progress(Progress::Line {
                stream: Stream::Stdout,
                line: l.to_string(),
            });
        }
        Ok(ExecOutput {
            exit_code: out.status.code().map_or(-1, i64::from),
            stdout: out.stdout,
            stderr: out.stderr,
        })
    }

    async fn put_file(&self, path: &str, content: &[u8], _mode: u32) -> BackendResult<()> {
        if let Some(parent) = std::path::Path::new(path).parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| BackendError::io("mkdir", e))?;
        }
        tokio::fs::write(path, content)
            .await
            .map_err(|e| BackendError::io("write", e))
    }

    async fn read_file(&self, path: &str) -> BackendResult<Option<Vec<u8>>> {
        match tokio::fs::read(path).await {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(BackendError::io("read", e)),
        }
    }

    async fn open_tcp(&self, host: &str, port: u16) -> BackendResult<Box<dyn ByteStream>> {
        let s = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|e| BackendError::io("tcp", e))?;
        Ok(Box::new(s))
    }

    async fn open_unix(&self, path: &str) -> BackendResult<Box<dyn ByteStream>> {
        assert_eq!(
            path, "/var/run/docker.sock",
            "the engine is asked for at Docker's standard socket"
        );
        self.opened.fetch_add(1, Ordering::SeqCst);
        let s = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|e| BackendError::Connection {
                endpoint: self.socket.clone(),
                message: e.to_string(),
                source: Some(Box::new(e)),
            })?;
        Ok(Box::new(s))
    }
}

/// Hands out the one [`SocketRemote`] whatever the address (for `Runner` on target `ssh`).
pub struct SocketRemoteConnector(pub Arc<SocketRemote>);

#[async_trait]
impl RemoteConnector for SocketRemoteConnector {
    async fn connect(
        &self,
        _addr: &HostAddr,
        _ready_within: Duration,
    ) -> BackendResult<Arc<dyn Remote>> {
        Ok(self.0.clone())
    }
}

/// A [`Remote`] that counts the engine streams it opens, and keeps the sshd it logs in to
/// (if any) running for as long as it lives: the engine's transport holds it, so the sshd
/// stops only when the engine is dropped.
pub struct Counted {
    inner: Arc<dyn Remote>,
    opened: Arc<AtomicUsize>,
    _sshd: Option<Arc<Sshd>>,
}

impl Counted {
    /// Streams opened so far.
    pub fn opened(&self) -> usize {
        self.opened.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Remote for Counted {
    fn endpoint(&self) -> String {
        self.inner.endpoint()
    }
    async fn exec(&self, req: ExecRequest, progress: ProgressFn<'_>) -> BackendResult<ExecOutput> {
        self.inner.exec(req, progress).await
    }
    async fn put_file(&self, path: &str, content: &[u8], mode: u32) -> BackendResult<()> {
        self.inner.put_file(path, content, mode).await
    }
    async fn read_file(&self, path: &str) -> BackendResult<Option<Vec<u8>>> {
        self.inner.read_file(path).await
    }
    async fn open_tcp(&self, host: &str, port: u16) -> BackendResult<Box<dyn ByteStream>> {
        self.inner.open_tcp(host, port).await
    }
    async fn open_unix(&self, path: &str) -> BackendResult<Box<dyn ByteStream>> {
        let s = self.inner.open_unix(path).await?;
        self.opened.fetch_add(1, Ordering::SeqCst);
        Ok(s)
    }
}

/// A real sshd on 127.0.0.1 logging in as the test user (root here, who can open the
/// engine socket), with its host key in the client's known_hosts file (as kgenv records it
/// for target `ssh`; no pinned keys there).
pub fn start_sshd() -> Arc<Sshd> {
    let sshd = Sshd::start_new();
    std::fs::write(
        sshd.client_known_hosts(),
        format!("[127.0.0.1]:{} {}\n", sshd.port, sshd.host_pub),
    )
    .expect("client known_hosts");
    Arc::new(sshd)
}

/// kgenv's SSH connector for `sshd` (its own known_hosts file, never the user's).
pub fn ssh_connector(sshd: &Sshd) -> SshConnector {
    SshConnector::new().known_hosts(sshd.client_known_hosts())
}

/// Opens a real SSH session to `sshd` with kgenv's connector.
pub async fn ssh_session(sshd: &Sshd) -> Arc<dyn Remote> {
    ssh_connector(sshd)
        .connect(&sshd.addr(), Duration::from_secs(20))
        .await
        .unwrap_or_else(|e| panic!("SSH login to the test sshd: {e}\nsshd log:\n{}", sshd.log()))
}

/// Hands out remotes from `inner`, counted, keeping `sshd` running while any lives.
pub struct CountingConnector {
    inner: Arc<dyn RemoteConnector>,
    opened: Arc<AtomicUsize>,
    sshd: Option<Arc<Sshd>>,
}

impl CountingConnector {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn RemoteConnector>, sshd: Option<Arc<Sshd>>) -> Self {
        Self {
            inner,
            opened: Arc::new(AtomicUsize::new(0)),
            sshd,
        }
    }
    /// Engine streams opened through every remote handed out so far.
    pub fn opened(&self) -> usize {
        self.opened.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl RemoteConnector for CountingConnector {
    async fn connect(
        &self,
        addr: &HostAddr,
        ready_within: Duration,
    ) -> BackendResult<Arc<dyn Remote>> {
        let inner = self.inner.connect(addr, ready_within).await?;
        Ok(Arc::new(Counted {
            inner,
            opened: self.opened.clone(),
            _sshd: self.sshd.clone(),
        }))
    }
}

/// An engine reached `via`, and the counted tunnel remote when tunnelled (through the test
/// forward, or through a real sshd that lives as long as the engine).
pub async fn engine(via: Via) -> (Arc<dyn ContainerEngine>, Option<Arc<Counted>>) {
    require_engine().await;
    let connector = DockerConnector::new();
    let (inner, sshd): (Arc<dyn Remote>, _) = match via {
        Via::Local => {
            let engine = connector
                .open(EngineLocation::Local)
                .await
                .expect("local engine");
            return (Arc::new(engine), None);
        }
        Via::Tunnel => (SocketRemote::new(), None),
        Via::Ssh => {
            let sshd = start_sshd();
            (ssh_session(&sshd).await, Some(sshd))
        }
    };
    let remote = Arc::new(Counted {
        inner,
        opened: Arc::new(AtomicUsize::new(0)),
        _sshd: sshd,
    });
    let engine = connector
        .open(EngineLocation::Remote(remote.clone()))
        .await
        .expect("tunnelled engine");
    (Arc::new(engine), Some(remote))
}

/// A name unique to this test process.
pub fn unique(tag: &str) -> String {
    format!("kgtest-{}-{tag}", std::process::id())
}

const APT_STUB: &str = "#!/bin/sh\n# Test stand-in for apt-get: records what it was asked to do.\necho \"apt-get $*\" >> /kgenv-installed.txt\n";
const PIP_STUB: &str = "#!/bin/sh\n# Test stand-in for pip: records what it was asked to install.\necho \"pip $*\" >> /kgenv-installed.txt\n";

fn busybox_path() -> String {
    std::env::var("KGENV_TEST_BUSYBOX").unwrap_or_else(|_| "/bin/busybox".into())
}

fn append(builder: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8], mode: u32) {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(mode);
    h.set_mtime(0);
    h.set_cksum();
    builder.append_data(&mut h, path, data).expect("tar entry");
}

static BASE: OnceCell<String> = OnceCell::const_new();

/// The test base image, built once per test process: a static busybox FROM scratch, with
/// stand-ins for `apt-get` and `pip` that record their arguments in `/kgenv-installed.txt`
/// (no network reaches Debian or PyPI from a build here), and CUDA's stub `libcuda.so` in an
/// `LD_LIBRARY_PATH` that lists the stub directory first, like Kaggle's GPU image.
pub async fn base_image() -> String {
    BASE.get_or_init(|| async {
        let busybox = std::fs::read(busybox_path()).unwrap_or_else(|e| {
            panic!("{} is missing ({e}): install Debian's busybox-static (scripts/setup/50-docker.sh does)", busybox_path())
        });
        let dockerfile = "FROM scratch\nCOPY rootfs/ /\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\nENV PATH=/usr/local/bin:/usr/bin:/bin LD_LIBRARY_PATH=/usr/local/cuda/lib64/stubs:/usr/local/nvidia/lib64\nCMD [\"sh\"]\n";
        let mut b = tar::Builder::new(Vec::new());
        append(&mut b, "Dockerfile", dockerfile.as_bytes(), 0o644);
        append(&mut b, "rootfs/bin/busybox", &busybox, 0o755);
        append(&mut b, "rootfs/usr/bin/apt-get", APT_STUB.as_bytes(), 0o755);
        append(&mut b, "rootfs/usr/local/bin/pip", PIP_STUB.as_bytes(), 0o755);
        append(&mut b, "rootfs/usr/local/cuda/lib64/stubs/libcuda.so", b"not a real library", 0o644);
        append(&mut b, "rootfs/tmp/.keep", b"", 0o644);
        let context = b.into_inner().expect("tar");
        let digest = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            context.hash(&mut h);
            h.finish()
        };
        let tag = format!("kgenv-test/base:{digest:016x}");
        let engine = require_engine().await;
        if engine.inspect_image(&tag).await.expect("inspect").is_none() {
            let opts = bollard::query_parameters::BuildImageOptionsBuilder::default().dockerfile("Dockerfile").t(&tag).rm(true).build();
            let mut s = engine.client().build_image(opts, None, Some(bollard::body_full(context.into())));
            while let Some(ev) = s.next().await {
                ev.expect("building the test base image");
            }
        }
        tag
    })
    .await
    .clone()
}

/// Collects progress reports.
#[derive(Default, Clone)]
pub struct Collect(pub Arc<Mutex<Vec<Progress>>>);

impl Collect {
    /// Records one report.
    pub fn push(&self, p: Progress) {
        self.0.lock().expect("lock").push(p);
    }
    /// Lines of one stream.
    pub fn lines(&self, want: Stream) -> Vec<String> {
        self.0
            .lock()
            .expect("lock")
            .iter()
            .filter_map(|p| match p {
                Progress::Line { stream, line } if *stream == want => Some(line.clone()),
                _ => None,
            })
            .collect()
    }
    /// Byte reports.
    pub fn bytes(&self) -> Vec<(String, u64, Option<u64>)> {
        self.0
            .lock()
            .expect("lock")
            .iter()
            .filter_map(|p| match p {
                Progress::Bytes { item, done, total } => Some((item.clone(), *done, *total)),
                _ => None,
            })
            .collect()
    }
}

/// Removes containers (and unmounts, removes paths) when dropped, even after a panic.
#[derive(Default)]
pub struct Cleanup {
    containers: Vec<String>,
    images: Vec<String>,
    unmount: Vec<String>,
    paths: Vec<String>,
}

impl Cleanup {
    /// Removes this container at the end.
    pub fn container(&mut self, name: &str) {
        self.containers.push(name.into());
    }
    /// Removes this image at the end.
    pub fn image(&mut self, name: &str) {
        self.images.push(name.into());
    }
    /// Unmounts this path (all stacked mounts) at the end.
    pub fn unmount(&mut self, path: &str) {
        self.unmount.push(path.into());
    }
    /// Removes this directory tree at the end.
    pub fn path(&mut self, path: &str) {
        self.paths.push(path.into());
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let quiet = |cmd: &mut std::process::Command| {
            let _ = cmd
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        };
        for c in &self.containers {
            quiet(std::process::Command::new("docker").args(["rm", "-f", "-v", c]));
        }
        for i in &self.images {
            quiet(std::process::Command::new("docker").args(["rmi", "-f", i]));
        }
        for m in &self.unmount {
            for _ in 0..4 {
                quiet(std::process::Command::new("umount").arg(m));
            }
        }
        for p in &self.paths {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Labels as a map.
pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

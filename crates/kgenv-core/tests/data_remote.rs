//! The data step on a "remote" host: `RemoteKaggle` copies the agent binary over the
//! `Remote` trait and runs it there with the request on stdin. The host here is this
//! machine behind a `Remote` that runs `sh -c` in a scratch `$HOME`; the agent binary is
//! this test executable, whose ignored `agent_child` test runs `kaggle::agent_main`.

#[path = "support/data_agent.rs"]
mod data_agent;
#[path = "support/kaggle_fake.rs"]
mod kaggle_fake;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use kaggle_fake::{generate, sha256_file, FakeAuth, FakeKaggle};
use kgenv_core::backends::kaggle::{DataFile, FetchOptions};
use kgenv_core::backends::remote::{
    ByteStream, ExecOutput, ExecRequest, HostAddr, Remote, RemoteConnector,
};
use kgenv_core::backends::{BackendResult, Kaggle, Progress, ProgressFn, Stream};
use kgenv_core::kaggle::credentials::Secret;
use kgenv_core::kaggle::{Credentials, KaggleClient, KaggleEndpoint, RemoteKaggle};
use kgenv_core::runner::data::{pull, PullOptions};
use kgenv_core::runner::Event;
use kgenv_core::BackendError;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "remote-secret-token-77";

#[test]
#[ignore = "helper: the agent the remote tests run"]
fn agent_child() {
    data_agent::run_if_requested();
}

/// A `Remote` that is this machine, with `$HOME` in a scratch directory.
struct LocalRemote {
    home: PathBuf,
    commands: Mutex<Vec<String>>,
    puts: Mutex<Vec<String>>,
}

#[async_trait]
impl Remote for LocalRemote {
    fn endpoint(&self) -> String {
        "tester@local:22".into()
    }
    async fn exec(&self, req: ExecRequest, progress: ProgressFn<'_>) -> BackendResult<ExecOutput> {
        self.commands
            .lock()
            .expect("lock")
            .push(req.command.clone());
        let mut child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(&req.command)
            .env("HOME", &self.home)
            .env(data_agent::VAR, "1")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| BackendError::io("spawn sh", e))?;
        let mut stdin = child.stdin.take().expect("stdin");
        let input = req.stdin.clone().unwrap_or_default();
        let writer = tokio::spawn(async move {
            let _ = stdin.write_all(&input).await;
        });
        let mut stderr = child.stderr.take().expect("stderr");
        let err_task = tokio::spawn(async move {
            let mut v = Vec::new();
            let _ = stderr.read_to_end(&mut v).await;
            v
        });
        let mut lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut stdout = Vec::new();
        while let Some(line) = lines
            .next_line()
            .await
            .map_err(|e| BackendError::io("read stdout", e))?
        {
            progress(Progress::Line {
                stream: Stream::Stdout,
                line: line.clone(),
            });
            stdout.extend_from_slice(line.as_bytes());
            stdout.push(b'\n');
        }
        let _ = writer.await;
        let status = child
            .wait()
            .await
            .map_err(|e| BackendError::io("wait", e))?;
        Ok(ExecOutput {
            exit_code: status.code().map_or(-1, i64::from),
            stdout,
            stderr: err_task.await.unwrap_or_default(),
        })
    }
    async fn put_file(&self, path: &str, content: &[u8], mode: u32) -> BackendResult<()> {
        use std::os::unix::fs::PermissionsExt;
        self.puts.lock().expect("lock").push(path.to_string());
        let p = PathBuf::from(path);
        std::fs::create_dir_all(p.parent().expect("parent"))
            .map_err(|e| BackendError::io("mkdir", e))?;
        std::fs::write(&p, content).map_err(|e| BackendError::io("write", e))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
            .map_err(|e| BackendError::io("chmod", e))
    }
    async fn read_file(&self, path: &str) -> BackendResult<Option<Vec<u8>>> {
        Ok(std::fs::read(path).ok())
    }
    async fn open_tcp(&self, _host: &str, _port: u16) -> BackendResult<Box<dyn ByteStream>> {
        Err(BackendError::other("not used"))
    }
    async fn open_unix(&self, _path: &str) -> BackendResult<Box<dyn ByteStream>> {
        Err(BackendError::other("not used"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_step_runs_on_the_host_through_the_agent() {
    let fake = FakeKaggle::start(FakeAuth::Token(TOKEN.into())).await;
    let src = tempfile::tempdir().expect("tempdir");
    let h = generate(&src.path().join("f"), 3_000_000, 1);
    fake.add_file("rc", "data/f.bin", &src.path().join("f"));
    generate(&src.path().join("g"), 10, 2);
    fake.add_file("ruled", "g.csv", &src.path().join("g"));
    fake.require_rules("ruled");

    let home = tempfile::tempdir().expect("tempdir");
    let remote = Arc::new(LocalRemote {
        home: home.path().into(),
        commands: Mutex::new(Vec::new()),
        puts: Mutex::new(Vec::new()),
    });
    let client = KaggleClient::new(
        KaggleEndpoint::custom(&fake.endpoint()).expect("endpoint"),
        Credentials::Token {
            token: Secret::new(TOKEN),
            source: "test".into(),
        },
    )
    .expect("client");
    let rk = RemoteKaggle::new(remote.clone(), &client, data_agent::command());

    let files = rk.list_files("rc").await.expect("list on the host");
    assert_eq!(files.len(), 1);
    assert_eq!(
        (files[0].name.as_str(), files[0].size),
        ("data/f.bin", 3_000_000)
    );

    let dest = tempfile::tempdir().expect("tempdir");
    let d = dest.path().to_str().expect("utf8");
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = events.clone();
    let report = pull(&rk, "rc", &PullOptions::new(d), move |e| {
        sink.lock().expect("lock").push(e)
    })
    .await
    .expect("pull on the host");
    assert_eq!(report.fetched.len(), 1);
    assert_eq!(sha256_file(&dest.path().join("data/f.bin")), h);
    assert!(
        events.lock().expect("lock").iter().any(|e| matches!(e, Event::Progress { item, done, .. } if item == "data/f.bin" && *done == 3_000_000)),
        "progress lines from the host come back as progress events"
    );
    assert_eq!(
        rk.present(d, "data/f.bin").await.expect("present"),
        Some(3_000_000)
    );

    // Copied once, executable, byte for byte the local binary.
    let puts = remote.puts.lock().expect("lock").clone();
    assert_eq!(puts.len(), 1, "{puts:?}");
    assert!(
        puts[0].starts_with(&format!(
            "{}/.cache/kgenv/bin/kgenv-",
            home.path().display()
        )),
        "{puts:?}"
    );
    assert_eq!(
        std::fs::read(&puts[0]).expect("copied binary"),
        std::fs::read(std::env::current_exe().expect("exe")).expect("exe bytes")
    );

    // Typed errors come back from the host.
    let err = pull(&rk, "ruled", &PullOptions::new(d), |_| {})
        .await
        .expect_err("403 on the host");
    assert!(
        matches!(err.backend(), Some(BackendError::PermissionDenied { .. })),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("/competitions/ruled/rules"),
        "{err}"
    );
    assert!(rk
        .list_files("nope")
        .await
        .expect_err("unknown")
        .is_not_found());

    // The token travelled on stdin only.
    for c in remote.commands.lock().expect("lock").iter() {
        assert!(!c.contains(TOKEN), "a command line carries the token: {c}");
    }

    // A second backend finds the binary already there and does not copy it again.
    let rk2 = RemoteKaggle::new(remote.clone(), &client, data_agent::command());
    rk2.list_files("rc").await.expect("list again");
    assert_eq!(remote.puts.lock().expect("lock").len(), 1);
}

/// The run's host is always the one `LocalRemote`.
struct OneHost(Arc<LocalRemote>);

#[async_trait]
impl RemoteConnector for OneHost {
    async fn connect(
        &self,
        _: &HostAddr,
        _: std::time::Duration,
    ) -> BackendResult<Arc<dyn Remote>> {
        Ok(self.0.clone())
    }
}

/// A backend that only works on a host, through this test's agent: anything done here
/// instead is an error, so the test knows the step went through the agent.
struct OnlyOnHost(KaggleClient);

#[async_trait]
impl Kaggle for OnlyOnHost {
    async fn list_files(&self, _: &str) -> BackendResult<Vec<DataFile>> {
        Err(BackendError::other("listed here, not on the host"))
    }
    async fn present(&self, _: &str, _: &str) -> BackendResult<Option<u64>> {
        Err(BackendError::other("checked here, not on the host"))
    }
    async fn fetch(
        &self,
        _: &str,
        _: &DataFile,
        _: &FetchOptions,
        _: ProgressFn<'_>,
    ) -> BackendResult<u64> {
        Err(BackendError::other("fetched here, not on the host"))
    }
    fn on_host(&self, host: Arc<dyn Remote>) -> BackendResult<Option<Arc<dyn Kaggle>>> {
        Ok(Some(Arc::new(RemoteKaggle::new(
            host,
            &self.0,
            data_agent::command(),
        ))))
    }
}

/// `[[data]] extract` reaches the agent on the host (it travels in each fetch request): the
/// data step on an ssh target unpacks there when the spec says so, and the same agent
/// backend leaves the zip when a call does not ask.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_step_extracts_on_the_host_when_the_spec_says_so() {
    use std::io::Write;

    use kgenv_core::mock::MockWorld;
    use kgenv_core::runner::{RunOptions, Runner};
    use kgenv_core::spec::{Data, Env, SshHost, Target};

    let fake = FakeKaggle::start(FakeAuth::Token(TOKEN.into())).await;
    let src = tempfile::tempdir().expect("tempdir");
    let raw = src.path().join("train.csv");
    let h = generate(&raw, 400_000, 4);
    let zpath = src.path().join("train.csv.zip");
    {
        let mut z = zip::ZipWriter::new(std::fs::File::create(&zpath).expect("zip"));
        z.start_file("train.csv", zip::write::SimpleFileOptions::default())
            .expect("entry");
        z.write_all(&std::fs::read(&raw).expect("raw"))
            .expect("write");
        z.finish().expect("finish");
    }
    fake.add_zipped("hz", "train.csv", &zpath, 400_000);

    let home = tempfile::tempdir().expect("tempdir");
    let remote = Arc::new(LocalRemote {
        home: home.path().into(),
        commands: Mutex::new(Vec::new()),
        puts: Mutex::new(Vec::new()),
    });
    let client = KaggleClient::new(
        KaggleEndpoint::custom(&fake.endpoint()).expect("endpoint"),
        Credentials::Token {
            token: Secret::new(TOKEN),
            source: "test".into(),
        },
    )
    .expect("client");
    // The data step: the spec's choice goes with the fetch request to the agent.
    let dest = tempfile::tempdir().expect("tempdir");
    let state = tempfile::tempdir().expect("tempdir");
    let env = Env::builder("onhost")
        .target(Target::Ssh(
            SshHost::parse("tester@127.0.0.1").expect("ssh host"),
        ))
        .data(
            Data::builder("hz")
                .dest(dest.path().to_str().expect("utf8"))
                .extract(true),
        )
        .build()
        .expect("valid env");
    let mut backends = MockWorld::new().backends();
    backends.remote = Arc::new(OneHost(remote.clone()));
    backends.kaggle = Arc::new(OnlyOnHost(client.clone()));
    Runner::new(env, backends)
        .state_dir(state.path())
        .up(RunOptions::default(), |_| {})
        .await
        .expect("up");
    assert_eq!(
        sha256_file(&dest.path().join("train.csv")),
        h,
        "unpacked on the host"
    );
    assert!(
        !dest.path().join("train.csv.zip").exists(),
        "the archive is removed after extraction"
    );

    // One agent backend, two calls, two choices: extraction is per call, not per backend.
    let rk = RemoteKaggle::new(remote.clone(), &client, data_agent::command());
    let file = DataFile {
        name: "train.csv".into(),
        size: 400_000,
    };
    let (kept, unpacked) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let to = |d: &tempfile::TempDir| FetchOptions::new(d.path().to_str().expect("utf8"));
    rk.fetch("hz", &file, &to(&kept), &|_| {})
        .await
        .expect("fetch as served");
    rk.fetch("hz", &file, &to(&unpacked).extract(true), &|_| {})
        .await
        .expect("fetch and unpack");
    assert_eq!(
        sha256_file(&kept.path().join("train.csv.zip")),
        sha256_file(&zpath),
        "extract = false: the zip as served"
    );
    assert!(!kept.path().join("train.csv").exists());
    assert_eq!(sha256_file(&unpacked.path().join("train.csv")), h);
    assert!(!unpacked.path().join("train.csv.zip").exists());
}

//! `plan` and `status` only look (issue 12, item 7): on the ssh target against a real
//! OpenSSH `sshd`, with `[[data]]` and Jupyter configured, they copy nothing to the host,
//! send no Kaggle credentials there, make no token or file here, and record no host key —
//! the host's files and kgenv's local directories hash the same before and after. What
//! cannot be known without a change (no data agent on the host yet, an unrecorded host key)
//! is shown as unknown.
//!
//! One test function: it sets `KGENV_HOME` and `KGENV_REMOTE_BINARY` for the process.

#[path = "support/data_agent.rs"]
mod data_agent;
#[path = "support/kaggle_fake.rs"]
mod kaggle_fake;
#[path = "support/sshd.rs"]
#[allow(dead_code)]
mod sshd;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use kaggle_fake::{generate, FakeAuth, FakeKaggle};
use kgenv_core::download::DownloadOptions;
use kgenv_core::kaggle::credentials::Secret;
use kgenv_core::kaggle::{Credentials, KaggleClient, KaggleData, KaggleEndpoint};
use kgenv_core::mock::MockWorld;
use kgenv_core::runner::{Change, Outcome, Report, RunOptions, Runner};
use kgenv_core::spec::{Container, Data, Env, Image, Jupyter, SshHost, Target};
use kgenv_core::ssh::SshConnector;
use sha2::Digest;

const TOKEN: &str = "readonly-kaggle-token-58";

#[test]
#[ignore = "helper: the data agent `up` runs on the host"]
fn agent_child() {
    data_agent::run_if_requested();
}

/// Every file and directory under `root`: relative path → type, mode and content hash.
fn tree(root: &Path) -> BTreeMap<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let md = std::fs::symlink_metadata(&p).expect("metadata");
            let rel = p.strip_prefix(root).expect("under root").to_path_buf();
            let mode = md.permissions().mode();
            let what = if md.is_dir() {
                stack.push(p.clone());
                format!("dir {mode:o}")
            } else if md.is_symlink() {
                format!("link {:?}", std::fs::read_link(&p).ok())
            } else {
                let bytes = std::fs::read(&p).expect("read");
                format!("file {mode:o} {}", hex::encode(sha2::Sha256::digest(bytes)))
            };
            out.insert(rel, what);
        }
    }
    out
}

/// What plan and status must leave alone: kgenv's local home, the environment's host
/// directory, the data destination, and the host's copy of the agent.
struct Watched {
    dirs: Vec<PathBuf>,
}

impl Watched {
    fn snapshot(&self) -> Vec<(PathBuf, BTreeMap<PathBuf, String>)> {
        self.dirs.iter().map(|d| (d.clone(), tree(d))).collect()
    }
}

fn change(report: &Report, step: &str) -> Change {
    match report.outcome(step) {
        Some(Outcome::Planned { change }) => *change,
        other => panic!("{step}: {other:?} in {report:?}"),
    }
}

/// The host's copies of kgenv, for the agent `KGENV_REMOTE_BINARY` names (root logs in).
fn host_agents(agent_dir: &Path) -> Vec<String> {
    std::fs::read_dir(agent_dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_and_status_leave_the_host_and_this_machine_as_they_were() {
    let home = tempfile::tempdir().expect("home");
    std::env::set_var("KGENV_HOME", home.path());
    let work = tempfile::tempdir().expect("work");
    // The agent `up` copies to the host: this test binary's `agent_child`, its requests
    // logged so the test sees what reached the host.
    let log = work.path().join("agent-requests.log");
    let wrapper = data_agent::write_wrapper(
        &work.path().join("agent.sh"),
        &format!("{{ cat; echo; }} | tee -a '{}' | ", log.display()),
    );
    std::env::set_var("KGENV_REMOTE_BINARY", &wrapper.binary);

    let fake = FakeKaggle::start(FakeAuth::Token(TOKEN.into())).await;
    generate(&work.path().join("train"), 50_000, 3);
    fake.add_file("rocomp", "train.csv", &work.path().join("train"));

    let sshd = sshd::Sshd::start_new();
    let known_hosts = kgenv_core::ssh::verify::known_hosts_path().expect("a home");
    std::fs::create_dir_all(known_hosts.parent().expect("config dir")).expect("config dir");
    std::fs::write(
        &known_hosts,
        format!(
            "{} {}\n",
            kgenv_core::ssh::verify::host_pattern("127.0.0.1", sshd.port),
            sshd.host_pub
        ),
    )
    .expect("known_hosts");

    let name = format!("ro{}", std::process::id());
    let dest_root = tempfile::tempdir().expect("dest");
    let dest = dest_root.path().join("rocomp");
    let host = SshHost::parse(&format!("{}@127.0.0.1:{}", sshd.user, sshd.port))
        .expect("ssh host")
        .identity_file(sshd.client_key.display().to_string());
    let env = Env::builder(&name)
        .target(Target::Ssh(host))
        .image(Image::builder())
        .container(Container::builder())
        .jupyter(Jupyter::builder().token())
        .data(Data::builder("rocomp").dest(dest.display().to_string()))
        .build()
        .expect("valid env");
    // Jupyter was set up on the host from another machine: its config is there, but no
    // token is kept here (the old `check` made one).
    let host_dir = PathBuf::from(env.host_dir());
    let _cleanup = RemoveOnDrop(host_dir.clone());
    std::fs::create_dir_all(host_dir.join("jupyter")).expect("host dir");
    std::fs::write(
        host_dir.join("jupyter/jupyter_server_config.json"),
        r#"{"IdentityProvider": {"token": "made-elsewhere"}}"#,
    )
    .expect("host config");

    let client = KaggleClient::new(
        KaggleEndpoint::custom(&fake.endpoint()).expect("endpoint"),
        Credentials::Token {
            token: Secret::new(TOKEN),
            source: "test".into(),
        },
    )
    .expect("client");
    let mut backends = MockWorld::new().backends();
    backends.remote = Arc::new(SshConnector::new());
    backends.kaggle =
        Arc::new(KaggleData::new(client, DownloadOptions::default()).expect("kaggle"));
    let runner = Runner::new(env, backends);

    let agent_dir = PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
        .join(".cache/kgenv/bin");
    let agents_before = host_agents(&agent_dir);
    let watched = Watched {
        dirs: vec![
            home.path().to_path_buf(),
            host_dir.clone(),
            dest_root.path().to_path_buf(),
        ],
    };
    let only = RunOptions::default().only(["host", "jupyter", "data/rocomp"]);

    // 1. Nothing of kgenv's on the host yet.
    let before = watched.snapshot();
    let plan = runner.plan(only.clone(), |_| {}).await.expect("plan");
    assert_eq!(change(&plan, "host"), Change::None);
    assert_eq!(
        change(&plan, "data/rocomp"),
        Change::Unknown,
        "without the agent on the host, what the destination holds is unknown"
    );
    assert_eq!(change(&plan, "jupyter"), Change::Update);
    let status = runner.status(|_| {}).await.expect("status");
    assert_eq!(change(&status.live, "host"), Change::None);
    assert_eq!(watched.snapshot(), before, "plan and status changed files");
    assert!(
        !kgenv_core::paths::keys_dir(&name).expect("a home").exists(),
        "a token was made locally"
    );
    assert_eq!(
        host_agents(&agent_dir),
        agents_before,
        "the agent was copied"
    );
    assert!(!log.exists(), "the agent ran on the host");
    assert_eq!(fake.state.signed_urls.load(Ordering::SeqCst), 0);

    // 2. After `up` put the agent there and pulled, `plan` asks it — sending no
    //    credentials — and sees the data complete; still nothing changes.
    runner
        .up(RunOptions::default().only(["data/rocomp"]), |_| {})
        .await
        .expect("up --only data");
    assert!(dest.join("train.csv").exists(), "pulled on the host");
    let up_log_len = std::fs::read(&log).expect("agent log").len();
    assert!(
        String::from_utf8_lossy(&std::fs::read(&log).expect("log")).contains(TOKEN),
        "up's fetch carries the credentials (the log is real)"
    );
    let before = watched.snapshot();
    let agents = host_agents(&agent_dir);
    let plan = runner.plan(only.clone(), |_| {}).await.expect("plan");
    assert_eq!(change(&plan, "data/rocomp"), Change::None);
    runner.status(|_| {}).await.expect("status");
    assert_eq!(watched.snapshot(), before, "plan and status changed files");
    assert_eq!(host_agents(&agent_dir), agents);
    let asked =
        String::from_utf8_lossy(&std::fs::read(&log).expect("log")[up_log_len..]).into_owned();
    assert!(
        asked.contains("\"present\""),
        "plan asked the agent: {asked}"
    );
    assert!(
        !asked.contains(TOKEN),
        "plan sent the credentials to the host"
    );
    assert!(!asked.contains("credentials\":{"), "{asked}");

    // 3. A host whose key is not recorded yet, with trust on first use: unknown, and
    //    known_hosts is not written.
    let other = sshd::Sshd::start_new();
    let tofu = Env::builder(format!("{name}t"))
        .target(Target::Ssh(
            SshHost::parse(&format!("{}@127.0.0.1:{}", other.user, other.port))
                .expect("ssh host")
                .identity_file(other.client_key.display().to_string())
                .trust_on_first_use(true),
        ))
        .build()
        .expect("valid env");
    let mut backends = MockWorld::new().backends();
    backends.remote = Arc::new(SshConnector::new());
    let before = watched.snapshot();
    let plan = Runner::new(tofu, backends)
        .plan(RunOptions::default(), |_| {})
        .await
        .expect("plan");
    assert_eq!(change(&plan, "host"), Change::Unknown);
    assert_eq!(watched.snapshot(), before, "plan recorded a host key");

    // The host's copy of the agent `up` made is this test's alone.
    for a in host_agents(&agent_dir) {
        if !agents_before.contains(&a) {
            let _ = std::fs::remove_file(agent_dir.join(a));
        }
    }
}

/// Removes the environment's host directory (on this machine) when the test ends.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

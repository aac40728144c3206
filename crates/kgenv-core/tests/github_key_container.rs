//! The GitHub key inside the container, on the real Docker Engine (issue 13, item 8a).
//!
//! `up` with a `[github_key]` runs the real github-key host script on this machine (target
//! `ssh`, kgenv's SSH session to a real sshd on 127.0.0.1) and the real container step, whose
//! container (the e2e stand-in for Kaggle's image: Debian's git and OpenSSH client) gets
//! the key and GitHub's pinned known_hosts bound read-only. Then `git ls-remote`, run in the
//! container as a Jupyter terminal would, reaches a real OpenSSH sshd standing in for
//! github.com that serves a bare repository:
//! - GitHub is a test backend whose `/meta` host keys are the stand-in sshd's, and whose
//!   "register key" authorizes the key on that sshd: only the key the step registered logs
//!   in, and only a server holding a pinned host key is trusted;
//! - the container reaches the sshd on the Docker bridge's gateway address. The one piece
//!   of test-only configuration is an ssh config written into the container's
//!   `~/.ssh/config` saying where "github.com" is (`HostName`, `Port`) and that its host key
//!   is looked up under the name `github.com` (`HostKeyAlias`, as port 22 would); the key
//!   and the known_hosts are found where ssh looks without configuration.

mod docker_support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use docker_support::sshd::Sshd;
use docker_support::{
    free_port, require_engine, ssh_connector, start_sshd, Cleanup, CountingConnector,
};
use kgenv_core::backends::container::ContainerEngine;
use kgenv_core::backends::github::{GitHub, GithubKeyInfo, KeyScope};
use kgenv_core::backends::remote::ExecOutput;
use kgenv_core::backends::{BackendResult, Backends};
use kgenv_core::docker::DockerConnector;
use kgenv_core::mock::MockWorld;
use kgenv_core::runner::{Outcome, Report, RunOptions, Runner};
use kgenv_core::shell::quote;
use kgenv_core::spec::{Container, Env, GithubKey, Gpus, Image, SshHost, Target};
use kgenv_core::steps::container::{GITHUB_KEY_LABEL, GITHUB_KNOWN_HOSTS_LABEL};
use kgenv_core::steps::github_key::{KEY_IN_CONTAINER, KNOWN_HOSTS_IN_CONTAINER};

/// GitHub for the test: its SSH host keys are the stand-in sshd's, and a registered key is
/// authorized on that sshd (a deleted one stays authorized there: the test checks which key
/// logged in by fingerprint).
struct StandInGitHub {
    sshd: Arc<Sshd>,
    keys: Mutex<Vec<GithubKeyInfo>>,
    next_id: AtomicU64,
}

#[async_trait]
impl GitHub for StandInGitHub {
    fn web_url(&self) -> String {
        "https://github.com".into()
    }
    async fn ssh_host_keys(&self) -> BackendResult<Vec<String>> {
        Ok(vec![self.sshd.host_pub.clone()])
    }
    async fn list_keys(&self, _scope: &KeyScope) -> BackendResult<Vec<GithubKeyInfo>> {
        Ok(self.keys.lock().expect("keys").clone())
    }
    async fn add_key(
        &self,
        _scope: &KeyScope,
        title: &str,
        key: &str,
        read_only: bool,
    ) -> BackendResult<GithubKeyInfo> {
        self.sshd.authorize(key);
        let info = GithubKeyInfo {
            id: self.next_id.fetch_add(1, Ordering::SeqCst) + 1,
            title: title.into(),
            key: key.into(),
            read_only,
        };
        self.keys.lock().expect("keys").push(info.clone());
        Ok(info)
    }
    async fn delete_key(&self, _scope: &KeyScope, id: u64) -> BackendResult<()> {
        self.keys.lock().expect("keys").retain(|k| k.id != id);
        Ok(())
    }
}

/// The e2e stand-in for Kaggle's image (git and ssh inside), built by scripts/setup/80-e2e.sh.
fn standin_image() -> String {
    std::env::var("KGENV_E2E_BASE_IMAGE").unwrap_or_else(|_| {
        panic!(
            "KGENV_E2E_BASE_IMAGE is not set: run scripts/test.sh, or source scripts/setup/80-e2e.sh \
             (it builds the stand-in for Kaggle's image, with git and openssh-client, recipe 2 or later)"
        )
    })
}

/// The address of Docker's default bridge on this machine: where a container reaches it.
/// The network's IPAM gateway when the engine lists one (recent engines leave it out for
/// the default bridge), otherwise the bridge interface's own IPv4 address.
async fn bridge_gateway() -> String {
    let engine = require_engine().await;
    let net = engine
        .client()
        .inspect_network("bridge", None)
        .await
        .expect("inspect Docker's bridge network");
    let listed = net
        .ipam
        .and_then(|i| i.config)
        .unwrap_or_default()
        .into_iter()
        .find_map(|c| {
            c.gateway
                .filter(|g| g.parse::<std::net::Ipv4Addr>().is_ok())
        });
    if let Some(gw) = listed {
        return gw;
    }
    let dev = net
        .options
        .and_then(|o| o.get("com.docker.network.bridge.name").cloned())
        .unwrap_or_else(|| "docker0".into());
    let text =
        run(std::process::Command::new("ip").args(["-4", "-o", "addr", "show", "dev", &dev]));
    text.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no IPv4 address on Docker's bridge {dev}: {text}"))
}

fn run(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().expect("command runs");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A bare repository with one commit on `main`; returns its path and the commit.
fn bare_repo(dir: &std::path::Path) -> (String, String) {
    let src = dir.join("src");
    let bare = dir.join("repo.git");
    let git = |args: &[&str]| {
        run(std::process::Command::new("git")
            .args([
                "-c",
                "user.name=kgenv",
                "-c",
                "user.email=kgenv@test.invalid",
            ])
            .args(args))
    };
    git(&["init", "-q", "-b", "main", &src.display().to_string()]);
    git(&[
        "-C",
        &src.display().to_string(),
        "commit",
        "-q",
        "--allow-empty",
        "-m",
        "first",
    ]);
    let head = git(&["-C", &src.display().to_string(), "rev-parse", "HEAD"]);
    git(&[
        "clone",
        "-q",
        "--bare",
        &src.display().to_string(),
        &bare.display().to_string(),
    ]);
    (bare.display().to_string(), head)
}

async fn exec(engine: &dyn ContainerEngine, container: &str, line: &str) -> ExecOutput {
    let cmd = vec!["sh".to_string(), "-c".to_string(), line.to_string()];
    engine.exec(container, &cmd, &|_| {}).await.expect("exec")
}

/// For this test only: where "github.com" is (`port`), the same server under a name with
/// no pinned key (`unpinned`), and an impostor answering as github.com with another host
/// key (`impostor`, on `impostor_port`).
async fn point_github_at(
    engine: &dyn ContainerEngine,
    container: &str,
    gw: &str,
    port: u16,
    impostor_port: u16,
) {
    let host = |name: &str, port: u16, alias: &str| {
        format!(
            "Host {name}\n  HostName {gw}\n  Port {port}\n  HostKeyAlias {alias}\n  BatchMode yes\n  ConnectTimeout 20\n"
        )
    };
    let config = [
        host("github.com", port, "github.com"),
        host("unpinned", port, "unpinned.example"),
        host("impostor", impostor_port, "github.com"),
    ]
    .concat();
    let out = exec(
        engine,
        container,
        &format!(
            "printf '%s' {} > /root/.ssh/config && chmod 0600 /root/.ssh/config",
            quote(&config)
        ),
    )
    .await;
    assert!(out.success(), "{}", out.stderr_tail());
}

/// Removes a file at the end, whatever the test's outcome.
struct RemoveFile(String);

impl Drop for RemoveFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn outcome(report: &Report, step: &str) -> Outcome {
    report
        .outcome(step)
        .cloned()
        .unwrap_or_else(|| panic!("no {step} in {report:#?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_over_ssh_works_inside_the_container_with_the_pinned_github_host_keys() {
    let image = standin_image();
    let engine = require_engine().await;
    assert!(
        engine
            .inspect_image(&image)
            .await
            .expect("inspect")
            .is_some(),
        "{image} is not in the engine: run scripts/setup/80-e2e.sh"
    );
    let gw = bridge_gateway().await;
    // The stand-in for github.com, also listening where containers reach this machine.
    let sshd = Arc::new(Sshd::with_config(&[&format!("ListenAddress {gw}")]));
    let impostor = Sshd::with_config(&[&format!("ListenAddress {gw}")]);
    let (repo, head) = bare_repo(sshd.dir());
    let github = Arc::new(StandInGitHub {
        sshd: sshd.clone(),
        keys: Mutex::new(Vec::new()),
        next_id: AtomicU64::new(100),
    });

    let mut backends: Backends = MockWorld::new().backends();
    backends.engine = Arc::new(DockerConnector::new());
    // The host is this machine, reached as a VM is: kgenv's SSH session to a real sshd
    // (host scripts through sudo, the engine through the session's socket forwarding).
    let host_sshd = start_sshd();
    backends.remote = Arc::new(CountingConnector::new(
        Arc::new(ssh_connector(&host_sshd)),
        Some(host_sshd.clone()),
    ));
    let mut host = SshHost::parse(&format!("{}@127.0.0.1:{}", host_sshd.user, host_sshd.port))
        .expect("ssh host");
    host.identity_file = Some(host_sshd.client_key.display().to_string());
    backends.github = github.clone();
    let name = format!("kgt{}gitkey", std::process::id());
    let spec = Env::builder(&name)
        .target(Target::Ssh(host))
        .image(Image::builder().base(&image))
        .container(
            Container::builder()
                .gpus(Gpus::None)
                .publish(8888, free_port(), "127.0.0.1")
                .shm_size("128m"),
        )
        .github_key(GithubKey::builder().repo("me/work"))
        .build()
        .expect("a valid spec");
    let container = spec.container.as_ref().expect("container").name.clone();
    let key_dir = format!("{}/github", spec.host_dir());
    let mut cleanup = Cleanup::default();
    cleanup.container(&container);
    cleanup.path(&spec.host_dir());
    // The github-key script also writes an ssh config drop-in for this machine's root.
    let drop_in = RemoveFile(format!("/etc/ssh/ssh_config.d/kgenv-{name}-github.conf"));
    let state = tempfile::tempdir().expect("state dir");
    let runner = Runner::new(spec.clone(), backends).state_dir(state.path());

    let first = runner
        .up(RunOptions::default(), |_| {})
        .await
        .expect("first up");
    assert_eq!(outcome(&first, "github-key"), Outcome::Changed);
    assert_eq!(outcome(&first, "container"), Outcome::Changed);
    let fingerprint = |s: &kgenv_core::state::State| {
        s.fact("github-key", "fingerprint")
            .expect("the key's fingerprint is recorded")
            .to_string()
    };
    let fp1 = fingerprint(&runner.state().await.expect("state"));
    let c1 = engine
        .inspect_container(&container)
        .await
        .expect("inspect")
        .expect("container");
    assert_eq!(c1.labels.get(GITHUB_KEY_LABEL), Some(&fp1));
    assert!(c1.labels.contains_key(GITHUB_KNOWN_HOSTS_LABEL));

    // What the container sees: the host's files, in the places ssh reads unconfigured.
    let seen = exec(
        &engine,
        &container,
        &format!("cat {KNOWN_HOSTS_IN_CONTAINER}; cat {KEY_IN_CONTAINER}.pub"),
    )
    .await;
    assert!(seen.success(), "{}", seen.stderr_tail());
    let host_pub = std::fs::read_to_string(format!("{key_dir}/id_ed25519.pub")).expect("pub");
    assert_eq!(
        seen.stdout_text(),
        format!("github.com {}\n{host_pub}", sshd.host_pub)
    );

    // git over ssh from inside the container, as in a Jupyter terminal.
    point_github_at(&engine, &container, &gw, sshd.port, impostor.port).await;
    let url = format!("{}@github.com:{repo}", sshd.user);
    let ls_remote = format!("git ls-remote {}", quote(&url));
    let out = exec(&engine, &container, &ls_remote).await;
    assert!(
        out.success(),
        "git ls-remote failed in the container: {}\nsshd log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        sshd.log()
    );
    assert_eq!(
        out.stdout_text(),
        format!("{head}\tHEAD\n{head}\trefs/heads/main\n")
    );
    assert!(
        sshd.log().contains(&format!("ED25519 {fp1}")),
        "the registered key logged in: {}",
        sshd.log()
    );
    // The same server under a name with no pinned key is refused: the pin did the trusting.
    let out = exec(
        &engine,
        &container,
        &format!(
            "git ls-remote {}",
            quote(&format!("{}@unpinned:{repo}", sshd.user))
        ),
    )
    .await;
    assert!(!out.success(), "an unpinned host key was trusted");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Host key verification failed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A server answering as github.com with a host key that is not pinned is refused.
    let out = exec(
        &engine,
        &container,
        &format!(
            "git ls-remote {}",
            quote(&format!("{}@impostor:{repo}", sshd.user))
        ),
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.success(), "an impostor of github.com was trusted");
    assert!(stderr.contains("Host key verification failed"), "{stderr}");
    assert_eq!(impostor.accepted_logins(), 0);

    // Read-only inside, even for the container's root.
    let key_before = std::fs::read(format!("{key_dir}/id_ed25519")).expect("key");
    for (file, line) in [
        (KEY_IN_CONTAINER, format!("echo x >> {KEY_IN_CONTAINER}")),
        (KEY_IN_CONTAINER, format!("rm -f {KEY_IN_CONTAINER}")),
        (
            KNOWN_HOSTS_IN_CONTAINER,
            format!("echo x >> {KNOWN_HOSTS_IN_CONTAINER}"),
        ),
    ] {
        let out = exec(&engine, &container, &line).await;
        assert!(!out.success(), "`{line}` changed {file} in the container");
    }
    assert_eq!(
        std::fs::read(format!("{key_dir}/id_ed25519")).expect("key"),
        key_before
    );

    // A key owned by another uid than the container's root (the host's login user on a
    // VM): ssh as root skips its permission check for it and root reads it.
    let login_uid = {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(format!("{key_dir}/id_ed25519"))
            .expect("key")
            .uid()
    };
    run(std::process::Command::new("chown")
        .arg("65534")
        .arg(format!("{key_dir}/id_ed25519")));
    let owner = exec(
        &engine,
        &container,
        &format!("stat -c %u:%a {KEY_IN_CONTAINER}"),
    )
    .await;
    assert_eq!(owner.stdout_text(), "65534:600\n");
    let out = exec(&engine, &container, &ls_remote).await;
    assert!(
        out.success(),
        "a key owned by another uid was refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    run(std::process::Command::new("chown")
        .arg(login_uid.to_string())
        .arg(format!("{key_dir}/id_ed25519")));

    // Converged: nothing recreated.
    let second = runner
        .up(RunOptions::default(), |_| {})
        .await
        .expect("second up");
    assert_eq!(second.changed(), 0, "{second:#?}");
    let c2 = engine
        .inspect_container(&container)
        .await
        .expect("inspect")
        .expect("container");
    assert_eq!(c2.id, c1.id);

    // A new key on the host (the old one deleted): registered, and the container is made
    // again with it (a single-file bind would keep showing the deleted key).
    std::fs::remove_file(format!("{key_dir}/id_ed25519")).expect("rm key");
    std::fs::remove_file(format!("{key_dir}/id_ed25519.pub")).expect("rm pub");
    let third = runner
        .up(RunOptions::default(), |_| {})
        .await
        .expect("third up");
    assert_eq!(outcome(&third, "github-key"), Outcome::Changed);
    assert_eq!(outcome(&third, "container"), Outcome::Changed);
    let fp2 = fingerprint(&runner.state().await.expect("state"));
    assert_ne!(fp2, fp1);
    let c3 = engine
        .inspect_container(&container)
        .await
        .expect("inspect")
        .expect("container");
    assert_ne!(c3.id, c1.id, "recreated");
    assert_eq!(c3.labels.get(GITHUB_KEY_LABEL), Some(&fp2));
    point_github_at(&engine, &container, &gw, sshd.port, impostor.port).await;
    let out = exec(&engine, &container, &ls_remote).await;
    assert!(out.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        sshd.log().contains(&format!("ED25519 {fp2}")),
        "the new key logged in: {}",
        sshd.log()
    );

    // down: the container goes before the key it mounts; the key leaves GitHub and the host.
    let down = runner
        .down(RunOptions::default(), |_| {})
        .await
        .expect("down");
    let pos = |step: &str| {
        down.steps
            .iter()
            .position(|s| s.step == step)
            .unwrap_or_else(|| panic!("no {step} in {down:#?}"))
    };
    assert_eq!(outcome(&down, "container"), Outcome::Removed);
    assert_eq!(outcome(&down, "github-key"), Outcome::Removed);
    assert!(pos("container") < pos("github-key"), "{down:#?}");
    assert!(engine
        .inspect_container(&container)
        .await
        .expect("inspect")
        .is_none());
    assert!(!std::path::Path::new(&key_dir).exists());
    assert!(!std::path::Path::new(&drop_in.0).exists());
    assert!(
        !github.keys.lock().expect("keys").iter().any(|k| {
            kgenv_core::backends::github::key_fingerprint(&k.key).as_deref() == Some(fp2.as_str())
        }),
        "the key was removed from GitHub"
    );
}

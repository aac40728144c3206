//! The image, container and GPU steps run by the core's `plan::Runner` on the real Docker
//! Engine: target `local` (this machine's engine), target `ssh` through the test
//! socket-forwarding `Remote` (the tunnelled transport without SSH), and target `ssh` to a
//! real OpenSSH sshd on 127.0.0.1 with kgenv's `SshConnector` (host key from known_hosts,
//! commands and the engine socket over one russh connection). Build-with-extras on a
//! locally built base, no rebuild and no recreate on a second `up`, a changed spec
//! recreates, `down` removes.

mod docker_support;

use std::sync::{Arc, Mutex};

use docker_support::sshd::Sshd;
use docker_support::{
    base_image, engine, free_port, ssh_connector, start_sshd, Cleanup, CountingConnector,
    SocketRemote, SocketRemoteConnector, Via,
};
use kgenv_core::backends::container::ContainerEngine;
use kgenv_core::backends::Backends;
use kgenv_core::docker::DockerConnector;
use kgenv_core::mock::MockWorld;
use kgenv_core::runner::{Change, Event, Outcome, RunOptions, Runner};
use kgenv_core::spec::{Container, Env, Gpus, Image, SshHost, Target};
use kgenv_core::steps::container::GPU_FALLBACK_LABEL;

struct Setup {
    backends: Backends,
    target: Target,
    remote: Option<Arc<CountingConnector>>,
    /// The sshd of `Via::Ssh`, running as long as the setup (and any session) lives.
    sshd: Option<Arc<Sshd>>,
}

fn setup(via: Via) -> Setup {
    let mut backends = MockWorld::new().backends();
    backends.engine = Arc::new(DockerConnector::new());
    match via {
        Via::Local => Setup {
            backends,
            target: Target::Local,
            remote: None,
            sshd: None,
        },
        Via::Tunnel => {
            let connector = Arc::new(CountingConnector::new(
                Arc::new(SocketRemoteConnector(SocketRemote::new())),
                None,
            ));
            backends.remote = connector.clone();
            let host = SshHost::parse("root@127.0.0.1:22").expect("ssh host");
            Setup {
                backends,
                target: Target::Ssh(host),
                remote: Some(connector),
                sshd: None,
            }
        }
        Via::Ssh => {
            let sshd = start_sshd();
            let connector = Arc::new(CountingConnector::new(
                Arc::new(ssh_connector(&sshd)),
                Some(sshd.clone()),
            ));
            backends.remote = connector.clone();
            let mut host = SshHost::parse(&format!("{}@127.0.0.1:{}", sshd.user, sshd.port))
                .expect("ssh host");
            host.identity_file = Some(sshd.client_key.display().to_string());
            Setup {
                backends,
                target: Target::Ssh(host),
                remote: Some(connector),
                sshd: Some(sshd),
            }
        }
    }
}

fn env_name(via: Via, what: &str) -> String {
    format!(
        "kgt{}{}{what}",
        std::process::id(),
        match via {
            Via::Local => "l",
            Via::Tunnel => "t",
            Via::Ssh => "s",
        }
    )
}

#[derive(Default, Clone)]
struct Events(Arc<Mutex<Vec<Event>>>);

impl Events {
    fn sink(&self) -> impl Fn(Event) + Send + Sync + 'static {
        let inner = self.0.clone();
        move |e| inner.lock().expect("lock").push(e)
    }
    fn warnings(&self) -> Vec<String> {
        self.0
            .lock()
            .expect("lock")
            .iter()
            .filter_map(|e| match e {
                Event::Warning { message, .. } => Some(message.clone()),
                _ => None,
            })
            .collect()
    }
    fn logs(&self, of: &str) -> Vec<String> {
        self.0
            .lock()
            .expect("lock")
            .iter()
            .filter_map(|e| match e {
                Event::Log { step, line, .. } if step == of => Some(line.clone()),
                _ => None,
            })
            .collect()
    }
}

fn env(
    name: &str,
    target: &Target,
    base: &str,
    port: u16,
    extra_env: Option<(&str, &str)>,
    gpus: Option<Gpus>,
) -> Env {
    let mut c = Container::builder()
        .publish(8888, port, "127.0.0.1")
        .shm_size("256m");
    if let Some((k, v)) = extra_env {
        c = c.env(k, v);
    }
    if let Some(g) = gpus {
        c = c.gpus(g);
    }
    Env::builder(name)
        .target(target.clone())
        // The marker package keeps each test's extras image its own (tests run in parallel
        // and each removes its image at the end).
        .image(
            Image::builder()
                .base(base)
                .apt("cmake")
                .apt(format!("marker-{name}"))
                .pip("lightgbm>=4.5"),
        )
        .container(c)
        .build()
        .expect("a valid spec")
}

async fn exec_text(engine: &dyn ContainerEngine, container: &str, line: &str) -> String {
    let cmd = vec!["sh".to_string(), "-c".to_string(), line.to_string()];
    let out = engine.exec(container, &cmd, &|_| {}).await.expect("exec");
    assert!(out.success(), "`{line}`: {}", out.stderr_tail());
    out.stdout_text()
}

async fn up_is_idempotent_recreates_on_change_and_down_removes(via: Via) {
    let (engine, _) = engine(via).await;
    let base = base_image().await;
    let s = setup(via);
    let state = tempfile::tempdir().expect("state dir");
    let name = env_name(via, "a");
    let port = free_port();
    let spec = env(&name, &s.target, &base, port, None, None);
    let container = spec
        .container
        .as_ref()
        .map(|c| c.name.clone())
        .expect("container");
    let image = spec
        .image
        .as_ref()
        .map(|i| i.run_reference())
        .expect("image");
    let mut cleanup = Cleanup::default();
    cleanup.container(&container);
    cleanup.image(&image);
    cleanup.path(&spec.host_dir());
    let runner = Runner::new(spec.clone(), s.backends.clone()).state_dir(state.path());

    let plan = runner
        .plan(RunOptions::default(), |_| {})
        .await
        .expect("plan");
    assert_eq!(
        plan.outcome("image"),
        Some(&Outcome::Planned {
            change: Change::Create
        })
    );

    // First up: the extras layer is built on the local base, the container created.
    let events = Events::default();
    let first = runner
        .up(RunOptions::default(), events.sink())
        .await
        .expect("first up");
    assert_eq!(first.outcome("image"), Some(&Outcome::Changed));
    assert_eq!(first.outcome("container"), Some(&Outcome::Changed));
    assert!(
        events
            .logs("image")
            .iter()
            .any(|l| l.contains("Successfully tagged") || l.starts_with("Step ")),
        "build output streamed"
    );
    let built = engine
        .inspect_image(&image)
        .await
        .expect("inspect")
        .expect("extras image built");
    assert_eq!(built.labels.get("kgenv.base"), Some(&base));
    let c1 = engine
        .inspect_container(&container)
        .await
        .expect("inspect")
        .expect("container");
    assert!(c1.running);
    assert_eq!(c1.labels.get("kgenv-env"), Some(&name));
    // The generated Dockerfile ran the (stand-in) apt-get and pip with the spec's packages,
    // quoted: `lightgbm>=4.5` reached pip whole instead of redirecting to a file.
    let installed = exec_text(engine.as_ref(), &container, "cat /kgenv-installed.txt").await;
    assert!(installed.contains("apt-get update\n"), "{installed}");
    assert!(
        installed.contains(&format!(
            "apt-get install -y --no-install-recommends cmake marker-{name}\n"
        )),
        "{installed}"
    );
    assert!(
        installed.contains("pip install --no-cache-dir lightgbm>=4.5\n"),
        "{installed}"
    );
    // CUDA's stub directory is gone from the container's LD_LIBRARY_PATH (docker-python#361).
    assert_eq!(
        exec_text(engine.as_ref(), &container, "echo $LD_LIBRARY_PATH").await,
        "/usr/local/nvidia/lib64\n"
    );
    assert_eq!(
        runner
            .gpu_report()
            .await
            .expect("gpu report")
            .stub_shadowing,
        None
    );
    assert_eq!(
        exec_text(engine.as_ref(), &container, "pwd").await,
        "/kaggle/working\n"
    );
    // gpus = "all" (the default) on a host with no NVIDIA runtime: created without the
    // request, with a warning, and the GPU check reports the CPU plainly.
    let nvidia = engine.info().await.expect("info").has_nvidia_runtime();
    if !nvidia {
        assert_eq!(
            c1.labels.get(GPU_FALLBACK_LABEL).map(String::as_str),
            Some("true")
        );
        let w = events.warnings();
        assert!(w.iter().any(|m| m.contains("without a GPU")), "{w:?}");
        assert_eq!(first.outcome("gpu"), Some(&Outcome::Satisfied));
    }

    // Second up: nothing rebuilt, nothing recreated.
    let second = runner
        .up(RunOptions::default(), |_| {})
        .await
        .expect("second up");
    assert_eq!(second.changed(), 0, "{second:?}");
    assert_eq!(second.outcome("image"), Some(&Outcome::Satisfied));
    assert_eq!(second.outcome("container"), Some(&Outcome::Satisfied));
    let c2 = engine
        .inspect_container(&container)
        .await
        .expect("inspect")
        .expect("container");
    assert_eq!(c2.id, c1.id, "same container");
    assert_eq!(
        engine
            .inspect_image(&image)
            .await
            .expect("inspect")
            .expect("image")
            .id,
        built.id,
        "no rebuild"
    );
    assert_eq!(
        runner
            .plan(RunOptions::default(), |_| {})
            .await
            .expect("plan")
            .planned_changes(),
        0
    );

    // `exec` and `logs` for the CLI.
    let seen = Events::default();
    let out = runner
        .exec(
            &[
                "sh".to_string(),
                "-c".to_string(),
                "echo via-runner".to_string(),
            ],
            seen.sink(),
        )
        .await
        .expect("exec");
    assert!(out.success());
    let lines = seen.logs("exec");
    assert_eq!(
        lines.iter().filter(|l| *l == "via-runner").count(),
        1,
        "{lines:?}"
    );
    runner.logs(Default::default(), |_| {}).await.expect("logs");

    // A changed spec: plan shows it, up recreates (the image stays).
    let changed = env(
        &name,
        &s.target,
        &base,
        port,
        Some(("KG_FLAVOUR", "changed")),
        None,
    );
    let runner2 = Runner::new(changed, s.backends.clone()).state_dir(state.path());
    let plan = runner2
        .plan(RunOptions::default(), |_| {})
        .await
        .expect("plan");
    assert_eq!(
        plan.outcome("container"),
        Some(&Outcome::Planned {
            change: Change::Update
        })
    );
    assert_eq!(
        plan.outcome("image"),
        Some(&Outcome::Planned {
            change: Change::None
        })
    );
    let third = runner2
        .up(RunOptions::default(), |_| {})
        .await
        .expect("up after change");
    assert_eq!(third.outcome("container"), Some(&Outcome::Changed));
    assert_eq!(third.outcome("image"), Some(&Outcome::Satisfied));
    let c3 = engine
        .inspect_container(&container)
        .await
        .expect("inspect")
        .expect("container");
    assert_ne!(c3.id, c1.id, "recreated");
    assert!(c3.running);
    assert_eq!(
        exec_text(engine.as_ref(), &container, "echo $KG_FLAVOUR").await,
        "changed\n"
    );

    // down removes the container (the image is a cache and stays).
    let down = runner2
        .down(RunOptions::default(), |_| {})
        .await
        .expect("down");
    assert_eq!(down.outcome("container"), Some(&Outcome::Removed));
    assert!(engine
        .inspect_container(&container)
        .await
        .expect("inspect")
        .is_none());
    let again = runner2
        .down(RunOptions::default(), |_| {})
        .await
        .expect("second down");
    assert_eq!(again.outcome("container"), Some(&Outcome::Nothing));
    if let Some(r) = &s.remote {
        assert!(r.opened() > 0, "the engine was reached through the tunnel");
    }
    if let Some(sshd) = &s.sshd {
        assert!(
            sshd.accepted_logins() >= 1,
            "logged in through the real sshd"
        );
    }
}

async fn a_required_gpu_on_a_host_without_one_stops_the_run(via: Via) {
    let (engine, _) = engine(via).await;
    if engine.info().await.expect("info").has_nvidia_runtime() {
        return; // a GPU host gives the GPU instead
    }
    let base = base_image().await;
    let s = setup(via);
    let state = tempfile::tempdir().expect("state dir");
    let spec = env(
        &env_name(via, "g"),
        &s.target,
        &base,
        free_port(),
        None,
        Some(Gpus::Count(1)),
    );
    let container = spec
        .container
        .as_ref()
        .map(|c| c.name.clone())
        .expect("container");
    let mut cleanup = Cleanup::default();
    cleanup.container(&container);
    cleanup.image(
        &spec
            .image
            .as_ref()
            .map(|i| i.run_reference())
            .expect("image"),
    );
    cleanup.path(&spec.host_dir());
    let runner = Runner::new(spec, s.backends.clone()).state_dir(state.path());
    let err = runner
        .up(RunOptions::default(), |_| {})
        .await
        .expect_err("a GPU is required");
    assert!(
        err.backend().is_some_and(|b| b.is_gpu_unavailable()),
        "{err}"
    );
    assert_eq!(err.kind(), "gpu_unavailable");
    // What was created is recorded, so down cleans it up.
    let down = runner
        .down(RunOptions::default(), |_| {})
        .await
        .expect("down");
    assert_eq!(down.outcome("container"), Some(&Outcome::Removed));
    assert!(engine
        .inspect_container(&container)
        .await
        .expect("inspect")
        .is_none());
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
    up_is_idempotent_recreates_on_change_and_down_removes,
    a_required_gpu_on_a_host_without_one_stops_the_run
);

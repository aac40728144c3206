//! The container and GPU steps' GPU decisions on the stateful mock, where the host can gain
//! a GPU between runs (no real engine here has one): `gpus = "all"` on a host without the
//! NVIDIA runtime falls back to CPU with a warning, and the next `up` after the runtime
//! appears recreates the container with its GPUs; a required GPU stops the run.

use std::sync::{Arc, Mutex};

use kgenv_core::mock::MockWorld;
use kgenv_core::runner::{Change, Event, Outcome, RunOptions, Runner};
use kgenv_core::spec::{Container, Env, Gpus, Image, SshHost, Target};
use kgenv_core::steps::container::GPU_FALLBACK_LABEL;

fn env(gpus: Gpus) -> Env {
    Env::builder("kg")
        .target(Target::Ssh(SshHost::parse("me@gpu-box").expect("host")))
        .image(Image::builder())
        .container(Container::builder().gpus(gpus))
        .build()
        .expect("valid")
}

fn warnings(events: &Arc<Mutex<Vec<Event>>>) -> Vec<String> {
    events
        .lock()
        .expect("lock")
        .iter()
        .filter_map(|e| match e {
            Event::Warning { message, .. } => Some(message.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn all_gpus_falls_back_to_cpu_then_heals_when_the_runtime_appears() {
    let world = MockWorld::new();
    world.edit(|s| s.host_gpus = 0);
    let state = tempfile::tempdir().expect("state");
    let runner = Runner::new(env(Gpus::All), world.backends()).state_dir(state.path());

    let events: Arc<Mutex<Vec<Event>>> = Arc::default();
    let sink = events.clone();
    let first = runner
        .up(RunOptions::default(), move |e| {
            sink.lock().expect("lock").push(e)
        })
        .await
        .expect("up on a CPU host");
    assert_eq!(first.outcome("container"), Some(&Outcome::Changed));
    assert_eq!(first.outcome("gpu"), Some(&Outcome::Satisfied));
    let c = world
        .state()
        .containers
        .get("kgenv-kg")
        .cloned()
        .expect("container");
    assert!(c.running);
    assert_eq!(
        c.labels.get(GPU_FALLBACK_LABEL).map(String::as_str),
        Some("true")
    );
    assert!(
        !world.state().gpu_containers.contains("kgenv-kg"),
        "recreated without the GPU request"
    );
    let w = warnings(&events);
    assert!(w.iter().any(|m| m.contains("without a GPU")), "{w:?}");

    let second = runner
        .up(RunOptions::default(), |_| {})
        .await
        .expect("second up");
    assert_eq!(second.changed(), 0, "a CPU host stays as it is: {second:?}");

    // The host gets its GPU (driver and NVIDIA runtime installed): plan shows it, up recreates.
    world.edit(|s| s.host_gpus = 1);
    let plan = runner
        .plan(RunOptions::default(), |_| {})
        .await
        .expect("plan");
    assert_eq!(
        plan.outcome("container"),
        Some(&Outcome::Planned {
            change: Change::Update
        })
    );
    let third = runner
        .up(RunOptions::default(), |_| {})
        .await
        .expect("up with a GPU");
    assert_eq!(third.outcome("container"), Some(&Outcome::Changed));
    let c = world
        .state()
        .containers
        .get("kgenv-kg")
        .cloned()
        .expect("container");
    assert!(!c.labels.contains_key(GPU_FALLBACK_LABEL));
    assert!(world.state().gpu_containers.contains("kgenv-kg"));
    let report = runner.gpu_report().await.expect("report");
    assert_eq!(report.gpus.len(), 1);
    assert!(report.usable(), "{report:?}");
    assert_eq!(
        runner
            .up(RunOptions::default(), |_| {})
            .await
            .expect("fourth up")
            .changed(),
        0
    );
}

#[tokio::test]
async fn a_required_gpu_is_an_error_and_none_never_asks() {
    let world = MockWorld::new();
    world.edit(|s| s.host_gpus = 0);
    let state = tempfile::tempdir().expect("state");
    let err = Runner::new(env(Gpus::Count(1)), world.backends())
        .state_dir(state.path())
        .up(RunOptions::default(), |_| {})
        .await
        .expect_err("required GPU on a CPU host");
    assert_eq!(err.kind(), "gpu_unavailable", "{err}");

    let state = tempfile::tempdir().expect("state");
    let world = MockWorld::new();
    world.edit(|s| s.host_gpus = 0);
    let events: Arc<Mutex<Vec<Event>>> = Arc::default();
    let sink = events.clone();
    let ok = Runner::new(env(Gpus::None), world.backends())
        .state_dir(state.path())
        .up(RunOptions::default(), move |e| {
            sink.lock().expect("lock").push(e)
        })
        .await
        .expect("gpus = none");
    assert_eq!(ok.outcome("container"), Some(&Outcome::Changed));
    assert!(!world.state().gpu_containers.contains("kgenv-kg"));
    assert!(
        !world.calls().iter().any(|c| c.op == "engine.exec"),
        "no GPU probe when no GPU was asked for"
    );
    assert!(
        !warnings(&events)
            .iter()
            .any(|m| m.contains("without a GPU")),
        "no fallback when no GPU was asked for"
    );
}

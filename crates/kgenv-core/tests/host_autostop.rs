//! `kgenv autostop MINUTES|off` as a library call ([`set_autostop`]) on the mock host:
//! installs the agent script and records it, removes both, validates the minutes; `off`
//! keeps a budget in force; a cost budget without a price is refused, naming the field.

#[path = "support/billing_fake.rs"]
mod billing_fake;

use std::time::Duration;

use kgenv_core::backends::no_progress;
use kgenv_core::backends::remote::HostAddr;
use kgenv_core::mock::MockWorld;
use kgenv_core::spec::{
    Autostop, Budget, BudgetBuilder, Container, Env, Image, Instance, Jupyter, Target,
};
use kgenv_core::state::StateStore;
use kgenv_core::steps::autostop::{jupyter_probe, set_autostop, AutostopStep};

/// A gce environment with a container and Jupyter, without `[autostop]` or `[budget]`.
fn base_env() -> kgenv_core::spec::EnvBuilder {
    Env::builder("idle")
        .target(Target::Gce)
        .instance(
            Instance::builder()
                .project("kgenv-test-project")
                .zone("us-central1-a"),
        )
        .image(Image::builder())
        .container(Container::builder())
        .jupyter(Jupyter::builder())
}

fn env_with(budget: Option<BudgetBuilder>) -> Env {
    let b = base_env().autostop(Autostop::builder(45));
    match budget {
        Some(x) => b.budget(x),
        None => b,
    }
    .build()
    .expect("env")
}

async fn mock_host(world: &MockWorld) -> std::sync::Arc<dyn kgenv_core::backends::Remote> {
    let addr = HostAddr {
        user: "kgenv".into(),
        host: "host.test".into(),
        port: 22,
        identity_file: None,
        pinned_host_keys: Vec::new(),
        trust_on_first_use: false,
    };
    world
        .backends()
        .remote
        .connect(&addr, Duration::from_secs(1))
        .await
        .expect("connect")
}

#[tokio::test]
async fn autostop_off_keeps_a_budget() {
    let env = env_with(Some(Budget::builder().max_hours(10.0)));
    let world = MockWorld::new();
    let remote = mock_host(&world).await;
    let dir = tempfile::tempdir().expect("tmp");
    let state = StateStore::open(dir.path(), "idle", "gce").expect("state");
    set_autostop(&env, remote.as_ref(), &state, None, None, &no_progress)
        .await
        .expect("off");
    assert!(
        world.state().host_scripts.contains_key("autostop"),
        "the agent stays for the budget"
    );
    let snap = state.snapshot().await;
    assert_eq!(snap.fact("autostop", "idle_minutes"), None);
    assert_eq!(snap.fact("autostop", "budget"), Some("max_hours=10"));
    assert!(!snap.is_empty(), "recorded, so `down` removes it");

    // A cost budget needs the VM's price: without one nothing is installed, and the error
    // names the field.
    let env = env_with(Some(Budget::builder().max_cost(20.0)));
    let world = MockWorld::new();
    let remote = mock_host(&world).await;
    let e = set_autostop(&env, remote.as_ref(), &state, Some(30), None, &no_progress)
        .await
        .expect_err("no price");
    assert!(e.is_config(), "{e}");
    assert!(
        e.to_string().contains("budget.max_cost") && e.to_string().contains("guessed"),
        "{e}"
    );
    assert!(!world.state().host_scripts.contains_key("autostop"));
    set_autostop(
        &env,
        remote.as_ref(),
        &state,
        Some(30),
        Some(2.5),
        &no_progress,
    )
    .await
    .expect("with a price");
    assert!(world.state().host_scripts.contains_key("autostop"));
    // `plan` shows the budget and what counts as work.
    use kgenv_core::plan::Step;
    let summary = AutostopStep::new(&env).summary();
    assert!(
        summary.contains("budget: stop the VM after $20 at the VM's hourly price")
            && summary.contains("busy kernel")
            && summary.contains("GPUs under 10%"),
        "{summary}"
    );
    assert!(AutostopStep::new(&env)
        .script(None)
        .expect_err("no price")
        .to_string()
        .contains("budget.max_cost"));
}

#[tokio::test]
async fn autostop_on_and_off() {
    let env = env_with(None);
    let world = MockWorld::new();
    let remote = mock_host(&world).await;
    let dir = tempfile::tempdir().expect("tmp");
    let state = StateStore::open(dir.path(), "idle", "gce").expect("state");

    set_autostop(&env, remote.as_ref(), &state, Some(30), None, &no_progress)
        .await
        .expect("on");
    let applied = world
        .state()
        .host_scripts
        .get("autostop")
        .cloned()
        .expect("agent installed");
    assert_eq!(
        state.snapshot().await.fact("autostop", "idle_minutes"),
        Some("30")
    );
    assert!(
        !state.snapshot().await.is_empty(),
        "recorded, so `down` removes it"
    );
    // 30 minutes through the command differs from the spec's 45: `up` restores the spec.
    let step_hash = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(
            AutostopStep::new(&env)
                .script(None)
                .expect("no cost budget")
                .text
                .as_bytes(),
        ))
    };
    assert_ne!(applied, step_hash);

    let e = set_autostop(&env, remote.as_ref(), &state, Some(2), None, &no_progress)
        .await
        .expect_err("too short");
    assert!(
        e.is_config() && e.to_string().contains("autostop.idle_minutes"),
        "{e}"
    );

    set_autostop(&env, remote.as_ref(), &state, None, None, &no_progress)
        .await
        .expect("off");
    assert!(
        !world.state().host_scripts.contains_key("autostop"),
        "agent removed"
    );
    assert!(state.snapshot().await.is_empty());

    // The agent asks Jupyter where the container publishes it, with kgenv's certificate.
    let probe = jupyter_probe(&env).expect("probe");
    assert_eq!(probe.url, "https://127.0.0.1:8888/api/status");
    assert_eq!(
        probe.cacert.as_deref(),
        Some("/var/lib/kgenv/idle/jupyter/cert.pem")
    );
    assert_eq!(probe.token_file, "/var/lib/kgenv/idle/jupyter/agent-token");
}

/// The n1-standard-8 + T4 SKUs of us-central1 (on demand): 8 × $0.031611 + 30 GiB ×
/// $0.004237 + $0.35 = $0.729998 an hour.
fn us_central1_prices() -> Vec<kgenv_core::backends::billing::Sku> {
    use billing_fake::sku;
    let at = ["us-central1"];
    let skus = vec![
        sku(
            "N1C",
            "N1 Predefined Instance Core running in Americas",
            "Compute",
            "N1Standard",
            "OnDemand",
            &at,
            "h",
            &[(0, "0", 31_611_000)],
        ),
        sku(
            "N1R",
            "N1 Predefined Instance Ram running in Americas",
            "Compute",
            "N1Standard",
            "OnDemand",
            &at,
            "GiBy.h",
            &[(0, "0", 4_237_000)],
        ),
        sku(
            "T4",
            "Nvidia Tesla T4 GPU running in Americas",
            "Compute",
            "GPU",
            "OnDemand",
            &at,
            "h",
            &[(0, "0", 350_000_000)],
        ),
    ];
    serde_json::from_value(serde_json::Value::Array(skus)).expect("skus")
}

#[tokio::test]
async fn up_turns_a_cost_budget_into_hours_at_the_vms_price() {
    let env = env_with(Some(Budget::builder().max_cost(7.3)));
    let world = MockWorld::new();
    world.edit(|s| s.billing_skus = Some(us_central1_prices()));
    let dir = tempfile::tempdir().expect("tmp");
    let runner =
        kgenv_core::runner::Runner::new(env.clone(), world.backends()).state_dir(dir.path());
    runner
        .up(
            kgenv_core::runner::RunOptions::default().until("autostop"),
            |_| {},
        )
        .await
        .expect("up");
    assert!(world.state().host_scripts.contains_key("autostop"));
    // $7.30 ÷ $0.729998/h = 10.0000274 h = 36000.098 s: the whole seconds it may run.
    let state = runner.state().await.expect("state");
    assert_eq!(state.fact("autostop", "budget_seconds"), Some("36000"));
    assert_eq!(state.fact("autostop", "budget"), Some("max_cost=7.3"));

    // The same without prices: `up` stops at the autostop step, naming the field.
    let world = MockWorld::new();
    let dir = tempfile::tempdir().expect("tmp");
    let runner = kgenv_core::runner::Runner::new(env, world.backends()).state_dir(dir.path());
    let e = runner
        .up(
            kgenv_core::runner::RunOptions::default().until("autostop"),
            |_| {},
        )
        .await
        .expect_err("no price");
    assert!(format!("{e:?}").contains("budget.max_cost"), "{e:?}");
    assert!(!world.state().host_scripts.contains_key("autostop"));
}

#[tokio::test]
async fn autostop_on_an_environment_without_the_section_says_what_it_cannot_see() {
    let env = base_env().build().expect("env");
    let world = MockWorld::new();
    let dir = tempfile::tempdir().expect("tmp");
    let runner = kgenv_core::runner::Runner::new(env, world.backends()).state_dir(dir.path());
    runner
        .up(
            kgenv_core::runner::RunOptions::default().until("host"),
            |_| {},
        )
        .await
        .expect("up");
    let warnings = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = warnings.clone();
    runner
        .autostop(Some(30), move |e| {
            if let kgenv_core::runner::Event::Warning { message, .. } = e {
                seen.lock().expect("lock").push(message);
            }
        })
        .await
        .expect("autostop 30");
    assert!(world.state().host_scripts.contains_key("autostop"));
    let warnings = warnings.lock().expect("lock").clone();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("busy kernel") && w.contains("[autostop]")),
        "{warnings:?}"
    );
}

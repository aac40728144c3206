//! `GceCompute::from_env`: the conventions users already know — `GOOGLE_OAUTH_ACCESS_TOKEN`
//! as a static token, `CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE` as the service root — drive
//! a whole `up`/`down` on the fake Compute API; missing credentials give an actionable
//! error. One test in its own binary, because it sets process environment variables.

#[path = "support/gce_fake.rs"]
mod gce_fake;

use std::sync::Arc;
use std::time::Duration;

use gce_fake::FakeGce;
use kgenv_core::gce::GceCompute;
use kgenv_core::mock::MockWorld;
use kgenv_core::runner::{RunOptions, Runner};
use kgenv_core::spec::{Env, Instance};
use kgenv_core::BackendError;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_env_uses_the_endpoint_override_and_the_static_token() {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::env::set_var("KGENV_HOME", tmp.path());

    // No token, and a service-account key path that does not exist: gcp_auth fails at once
    // (without asking any metadata server) and the error says how to log in.
    std::env::remove_var("GOOGLE_OAUTH_ACCESS_TOKEN");
    std::env::set_var(
        "GOOGLE_APPLICATION_CREDENTIALS",
        tmp.path().join("missing-key.json"),
    );
    let e = GceCompute::from_env().await.expect_err("no credentials");
    assert!(matches!(e, BackendError::Unauthenticated { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("gcloud auth application-default login")
            && msg.contains("GOOGLE_OAUTH_ACCESS_TOKEN"),
        "{msg}"
    );

    let fake = FakeGce::start().await;
    std::env::set_var("CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE", fake.base_url());
    std::env::set_var("GOOGLE_OAUTH_ACCESS_TOKEN", gce_fake::TOKEN);
    std::env::set_var("KGENV_CALLER_IP_URL", fake.caller_ip_url());
    let gce = GceCompute::from_env()
        .await
        .expect("credentials from the environment");
    assert!(
        !format!("{gce:?}").contains(gce_fake::TOKEN),
        "the token stays out of Debug output"
    );
    assert_eq!(gce.base_url(), fake.base_url());

    let env = Env::builder("kg")
        .instance(
            Instance::builder()
                .project("my-project")
                .zone("us-central1-a"),
        )
        .build()
        .expect("env");
    let mut backends = MockWorld::new().backends();
    backends.compute = Arc::new(gce);
    let state = tempfile::tempdir().expect("state dir");
    let runner = Runner::new(env, backends)
        .state_dir(state.path())
        .host_ready_within(Duration::from_secs(20));
    let gce_part = || RunOptions::default().only(["preflight", "firewall", "instance"]);
    runner.up(gce_part(), |_| {}).await.expect("up");
    assert_eq!(fake.instances().len(), 1);
    assert_eq!(fake.firewalls().len(), 1);
    runner
        .down(RunOptions::default(), |_| {})
        .await
        .expect("down");
    assert!(fake.instances().is_empty() && fake.firewalls().is_empty());
    assert!(
        fake.requests().iter().all(|r| r.status != 401),
        "every request carried the static token"
    );
    fake.assert_conforms();
}

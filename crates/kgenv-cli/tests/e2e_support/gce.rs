//! The gce target's end-to-end rig, shared by `e2e_gce.rs` and `e2e_verbs.rs`: the Compute
//! fake set up so that its VM is this machine (it reports 127.0.0.1 as the external IP,
//! publishes the test sshd's host key and, as GCE's guest agent does, turns the `ssh-keys`
//! metadata into the sshd's authorized keys), and the environment that points the `kgenv`
//! binary at it. A test file declares `mod e2e_support` and `mod gce_fake` and then this
//! module, which uses them as `crate::…`.

use std::time::Duration;

use crate::e2e_support::E2e;
use crate::gce_fake::{self, FakeGce};

/// The project of every gce end-to-end environment.
pub const PROJECT: &str = "kgenv-e2e";
/// Its one zone.
pub const ZONE: &str = "us-central1-a";

/// A gce kgenv.toml on [`PROJECT`]/[`ZONE`] without a GPU, followed by `extra` (more TOML).
pub fn config(extra: &str) -> String {
    format!(
        r#"target = "gce"

[instance]
project = "{PROJECT}"
zones = ["{ZONE}"]
machine_type = "n1-standard-8"
gpu_type = "none"
disk_size_gb = 60
{extra}"#
    )
}

/// A tokio runtime for the fake (the tests themselves are synchronous).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Starts the Compute fake for `e`: its VM is this machine, reached on `e`'s sshd, whose host
/// key it publishes unless `published_host_key` says otherwise; `tweak` sets the rest.
pub fn start_fake(
    e: &E2e,
    rt: &tokio::runtime::Runtime,
    published_host_key: Option<(&str, &str)>,
    tweak: impl FnOnce(&mut gce_fake::Config),
) -> FakeGce {
    let mut parts = e.sshd.host_pub.split_whitespace();
    let sshd_key = (
        parts.next().expect("key type").to_string(),
        parts.next().expect("key body").to_string(),
    );
    let mut config = gce_fake::Config {
        fixed_nat_ip: Some("127.0.0.1".into()),
        host_key: published_host_key
            .map(|(t, k)| (t.to_string(), k.to_string()))
            .unwrap_or(sshd_key),
        guest_authorized_keys: Some(e.sshd.dir().join("authorized_keys")),
        hostkey_delay: Duration::from_millis(100),
        ..gce_fake::Config::default()
    };
    tweak(&mut config);
    rt.block_on(FakeGce::start_with(config))
}

/// The environment that points the `kgenv` binary at `fake` and `e`'s sshd.
pub fn env(e: &E2e, fake: &FakeGce) -> Vec<(String, String)> {
    vec![
        (
            "CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE".into(),
            fake.base_url(),
        ),
        ("GOOGLE_OAUTH_ACCESS_TOKEN".into(), gce_fake::TOKEN.into()),
        ("KGENV_CALLER_IP_URL".into(), fake.caller_ip_url()),
        ("KGENV_GCE_SSH_PORT".into(), e.sshd.port.to_string()),
    ]
}

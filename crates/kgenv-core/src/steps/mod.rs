//! One module per step of the guide. [`for_env`] turns an environment into its DAG:
//!
//! | guide step | module | id |
//! | --- | --- | --- |
//! | 1. check image, disk, machine and GPU types | [`instance`] | `preflight` |
//! | 2. firewall for the VM | [`firewall`] | `firewall/<name>` |
//! | 1. GPU VM on a Deep Learning image | [`instance`] | `instance` |
//! | 1. the VM's data disk, kept by `down` | [`data_disk`] | `data-disk` |
//! | reach the host over SSH | [`host`] | `host` |
//! | the data disk mounted at the data root | [`disk_mount`] | `disk-mount` |
//! | 3. gcsfuse bucket mount | [`bucket_mount`] | `bucket` |
//! | 3. GitHub SSH key | [`github_key`] | `github-key` |
//! | 3. Kaggle docker image (+ extras) | [`image`] | `image` |
//! | 3. GPU container | [`container`] | `container` |
//! | 4. GPU visible (`torch.cuda`) | [`gpu_check`] | `gpu` |
//! | 4. Jupyter with password and TLS | [`jupyter`] | `jupyter` |
//! | 5. competition data | [`data`] | `data/<competition>` |
//! | stop an idle VM | [`autostop`] | `autostop` |

pub mod autostop;
pub mod bucket_mount;
pub mod container;
pub mod data;
pub mod data_disk;
pub mod disk_mount;
pub mod firewall;
pub mod github_key;
pub mod gpu_check;
pub mod host;
pub mod hostfs;
pub mod image;
pub mod instance;
pub mod jupyter;
pub(crate) mod prices;
pub mod script;

use std::sync::Arc;

use crate::plan::Step;
use crate::spec::{Env, Target};

/// Label kgenv puts on what it creates, with the environment's name as value (the owner
/// id goes beside it, under [`crate::state::OWNER_ID_LABEL`]).
pub const OWNER_LABEL: &str = crate::state::ENV_LABEL;

/// The steps of `env`, in declared order, with their dependencies.
pub fn for_env(env: &Env) -> Vec<Arc<dyn Step>> {
    let mut steps: Vec<Arc<dyn Step>> = Vec::new();
    let mut host_deps = Vec::new();
    if env.target == Target::Gce {
        // Bad input must fail before the firewall or the instance is touched.
        let preflight = env
            .instance
            .as_ref()
            .map(|i| instance::PreflightStep::new(i.clone()));
        let fw_deps: Vec<String> = preflight.iter().map(|p| p.id().to_string()).collect();
        if let Some(p) = preflight {
            steps.push(Arc::new(p));
        }
        for fw in &env.firewalls {
            let s = firewall::FirewallStep::new(env, fw.clone(), fw_deps.clone());
            host_deps.push(s.id().to_string());
            steps.push(Arc::new(s));
        }
        if let Some(i) = &env.instance {
            host_deps.push("instance".into());
            steps.push(Arc::new(instance::InstanceStep::new(env, i.clone())));
            if let Some(d) = &i.data_disk {
                steps.push(Arc::new(data_disk::DataDiskStep::new(i.clone(), d.clone())));
            }
        }
    }
    steps.push(Arc::new(
        host::HostStep::new(host_deps).first_boot_timeout(
            env.timeouts
                .first_boot()
                .unwrap_or(host::DEFAULT_FIRST_BOOT_TIMEOUT),
        ),
    ));
    if data_root_ready(env) == disk_mount::STEP_ID {
        steps.push(Arc::new(
            disk_mount::DiskMountStep::new(env).after(data_disk::DATA_DISK_ID),
        ));
    }
    // The image step already waits for the host; the container must also wait for the data
    // disk's mount, or it binds the boot disk's directories beneath it.
    let mut container_deps: Vec<String> = Some(data_root_ready(env))
        .filter(|d| *d != "host")
        .map(str::to_string)
        .into_iter()
        .collect();
    if let Some(b) = &env.bucket {
        steps.push(Arc::new(bucket_mount::BucketMountStep::new(env, b.clone())));
        container_deps.push("bucket".to_string());
    }
    if let Some(g) = &env.github_key {
        steps.push(Arc::new(github_key::GithubKeyStep::new(env, g.clone())));
        // The container binds the key's files: they must exist before it is created (a
        // missing bind source fails the create), and `down` removes the container first.
        container_deps.push(github_key::STEP_ID.to_string());
    }
    if let Some(i) = &env.image {
        steps.push(Arc::new(image::ImageStep::new(i.clone())));
        container_deps.push("image".into());
    }
    if let (Some(c), Some(i)) = (&env.container, &env.image) {
        steps.push(Arc::new(container::ContainerStep::new(
            env,
            c.clone(),
            i.clone(),
            container_deps.clone(),
        )));
        steps.push(Arc::new(gpu_check::GpuCheckStep::new(env, c)));
        if let Some(j) = &env.jupyter {
            steps.push(Arc::new(jupyter::JupyterStep::new(env, j.clone())));
        }
    }
    for d in &env.data {
        steps.push(Arc::new(data::DataStep::new(env, d.clone())));
    }
    if env.autostop.is_some() || env.budget.is_some() {
        steps.push(Arc::new(autostop::AutostopStep::new(env)));
    }
    steps
}

/// The step after which the environment's data root (`/var/lib/kgenv/<env>`: input,
/// working, caches) is where the user's work must live: `disk-mount` when a GCE VM has a
/// data disk (anything written before would land on the boot disk, under the mount),
/// `host` otherwise. Every step that writes there runs after it.
pub fn data_root_ready(env: &Env) -> &'static str {
    let has_data_disk =
        env.target == Target::Gce && env.instance.as_ref().is_some_and(|i| i.data_disk.is_some());
    if has_data_disk {
        disk_mount::STEP_ID
    } else {
        "host"
    }
}

/// sha256 of `bytes`, hex, first 16 characters: a short fingerprint for labels and state.
pub(crate) fn short_hash(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))[..16].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{Container, GithubKey, Image};

    fn container_deps(with_key: bool) -> Vec<String> {
        let mut b = Env::builder("deps")
            .target(Target::Local)
            .image(Image::builder())
            .container(Container::builder());
        if with_key {
            b = b.github_key(GithubKey::builder().repo("me/work"));
        }
        let steps = for_env(&b.build().expect("valid env"));
        let c = steps
            .iter()
            .find(|s| s.id() == "container")
            .expect("container step");
        c.deps().to_vec()
    }

    #[test]
    fn the_container_waits_for_the_github_key_it_mounts() {
        assert!(container_deps(true).contains(&github_key::STEP_ID.to_string()));
        assert!(!container_deps(false).contains(&github_key::STEP_ID.to_string()));
    }

    #[test]
    fn every_step_id_is_a_timeouts_key() {
        let env = crate::config::parse_str(
            crate::config::TEMPLATE,
            std::path::Path::new("kgenv.toml"),
            &crate::config::Overrides::default(),
        )
        .expect("the template is valid");
        let steps = for_env(&env);
        assert!(steps.len() > 10, "the template has every step");
        let ids = steps
            .iter()
            .map(|s| s.id().to_string())
            .chain([data_disk::relocate::MOVE_ID.to_string()]);
        for id in ids {
            let t = crate::spec::Timeouts::builder().set(&id, "1m").build();
            assert!(t.is_ok(), "step `{id}` cannot be given a timeout: {t:?}");
        }
    }
}

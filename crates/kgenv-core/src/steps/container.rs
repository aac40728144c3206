//! Guide step 3: the container — Kaggle's image with the GPU visible (device requests, the
//! modern `--runtime nvidia`), Jupyter's port on the host's 127.0.0.1, the bucket mount with
//! `rslave` propagation, data and workdir mounted. Same spec keeps the container; a changed
//! spec recreates it.
//!
//! Two things the guide did by hand happen here:
//! - CUDA's stub directory (`/usr/local/cuda/lib64/stubs`) in the image's `LD_LIBRARY_PATH`
//!   shadows the driver's `libcuda` and makes `torch.cuda.is_available()` false
//!   (docker-python issue 361). The container gets the image's `LD_LIBRARY_PATH` without the
//!   stub directories, unless the user set `LD_LIBRARY_PATH` in the spec.
//! - A host whose engine has no NVIDIA runtime cannot start a container that asks for GPUs.
//!   When the spec requires a GPU ([`super::gpu_check::gpu_required`]) that stops the run with
//!   [`BackendError::GpuUnavailable`]; with the default `gpus = "all"` the container is
//!   created without the GPU request, with a warning, and labelled [`GPU_FALLBACK_LABEL`]: a
//!   later `up` recreates it with GPUs once the engine reports the NVIDIA runtime.
//!
//! With a `[github_key]`, the host's GitHub key and GitHub's pinned known_hosts are bound
//! read-only where ssh finds them unconfigured ([`super::github_key::container_mounts`]);
//! the key's fingerprint and the known_hosts hash are part of the spec hash, so a new key
//! or new GitHub host keys recreate the container instead of leaving it the old files.

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::hostfs::HostFs;
use crate::backends::container::{BindMount, ContainerEngine, ContainerRequest, PortPublish};
use crate::error::{BackendError, Result};
use crate::gpu::is_stub_dir;
use crate::jupyter::{supervisor_command, JUPYTER_DIR_IN_CONTAINER};
use crate::plan::{CheckOutcome, Destroyed, Step, StepCtx};
use crate::spec::{Container, Env, Gpus, Image};
use crate::state::{Owner, State};

/// Label holding the hash of the create request, to tell "same spec" from "changed".
pub const SPEC_HASH_LABEL: &str = "kgenv.spec-hash";
/// Label with the UUID of the data disk's filesystem mounted at the data root.
pub const DATA_DISK_LABEL: &str = "kgenv.data-disk";
/// Label on a container created without the GPUs its spec asked for, because the engine
/// could not give any (value: `true`).
pub const GPU_FALLBACK_LABEL: &str = "kgenv.gpu-fallback";
/// Label with the SHA-256 fingerprint of the GitHub key bound into the container.
pub const GITHUB_KEY_LABEL: &str = "kgenv.github-key";
/// Label with the hash of GitHub's pinned known_hosts bound into the container.
pub const GITHUB_KNOWN_HOSTS_LABEL: &str = "kgenv.github-known-hosts";

/// Creates, recreates or removes the container.
pub struct ContainerStep {
    env: String,
    host_dir: String,
    spec: Container,
    image: Image,
    bucket_mount: Option<String>,
    with_jupyter: bool,
    gpu_required: bool,
    /// The host directory of the GitHub key, when the environment has one.
    github_key_dir: Option<String>,
    deps: Vec<String>,
}

impl ContainerStep {
    /// The step for `spec` running `image`, after `deps`.
    pub fn new(env: &Env, spec: Container, image: Image, deps: Vec<String>) -> Self {
        Self {
            env: env.name.clone(),
            host_dir: env.host_dir(),
            image,
            bucket_mount: env.bucket.as_ref().map(|b| b.mount_point.clone()),
            with_jupyter: env.jupyter.is_some(),
            gpu_required: super::gpu_check::gpu_required(env, &spec),
            github_key_dir: env
                .github_key
                .as_ref()
                .map(|_| super::github_key::key_dir(env)),
            spec,
            deps,
        }
    }

    /// Host directories the container mounts.
    fn host_dirs(&self) -> [String; 3] {
        [
            format!("{}/input", self.host_dir),
            format!("{}/working", self.host_dir),
            format!("{}/jupyter", self.host_dir),
        ]
    }

    /// The create request (without the spec-hash label) for the image whose environment is
    /// `image_env` (`KEY=value`, from the image's config).
    pub fn request(&self, image_env: &[String]) -> ContainerRequest {
        let [input, working, jupyter] = self.host_dirs();
        let mut mounts = vec![
            BindMount {
                source: input,
                target: "/kaggle/input".into(),
                read_only: true,
                propagation: None,
            },
            BindMount {
                source: working,
                target: self.spec.workdir.clone(),
                read_only: false,
                propagation: None,
            },
            BindMount {
                source: jupyter,
                target: JUPYTER_DIR_IN_CONTAINER.into(),
                read_only: true,
                propagation: None,
            },
        ];
        if let Some(mp) = &self.bucket_mount {
            // rslave: a gcsfuse mount made (or remade) on the host after start shows inside.
            mounts.push(BindMount {
                source: mp.clone(),
                target: mp.clone(),
                read_only: false,
                propagation: Some("rslave".into()),
            });
        }
        if let Some(dir) = &self.github_key_dir {
            mounts.extend(super::github_key::container_mounts(dir));
        }
        mounts.extend(self.spec.mounts.iter().map(|m| BindMount {
            source: m.source.clone(),
            target: m.target.clone(),
            read_only: m.read_only,
            propagation: None,
        }));
        let command = if self.with_jupyter {
            // A supervisor loop: Jupyter starts once its config lands, restarts if it crashes
            // or its config or certificate changes (tested against the real jupyter_server).
            supervisor_command(JUPYTER_DIR_IN_CONTAINER)
        } else {
            "trap 'exit 0' TERM; while :; do sleep 3600 & wait $!; done".to_string()
        };
        let mut labels = BTreeMap::new();
        labels.insert(super::OWNER_LABEL.to_string(), self.env.clone());
        ContainerRequest {
            name: self.spec.name.clone(),
            image: self.image.run_reference(),
            gpus: match self.spec.gpus {
                Gpus::All => Some(0),
                Gpus::Count(n) => Some(n),
                Gpus::None => None,
            },
            ports: self
                .spec
                .ports
                .iter()
                .map(|p| PortPublish {
                    container_port: p.container as u16,
                    host_port: p.host.unwrap_or(p.container) as u16,
                    host_ip: p.bind.clone().unwrap_or_else(|| "127.0.0.1".into()),
                })
                .collect(),
            mounts,
            shm_size_bytes: self.spec.shm_size_bytes,
            env: container_env(&self.spec.env, image_env),
            labels,
            command: Some(vec!["sh".into(), "-c".into(), command]),
            working_dir: Some(self.spec.workdir.clone()),
        }
    }

    /// The request for the image as it is in the engine, and its hash (also set as label).
    /// The owner id is added after hashing: a container made before owner ids is not
    /// recreated for the id alone (it is known by the id recorded in the state).
    async fn hashed_request(
        &self,
        engine: &dyn ContainerEngine,
        owner: &Owner,
        state: &State,
    ) -> Result<Option<(ContainerRequest, String)>> {
        let Some(image) = engine.inspect_image(&self.image.run_reference()).await? else {
            return Ok(None);
        };
        let mut req = self.request(&image.env);
        if let Some(uuid) = state.fact(super::disk_mount::STEP_ID, "uuid") {
            // Part of the hash: a container bound to the data root before the data disk
            // was mounted there still sees the boot disk's directories; it is made again.
            req.labels.insert(DATA_DISK_LABEL.into(), uuid.to_string());
        }
        if self.github_key_dir.is_some() {
            // Part of the hash: the single-file binds keep the key and known_hosts they
            // were made with; a new key or new GitHub host keys need a new container.
            use super::github_key::{FINGERPRINT_FACT, KNOWN_HOSTS_FACT, STEP_ID};
            for (label, fact) in [
                (GITHUB_KEY_LABEL, FINGERPRINT_FACT),
                (GITHUB_KNOWN_HOSTS_LABEL, KNOWN_HOSTS_FACT),
            ] {
                if let Some(v) = state.fact(STEP_ID, fact) {
                    req.labels.insert(label.into(), v.to_string());
                }
            }
        }
        let hash = super::short_hash(&serde_json::to_vec(&req).unwrap_or_default());
        req.labels.insert(SPEC_HASH_LABEL.into(), hash.clone());
        req.labels.extend(owner.labels());
        Ok(Some((req, hash)))
    }

    /// Whether `info` is this environment's container: it carries the owner id, or it is
    /// the very container the state recorded (same engine id).
    fn owned(
        owner: &Owner,
        state: &State,
        info: &crate::backends::container::ContainerInfo,
    ) -> bool {
        owner.owns(&info.labels) || state.fact("container", "id") == Some(info.id.as_str())
    }

    fn not_ours(&self) -> crate::Error {
        BackendError::AlreadyExists {
            resource: format!(
                "container {} (it does not carry the owner id of `{}`; kgenv leaves it alone — set `container.name`)",
                self.spec.name, self.env
            ),
        }
        .into()
    }

    /// Records the container (name and engine id), so `down` finds exactly it.
    async fn record(&self, ctx: &StepCtx, engine: &dyn ContainerEngine, hash: &str) -> Result<()> {
        let id = engine
            .inspect_container(&self.spec.name)
            .await?
            .map(|i| i.id)
            .unwrap_or_default();
        ctx.state
            .update("container", |r| {
                r.created.insert("container".into(), self.spec.name.clone());
                r.facts.insert("id".into(), id);
                r.spec_hash = Some(hash.to_string());
            })
            .await?;
        Ok(())
    }

    /// Starts `req`'s container; when the engine cannot give it GPUs and the spec does not
    /// require them, recreates it without the GPU request.
    async fn start_or_fall_back(
        &self,
        ctx: &StepCtx,
        engine: &dyn ContainerEngine,
        req: &ContainerRequest,
    ) -> Result<()> {
        match engine.start_container(&req.name).await {
            Err(e @ BackendError::GpuUnavailable { .. })
                if !self.gpu_required && req.gpus.is_some() =>
            {
                ctx.warn(format!("{e}; running {} without a GPU (set `gpus = \"none\"` to silence this, or a GPU count to make it an error)", req.name));
                engine.remove_container(&req.name).await?;
                let mut cpu = req.clone();
                cpu.gpus = None;
                cpu.labels.insert(GPU_FALLBACK_LABEL.into(), "true".into());
                engine.create_container(&cpu).await?;
                engine.start_container(&cpu.name).await?;
                Ok(())
            }
            other => Ok(other?),
        }
    }
}

/// The container's environment: the user's variables, plus the image's `LD_LIBRARY_PATH`
/// without CUDA stub directories when the image has such an entry (docker-python issue 361)
/// and the user did not set `LD_LIBRARY_PATH` themselves.
pub fn container_env(
    user: &BTreeMap<String, String>,
    image_env: &[String],
) -> BTreeMap<String, String> {
    let mut env = user.clone();
    if env.contains_key("LD_LIBRARY_PATH") {
        return env;
    }
    let image_path = image_env
        .iter()
        .rev()
        .find_map(|kv| kv.strip_prefix("LD_LIBRARY_PATH="));
    if let Some(path) = image_path {
        let kept: Vec<&str> = path.split(':').filter(|d| !is_stub_dir(d)).collect();
        if kept.len() != path.split(':').count() {
            env.insert("LD_LIBRARY_PATH".into(), kept.join(":"));
        }
    }
    env
}

#[async_trait]
impl Step for ContainerStep {
    fn id(&self) -> &str {
        "container"
    }
    fn deps(&self) -> &[String] {
        &self.deps
    }
    fn summary(&self) -> String {
        let ports: Vec<String> = self
            .spec
            .ports
            .iter()
            .map(|p| {
                format!(
                    "{}:{}→{}",
                    p.bind.as_deref().unwrap_or("127.0.0.1"),
                    p.host.unwrap_or(p.container),
                    p.container
                )
            })
            .collect();
        format!(
            "container {} from {} (GPUs: {:?}, ports {})",
            self.spec.name,
            self.image.run_reference(),
            self.spec.gpus,
            ports.join(", ")
        )
    }
    fn planned_actions(&self) -> Vec<String> {
        vec![format!("docker: create + start {}", self.spec.name)]
    }
    async fn check(&self, ctx: &StepCtx) -> Result<CheckOutcome> {
        let engine = ctx.engine().await?;
        let Some(info) = engine.inspect_container(&self.spec.name).await? else {
            return Ok(CheckOutcome::missing(self.planned_actions()));
        };
        let owner = ctx.owner().await;
        let state = ctx.state.snapshot().await;
        if !Self::owned(&owner, &state, &info) {
            return Err(self.not_ours());
        }
        let Some((_, hash)) = self.hashed_request(engine.as_ref(), &owner, &state).await? else {
            return Ok(CheckOutcome::drifted(
                vec![format!(
                    "image {} is not in the engine",
                    self.image.run_reference()
                )],
                vec![format!(
                    "docker: remove + create + start {}",
                    self.spec.name
                )],
            ));
        };
        if info.labels.get(SPEC_HASH_LABEL) != Some(&hash) {
            let mut diff = vec![format!(
                "spec changed (hash {} → {hash})",
                info.labels
                    .get(SPEC_HASH_LABEL)
                    .map_or("none", String::as_str)
            )];
            if info.image != self.image.run_reference() {
                diff.push(format!(
                    "image: {} → {}",
                    info.image,
                    self.image.run_reference()
                ));
            }
            return Ok(CheckOutcome::drifted(
                diff,
                vec![format!(
                    "docker: remove + create + start {}",
                    self.spec.name
                )],
            ));
        }
        if info.labels.contains_key(GPU_FALLBACK_LABEL) {
            if engine.info().await?.has_nvidia_runtime() {
                return Ok(CheckOutcome::drifted(
                    vec!["running without a GPU, and the engine now has the NVIDIA runtime".into()],
                    vec![format!(
                        "docker: remove + create + start {} with GPUs",
                        self.spec.name
                    )],
                ));
            }
            ctx.warn(format!(
                "{} runs without a GPU: the engine has no NVIDIA runtime",
                self.spec.name
            ));
        }
        if !info.running {
            return Ok(CheckOutcome::drifted(
                vec!["stopped → running".into()],
                vec![format!("docker: start {}", self.spec.name)],
            ));
        }
        if state.fact("container", "id") != Some(info.id.as_str()) {
            // Made by a run killed before it recorded it: record it, so `down` removes it.
            return Ok(CheckOutcome::drifted(
                vec!["not recorded in the state file yet".into()],
                vec![],
            ));
        }
        Ok(CheckOutcome::satisfied())
    }
    async fn apply(&self, ctx: &StepCtx) -> Result<()> {
        let engine = ctx.engine().await?;
        let owner = ctx.owner().await;
        let state = ctx.state.snapshot().await;
        let (req, hash) = self
            .hashed_request(engine.as_ref(), &owner, &state)
            .await?
            .ok_or_else(|| BackendError::NotFound {
                resource: format!(
                    "image {} (the image step makes it)",
                    self.image.run_reference()
                ),
            })?;
        // input/ and working/ are the login user's (the data agent and the user write there
        // without sudo; the container runs as root and writes anywhere); Jupyter's config
        // directory stays root's.
        let [input, working, jupyter] = self.host_dirs();
        let fs = HostFs::of(ctx).await?;
        fs.mkdirs_for_user(&[&input, &working]).await?;
        fs.mkdirs(&[&jupyter]).await?;
        if let Some(info) = engine.inspect_container(&self.spec.name).await? {
            if !Self::owned(&owner, &state, &info) {
                return Err(self.not_ours());
            }
            let fallback_can_go = info.labels.contains_key(GPU_FALLBACK_LABEL)
                && engine.info().await?.has_nvidia_runtime();
            if info.labels.get(SPEC_HASH_LABEL) == Some(&hash) && !fallback_can_go {
                self.record(ctx, engine.as_ref(), &hash).await?;
                if !info.running {
                    self.start_or_fall_back(ctx, engine.as_ref(), &req).await?;
                }
                return Ok(());
            }
            ctx.log(format!("recreating {}", self.spec.name));
            engine.remove_container(&self.spec.name).await?;
        }
        engine.create_container(&req).await?;
        self.record(ctx, engine.as_ref(), &hash).await?;
        self.start_or_fall_back(ctx, engine.as_ref(), &req).await?;
        // The GPU fallback may have recreated it under a new engine id.
        self.record(ctx, engine.as_ref(), &hash).await?;
        Ok(())
    }
    async fn destroy(&self, ctx: &StepCtx) -> Result<Destroyed> {
        let state = ctx.state.snapshot().await;
        // The container the state recorded, by its recorded name (a name edited in the
        // config never redirects a delete), and only while it is still ours.
        let Some(name) = state
            .step("container")
            .and_then(|r| r.created.get("container"))
            .cloned()
        else {
            return Ok(Destroyed::Nothing);
        };
        let engine = ctx.engine().await?;
        match engine.inspect_container(&name).await? {
            Some(info) if Self::owned(&state.owner(), &state, &info) => {}
            Some(_) => {
                ctx.warn(format!("container {name} is no longer the one kgenv made (no owner id, another engine id); kgenv leaves it alone and forgets it"));
                ctx.state
                    .update("container", |r| *r = Default::default())
                    .await?;
                return Ok(Destroyed::Nothing);
            }
            None => {}
        }
        match engine.remove_container(&name).await {
            Ok(()) | Err(BackendError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        ctx.state
            .update("container", |r| *r = Default::default())
            .await?;
        Ok(Destroyed::Removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{GithubKey, Target};

    fn step(with_key: bool) -> ContainerStep {
        let mut b = Env::builder("gk")
            .target(Target::Local)
            .image(Image::builder())
            .container(Container::builder().mount("/srv/x", "/x", false));
        if with_key {
            b = b.github_key(GithubKey::builder().repo("me/work"));
        }
        let env = b.build().expect("valid env");
        ContainerStep::new(
            &env,
            env.container.clone().expect("container"),
            env.image.clone().expect("image"),
            Vec::new(),
        )
    }

    fn ro_mounts(req: &ContainerRequest) -> Vec<(String, String)> {
        req.mounts
            .iter()
            .filter(|m| m.read_only)
            .map(|m| {
                let source = m.source.rsplit('/').take(2).collect::<Vec<_>>();
                (format!("{}/{}", source[1], source[0]), m.target.clone())
            })
            .collect()
    }

    #[test]
    fn the_github_key_is_bound_read_only_where_ssh_finds_it() {
        let req = step(true).request(&[]);
        let ro = ro_mounts(&req);
        for want in [
            ("github/id_ed25519", "/root/.ssh/id_ed25519"),
            ("github/id_ed25519.pub", "/root/.ssh/id_ed25519.pub"),
            ("github/known_hosts", "/etc/ssh/ssh_known_hosts"),
        ] {
            assert!(
                ro.iter().any(|(s, t)| (s.as_str(), t.as_str()) == want),
                "{want:?} not among the read-only mounts {ro:?}"
            );
        }
        // The sources are the files the github-key step writes.
        let env_dir = step(true).host_dir;
        assert!(req
            .mounts
            .iter()
            .any(|m| m.source == format!("{env_dir}/github/id_ed25519")));
        // The user's own mounts are kept.
        assert!(req.mounts.iter().any(|m| m.target == "/x" && !m.read_only));
    }

    #[test]
    fn no_github_key_means_no_key_mount() {
        let req = step(false).request(&[]);
        assert!(
            req.mounts
                .iter()
                .all(|m| !m.source.contains("/github/") && !m.target.contains(".ssh")),
            "{:?}",
            req.mounts
        );
        assert_ne!(
            step(false).request(&[]).mounts,
            step(true).request(&[]).mounts,
            "adding the key changes the request, so the container is recreated"
        );
    }
}

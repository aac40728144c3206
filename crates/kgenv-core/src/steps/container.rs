//! Guide step 3: the container — Kaggle's image with the GPU visible (device requests, the
//! modern `--runtime nvidia`), Jupyter's port on the host's 127.0.0.1, the bucket mount with
//! `rslave` propagation, data and workdir mounted. Same spec keeps the container; a changed
//! spec recreates it.

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::hostfs::HostFs;
use crate::backends::container::{BindMount, ContainerRequest, PortPublish};
use crate::error::{BackendError, Result};
use crate::plan::{CheckOutcome, Destroyed, Step, StepCtx};
use crate::spec::{Container, Env, Gpus, Image};

/// Label holding the hash of the create request, to tell "same spec" from "changed".
pub const SPEC_HASH_LABEL: &str = "kgenv.spec-hash";
/// Where the Jupyter config directory is mounted inside the container.
pub const JUPYTER_DIR_IN_CONTAINER: &str = "/etc/kgenv/jupyter";

/// Creates, recreates or removes the container.
pub struct ContainerStep {
    env: String,
    host_dir: String,
    spec: Container,
    image: Image,
    bucket_mount: Option<String>,
    with_jupyter: bool,
    deps: Vec<String>,
}

impl ContainerStep {
    /// The step for `spec` running `image`, after `deps`.
    pub fn new(env: &Env, spec: Container, image: Image, deps: Vec<String>) -> Self {
        Self {
            env: env.name.clone(),
            host_dir: env.host_dir(),
            spec,
            image,
            bucket_mount: env.bucket.as_ref().map(|b| b.mount_point.clone()),
            with_jupyter: env.jupyter.is_some(),
            deps,
        }
    }

    /// Host directories the container mounts.
    fn host_dirs(&self) -> [String; 3] {
        [format!("{}/input", self.host_dir), format!("{}/working", self.host_dir), format!("{}/jupyter", self.host_dir)]
    }

    /// The create request (without the spec-hash label).
    pub fn request(&self) -> ContainerRequest {
        let [input, working, jupyter] = self.host_dirs();
        let mut mounts = vec![
            BindMount { source: input, target: "/kaggle/input".into(), read_only: true, propagation: None },
            BindMount { source: working, target: self.spec.workdir.clone(), read_only: false, propagation: None },
            BindMount { source: jupyter, target: JUPYTER_DIR_IN_CONTAINER.into(), read_only: true, propagation: None },
        ];
        if let Some(mp) = &self.bucket_mount {
            // rslave: a gcsfuse mount made (or remade) on the host after start shows inside.
            mounts.push(BindMount { source: mp.clone(), target: mp.clone(), read_only: false, propagation: Some("rslave".into()) });
        }
        mounts.extend(self.spec.mounts.iter().map(|m| BindMount { source: m.source.clone(), target: m.target.clone(), read_only: m.read_only, propagation: None }));
        let command = if self.with_jupyter {
            // A supervisor loop: Jupyter starts once its config lands, restarts if it crashes
            // or its config or certificate changes (tested against the real jupyter_server).
            super::jupyter::supervisor_command(JUPYTER_DIR_IN_CONTAINER)
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
            ports: self.spec.ports.iter().map(|p| PortPublish {
                container_port: p.container as u16,
                host_port: p.host.unwrap_or(p.container) as u16,
                host_ip: p.bind.clone().unwrap_or_else(|| "127.0.0.1".into()),
            }).collect(),
            mounts,
            shm_size_bytes: self.spec.shm_size_bytes,
            env: self.spec.env.clone(),
            labels,
            command: Some(vec!["sh".into(), "-c".into(), command]),
        }
    }

    fn hashed_request(&self) -> (ContainerRequest, String) {
        let mut req = self.request();
        let hash = super::short_hash(&serde_json::to_vec(&req).unwrap_or_default());
        req.labels.insert(SPEC_HASH_LABEL.into(), hash.clone());
        (req, hash)
    }
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
        let ports: Vec<String> = self.spec.ports.iter().map(|p| format!("{}:{}→{}", p.bind.as_deref().unwrap_or("127.0.0.1"), p.host.unwrap_or(p.container), p.container)).collect();
        format!("container {} from {} (GPUs: {:?}, ports {})", self.spec.name, self.image.run_reference(), self.spec.gpus, ports.join(", "))
    }
    fn planned_actions(&self) -> Vec<String> {
        vec![format!("docker: create + start {}", self.spec.name)]
    }
    async fn check(&self, ctx: &StepCtx) -> Result<CheckOutcome> {
        let engine = ctx.engine().await?;
        let (_, hash) = self.hashed_request();
        let Some(info) = engine.inspect_container(&self.spec.name).await? else {
            return Ok(CheckOutcome::missing(self.planned_actions()));
        };
        if info.labels.get(super::OWNER_LABEL) != Some(&self.env) {
            return Err(BackendError::AlreadyExists { resource: format!("container {} (not created by kgenv; set `container.name`)", self.spec.name) }.into());
        }
        if info.labels.get(SPEC_HASH_LABEL) != Some(&hash) {
            let mut diff = vec![format!("spec changed (hash {} → {hash})", info.labels.get(SPEC_HASH_LABEL).map_or("none", String::as_str))];
            if info.image != self.image.run_reference() {
                diff.push(format!("image: {} → {}", info.image, self.image.run_reference()));
            }
            return Ok(CheckOutcome::drifted(diff, vec![format!("docker: remove + create + start {}", self.spec.name)]));
        }
        if !info.running {
            return Ok(CheckOutcome::drifted(vec!["stopped → running".into()], vec![format!("docker: start {}", self.spec.name)]));
        }
        Ok(CheckOutcome::satisfied())
    }
    async fn apply(&self, ctx: &StepCtx) -> Result<()> {
        let engine = ctx.engine().await?;
        let (req, hash) = self.hashed_request();
        let dirs = self.host_dirs();
        HostFs::of(ctx).await?.mkdirs(&dirs.iter().map(String::as_str).collect::<Vec<_>>()).await?;
        if let Some(info) = engine.inspect_container(&self.spec.name).await? {
            if info.labels.get(SPEC_HASH_LABEL) == Some(&hash) {
                engine.start_container(&self.spec.name).await?;
                return Ok(());
            }
            ctx.log(format!("spec changed: recreating {}", self.spec.name));
            engine.remove_container(&self.spec.name).await?;
        }
        engine.create_container(&req).await?;
        ctx.state.update("container", |r| {
            r.created.insert("container".into(), self.spec.name.clone());
            r.spec_hash = Some(hash.clone());
        }).await?;
        engine.start_container(&self.spec.name).await?;
        Ok(())
    }
    async fn destroy(&self, ctx: &StepCtx) -> Result<Destroyed> {
        let state = ctx.state.snapshot().await;
        if state.step("container").is_none_or(|r| r.created.is_empty()) {
            return Ok(Destroyed::Nothing);
        }
        let engine = ctx.engine().await?;
        match engine.remove_container(&self.spec.name).await {
            Ok(()) | Err(BackendError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        ctx.state.update("container", |r| *r = Default::default()).await?;
        Ok(Destroyed::Removed)
    }
}

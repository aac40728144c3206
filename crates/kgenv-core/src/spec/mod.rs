//! Typed resource specs, one per step of the guide, each built and validated by a
//! by-value builder. [`Env`] gathers them into one environment.
//!
//! ```
//! use kgenv_core::spec::{Env, Instance, Target};
//! let env = Env::builder("kaggle-gpu")
//!     .target(Target::Gce)
//!     .instance(Instance::builder().project("my-project").zone("us-central1-a").gpu("nvidia-tesla-t4", 1))
//!     .build()
//!     .expect("a valid spec");
//! assert_eq!(env.instance.as_ref().map(|i| i.name.as_str()), Some("kaggle-gpu"));
//! ```

mod autostop;
mod bucket;
mod budget;
mod container;
mod data;
mod disk;
mod firewall;
pub mod gcsfuse;
mod github_key;
mod gpu;
mod image;
mod instance;
mod jupyter;
pub mod provisioning;
pub mod rules;
mod timeouts;

pub use autostop::{
    Autostop, AutostopBuilder, DEFAULT_CPU_PERCENT, DEFAULT_GPU_UTIL_PERCENT, DEFAULT_WARN_MINUTES,
};
pub use bucket::{BucketMount, BucketMountBuilder};
pub use budget::{Budget, BudgetBuilder};
pub use container::{parse_size, Container, ContainerBuilder, Gpus, Mount, Publish};
pub use data::{Data, DataBuilder};
pub use disk::{DataDisk, DataDiskBuilder, DEFAULT_DATA_DISK_GB};
pub use firewall::{Firewall, FirewallBuilder};
pub use github_key::{GithubKey, GithubKeyBuilder};
pub use gpu::GpuChoice;
pub use image::{
    Image, ImageBuilder, KAGGLE_CPU_IMAGE, KAGGLE_CPU_REPO, KAGGLE_GPU_IMAGE, KAGGLE_GPU_REPO,
};
pub use instance::{
    default_scopes, scopes_cover, Instance, InstanceBuilder, Zones, CLOUD_PLATFORM_SCOPE,
    DEFAULT_DISK_GB, DEFAULT_GPU_TYPE, DEFAULT_IMAGE_FAMILY, DEFAULT_IMAGE_PROJECT,
    DEFAULT_MACHINE_TYPE, LOGGING_WRITE_SCOPE, MONITORING_WRITE_SCOPE, SCOPE_PREFIX,
    STORAGE_READ_ONLY_SCOPE, STORAGE_READ_WRITE_SCOPE,
};
pub use jupyter::{Jupyter, JupyterAuth, JupyterBuilder, JupyterTls};
pub use provisioning::Provisioning;
pub use timeouts::{parse_duration, Timeouts, TimeoutsBuilder, STEP_FAMILIES};

use serde::{Deserialize, Serialize};

use crate::error::ValidationError;

/// Where the steps after "host exists" run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// kgenv creates a GCE VM, then works on it over SSH.
    Gce,
    /// An existing host reached over SSH.
    Ssh(SshHost),
    /// This machine's Docker.
    Local,
}

impl Target {
    /// `gce`, `ssh` or `local`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Gce => "gce",
            Self::Ssh(_) => "ssh",
            Self::Local => "local",
        }
    }
}

/// An existing SSH host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SshHost {
    /// Login user.
    pub user: String,
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Private key (defaults to kgenv's per-environment key).
    pub identity_file: Option<String>,
    /// Record the host key on first connection (off by default: keys come from known_hosts).
    pub trust_on_first_use: bool,
}

impl SshHost {
    /// Parses `user@host[:port]`.
    pub fn parse(s: &str) -> Result<SshHost, ValidationError> {
        let (user, rest) = s.split_once('@').ok_or_else(|| {
            ValidationError::new("ssh.host", format!("`{s}` is not `user@host[:port]`"))
        })?;
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.contains(':') || h.starts_with('[') => {
                let port: u32 = p.parse().map_err(|_| {
                    ValidationError::new("ssh.host", format!("`{p}` is not a port"))
                })?;
                rules::port("ssh.host", port)?;
                (
                    h.trim_matches(|c| c == '[' || c == ']').to_string(),
                    port as u16,
                )
            }
            _ => (rest.to_string(), 22),
        };
        let user_ok = !user.is_empty()
            && user
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if !user_ok {
            return Err(ValidationError::new(
                "ssh.host",
                format!("`{user}` is not a user name"),
            ));
        }
        if host.is_empty()
            || host
                .chars()
                .any(|c| c.is_whitespace() || "/@'\"`$;".contains(c))
        {
            return Err(ValidationError::new(
                "ssh.host",
                format!("`{host}` is not a host name or address"),
            ));
        }
        Ok(SshHost {
            user: user.into(),
            host,
            port,
            identity_file: None,
            trust_on_first_use: false,
        })
    }

    /// Uses this private key.
    #[must_use]
    pub fn identity_file(mut self, path: impl Into<String>) -> Self {
        self.identity_file = Some(path.into());
        self
    }

    /// Records the host key on first connection.
    #[must_use]
    pub fn trust_on_first_use(mut self, v: bool) -> Self {
        self.trust_on_first_use = v;
        self
    }
}

/// A whole environment: the target and every step's spec. Build with [`Env::builder`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Env {
    /// Environment name: names the instance, container, state file and SSH host alias.
    pub name: String,
    /// Where it runs.
    pub target: Target,
    /// The VM (gce target only).
    pub instance: Option<Instance>,
    /// Firewall rules (gce target only); the default is SSH from the caller's IP.
    pub firewalls: Vec<Firewall>,
    /// The bucket to mount.
    pub bucket: Option<BucketMount>,
    /// The GitHub key to give the host.
    pub github_key: Option<GithubKey>,
    /// The image.
    pub image: Option<Image>,
    /// The container.
    pub container: Option<Container>,
    /// Jupyter.
    pub jupyter: Option<Jupyter>,
    /// Competition data.
    pub data: Vec<Data>,
    /// Autostop (gce target only).
    pub autostop: Option<Autostop>,
    /// A running-time or cost budget enforced on the host (gce target only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
    /// Limits on each step's remote commands (`[timeouts]`); empty keeps every step's
    /// default.
    #[serde(default, skip_serializing_if = "Timeouts::is_empty")]
    pub timeouts: Timeouts,
}

/// Builder for [`Env`].
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct EnvBuilder {
    name: String,
    target: Option<Target>,
    instance: Option<InstanceBuilder>,
    firewalls: Option<Vec<FirewallBuilder>>,
    bucket: Option<BucketMountBuilder>,
    github_key: Option<GithubKeyBuilder>,
    image: Option<ImageBuilder>,
    container: Option<ContainerBuilder>,
    jupyter: Option<JupyterBuilder>,
    data: Vec<DataBuilder>,
    autostop: Option<AutostopBuilder>,
    budget: Option<BudgetBuilder>,
    timeouts: Option<TimeoutsBuilder>,
    default_project: Option<String>,
    default_zone: Option<String>,
}

impl Env {
    /// A builder for an environment named `name` (a GCE name: it names the instance).
    pub fn builder(name: impl Into<String>) -> EnvBuilder {
        EnvBuilder {
            name: name.into(),
            ..Default::default()
        }
    }

    /// The network tag kgenv puts on the instance and targets with its firewall rules.
    pub fn network_tag(&self) -> String {
        format!("kgenv-{}", self.name)
    }

    /// The directory kgenv owns on the host (data, Jupyter config, workdir).
    pub fn host_dir(&self) -> String {
        host_dir(&self.name, &self.target)
    }
}

fn host_dir(name: &str, target: &Target) -> String {
    match target {
        Target::Local => {
            format!("{}/{name}", crate::paths::data_dir().display())
        }
        _ => format!("/var/lib/kgenv/{name}"),
    }
}

impl EnvBuilder {
    /// Where the environment runs (default `gce`).
    pub fn target(mut self, t: Target) -> Self {
        self.target = Some(t);
        self
    }
    /// The VM.
    pub fn instance(mut self, b: InstanceBuilder) -> Self {
        self.instance = Some(b);
        self
    }
    /// Adds a firewall rule (replacing the default SSH rule).
    pub fn firewall(mut self, b: FirewallBuilder) -> Self {
        self.firewalls.get_or_insert_with(Vec::new).push(b);
        self
    }
    /// The bucket mount.
    pub fn bucket(mut self, b: BucketMountBuilder) -> Self {
        self.bucket = Some(b);
        self
    }
    /// The GitHub key.
    pub fn github_key(mut self, b: GithubKeyBuilder) -> Self {
        self.github_key = Some(b);
        self
    }
    /// The image.
    pub fn image(mut self, b: ImageBuilder) -> Self {
        self.image = Some(b);
        self
    }
    /// The container.
    pub fn container(mut self, b: ContainerBuilder) -> Self {
        self.container = Some(b);
        self
    }
    /// Jupyter.
    pub fn jupyter(mut self, b: JupyterBuilder) -> Self {
        self.jupyter = Some(b);
        self
    }
    /// Adds a competition's data.
    pub fn data(mut self, b: DataBuilder) -> Self {
        self.data.push(b);
        self
    }
    /// Autostop.
    pub fn autostop(mut self, b: AutostopBuilder) -> Self {
        self.autostop = Some(b);
        self
    }
    /// A budget (`[budget]`): running hours and/or cost after which the VM is stopped.
    pub fn budget(mut self, b: BudgetBuilder) -> Self {
        self.budget = Some(b);
        self
    }
    /// Limits on the steps' remote commands (`[timeouts]`).
    pub fn timeouts(mut self, b: TimeoutsBuilder) -> Self {
        self.timeouts = Some(b);
        self
    }
    /// Project and zone used when the instance leaves them out (the config layer passes
    /// `CLOUDSDK_CORE_PROJECT` and `CLOUDSDK_COMPUTE_ZONE`).
    pub fn location_defaults(mut self, project: Option<String>, zone: Option<String>) -> Self {
        self.default_project = project;
        self.default_zone = zone;
        self
    }

    /// Validates every part; a field error's path starts with its section (`instance.gpu_count`).
    pub fn build(self) -> Result<Env, ValidationError> {
        rules::gce_name("name", &self.name)?;
        if self.name.len() > 40 {
            return Err(ValidationError::new(
                "name",
                "must be at most 40 characters: kgenv derives longer names from it",
            ));
        }
        let name = self.name;
        let target = self.target.unwrap_or(Target::Gce);
        let tag = format!("kgenv-{name}");
        let instance = match (&target, self.instance) {
            (Target::Gce, Some(b)) => Some(
                b.default_name(&name)
                    .default_location(self.default_project, self.default_zone)
                    .default_tag(&tag)
                    .bucket_mounted(self.bucket.is_some())
                    .build()
                    .map_err(|e| e.within("instance"))?,
            ),
            (Target::Gce, None) => {
                return Err(ValidationError::new("instance", "the gce target needs an [instance] section with at least `project` and `zones`"));
            }
            (_, Some(_)) => {
                return Err(ValidationError::new("instance", format!("[instance] only applies to target = \"gce\", not \"{}\"; remove it or change the target", target.kind())));
            }
            (_, None) => None,
        };
        let firewalls = match (&target, self.firewalls) {
            (Target::Gce, None) => vec![Firewall::default_ssh(&name, &tag)],
            (Target::Gce, Some(list)) => list
                .into_iter()
                .enumerate()
                .map(|(i, b)| {
                    b.default_target_tag(&tag)
                        .build()
                        .map_err(|e| e.within(&format!("firewall[{i}]")))
                })
                .collect::<Result<_, _>>()?,
            (_, Some(_)) => {
                return Err(ValidationError::new(
                    "firewall",
                    "[[firewall]] only applies to target = \"gce\"",
                ));
            }
            (_, None) => Vec::new(),
        };
        let bucket = self
            .bucket
            .map(|b| b.build().map_err(|e| e.within("bucket")))
            .transpose()?;
        if bucket.is_some() && target == Target::Local {
            return Err(ValidationError::new("bucket", "gcsfuse mounts need a gce or ssh host; for the local target mount the bucket yourself and add it under [container] mounts"));
        }
        let github_key = self
            .github_key
            .map(|b| {
                b.default_title(&name)
                    .build()
                    .map_err(|e| e.within("github_key"))
            })
            .transpose()?;
        let container = self
            .container
            .map(|b| {
                b.default_name(&name)
                    .build()
                    .map_err(|e| e.within("container"))
            })
            .transpose()?;
        // A container that asks for no GPU runs Kaggle's CPU image unless `base` says otherwise.
        let cpu = container.as_ref().is_some_and(|c| c.gpus == Gpus::None);
        let image = self
            .image
            .map(|b| b.default_cpu(cpu).build().map_err(|e| e.within("image")))
            .transpose()?;
        if container.is_some() && image.is_none() {
            return Err(ValidationError::new(
                "image",
                "[container] needs an [image] section (it can be empty to use Kaggle's GPU image)",
            ));
        }
        let jupyter = self
            .jupyter
            .map(|b| b.build().map_err(|e| e.within("jupyter")))
            .transpose()?;
        if jupyter.is_some() && container.is_none() {
            return Err(ValidationError::new(
                "container",
                "[jupyter] runs inside the container: add a [container] section",
            ));
        }
        if let (Some(j), Some(c)) = (&jupyter, &container) {
            if !c.ports.iter().any(|p| p.container == u32::from(j.port)) {
                return Err(ValidationError::new("container.ports", format!("Jupyter listens on {} but the container does not publish it; add {{ container = {} }}", j.port, j.port)));
            }
        }
        let data_dir = format!("{}/input", host_dir(&name, &target));
        let data = self
            .data
            .into_iter()
            .enumerate()
            .map(|(i, b)| {
                b.default_dest_dir(&data_dir)
                    .build()
                    .map_err(|e| e.within(&format!("data[{i}]")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let autostop = self
            .autostop
            .map(|b| b.build().map_err(|e| e.within("autostop")))
            .transpose()?;
        if autostop.is_some() && target != Target::Gce {
            return Err(ValidationError::new(
                "autostop",
                "autostop stops a GCE VM; it only applies to target = \"gce\"",
            ));
        }
        let budget = self
            .budget
            .map(|b| b.build().map_err(|e| e.within("budget")))
            .transpose()?;
        if budget.is_some() && target != Target::Gce {
            return Err(ValidationError::new(
                "budget",
                "a budget stops a GCE VM; it only applies to target = \"gce\"",
            ));
        }
        let timeouts = self
            .timeouts
            .map(|b| b.build().map_err(|e| e.within("timeouts")))
            .transpose()?
            .unwrap_or_default();
        Ok(Env {
            name,
            target,
            instance,
            firewalls,
            bucket,
            github_key,
            image,
            container,
            jupyter,
            data,
            autostop,
            budget,
            timeouts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_host_parses() {
        let h = SshHost::parse("ubuntu@gpu-box:2222").expect("valid");
        assert_eq!(
            (h.user.as_str(), h.host.as_str(), h.port),
            ("ubuntu", "gpu-box", 2222)
        );
        assert_eq!(SshHost::parse("me@10.0.0.5").expect("valid").port, 22);
        assert!(SshHost::parse("nohost").is_err());
        assert!(SshHost::parse("me@host:0").is_err());
        assert!(SshHost::parse("me@ho;st").is_err());
    }

    #[test]
    fn env_errors_carry_section_paths() {
        let e = Env::builder("kg")
            .instance(
                Instance::builder()
                    .project("my-project")
                    .zone("us-central1-a")
                    .gpu("nvidia-tesla-t4", 3),
            )
            .build()
            .expect_err("bad gpu count");
        assert_eq!(e.field, "instance.gpu_count");
        let e = Env::builder("kg")
            .target(Target::Local)
            .autostop(Autostop::builder(30))
            .build()
            .expect_err("");
        assert_eq!(e.field, "autostop");
        let e = Env::builder("Bad")
            .target(Target::Local)
            .build()
            .expect_err("");
        assert_eq!(e.field, "name");
    }

    #[test]
    fn gce_defaults_close_everything_but_ssh() {
        let env = Env::builder("kg")
            .instance(
                Instance::builder()
                    .project("my-project")
                    .zone("us-central1-a"),
            )
            .build()
            .expect("valid");
        assert_eq!(env.firewalls.len(), 1);
        assert_eq!(env.firewalls[0].ports, vec!["22"]);
        assert!(
            env.firewalls[0].source_ranges.is_empty(),
            "caller IP detected at run time"
        );
        assert_eq!(
            env.instance.as_ref().map(|i| i.tags.clone()),
            Some(vec!["kgenv-kg".to_string()])
        );
    }
}

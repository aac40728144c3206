//! The container spec (guide step 3): the Kaggle image running with the GPU visible.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::rules;
use crate::error::ValidationError;

/// Which GPUs the container sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Gpus {
    /// Every GPU on the host.
    All,
    /// This many GPUs.
    Count(u32),
    /// No GPU.
    None,
}

/// A published port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Publish {
    /// Port inside the container.
    pub container: u32,
    /// Port on the host (defaults to the container port).
    #[serde(default)]
    pub host: Option<u32>,
    /// Host address (defaults to `127.0.0.1`: reached through the SSH tunnel).
    #[serde(default)]
    pub bind: Option<String>,
}

/// A bind mount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mount {
    /// Host path.
    pub source: String,
    /// Container path.
    pub target: String,
    /// Read-only.
    #[serde(default)]
    pub read_only: bool,
}

/// A validated container spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Container {
    /// Container name.
    pub name: String,
    /// GPUs visible inside.
    pub gpus: Gpus,
    /// Published ports (host port, bind address resolved).
    pub ports: Vec<Publish>,
    /// Bind mounts.
    pub mounts: Vec<Mount>,
    /// `/dev/shm` size in bytes (PyTorch data loaders need more than Docker's 64 MB).
    pub shm_size_bytes: u64,
    /// Environment given by the user.
    pub env: BTreeMap<String, String>,
    /// Working directory inside (a host dir is mounted there).
    pub workdir: String,
}

/// Builder for [`Container`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[must_use]
pub struct ContainerBuilder {
    name: Option<String>,
    gpus: Option<GpusValue>,
    ports: Option<Vec<Publish>>,
    mounts: Option<Vec<Mount>>,
    shm_size: Option<String>,
    env: Option<BTreeMap<String, String>>,
    workdir: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum GpusValue {
    Count(i64),
    Word(String),
}

impl Container {
    /// A builder with all GPUs, Jupyter's port on 127.0.0.1:8888 and a 16 GB shm.
    pub fn builder() -> ContainerBuilder {
        ContainerBuilder::default()
    }
}

impl ContainerBuilder {
    /// Container name.
    pub fn name(mut self, v: impl Into<String>) -> Self {
        self.name = Some(v.into());
        self
    }
    /// GPUs visible inside.
    pub fn gpus(mut self, v: Gpus) -> Self {
        self.gpus = Some(match v {
            Gpus::All => GpusValue::Word("all".into()),
            Gpus::None => GpusValue::Word("none".into()),
            Gpus::Count(n) => GpusValue::Count(n.into()),
        });
        self
    }
    /// Publishes `container` port on `bind:host`.
    pub fn publish(mut self, container: u16, host: u16, bind: impl Into<String>) -> Self {
        self.ports.get_or_insert_with(Vec::new).push(Publish {
            container: container.into(),
            host: Some(host.into()),
            bind: Some(bind.into()),
        });
        self
    }
    /// Adds a bind mount.
    pub fn mount(
        mut self,
        source: impl Into<String>,
        target: impl Into<String>,
        read_only: bool,
    ) -> Self {
        self.mounts.get_or_insert_with(Vec::new).push(Mount {
            source: source.into(),
            target: target.into(),
            read_only,
        });
        self
    }
    /// `/dev/shm` size like `16g`, `512m`.
    pub fn shm_size(mut self, v: impl Into<String>) -> Self {
        self.shm_size = Some(v.into());
        self
    }
    /// Adds an environment variable.
    pub fn env(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.env
            .get_or_insert_with(BTreeMap::new)
            .insert(k.into(), v.into());
        self
    }
    /// Working directory inside the container.
    pub fn workdir(mut self, v: impl Into<String>) -> Self {
        self.workdir = Some(v.into());
        self
    }
    pub(crate) fn default_name(mut self, env: &str) -> Self {
        self.name.get_or_insert_with(|| format!("kgenv-{env}"));
        self
    }

    /// Validates and returns the spec.
    pub fn build(self) -> Result<Container, ValidationError> {
        let name = self.name.unwrap_or_else(|| "kgenv".into());
        let name_ok = name.starts_with(|c: char| c.is_ascii_alphanumeric())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !name_ok {
            return Err(ValidationError::new(
                "name",
                format!("`{name}` is not a container name: letters, digits, `_`, `.`, `-`"),
            ));
        }
        let gpus = match self.gpus {
            None => Gpus::All,
            Some(GpusValue::Word(w)) if w == "all" => Gpus::All,
            Some(GpusValue::Word(w)) if w == "none" => Gpus::None,
            Some(GpusValue::Count(n)) if (1..=16).contains(&n) => Gpus::Count(n as u32),
            Some(other) => {
                return Err(ValidationError::new(
                    "gpus",
                    format!("{other:?} is not \"all\", \"none\" or a count from 1 to 16"),
                ));
            }
        };
        let mut ports = self.ports.unwrap_or_else(|| {
            vec![Publish {
                container: 8888,
                host: None,
                bind: None,
            }]
        });
        for p in &mut ports {
            rules::port("ports", p.container)?;
            let host = p.host.unwrap_or(p.container);
            rules::port("ports", host)?;
            p.host = Some(host);
            let bind = p.bind.get_or_insert_with(|| "127.0.0.1".into());
            if bind.parse::<std::net::IpAddr>().is_err() {
                return Err(ValidationError::new(
                    "ports",
                    format!("bind address `{bind}` is not an IP address like `127.0.0.1`"),
                ));
            }
        }
        let mounts = self.mounts.unwrap_or_default();
        for m in &mounts {
            rules::abs_path("mounts", &m.source)?;
            rules::abs_path("mounts", &m.target)?;
        }
        let shm_size_bytes = parse_size(self.shm_size.as_deref().unwrap_or("16g"))
            .ok_or_else(|| ValidationError::new("shm_size", "write a size like `16g` or `512m`"))?;
        if shm_size_bytes < 64 << 20 {
            return Err(ValidationError::new(
                "shm_size",
                "must be at least 64m (Docker's default)",
            ));
        }
        let env = self.env.unwrap_or_default();
        for k in env.keys() {
            rules::env_name("env", k)?;
        }
        let workdir = self.workdir.unwrap_or_else(|| "/kaggle/working".into());
        rules::abs_path("workdir", &workdir)?;
        Ok(Container {
            name,
            gpus,
            ports,
            mounts,
            shm_size_bytes,
            env,
            workdir,
        })
    }
}

/// `16g` → 17179869184. Suffixes k, m, g (binary), optional trailing `b`.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim().to_ascii_lowercase();
    let s = s.strip_suffix('b').unwrap_or(&s);
    let (num, mult) = match s.chars().last()? {
        'k' => (&s[..s.len() - 1], 1u64 << 10),
        'm' => (&s[..s.len() - 1], 1 << 20),
        'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_private_and_gpu_ready() {
        let c = Container::builder().build().expect("valid");
        assert_eq!(c.gpus, Gpus::All);
        assert_eq!(c.ports[0].bind.as_deref(), Some("127.0.0.1"));
        assert_eq!(c.shm_size_bytes, 16 << 30);
    }

    #[test]
    fn bad_fields_are_named() {
        assert_eq!(
            Container::builder()
                .shm_size("lots")
                .build()
                .expect_err("")
                .field,
            "shm_size"
        );
        assert_eq!(
            Container::builder()
                .publish(0, 1, "127.0.0.1")
                .build()
                .expect_err("")
                .field,
            "ports"
        );
        assert_eq!(
            Container::builder()
                .publish(8888, 8888, "localhost!")
                .build()
                .expect_err("")
                .field,
            "ports"
        );
        assert_eq!(
            Container::builder()
                .mount("rel", "/x", false)
                .build()
                .expect_err("")
                .field,
            "mounts"
        );
        assert_eq!(
            Container::builder()
                .env("BAD-NAME", "1")
                .build()
                .expect_err("")
                .field,
            "env"
        );
        assert_eq!(
            Container::builder().name("/x").build().expect_err("").field,
            "name"
        );
    }
}

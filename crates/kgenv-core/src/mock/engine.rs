//! The mock ContainerEngine: images and containers by name; `nvidia-smi` answers according
//! to the host's simulated GPUs.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

use super::MockWorld;
use crate::backends::container::{
    ContainerEngine, ContainerInfo, ContainerRequest, EngineConnector, EngineImage, EngineInfo,
    EngineLocation, LogOptions,
};
use crate::backends::remote::ExecOutput;
use crate::backends::{BackendResult, Progress, ProgressFn, Stream};
use crate::error::BackendError;

pub(super) struct MockEngineConnector(pub(super) MockWorld);

#[async_trait]
impl EngineConnector for MockEngineConnector {
    async fn connect(&self, at: EngineLocation) -> BackendResult<Arc<dyn ContainerEngine>> {
        let target = match &at {
            EngineLocation::Local => "local".to_string(),
            EngineLocation::Remote(r) => r.endpoint(),
        };
        self.0
            .call("engine.connect", &target, false, |_| Ok(()))
            .await?;
        Ok(Arc::new(MockEngine(self.0.clone())))
    }
}

struct MockEngine(MockWorld);

#[async_trait]
impl ContainerEngine for MockEngine {
    async fn inspect_image(&self, reference: &str) -> BackendResult<Option<EngineImage>> {
        self.0
            .call("engine.inspect_image", reference, false, |s| {
                Ok(s.images.get(reference).cloned())
            })
            .await
    }

    async fn pull_image(&self, reference: &str, progress: ProgressFn<'_>) -> BackendResult<()> {
        self.0
            .call("engine.pull_image", reference, true, |s| {
                let id = format!("sha256:{:064x}", s.id());
                s.images.insert(
                    reference.into(),
                    EngineImage {
                        id,
                        labels: BTreeMap::new(),
                        env: Vec::new(),
                    },
                );
                Ok(())
            })
            .await?;
        progress(Progress::Bytes {
            item: "layer 1/1".into(),
            done: 1 << 20,
            total: Some(1 << 20),
        });
        Ok(())
    }

    async fn build_image(
        &self,
        tag: &str,
        dockerfile: &str,
        labels: &BTreeMap<String, String>,
        progress: ProgressFn<'_>,
    ) -> BackendResult<()> {
        let base = dockerfile
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("FROM "))
            .unwrap_or_default()
            .to_string();
        self.0
            .call("engine.build_image", tag, true, |s| {
                if !s.images.contains_key(&base) {
                    return Err(BackendError::NotFound {
                        resource: format!("base image {base}"),
                    });
                }
                let id = format!("sha256:{:064x}", s.id());
                s.images.insert(
                    tag.into(),
                    EngineImage {
                        id,
                        labels: labels.clone(),
                        env: Vec::new(),
                    },
                );
                Ok(())
            })
            .await?;
        progress(Progress::Line {
            stream: Stream::Stdout,
            line: format!("Successfully tagged {tag}"),
        });
        Ok(())
    }

    async fn inspect_container(&self, name: &str) -> BackendResult<Option<ContainerInfo>> {
        self.0
            .call("engine.inspect_container", name, false, |s| {
                Ok(s.containers.get(name).cloned())
            })
            .await
    }

    async fn create_container(&self, req: &ContainerRequest) -> BackendResult<String> {
        self.0
            .call("engine.create_container", &req.name, true, |s| {
                if s.containers.contains_key(&req.name) {
                    return Err(BackendError::AlreadyExists {
                        resource: format!("container {}", req.name),
                    });
                }
                if !s.images.contains_key(&req.image) {
                    return Err(BackendError::NotFound {
                        resource: format!("image {}", req.image),
                    });
                }
                let id = format!("{:064x}", s.id());
                s.containers.insert(
                    req.name.clone(),
                    ContainerInfo {
                        id: id.clone(),
                        name: req.name.clone(),
                        image: req.image.clone(),
                        running: false,
                        labels: req.labels.clone(),
                    },
                );
                if req.gpus.is_some() {
                    s.gpu_containers.insert(req.name.clone());
                } else {
                    s.gpu_containers.remove(&req.name);
                }
                Ok(id)
            })
            .await
    }

    async fn start_container(&self, name: &str) -> BackendResult<()> {
        self.0
            .call("engine.start_container", name, true, |s| match s.containers.get_mut(name) {
                Some(_) if s.host_gpus == 0 && s.gpu_containers.contains(name) => Err(BackendError::GpuUnavailable {
                    host: "mock".into(),
                    message: "could not select device driver \"nvidia\" with capabilities: [[gpu]]".into(),
                }),
                Some(c) => {
                    c.running = true;
                    Ok(())
                }
                None => Err(BackendError::NotFound { resource: format!("container {name}") }),
            })
            .await
    }

    async fn remove_container(&self, name: &str) -> BackendResult<()> {
        self.0
            .call("engine.remove_container", name, true, |s| {
                s.containers
                    .remove(name)
                    .map(|_| ())
                    .ok_or_else(|| BackendError::NotFound {
                        resource: format!("container {name}"),
                    })
            })
            .await
    }

    async fn exec(
        &self,
        container: &str,
        cmd: &[String],
        progress: ProgressFn<'_>,
    ) -> BackendResult<ExecOutput> {
        let out = self
            .0
            .call(
                "engine.exec",
                &format!("{container}: {}", cmd.join(" ")),
                false,
                |s| {
                    match s.containers.get(container) {
                        Some(c) if c.running => {}
                        _ => {
                            return Err(BackendError::NotFound {
                                resource: format!("running container {container}"),
                            })
                        }
                    }
                    if cmd.last().map(String::as_str) == Some(crate::gpu::PROBE) {
                        let mut out = String::from("@ldpath /usr/local/nvidia/lib64\n");
                        if s.host_gpus > 0 && s.gpu_containers.contains(container) {
                            out.push_str(
                                "@libcuda /usr/local/nvidia/lib64/libcuda.so.1\n@smi_rc 0\n",
                            );
                            for _ in 0..s.host_gpus {
                                out.push_str("@gpu Tesla T4, 580.65.06, 15360\n");
                            }
                            out.push_str("@cuda 13.0\n@torch True\n");
                        } else {
                            out.push_str("@nosmi\n@torch False\n");
                        }
                        return Ok(ExecOutput {
                            exit_code: 0,
                            stdout: out.into_bytes(),
                            ..Default::default()
                        });
                    }
                    if cmd.first().map(String::as_str) == Some("nvidia-smi") {
                        if s.host_gpus == 0 {
                            return Ok(ExecOutput {
                                exit_code: 127,
                                stderr: b"nvidia-smi: command not found".to_vec(),
                                ..Default::default()
                            });
                        }
                        let lines: String = (0..s.host_gpus)
                            .map(|_| "Tesla T4, 580.65.06, 15360 MiB\n")
                            .collect();
                        return Ok(ExecOutput {
                            exit_code: 0,
                            stdout: lines.into_bytes(),
                            ..Default::default()
                        });
                    }
                    // A few commands behave as in a shell, so exec's plumbing can be seen.
                    match cmd.first().map(String::as_str) {
                        Some("echo") => Ok(ExecOutput {
                            exit_code: 0,
                            stdout: format!("{}\n", cmd[1..].join(" ")).into_bytes(),
                            ..Default::default()
                        }),
                        Some("false") => Ok(ExecOutput {
                            exit_code: 1,
                            ..Default::default()
                        }),
                        _ => Ok(ExecOutput::default()),
                    }
                },
            )
            .await?;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            progress(Progress::Line {
                stream: Stream::Stdout,
                line: line.to_string(),
            });
        }
        Ok(out)
    }

    async fn logs(
        &self,
        container: &str,
        _opts: LogOptions,
        progress: ProgressFn<'_>,
    ) -> BackendResult<()> {
        self.0
            .call("engine.logs", container, false, |s| {
                match s.containers.get(container) {
                    Some(_) => Ok(()),
                    None => Err(BackendError::NotFound {
                        resource: format!("container {container}"),
                    }),
                }
            })
            .await?;
        progress(Progress::Line {
            stream: Stream::Stdout,
            line: format!("(mock) logs of {container}"),
        });
        Ok(())
    }

    async fn info(&self) -> BackendResult<EngineInfo> {
        self.0
            .call("engine.info", "engine", false, |s| {
                let mut runtimes = vec!["runc".to_string()];
                if s.host_gpus > 0 {
                    runtimes.push("nvidia".into());
                }
                Ok(EngineInfo {
                    version: "mock".into(),
                    api_version: "1.47".into(),
                    runtimes,
                    default_runtime: "runc".into(),
                })
            })
            .await
    }
}

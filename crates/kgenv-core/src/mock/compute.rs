//! The mock Compute backend: instances that come up RUNNING with a TEST-NET address and a
//! host key in their guest attributes; stockouts per zone.

use async_trait::async_trait;

use super::MockWorld;
use crate::backends::compute::{
    Compute, FirewallRule, ImageInfo, InstanceInfo, InstanceRef, InstanceRequest, InstanceStatus,
};
use crate::backends::BackendResult;
use crate::error::BackendError;

/// The host key the mock's instances publish in `hostkeys/`.
pub const MOCK_HOST_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMockHostKeyForKgenvTestsOnly0000000000000";

/// GPU types the mock knows in every zone.
const KNOWN_GPUS: [&str; 6] = [
    "nvidia-tesla-t4",
    "nvidia-l4",
    "nvidia-tesla-v100",
    "nvidia-tesla-p100",
    "nvidia-tesla-a100",
    "nvidia-a100-80gb",
];

fn key(at: &InstanceRef) -> String {
    format!("{}/{}/{}", at.project, at.zone, at.name)
}

pub(super) struct MockCompute(pub(super) MockWorld);

#[async_trait]
impl Compute for MockCompute {
    async fn get_instance(&self, at: &InstanceRef) -> BackendResult<Option<InstanceInfo>> {
        self.0
            .call("compute.get_instance", &key(at), false, |s| {
                Ok(s.instances.get(&key(at)).cloned())
            })
            .await
    }

    async fn insert_instance(&self, req: &InstanceRequest) -> BackendResult<InstanceInfo> {
        let k = key(&req.at);
        self.0
            .call("compute.insert_instance", &k, true, |s| {
                if s.stockout_zones.contains(&req.at.zone) {
                    return Err(BackendError::Stockout {
                        zone: req.at.zone.clone(),
                        resource: req
                            .gpu
                            .as_ref()
                            .map_or(req.machine_type.clone(), |g| g.0.clone()),
                        message: "ZONE_RESOURCE_POOL_EXHAUSTED".into(),
                    });
                }
                if s.instances.contains_key(&k) {
                    return Err(BackendError::AlreadyExists {
                        resource: req.at.to_string(),
                    });
                }
                let id = s.id();
                let info = InstanceInfo {
                    at: req.at.clone(),
                    id: id.to_string(),
                    status: InstanceStatus::Running,
                    external_ip: Some(format!("203.0.113.{}", id % 250 + 1)),
                    machine_type: req.machine_type.clone(),
                    gpu: req.gpu.clone(),
                    labels: req.labels.clone(),
                };
                s.instances.insert(k.clone(), info.clone());
                Ok(info)
            })
            .await
    }

    async fn delete_instance(&self, at: &InstanceRef) -> BackendResult<()> {
        self.0
            .call("compute.delete_instance", &key(at), true, |s| {
                s.instances
                    .remove(&key(at))
                    .map(|_| ())
                    .ok_or_else(|| BackendError::NotFound {
                        resource: at.to_string(),
                    })
            })
            .await
    }

    async fn start_instance(&self, at: &InstanceRef) -> BackendResult<()> {
        self.set_status(at, "compute.start_instance", InstanceStatus::Running)
            .await
    }

    async fn stop_instance(&self, at: &InstanceRef) -> BackendResult<()> {
        self.set_status(at, "compute.stop_instance", InstanceStatus::Terminated)
            .await
    }

    async fn guest_attributes(
        &self,
        at: &InstanceRef,
        query_path: &str,
    ) -> BackendResult<Vec<(String, String)>> {
        self.0
            .call("compute.guest_attributes", &key(at), false, |s| {
                if !s.instances.contains_key(&key(at)) {
                    return Err(BackendError::NotFound {
                        resource: at.to_string(),
                    });
                }
                Ok(if query_path.starts_with("hostkeys") {
                    let (alg, body) = MOCK_HOST_KEY.split_once(' ').unwrap_or_default();
                    vec![(alg.to_string(), body.to_string())]
                } else {
                    Vec::new()
                })
            })
            .await
    }

    async fn get_firewall(&self, project: &str, name: &str) -> BackendResult<Option<FirewallRule>> {
        let k = format!("{project}/{name}");
        self.0
            .call("compute.get_firewall", &k, false, |s| {
                Ok(s.firewalls.get(&k).cloned())
            })
            .await
    }

    async fn insert_firewall(&self, rule: &FirewallRule) -> BackendResult<()> {
        let k = format!("{}/{}", rule.project, rule.name);
        self.0
            .call("compute.insert_firewall", &k, true, |s| {
                if s.firewalls.contains_key(&k) {
                    return Err(BackendError::AlreadyExists {
                        resource: format!("firewall {k}"),
                    });
                }
                s.firewalls.insert(k.clone(), rule.clone());
                Ok(())
            })
            .await
    }

    async fn patch_firewall(&self, rule: &FirewallRule) -> BackendResult<()> {
        let k = format!("{}/{}", rule.project, rule.name);
        self.0
            .call("compute.patch_firewall", &k, true, |s| {
                match s.firewalls.get_mut(&k) {
                    Some(r) => {
                        *r = rule.clone();
                        Ok(())
                    }
                    None => Err(BackendError::NotFound {
                        resource: format!("firewall {k}"),
                    }),
                }
            })
            .await
    }

    async fn delete_firewall(&self, project: &str, name: &str) -> BackendResult<()> {
        let k = format!("{project}/{name}");
        self.0
            .call("compute.delete_firewall", &k, true, |s| {
                s.firewalls
                    .remove(&k)
                    .map(|_| ())
                    .ok_or_else(|| BackendError::NotFound {
                        resource: format!("firewall {k}"),
                    })
            })
            .await
    }

    async fn image_from_family(&self, project: &str, family: &str) -> BackendResult<ImageInfo> {
        let k = format!("{project}/{family}");
        self.0
            .call("compute.image_from_family", &k, false, |_| {
                Ok(ImageInfo {
                    self_link: format!("https://compute.googleapis.com/compute/v1/projects/{project}/global/images/{family}-v20261101"),
                    name: format!("{family}-v20261101"),
                    disk_size_gb: crate::backends::compute::image_min_disk_gb(project),
                })
            })
            .await
    }

    async fn check_accelerator(
        &self,
        project: &str,
        zone: &str,
        gpu_type: &str,
    ) -> BackendResult<()> {
        let k = format!("{project}/{zone}/{gpu_type}");
        self.0
            .call("compute.check_accelerator", &k, false, |_| {
                if KNOWN_GPUS.contains(&gpu_type) {
                    Ok(())
                } else {
                    Err(BackendError::NotFound {
                        resource: format!("accelerator type {gpu_type} in zone {zone}"),
                    })
                }
            })
            .await
    }

    async fn check_machine_type(
        &self,
        project: &str,
        zone: &str,
        machine_type: &str,
    ) -> BackendResult<()> {
        let k = format!("{project}/{zone}/{machine_type}");
        self.0
            .call("compute.check_machine_type", &k, false, |_| {
                // The mock offers the families GPU VMs use.
                if ["n1-", "n2-", "g2-", "a2-", "a3-", "e2-"]
                    .iter()
                    .any(|f| machine_type.starts_with(f))
                {
                    Ok(())
                } else {
                    Err(BackendError::NotFound {
                        resource: format!("machine type {machine_type} in zone {zone}"),
                    })
                }
            })
            .await
    }

    async fn caller_ip(&self) -> BackendResult<String> {
        self.0
            .call("compute.caller_ip", "", false, |_| {
                Ok("198.51.100.7".to_string())
            })
            .await
    }
}

impl MockCompute {
    async fn set_status(
        &self,
        at: &InstanceRef,
        op: &str,
        status: InstanceStatus,
    ) -> BackendResult<()> {
        self.0
            .call(op, &key(at), true, |s| {
                match s.instances.get_mut(&key(at)) {
                    Some(i) => {
                        i.status = status;
                        Ok(())
                    }
                    None => Err(BackendError::NotFound {
                        resource: at.to_string(),
                    }),
                }
            })
            .await
    }
}

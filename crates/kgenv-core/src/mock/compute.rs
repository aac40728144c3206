//! The mock Compute backend, with GCE's semantics where kgenv depends on them: instances
//! come up RUNNING with a TEST-NET address and a host key in their guest attributes, and a
//! boot disk named like them that is deleted with them while other disks are detached and
//! kept; an attached disk cannot be deleted; disks only grow; machine type, GPUs and service
//! account change only on a stopped instance; snapshots carry their disk's content to the
//! disks made from them. In a stockout zone an insert shows the instance PROVISIONING for a
//! short window, then removes it and fails, as GCE does.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use super::{MockDisk, MockSnapshot, MockWorld, WorldState};
use crate::backends::compute::{
    disk_path, instance_path, AttachedDisk, Compute, DiskInfo, DiskRef, DiskRequest, FirewallRule,
    ImageInfo, InstanceInfo, InstanceRef, InstanceRequest, InstanceStatus, Preemption,
    SnapshotInfo,
};
use crate::backends::BackendResult;
use crate::error::BackendError;

/// The project number the mock's default service account carries.
pub const MOCK_PROJECT_NUMBER: &str = "123456789012";

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

/// The zones the mock's aggregated lists name (every one offers [`KNOWN_GPUS`] and the
/// machine families of `machine_type_known`).
pub const MOCK_ZONES: [&str; 7] = [
    "asia-east1-a",
    "europe-west4-a",
    "europe-west4-b",
    "us-central1-a",
    "us-central1-b",
    "us-central1-c",
    "us-west1-b",
];

fn key(at: &InstanceRef) -> String {
    format!("{}/{}/{}", at.project, at.zone, at.name)
}

fn dkey(at: &DiskRef) -> String {
    format!("{}/{}/{}", at.project, at.zone, at.name)
}

/// `projects/p/zones/z/disks/d` → the world's disk key `p/z/d`.
fn dkey_of_path(path: &str) -> Option<String> {
    let rest = path.strip_prefix("projects/")?;
    let (p, rest) = rest.split_once("/zones/")?;
    let (z, n) = rest.split_once("/disks/")?;
    Some(format!("{p}/{z}/{n}"))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn not_found(what: impl std::fmt::Display) -> BackendError {
    BackendError::NotFound {
        resource: what.to_string(),
    }
}

/// Removes the instances whose failing insert's window is over, as GCE does when the
/// insert's operation ends in an error, with their boot disks.
fn settle(s: &mut WorldState) {
    let now = now_ms();
    let due: Vec<String> = s
        .failing_inserts
        .iter()
        .filter(|(_, until)| **until <= now)
        .map(|(k, _)| k.clone())
        .collect();
    for k in due {
        s.failing_inserts.remove(&k);
        if let Some(i) = s.instances.remove(&k) {
            release_disks(s, &i);
        }
    }
}

/// What deleting an instance does to its disks: boot (auto-delete) disks go, the others are
/// detached and kept.
fn release_disks(s: &mut WorldState, i: &InstanceInfo) {
    let user = instance_path(&i.at);
    for d in &i.disks {
        let Some(k) = dkey_of_path(&d.source) else {
            continue;
        };
        if s.disks.get(&k).is_some_and(|d| d.auto_delete) {
            s.disks.remove(&k);
        } else if let Some(disk) = s.disks.get_mut(&k) {
            disk.info.users.retain(|u| *u != user);
        }
    }
}

/// The error GCE gives for an in-place change on an instance that is not stopped.
fn require_stopped(s: &WorldState, at: &InstanceRef, what: &str) -> BackendResult<()> {
    let i = s.instances.get(&key(at)).ok_or_else(|| not_found(at))?;
    if i.status == InstanceStatus::Terminated {
        Ok(())
    } else {
        Err(BackendError::FailedPrecondition {
            resource: at.to_string(),
            message: format!(
                "Invalid resource usage: the instance must be stopped (TERMINATED) to change its {what}; it is {:?} (stop the instance first)",
                i.status
            ),
        })
    }
}

fn default_account() -> String {
    format!("{MOCK_PROJECT_NUMBER}-compute@developer.gserviceaccount.com")
}

/// Now as an RFC 3339 timestamp, in UTC to the millisecond.
fn rfc3339_now() -> String {
    chrono::DateTime::<chrono::Utc>::from(SystemTime::now())
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

impl MockWorld {
    /// Preempts a RUNNING spot VM as GCE does: it is stopped (TERMINATED, disks kept, its
    /// external address gone) and the preemption recorded for
    /// [`Compute::last_preemption`]. Returns the preemption.
    ///
    /// # Panics
    /// When the instance is missing or not RUNNING: GCE preempts nothing else.
    pub fn preempt(&self, at: &InstanceRef) -> Preemption {
        self.edit(|s| {
            let n = s.id();
            let i = s
                .instances
                .get_mut(&key(at))
                .unwrap_or_else(|| panic!("preempt: no {at}"));
            assert_eq!(
                i.status,
                InstanceStatus::Running,
                "preempt: {at} is not RUNNING"
            );
            i.status = InstanceStatus::Terminated;
            i.external_ip = None;
            let p = Preemption {
                at: rfc3339_now(),
                operation: format!("operation-{n}-preempted"),
            };
            let id = i.id.clone();
            s.preemptions.entry(id).or_default().push(p.clone());
            p
        })
    }
}

fn machine_type_known(t: &str) -> bool {
    // The mock offers the families GPU VMs use.
    ["n1-", "n2-", "g2-", "a2-", "a3-", "e2-"]
        .iter()
        .any(|f| t.starts_with(f))
}

pub(super) struct MockCompute(pub(super) MockWorld);

#[async_trait]
impl Compute for MockCompute {
    async fn get_instance(&self, at: &InstanceRef) -> BackendResult<Option<InstanceInfo>> {
        self.0
            .call("compute.get_instance", &key(at), false, |s| {
                settle(s);
                Ok(s.instances.get(&key(at)).cloned())
            })
            .await
    }

    async fn insert_instance(&self, req: &InstanceRequest) -> BackendResult<InstanceInfo> {
        let k = key(&req.at);
        let boot = DiskRef {
            project: req.at.project.clone(),
            zone: req.at.zone.clone(),
            name: req.at.name.clone(),
        };
        let outcome = self
            .0
            .call("compute.insert_instance", &k, true, |s| {
                settle(s);
                if s.instances.contains_key(&k) {
                    return Err(BackendError::AlreadyExists {
                        resource: req.at.to_string(),
                    });
                }
                if s.disks.contains_key(&dkey(&boot)) {
                    return Err(BackendError::AlreadyExists {
                        resource: boot.to_string(),
                    });
                }
                let id = s.id();
                let stockout = s.stockout_zones.contains(&req.at.zone);
                let info = InstanceInfo {
                    at: req.at.clone(),
                    id: id.to_string(),
                    status: if stockout {
                        InstanceStatus::Provisioning
                    } else {
                        InstanceStatus::Running
                    },
                    external_ip: (!stockout).then(|| format!("203.0.113.{}", id % 250 + 1)),
                    machine_type: req.machine_type.clone(),
                    gpu: req.gpu.clone().filter(|(_, n)| *n > 0),
                    labels: req.labels.clone(),
                    disks: vec![AttachedDisk {
                        device_name: req.at.name.clone(),
                        source: disk_path(&boot),
                        boot: true,
                    }],
                    service_account: Some(
                        req.service_account.clone().unwrap_or_else(default_account),
                    ),
                    scopes: req.scopes.clone(),
                    last_start: (!stockout).then(rfc3339_now),
                };
                let disk_id = s.id();
                s.disks.insert(
                    dkey(&boot),
                    MockDisk {
                        info: DiskInfo {
                            at: boot.clone(),
                            id: disk_id.to_string(),
                            size_gb: req.disk_size_gb,
                            disk_type: req.disk_type.clone(),
                            status: "READY".into(),
                            labels: req.labels.clone(),
                            users: vec![instance_path(&req.at)],
                        },
                        data: format!("blank-{disk_id}"),
                        auto_delete: true,
                    },
                );
                s.instances.insert(k.clone(), info.clone());
                if stockout {
                    if let Some(left) = s.stockout_inserts_left.as_mut() {
                        *left = left.saturating_sub(1);
                        if *left == 0 {
                            // Capacity comes back everywhere: the next insert lands.
                            s.stockout_zones.clear();
                            s.stockout_inserts_left = None;
                        }
                    }
                    let window = s.failed_insert_window_ms;
                    s.failing_inserts.insert(k.clone(), now_ms() + window);
                    Ok(Err(Duration::from_millis(window)))
                } else {
                    Ok(Ok(info))
                }
            })
            .await?;
        match outcome {
            Ok(info) => Ok(info),
            Err(window) => {
                // GCE accepted the insert; its operation ends in a stockout after the window,
                // and the instance is gone by then.
                tokio::time::sleep(window).await;
                self.0.edit(settle);
                Err(BackendError::Stockout {
                    zone: req.at.zone.clone(),
                    resource: req
                        .gpu
                        .as_ref()
                        .map_or(req.machine_type.clone(), |g| g.0.clone()),
                    message: "ZONE_RESOURCE_POOL_EXHAUSTED".into(),
                })
            }
        }
    }

    async fn delete_instance(&self, at: &InstanceRef) -> BackendResult<()> {
        self.0
            .call("compute.delete_instance", &key(at), true, |s| {
                settle(s);
                s.failing_inserts.remove(&key(at));
                let i = s.instances.remove(&key(at)).ok_or_else(|| not_found(at))?;
                release_disks(s, &i);
                Ok(())
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
                if machine_type_known(machine_type) {
                    Ok(())
                } else {
                    Err(BackendError::NotFound {
                        resource: format!("machine type {machine_type} in zone {zone}"),
                    })
                }
            })
            .await
    }

    async fn accelerator_zones(&self, project: &str, gpu_type: &str) -> BackendResult<Vec<String>> {
        let k = format!("{project}/{gpu_type}");
        self.0
            .call("compute.accelerator_zones", &k, false, |_| {
                Ok(if KNOWN_GPUS.contains(&gpu_type) {
                    MOCK_ZONES.map(String::from).to_vec()
                } else {
                    Vec::new()
                })
            })
            .await
    }

    async fn machine_type_zones(
        &self,
        project: &str,
        machine_type: &str,
    ) -> BackendResult<Vec<String>> {
        let k = format!("{project}/{machine_type}");
        self.0
            .call("compute.machine_type_zones", &k, false, |_| {
                Ok(if machine_type_known(machine_type) {
                    MOCK_ZONES.map(String::from).to_vec()
                } else {
                    Vec::new()
                })
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

    async fn get_disk(&self, at: &DiskRef) -> BackendResult<Option<DiskInfo>> {
        self.0
            .call("compute.get_disk", &dkey(at), false, |s| {
                settle(s);
                Ok(s.disks.get(&dkey(at)).map(|d| d.info.clone()))
            })
            .await
    }

    async fn insert_disk(&self, req: &DiskRequest) -> BackendResult<DiskInfo> {
        let k = dkey(&req.at);
        self.0
            .call("compute.insert_disk", &k, true, |s| {
                if s.disks.contains_key(&k) {
                    return Err(BackendError::AlreadyExists {
                        resource: req.at.to_string(),
                    });
                }
                let data = match &req.source_snapshot {
                    None => None,
                    Some(path) => {
                        let name = path.rsplit('/').next().unwrap_or_default();
                        let snap = s
                            .snapshots
                            .get(&format!("{}/{name}", req.at.project))
                            .ok_or_else(|| not_found(format!("snapshot {path}")))?;
                        if snap.info.status != "READY" {
                            return Err(BackendError::InvalidArgument {
                                resource: req.at.to_string(),
                                message: format!("The resource '{path}' is not ready"),
                            });
                        }
                        if req.size_gb < snap.size_gb {
                            return Err(BackendError::InvalidArgument {
                                resource: req.at.to_string(),
                                message: format!("Requested disk size cannot be smaller than the snapshot size ({} GB)", snap.size_gb),
                            });
                        }
                        Some(snap.data.clone())
                    }
                };
                let id = s.id();
                let info = DiskInfo {
                    at: req.at.clone(),
                    id: id.to_string(),
                    size_gb: req.size_gb,
                    disk_type: req.disk_type.clone(),
                    status: "READY".into(),
                    labels: req.labels.clone(),
                    users: Vec::new(),
                };
                s.disks.insert(
                    k.clone(),
                    MockDisk {
                        info: info.clone(),
                        data: data.unwrap_or_else(|| format!("blank-{id}")),
                        auto_delete: false,
                    },
                );
                Ok(info)
            })
            .await
    }

    async fn delete_disk(&self, at: &DiskRef) -> BackendResult<()> {
        self.0
            .call("compute.delete_disk", &dkey(at), true, |s| {
                settle(s);
                let d = s.disks.get(&dkey(at)).ok_or_else(|| not_found(at))?;
                if let Some(user) = d.info.users.first() {
                    return Err(BackendError::InUse {
                        resource: at.to_string(),
                        message: format!(
                            "The disk resource '{}' is already being used by '{user}'",
                            disk_path(at)
                        ),
                    });
                }
                s.disks.remove(&dkey(at));
                Ok(())
            })
            .await
    }

    async fn resize_disk(&self, at: &DiskRef, size_gb: u64) -> BackendResult<()> {
        self.0
            .call("compute.resize_disk", &dkey(at), true, |s| {
                let d = s.disks.get_mut(&dkey(at)).ok_or_else(|| not_found(at))?;
                if size_gb <= d.info.size_gb {
                    return Err(BackendError::InvalidArgument {
                        resource: at.to_string(),
                        message: format!("Invalid value for field 'sizeGb': '{size_gb}'. New disk size must be larger than the existing size ({} GB).", d.info.size_gb),
                    });
                }
                d.info.size_gb = size_gb;
                Ok(())
            })
            .await
    }

    async fn attach_disk(
        &self,
        instance: &InstanceRef,
        disk: &DiskRef,
        device_name: &str,
    ) -> BackendResult<()> {
        self.0
            .call("compute.attach_disk", &key(instance), true, |s| {
                settle(s);
                let user = instance_path(instance);
                let i = s
                    .instances
                    .get(&key(instance))
                    .ok_or_else(|| not_found(instance))?;
                if disk.zone != instance.zone || disk.project != instance.project {
                    return Err(BackendError::InvalidArgument {
                        resource: instance.to_string(),
                        message: format!("Invalid value for field 'resource.source': '{}'. Disk must be in the same zone as the instance ({}).", disk_path(disk), instance.zone),
                    });
                }
                if i.disks.iter().any(|d| d.device_name == device_name) {
                    return Err(BackendError::InvalidArgument {
                        resource: instance.to_string(),
                        message: format!("Invalid value for field 'resource.deviceName': '{device_name}'. A disk is already attached under this device name."),
                    });
                }
                let d = s.disks.get_mut(&dkey(disk)).ok_or_else(|| not_found(disk))?;
                if let Some(other) = d.info.users.first() {
                    return Err(BackendError::InUse {
                        resource: disk.to_string(),
                        message: format!(
                            "The disk resource '{}' is already being used by '{other}'",
                            disk_path(disk)
                        ),
                    });
                }
                d.info.users.push(user);
                if let Some(i) = s.instances.get_mut(&key(instance)) {
                    i.disks.push(AttachedDisk {
                        device_name: device_name.to_string(),
                        source: disk_path(disk),
                        boot: false,
                    });
                }
                Ok(())
            })
            .await
    }

    async fn detach_disk(&self, instance: &InstanceRef, device_name: &str) -> BackendResult<()> {
        self.0
            .call("compute.detach_disk", &key(instance), true, |s| {
                settle(s);
                let i = s
                    .instances
                    .get_mut(&key(instance))
                    .ok_or_else(|| not_found(instance))?;
                let Some(pos) = i.disks.iter().position(|d| d.device_name == device_name) else {
                    return Err(BackendError::InvalidArgument {
                        resource: instance.to_string(),
                        message: format!("Invalid value for field 'deviceName': '{device_name}'. No disk is attached under this device name."),
                    });
                };
                let gone = i.disks.remove(pos);
                let user = instance_path(instance);
                if let Some(d) = dkey_of_path(&gone.source).and_then(|k| s.disks.get_mut(&k)) {
                    d.info.users.retain(|u| *u != user);
                }
                Ok(())
            })
            .await
    }

    async fn create_snapshot(
        &self,
        disk: &DiskRef,
        name: &str,
        labels: &BTreeMap<String, String>,
    ) -> BackendResult<SnapshotInfo> {
        let k = format!("{}/{name}", disk.project);
        self.0
            .call("compute.create_snapshot", &k, true, |s| {
                if s.snapshots.contains_key(&k) {
                    return Err(BackendError::AlreadyExists {
                        resource: format!("snapshot {k}"),
                    });
                }
                let d = s.disks.get(&dkey(disk)).ok_or_else(|| not_found(disk))?;
                let (data, size_gb) = (d.data.clone(), d.info.size_gb);
                let id = s.id();
                let info = SnapshotInfo {
                    project: disk.project.clone(),
                    name: name.to_string(),
                    id: id.to_string(),
                    status: "READY".into(),
                    source_disk: disk_path(disk),
                    labels: labels.clone(),
                };
                s.snapshots.insert(
                    k.clone(),
                    MockSnapshot {
                        info: info.clone(),
                        data,
                        size_gb,
                    },
                );
                Ok(info)
            })
            .await
    }

    async fn get_snapshot(&self, project: &str, name: &str) -> BackendResult<Option<SnapshotInfo>> {
        let k = format!("{project}/{name}");
        self.0
            .call("compute.get_snapshot", &k, false, |s| {
                Ok(s.snapshots.get(&k).map(|x| x.info.clone()))
            })
            .await
    }

    async fn delete_snapshot(&self, project: &str, name: &str) -> BackendResult<()> {
        let k = format!("{project}/{name}");
        self.0
            .call("compute.delete_snapshot", &k, true, |s| {
                s.snapshots
                    .remove(&k)
                    .map(drop)
                    .ok_or_else(|| not_found(format!("snapshot {k}")))
            })
            .await
    }

    async fn set_machine_type(&self, at: &InstanceRef, machine_type: &str) -> BackendResult<()> {
        self.0
            .call("compute.set_machine_type", &key(at), true, |s| {
                settle(s);
                require_stopped(s, at, "machine type")?;
                if !machine_type_known(machine_type) {
                    return Err(BackendError::InvalidArgument {
                        resource: at.to_string(),
                        message: format!("Invalid value for field 'resource.machineType': '{machine_type}'. Machine type does not exist in zone {}.", at.zone),
                    });
                }
                if let Some(i) = s.instances.get_mut(&key(at)) {
                    i.machine_type = machine_type.to_string();
                }
                Ok(())
            })
            .await
    }

    async fn set_gpus(&self, at: &InstanceRef, gpu: Option<(String, u8)>) -> BackendResult<()> {
        self.0
            .call("compute.set_gpus", &key(at), true, |s| {
                settle(s);
                require_stopped(s, at, "GPUs")?;
                if let Some((t, _)) = &gpu {
                    if !KNOWN_GPUS.contains(&t.as_str()) {
                        return Err(not_found(format!(
                            "accelerator type {t} in zone {}",
                            at.zone
                        )));
                    }
                }
                if let Some(i) = s.instances.get_mut(&key(at)) {
                    i.gpu = gpu.filter(|(_, n)| *n > 0);
                }
                Ok(())
            })
            .await
    }

    async fn set_service_account(
        &self,
        at: &InstanceRef,
        email: Option<&str>,
        scopes: &[String],
    ) -> BackendResult<()> {
        self.0
            .call("compute.set_service_account", &key(at), true, |s| {
                settle(s);
                require_stopped(s, at, "service account")?;
                if let Some(i) = s.instances.get_mut(&key(at)) {
                    i.service_account = Some(email.map_or_else(default_account, str::to_string));
                    i.scopes = scopes.to_vec();
                }
                Ok(())
            })
            .await
    }

    async fn set_instance_labels(
        &self,
        at: &InstanceRef,
        labels: &BTreeMap<String, String>,
    ) -> BackendResult<()> {
        self.0
            .call("compute.set_instance_labels", &key(at), true, |s| {
                settle(s);
                let i = s.instances.get_mut(&key(at)).ok_or_else(|| not_found(at))?;
                i.labels = labels.clone();
                Ok(())
            })
            .await
    }

    async fn last_preemption(
        &self,
        at: &InstanceRef,
        id: &str,
    ) -> BackendResult<Option<Preemption>> {
        self.0
            .call("compute.last_preemption", &key(at), false, |s| {
                Ok(s.preemptions.get(id).and_then(|p| p.last()).cloned())
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
                settle(s);
                // A VM that lost its ephemeral address (a preemption) gets a new one when
                // it starts, as on GCE.
                let needs_ip = s
                    .instances
                    .get(&key(at))
                    .is_some_and(|i| status == InstanceStatus::Running && i.external_ip.is_none());
                let new_ip = needs_ip.then(|| format!("203.0.113.{}", s.id() % 250 + 1));
                match s.instances.get_mut(&key(at)) {
                    Some(i) => {
                        if status == InstanceStatus::Running && i.status != status {
                            i.last_start = Some(rfc3339_now());
                        }
                        if new_ip.is_some() {
                            i.external_ip = new_ip;
                        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn at() -> InstanceRef {
        InstanceRef {
            project: "my-project".into(),
            zone: "us-central1-a".into(),
            name: "kg".into(),
        }
    }

    fn req() -> InstanceRequest {
        InstanceRequest {
            at: at(),
            machine_type: "n1-standard-8".into(),
            gpu: Some(("nvidia-tesla-t4".into(), 1)),
            source_image: "projects/p/global/images/i".into(),
            disk_size_gb: 200,
            disk_type: "pd-balanced".into(),
            provisioning: Default::default(),
            service_account: None,
            scopes: Vec::new(),
            tags: Vec::new(),
            labels: BTreeMap::new(),
            metadata: BTreeMap::new(),
        }
    }

    fn data_disk(zone: &str, snapshot: Option<&str>) -> DiskRequest {
        DiskRequest {
            at: DiskRef {
                project: "my-project".into(),
                zone: zone.into(),
                name: "kg-data".into(),
            },
            size_gb: 100,
            disk_type: "pd-balanced".into(),
            labels: BTreeMap::new(),
            source_snapshot: snapshot.map(|s| format!("projects/my-project/global/snapshots/{s}")),
        }
    }

    #[tokio::test]
    async fn a_preempted_vm_is_stopped_with_its_disks_and_its_preemption_is_listed() {
        let world = MockWorld::new();
        let c = world.backends().compute;
        let made = c.insert_instance(&req()).await.expect("insert");
        assert_eq!(
            c.last_preemption(&at(), &made.id).await.expect("list"),
            None
        );
        let p = world.preempt(&at());
        let now = c.get_instance(&at()).await.expect("get").expect("kept");
        assert_eq!(now.status, InstanceStatus::Terminated);
        assert_eq!(now.external_ip, None, "the ephemeral address goes");
        assert_eq!(now.disks, made.disks, "disks kept");
        assert_eq!(
            c.last_preemption(&at(), &made.id).await.expect("list"),
            Some(p)
        );
        assert_eq!(
            c.last_preemption(&at(), "1").await.expect("list"),
            None,
            "by GCE id: a remade VM of the same name has none"
        );
        c.start_instance(&at()).await.expect("start");
        let back = c.get_instance(&at()).await.expect("get").expect("kept");
        assert_eq!(back.status, InstanceStatus::Running);
        assert!(back.external_ip.is_some(), "a new address");
        assert!(back.last_start >= made.last_start);
    }

    #[tokio::test]
    async fn disks_follow_gces_rules() {
        let world = MockWorld::new();
        let c = world.backends().compute;
        c.insert_instance(&req()).await.expect("insert");
        let d = data_disk("us-central1-a", None);
        c.insert_disk(&d).await.expect("disk");
        c.attach_disk(&at(), &d.at, "kgenv-data")
            .await
            .expect("attach");
        assert!(c
            .delete_disk(&d.at)
            .await
            .expect_err("attached")
            .is_in_use());
        assert!(c.resize_disk(&d.at, 50).await.is_err(), "never shrinks");
        let e = c
            .set_machine_type(&at(), "n1-standard-16")
            .await
            .expect_err("running");
        assert!(e.is_failed_precondition(), "{e:?}");
        c.stop_instance(&at()).await.expect("stop");
        c.set_machine_type(&at(), "n1-standard-16")
            .await
            .expect("stopped");
        world.edit(|s| {
            if let Some(x) = s.disks.get_mut("my-project/us-central1-a/kg-data") {
                x.data = "work".into();
            }
        });
        c.delete_instance(&at()).await.expect("delete");
        let state = world.state();
        assert!(
            !state.disks.contains_key("my-project/us-central1-a/kg"),
            "boot disk gone"
        );
        let kept = &state.disks["my-project/us-central1-a/kg-data"];
        assert!(kept.info.users.is_empty());
        c.create_snapshot(&d.at, "kg-move", &BTreeMap::new())
            .await
            .expect("snapshot");
        c.insert_disk(&data_disk("us-central1-b", Some("kg-move")))
            .await
            .expect("restore");
        assert_eq!(
            world.state().disks["my-project/us-central1-b/kg-data"].data,
            "work"
        );
    }

    #[tokio::test]
    async fn a_stockout_insert_shows_provisioning_then_removes_the_instance() {
        let world = MockWorld::new();
        world.edit(|s| {
            s.stockout_zones.push("us-central1-a".into());
            // Held open until the test releases it below.
            s.failed_insert_window_ms = 3_600_000;
        });
        let c = world.backends().compute;
        let inserting = {
            let c = c.clone();
            tokio::spawn(async move { c.insert_instance(&req()).await })
        };
        while world.state().instances.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let seen = c.get_instance(&at()).await.expect("get").expect("there");
        assert_eq!(seen.status, InstanceStatus::Provisioning);
        // The window is over (as if its time had come): any later call sees it gone.
        world.edit(|s| s.failing_inserts.values_mut().for_each(|t| *t = 0));
        assert!(c.get_instance(&at()).await.expect("get").is_none());
        assert!(world.state().disks.is_empty(), "boot disk gone too");
        inserting.abort();
    }
}

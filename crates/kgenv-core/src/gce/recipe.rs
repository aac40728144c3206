//! kgenv's request bodies, built from the backend-neutral values of
//! [`crate::backends::compute`]: Google's recipe for a GPU VM, and firewall rules. Pure
//! functions, so the exact JSON is unit-tested and checked against the discovery document.
//!
//! The instance follows Google's GPU guidance: `scheduling.onHostMaintenance = TERMINATE`
//! (GPU VMs cannot live-migrate); spot as `provisioningModel = SPOT` with
//! `instanceTerminationAction = STOP` and `automaticRestart = false`; flex-start as
//! `FLEX_START` with its `maxRunDuration`, also stopped at the end (see [`scheduling`]); the boot disk from the
//! resolved Deep Learning VM image with `diskSizeGb` as an int64 string; an ephemeral
//! external IPv4 on the default network; the requested service account (or `default`) with
//! the spec's scopes; kgenv's network tag, labels and metadata (`ssh-keys`, `install-nvidia-driver`,
//! `enable-guest-attributes`).

use std::collections::BTreeMap;

use super::model::{self, short_name};
use crate::backends::compute::{
    AttachedDisk, DiskInfo, DiskRef, DiskRequest, FirewallRule, InstanceInfo, InstanceRef,
    InstanceRequest, InstanceStatus, Preemption, Provisioning, SnapshotInfo,
};

/// What `email` the API takes for the project's Compute Engine default service account.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";

/// The `instances.insert` body for `req`.
pub fn instance_body(req: &InstanceRequest) -> model::Instance {
    let zone = &req.at.zone;
    let gpu = req.gpu.as_ref().filter(|(_, n)| *n > 0);
    let scheduling = scheduling(&req.provisioning, gpu.is_some());
    model::Instance {
        name: req.at.name.clone(),
        machine_type: format!("zones/{zone}/machineTypes/{}", req.machine_type),
        disks: vec![model::AttachedDisk {
            boot: true,
            auto_delete: true,
            kind: Some("PERSISTENT".into()),
            mode: Some("READ_WRITE".into()),
            device_name: Some(req.at.name.clone()),
            source: None,
            initialize_params: Some(model::AttachedDiskInitializeParams {
                source_image: req.source_image.clone(),
                disk_size_gb: Some(req.disk_size_gb),
                disk_type: Some(format!("zones/{zone}/diskTypes/{}", req.disk_type)),
                labels: req.labels.clone(),
            }),
        }],
        network_interfaces: vec![model::NetworkInterface {
            network: Some("global/networks/default".into()),
            access_configs: vec![model::AccessConfig {
                name: Some("External NAT".into()),
                kind: Some("ONE_TO_ONE_NAT".into()),
                network_tier: Some("PREMIUM".into()),
                nat_ip: None,
            }],
        }],
        guest_accelerators: accelerators(zone, gpu),
        scheduling: Some(scheduling),
        // Flex-start capacity comes from the Dynamic Workload Scheduler, not a reservation:
        // Google's flex-start request consumes none.
        reservation_affinity: matches!(req.provisioning, Provisioning::FlexStart { .. }).then(
            || model::ReservationAffinity {
                consume_reservation_type: "NO_RESERVATION".into(),
            },
        ),
        service_accounts: vec![model::ServiceAccount {
            email: req
                .service_account
                .clone()
                .unwrap_or_else(|| DEFAULT_SERVICE_ACCOUNT.into()),
            scopes: req.scopes.clone(),
        }],
        tags: (!req.tags.is_empty()).then(|| model::Tags {
            items: req.tags.clone(),
            fingerprint: None,
        }),
        labels: req.labels.clone(),
        metadata: Some(model::Metadata {
            items: req
                .metadata
                .iter()
                .map(|(k, v)| model::MetadataItem {
                    key: k.clone(),
                    value: v.clone(),
                })
                .collect(),
            fingerprint: None,
        }),
        ..model::Instance::default()
    }
}

/// `scheduling` for a provisioning model.
///
/// - Spot: `provisioningModel = SPOT`, no automatic restart (GCE allows none for spot), and
///   `instanceTerminationAction = STOP`, so a preemption stops the VM and keeps both disks.
/// - Flex-start, as Google's "Create a Flex-start VM" REST request has it
///   (https://cloud.google.com/compute/docs/instances/create-flex-start-vm):
///   `provisioningModel = FLEX_START`, `maxRunDuration {seconds}`, `onHostMaintenance =
///   TERMINATE`, `automaticRestart = false` and a termination action; kgenv picks `STOP`, so
///   when the run duration ends GCE stops the VM and its boot and data disks stay (`DELETE`
///   would take the boot disk, and the data disk would survive only detached).
/// - Standard: a GPU VM cannot live-migrate (`TERMINATE`), restarted after host events.
pub fn scheduling(provisioning: &Provisioning, gpu: bool) -> model::Scheduling {
    match provisioning {
        Provisioning::Spot => model::Scheduling {
            on_host_maintenance: Some("TERMINATE".into()),
            automatic_restart: Some(false),
            provisioning_model: Some("SPOT".into()),
            instance_termination_action: Some("STOP".into()),
            max_run_duration: None,
        },
        Provisioning::FlexStart {
            max_run_duration_secs,
        } => model::Scheduling {
            on_host_maintenance: Some("TERMINATE".into()),
            automatic_restart: Some(false),
            provisioning_model: Some("FLEX_START".into()),
            instance_termination_action: Some("STOP".into()),
            max_run_duration: Some(model::Duration {
                seconds: Some(*max_run_duration_secs),
            }),
        },
        _ => model::Scheduling {
            on_host_maintenance: Some(if gpu { "TERMINATE" } else { "MIGRATE" }.into()),
            automatic_restart: Some(true),
            provisioning_model: Some("STANDARD".into()),
            instance_termination_action: None,
            max_run_duration: None,
        },
    }
}

/// The newest preemption in a `zoneOperations.list` page (see
/// [`super::api::list_preemptions`]): its time in UTC, to the millisecond. An operation without a
/// readable `insertTime` is skipped rather than shown with a made-up time.
pub fn preemption(ops: &[model::Operation]) -> Option<Preemption> {
    ops.iter()
        .filter(|o| o.operation_type.as_deref() == Some("compute.instances.preempted"))
        .filter_map(|o| {
            let t = chrono::DateTime::parse_from_rfc3339(o.insert_time.as_deref()?).ok()?;
            Some((t, o))
        })
        .max_by_key(|(t, _)| *t)
        .map(|(t, o)| Preemption {
            at: t
                .with_timezone(&chrono::Utc)
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            operation: o.name.clone(),
        })
}

/// GCE's status name as kgenv's [`InstanceStatus`].
pub fn status(s: &str) -> InstanceStatus {
    match s {
        "STAGING" => InstanceStatus::Staging,
        "RUNNING" => InstanceStatus::Running,
        "STOPPING" | "PENDING_STOP" | "DEPROVISIONING" => InstanceStatus::Stopping,
        "SUSPENDING" => InstanceStatus::Suspending,
        "SUSPENDED" => InstanceStatus::Suspended,
        "TERMINATED" | "STOPPED" => InstanceStatus::Terminated,
        "REPAIRING" => InstanceStatus::Repairing,
        // PROVISIONING, PENDING, and anything newer: not usable yet.
        _ => InstanceStatus::Provisioning,
    }
}

/// What kgenv keeps of an instance resource.
pub fn instance_info(at: &InstanceRef, i: &model::Instance) -> InstanceInfo {
    InstanceInfo {
        at: at.clone(),
        id: i.id.clone().unwrap_or_default(),
        status: status(i.status.as_deref().unwrap_or_default()),
        external_ip: i
            .network_interfaces
            .iter()
            .flat_map(|n| n.access_configs.iter())
            .find_map(|a| a.nat_ip.clone()),
        machine_type: short_name(&i.machine_type).to_string(),
        gpu: i.guest_accelerators.first().map(|g| {
            (
                short_name(&g.accelerator_type).to_string(),
                u8::try_from(g.accelerator_count).unwrap_or(u8::MAX),
            )
        }),
        labels: i.labels.clone(),
        disks: i
            .disks
            .iter()
            .map(|d| AttachedDisk {
                device_name: d.device_name.clone().unwrap_or_default(),
                source: d.source.as_deref().map(relative).unwrap_or_default(),
                boot: d.boot,
            })
            .collect(),
        service_account: i.service_accounts.first().map(|a| a.email.clone()),
        scopes: i
            .service_accounts
            .first()
            .map(|a| a.scopes.clone())
            .unwrap_or_default(),
        last_start: i.last_start_timestamp.clone(),
    }
}

/// A resource URL from `projects/` on: `https://…/compute/v1/projects/p/zones/z/disks/d` →
/// `projects/p/zones/z/disks/d` (partial URLs pass through).
pub fn relative(url: &str) -> String {
    match url.find("projects/") {
        Some(i) => url[i..].to_string(),
        None => url.to_string(),
    }
}

/// The `disks.insert` body for `req`.
pub fn disk_body(req: &DiskRequest) -> model::Disk {
    model::Disk {
        name: req.at.name.clone(),
        size_gb: Some(req.size_gb),
        kind: Some(format!("zones/{}/diskTypes/{}", req.at.zone, req.disk_type)),
        labels: req.labels.clone(),
        source_snapshot: req.source_snapshot.clone(),
        ..model::Disk::default()
    }
}

/// What kgenv keeps of a disk resource.
pub fn disk_info(at: &DiskRef, d: &model::Disk) -> DiskInfo {
    DiskInfo {
        at: at.clone(),
        id: d.id.clone().unwrap_or_default(),
        size_gb: d.size_gb.unwrap_or_default(),
        disk_type: d
            .kind
            .as_deref()
            .map(short_name)
            .unwrap_or_default()
            .to_string(),
        status: d.status.clone().unwrap_or_default(),
        labels: d.labels.clone(),
        users: d.users.iter().map(|u| relative(u)).collect(),
    }
}

/// The `disks.createSnapshot` body.
pub fn snapshot_body(name: &str, labels: &BTreeMap<String, String>) -> model::Snapshot {
    model::Snapshot {
        name: name.to_string(),
        labels: labels.clone(),
        ..model::Snapshot::default()
    }
}

/// What kgenv keeps of a snapshot resource.
pub fn snapshot_info(project: &str, s: &model::Snapshot) -> SnapshotInfo {
    SnapshotInfo {
        project: project.to_string(),
        name: s.name.clone(),
        id: s.id.clone().unwrap_or_default(),
        status: s.status.clone().unwrap_or_default(),
        source_disk: s.source_disk.as_deref().map(relative).unwrap_or_default(),
        labels: s.labels.clone(),
    }
}

/// The `instances.attachDisk` body: an existing persistent disk, read-write, kept when the
/// instance is deleted.
pub fn attach_body(disk: &DiskRef, device_name: &str) -> model::AttachedDisk {
    model::AttachedDisk {
        boot: false,
        auto_delete: false,
        kind: Some("PERSISTENT".into()),
        mode: Some("READ_WRITE".into()),
        device_name: Some(device_name.to_string()),
        source: Some(crate::backends::compute::disk_path(disk)),
        initialize_params: None,
    }
}

/// The accelerator list of `setMachineResources` (empty: no GPU).
pub fn accelerators(zone: &str, gpu: Option<&(String, u8)>) -> Vec<model::AcceleratorConfig> {
    gpu.filter(|(_, n)| *n > 0)
        .map(|(t, n)| model::AcceleratorConfig {
            accelerator_type: format!("zones/{zone}/acceleratorTypes/{t}"),
            accelerator_count: i32::from(*n),
        })
        .into_iter()
        .collect()
}

/// The `firewalls.insert`/`patch` body for `rule`: ingress, allow, on kgenv's tags only.
pub fn firewall_body(rule: &FirewallRule) -> model::Firewall {
    let network = if rule.network.contains('/') {
        rule.network.clone()
    } else {
        format!("global/networks/{}", rule.network)
    };
    model::Firewall {
        name: rule.name.clone(),
        description: Some(rule.description.clone()),
        network: Some(network),
        direction: Some("INGRESS".into()),
        allowed: vec![model::FirewallAllowed {
            ip_protocol: rule.protocol.clone(),
            ports: rule.ports.clone(),
        }],
        source_ranges: rule.source_ranges.clone(),
        target_tags: rule.target_tags.clone(),
    }
}

/// What kgenv keeps of a firewall resource.
pub fn firewall_rule(project: &str, f: &model::Firewall) -> FirewallRule {
    let allowed = f.allowed.first();
    FirewallRule {
        project: project.to_string(),
        name: f.name.clone(),
        network: f
            .network
            .as_deref()
            .map_or("default", short_name)
            .to_string(),
        protocol: allowed.map(|a| a.ip_protocol.clone()).unwrap_or_default(),
        ports: allowed.map(|a| a.ports.clone()).unwrap_or_default(),
        source_ranges: f.source_ranges.clone(),
        target_tags: f.target_tags.clone(),
        description: f.description.clone().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn req(spot: bool) -> InstanceRequest {
        req_with(if spot {
            Provisioning::Spot
        } else {
            Provisioning::Standard
        })
    }

    fn req_with(provisioning: Provisioning) -> InstanceRequest {
        InstanceRequest {
            at: InstanceRef { project: "my-project".into(), zone: "us-central1-a".into(), name: "kg".into() },
            machine_type: "n1-standard-8".into(),
            gpu: Some(("nvidia-tesla-t4".into(), 1)),
            source_image: "https://compute.googleapis.com/compute/v1/projects/deeplearning-platform-release/global/images/img".into(),
            disk_size_gb: 200,
            disk_type: "pd-balanced".into(),
            provisioning,
            service_account: None,
            scopes: vec!["https://www.googleapis.com/auth/cloud-platform".into()],
            tags: vec!["kgenv-kg".into()],
            labels: BTreeMap::from([("kgenv-env".to_string(), "kg".to_string())]),
            metadata: BTreeMap::from([("install-nvidia-driver".to_string(), "True".to_string())]),
        }
    }

    #[test]
    fn gpu_recipe_fields() {
        let v = serde_json::to_value(instance_body(&req(false))).expect("json");
        assert_eq!(v["scheduling"]["onHostMaintenance"], "TERMINATE");
        assert_eq!(v["scheduling"]["provisioningModel"], "STANDARD");
        assert_eq!(
            v["disks"][0]["initializeParams"]["diskSizeGb"], "200",
            "int64 travels as a string"
        );
        assert_eq!(v["guestAccelerators"][0]["acceleratorCount"], 1);
        assert_eq!(
            v["guestAccelerators"][0]["acceleratorType"],
            "zones/us-central1-a/acceleratorTypes/nvidia-tesla-t4"
        );
        assert!(
            v.get("id").is_none() && v.get("status").is_none(),
            "output-only fields are not sent"
        );
        let spot = serde_json::to_value(instance_body(&req(true))).expect("json");
        assert_eq!(spot["scheduling"]["provisioningModel"], "SPOT");
        assert_eq!(spot["scheduling"]["instanceTerminationAction"], "STOP");
        assert_eq!(spot["scheduling"]["automaticRestart"], false);
        assert!(spot.get("reservationAffinity").is_none());
        let flex = serde_json::to_value(instance_body(&req_with(Provisioning::FlexStart {
            max_run_duration_secs: 8 * 3600,
        })))
        .expect("json");
        assert_eq!(
            flex["scheduling"],
            serde_json::json!({
                "onHostMaintenance": "TERMINATE", "automaticRestart": false,
                "provisioningModel": "FLEX_START", "instanceTerminationAction": "STOP",
                "maxRunDuration": {"seconds": "28800"}
            }),
            "int64 seconds travel as a string"
        );
        assert_eq!(
            flex["reservationAffinity"]["consumeReservationType"],
            "NO_RESERVATION"
        );
    }

    #[test]
    fn the_newest_preemption_is_read_in_utc() {
        let ops: Vec<model::Operation> = serde_json::from_value(serde_json::json!([
            {"name": "operation-old", "operationType": "compute.instances.preempted", "insertTime": "2026-12-01T01:00:00.000-08:00"},
            {"name": "operation-new", "operationType": "compute.instances.preempted", "insertTime": "2026-12-04T02:02:11.482-08:00"},
            {"name": "operation-stop", "operationType": "stop", "insertTime": "2026-12-05T00:00:00Z"},
            {"name": "operation-no-time", "operationType": "compute.instances.preempted"}
        ]))
        .expect("json");
        assert_eq!(
            preemption(&ops),
            Some(Preemption {
                at: "2026-12-04T10:02:11.482Z".into(),
                operation: "operation-new".into()
            })
        );
        assert_eq!(preemption(&ops[2..]), None);
    }

    #[test]
    fn instances_read_back() {
        let i: model::Instance = serde_json::from_value(serde_json::json!({
            "id": "123", "name": "kg", "status": "TERMINATED",
            "machineType": "https://x/compute/v1/projects/p/zones/z/machineTypes/n1-standard-8",
            "guestAccelerators": [{"acceleratorType": "https://x/projects/p/zones/z/acceleratorTypes/nvidia-l4", "acceleratorCount": 2}],
            "networkInterfaces": [{"accessConfigs": [{"natIP": "203.0.113.9"}]}],
            "labels": {"kgenv-env": "kg"}, "somethingNew": {"x": 1}
        }))
        .expect("json");
        let info = instance_info(&req(false).at, &i);
        assert_eq!(info.status, InstanceStatus::Terminated);
        assert_eq!(info.machine_type, "n1-standard-8");
        assert_eq!(info.gpu, Some(("nvidia-l4".to_string(), 2)));
        assert_eq!(info.external_ip.as_deref(), Some("203.0.113.9"));
        assert!(info.disks.is_empty() && info.service_account.is_none());
    }

    #[test]
    fn disks_and_service_accounts_read_back_as_relative_paths() {
        let i: model::Instance = serde_json::from_value(serde_json::json!({
            "name": "kg", "status": "RUNNING",
            "disks": [
                {"boot": true, "autoDelete": true, "deviceName": "kg", "source": "https://www.googleapis.com/compute/v1/projects/p/zones/z/disks/kg"},
                {"boot": false, "deviceName": "kgenv-data", "source": "https://www.googleapis.com/compute/v1/projects/p/zones/z/disks/kg-data"}
            ],
            "serviceAccounts": [{"email": "123456789012-compute@developer.gserviceaccount.com", "scopes": ["https://www.googleapis.com/auth/devstorage.read_write"]}]
        }))
        .expect("json");
        let info = instance_info(&req(false).at, &i);
        assert_eq!(
            info.disks,
            vec![
                AttachedDisk {
                    device_name: "kg".into(),
                    source: "projects/p/zones/z/disks/kg".into(),
                    boot: true
                },
                AttachedDisk {
                    device_name: "kgenv-data".into(),
                    source: "projects/p/zones/z/disks/kg-data".into(),
                    boot: false
                },
            ]
        );
        assert!(crate::backends::compute::is_default_compute_account(
            info.service_account.as_deref().expect("an account")
        ));
        assert_eq!(info.scopes.len(), 1);
        let mut named = req(false);
        named.service_account = Some("runner@my-project.iam.gserviceaccount.com".into());
        let v = serde_json::to_value(instance_body(&named)).expect("json");
        assert_eq!(
            v["serviceAccounts"][0]["email"],
            "runner@my-project.iam.gserviceaccount.com"
        );
        let v = serde_json::to_value(instance_body(&req(false))).expect("json");
        assert_eq!(v["serviceAccounts"][0]["email"], "default");
    }
}

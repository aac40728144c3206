//! Serde models of the Compute v1 resources kgenv reads and writes — only the fields kgenv
//! uses, named and typed as in Google's discovery document (`int64` fields travel as JSON
//! strings, enums as their exact names). Responses may carry more fields; they are ignored.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `int64`/`uint64` fields: JSON strings on the wire (numbers are accepted when reading).
pub mod int64_string {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `Some(n)` as `"n"`.
    pub fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(n) => s.serialize_str(&n.to_string()),
            None => s.serialize_none(),
        }
    }

    /// Reads `"n"` or `n`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Number(u64),
        }
        match Option::<Raw>::deserialize(d)? {
            None => Ok(None),
            Some(Raw::Number(n)) => Ok(Some(n)),
            Some(Raw::Text(t)) => t.parse().map(Some).map_err(serde::de::Error::custom),
        }
    }
}

/// A VM instance (`compute#instance`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    /// Server-assigned id (uint64 as a string); output only, never sent.
    #[serde(default, skip_serializing)]
    pub id: Option<String>,
    /// Name.
    pub name: String,
    /// Machine type URL (full or `zones/Z/machineTypes/T`).
    #[serde(default)]
    pub machine_type: String,
    /// Lifecycle status; output only.
    #[serde(default, skip_serializing)]
    pub status: Option<String>,
    /// When the instance last started (RFC 3339); output only.
    #[serde(default, skip_serializing)]
    pub last_start_timestamp: Option<String>,
    /// Attached disks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<AttachedDisk>,
    /// Network interfaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network_interfaces: Vec<NetworkInterface>,
    /// GPUs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guest_accelerators: Vec<AcceleratorConfig>,
    /// Scheduling (host maintenance, spot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduling: Option<Scheduling>,
    /// Service accounts and their scopes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_accounts: Vec<ServiceAccount>,
    /// Network tags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Tags>,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Label fingerprint, for setLabels; output only here.
    #[serde(default, skip_serializing)]
    pub label_fingerprint: Option<String>,
    /// Metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Metadata>,
    /// Which reservations it may consume (flex-start VMs consume none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation_affinity: Option<ReservationAffinity>,
}

/// `reservationAffinity`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReservationAffinity {
    /// `ANY_RESERVATION`, `NO_RESERVATION`, `SPECIFIC_RESERVATION`.
    pub consume_reservation_type: String,
}

/// A `Duration`: whole seconds (an int64, so a JSON string) and nanoseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Duration {
    /// Seconds.
    #[serde(
        default,
        with = "int64_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub seconds: Option<u64>,
}

/// A disk attached to an instance.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachedDisk {
    /// The boot disk.
    #[serde(default)]
    pub boot: bool,
    /// Deleted with the instance.
    #[serde(default)]
    pub auto_delete: bool,
    /// `PERSISTENT` or `SCRATCH`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// `READ_WRITE` or `READ_ONLY`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Device name inside the guest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_name: Option<String>,
    /// The existing disk to attach (full or partial URL); on reads, the disk's URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// How to create the disk (insert only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initialize_params: Option<AttachedDiskInitializeParams>,
}

/// Parameters of a disk created with its instance.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachedDiskInitializeParams {
    /// Image URL.
    pub source_image: String,
    /// Size in GB (int64 as a JSON string).
    #[serde(
        default,
        with = "int64_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub disk_size_gb: Option<u64>,
    /// Disk type URL (`zones/Z/diskTypes/pd-balanced`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_type: Option<String>,
    /// Labels of the disk.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A network interface.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkInterface {
    /// Network URL (`global/networks/default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// External access (one NAT config for an external IPv4 address).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub access_configs: Vec<AccessConfig>,
}

/// An external-access configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccessConfig {
    /// Name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `ONE_TO_ONE_NAT`.
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// `PREMIUM` or `STANDARD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_tier: Option<String>,
    /// The external IPv4 address (output when ephemeral).
    #[serde(rename = "natIP", default, skip_serializing_if = "Option::is_none")]
    pub nat_ip: Option<String>,
}

/// GPUs attached to an instance.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AcceleratorConfig {
    /// Accelerator type URL (`zones/Z/acceleratorTypes/nvidia-tesla-t4`).
    pub accelerator_type: String,
    /// How many.
    pub accelerator_count: i32,
}

/// Scheduling options.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Scheduling {
    /// `MIGRATE` or `TERMINATE` (GPU VMs cannot live-migrate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_host_maintenance: Option<String>,
    /// Restart after a host event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automatic_restart: Option<bool>,
    /// `STANDARD` or `SPOT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning_model: Option<String>,
    /// What preemption (spot) or the end of the run duration (flex-start) does: `STOP` or
    /// `DELETE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_termination_action: Option<String>,
    /// The most a flex-start VM runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_run_duration: Option<Duration>,
}

/// A service account and its scopes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAccount {
    /// `default` for the project's Compute Engine default service account.
    pub email: String,
    /// OAuth scopes.
    #[serde(default)]
    pub scopes: Vec<String>,
}

/// Network tags.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tags {
    /// The tags.
    #[serde(default)]
    pub items: Vec<String>,
    /// Fingerprint (required by setTags).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

/// Instance metadata.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata {
    /// Key/value items.
    #[serde(default)]
    pub items: Vec<MetadataItem>,
    /// Fingerprint (required by setMetadata).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

/// One metadata entry.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetadataItem {
    /// Key.
    pub key: String,
    /// Value.
    #[serde(default)]
    pub value: String,
}

/// A zonal persistent disk (`compute#disk`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Disk {
    /// Server-assigned id; output only.
    #[serde(default, skip_serializing)]
    pub id: Option<String>,
    /// Name.
    pub name: String,
    /// Size in GB (int64 as a JSON string).
    #[serde(
        default,
        with = "int64_string",
        skip_serializing_if = "Option::is_none"
    )]
    pub size_gb: Option<u64>,
    /// Disk type URL (`zones/Z/diskTypes/pd-balanced`).
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Snapshot to restore (full or partial URL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_snapshot: Option<String>,
    /// `CREATING`, `RESTORING`, `READY`, ...; output only.
    #[serde(default, skip_serializing)]
    pub status: Option<String>,
    /// Instances using the disk (URLs); output only.
    #[serde(default, skip_serializing)]
    pub users: Vec<String>,
}

/// A snapshot (`compute#snapshot`): the body of `disks.createSnapshot` and what
/// `snapshots.get` answers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// Server-assigned id; output only.
    #[serde(default, skip_serializing)]
    pub id: Option<String>,
    /// Name.
    pub name: String,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// `CREATING`, `UPLOADING`, `READY`, `FAILED`, `DELETING`; output only.
    #[serde(default, skip_serializing)]
    pub status: Option<String>,
    /// The source disk's URL; output only here (the path names it).
    #[serde(default, skip_serializing)]
    pub source_disk: Option<String>,
}

/// Body of `disks.resize`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DisksResizeRequest {
    /// The new size in GB (int64 as a JSON string).
    #[serde(with = "int64_string")]
    pub size_gb: Option<u64>,
}

/// Body of `instances.setMachineType`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstancesSetMachineTypeRequest {
    /// Machine type URL (`zones/Z/machineTypes/T`).
    pub machine_type: String,
}

/// Body of `instances.setMachineResources`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstancesSetMachineResourcesRequest {
    /// The GPUs the instance will have; empty removes them (sent as `[]`, not left out).
    pub guest_accelerators: Vec<AcceleratorConfig>,
}

/// Body of `instances.setServiceAccount`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstancesSetServiceAccountRequest {
    /// Email, or `default` for the project's Compute Engine default service account.
    pub email: String,
    /// OAuth scopes.
    pub scopes: Vec<String>,
}

/// Body of `instances.setLabels`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SetLabelsRequest {
    /// All labels (replaces the set).
    pub labels: BTreeMap<String, String>,
    /// The fingerprint read from the instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label_fingerprint: Option<String>,
}

/// A VPC firewall rule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Firewall {
    /// Name.
    pub name: String,
    /// Description (kgenv's ownership marker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Network URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// `INGRESS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
    /// Allowed protocols and ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed: Vec<FirewallAllowed>,
    /// Source CIDR ranges.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_ranges: Vec<String>,
    /// Target network tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_tags: Vec<String>,
}

/// One allow entry of a firewall rule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FirewallAllowed {
    /// `tcp`, `udp`, ...
    #[serde(rename = "IPProtocol")]
    pub ip_protocol: String,
    /// Ports or ranges.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
}

/// An image (read only).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Image {
    /// Name.
    pub name: String,
    /// Self link.
    #[serde(default)]
    pub self_link: String,
    /// Minimum disk size in GB.
    #[serde(default, with = "int64_string")]
    pub disk_size_gb: Option<u64>,
    /// `READY`, `PENDING`, ...
    #[serde(default)]
    pub status: Option<String>,
}

/// A long-running operation.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Operation {
    /// Name (used to wait on it).
    pub name: String,
    /// Zone URL for zonal operations; absent for global ones.
    #[serde(default)]
    pub zone: Option<String>,
    /// Region URL for regional operations.
    #[serde(default)]
    pub region: Option<String>,
    /// `PENDING`, `RUNNING`, `DONE`.
    #[serde(default)]
    pub status: String,
    /// `insert`, `delete`, ...
    #[serde(default)]
    pub operation_type: Option<String>,
    /// The resource it acts on.
    #[serde(default)]
    pub target_link: Option<String>,
    /// Errors of a finished, failed operation.
    #[serde(default)]
    pub error: Option<OperationError>,
    /// HTTP status of a failed operation.
    #[serde(default)]
    pub http_error_status_code: Option<i32>,
    /// HTTP message of a failed operation.
    #[serde(default)]
    pub http_error_message: Option<String>,
    /// When it was requested (RFC 3339).
    #[serde(default)]
    pub insert_time: Option<String>,
}

/// A page of a `zoneOperations.list`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationList {
    /// The operations.
    #[serde(default)]
    pub items: Vec<Operation>,
    /// The next page's token, when there is one.
    #[serde(default)]
    pub next_page_token: Option<String>,
}

impl Operation {
    /// Whether the operation has finished (successfully or not).
    pub fn is_done(&self) -> bool {
        self.status == "DONE"
    }
}

/// `Operation.error`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct OperationError {
    /// The errors.
    #[serde(default)]
    pub errors: Vec<OperationErrorItem>,
}

/// One error of an operation.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OperationErrorItem {
    /// `ZONE_RESOURCE_POOL_EXHAUSTED`, `QUOTA_EXCEEDED`, ...
    #[serde(default)]
    pub code: Option<String>,
    /// Human-readable message.
    #[serde(default)]
    pub message: Option<String>,
    /// Structured details.
    #[serde(default)]
    pub error_details: Vec<ErrorDetail>,
}

/// A structured error detail.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorDetail {
    /// Quota details of `QUOTA_EXCEEDED`.
    #[serde(default)]
    pub quota_info: Option<QuotaExceededInfo>,
}

/// `QuotaExceededInfo`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct QuotaExceededInfo {
    /// e.g. `compute.googleapis.com/gpus_all_regions`.
    #[serde(default)]
    pub metric_name: Option<String>,
    /// e.g. `GPUS-ALL-REGIONS-per-project`.
    #[serde(default)]
    pub limit_name: Option<String>,
    /// e.g. `{"region": "us-central1"}`.
    #[serde(default)]
    pub dimensions: BTreeMap<String, String>,
    /// The limit.
    #[serde(default)]
    pub limit: Option<f64>,
}

/// Response of `instances.getGuestAttributes`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GuestAttributes {
    /// The entries under the queried path.
    #[serde(default)]
    pub query_value: Option<GuestAttributesValue>,
}

/// `GuestAttributesValue`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct GuestAttributesValue {
    /// Entries.
    #[serde(default)]
    pub items: Vec<GuestAttributesEntry>,
}

/// One guest attribute.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct GuestAttributesEntry {
    /// Namespace (`hostkeys`).
    #[serde(default)]
    pub namespace: String,
    /// Key (`ssh-ed25519`).
    #[serde(default)]
    pub key: String,
    /// Value.
    #[serde(default)]
    pub value: String,
}

/// The fields kgenv reads of a named resource (accelerator type, machine type).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Named {
    /// Name.
    pub name: String,
}

/// A page of `acceleratorTypes.aggregatedList` or `machineTypes.aggregatedList`: per scope
/// (`zones/us-central1-a`), the matching types, or a `warning` (`NO_RESULTS_ON_PAGE`) where
/// the zone has none.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AggregatedTypeList {
    /// Scope → what it holds.
    #[serde(default)]
    pub items: std::collections::BTreeMap<String, TypesScopedList>,
    /// The next page's token, absent on the last page.
    #[serde(default)]
    pub next_page_token: Option<String>,
}

/// One scope of an [`AggregatedTypeList`].
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TypesScopedList {
    /// The accelerator types (`acceleratorTypes.aggregatedList`).
    #[serde(default)]
    pub accelerator_types: Vec<Named>,
    /// The machine types (`machineTypes.aggregatedList`).
    #[serde(default)]
    pub machine_types: Vec<Named>,
}

impl AggregatedTypeList {
    /// The zones of this page that hold a type (`zones/z` keys with a non-empty list).
    pub fn zones(&self) -> impl Iterator<Item = &str> {
        self.items.iter().filter_map(|(k, v)| {
            let zone = k.strip_prefix("zones/")?;
            (!v.accelerator_types.is_empty() || !v.machine_types.is_empty()).then_some(zone)
        })
    }
}

/// Google's JSON error body: `{"error": {...}}`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: HttpError,
}

/// The `error` of a JSON error body.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct HttpError {
    /// HTTP status.
    #[serde(default)]
    pub code: Option<u16>,
    /// Message.
    #[serde(default)]
    pub message: String,
    /// `PERMISSION_DENIED`, `RESOURCE_EXHAUSTED`, ...
    #[serde(default)]
    pub status: Option<String>,
    /// Legacy per-error reasons (`rateLimitExceeded`, `quotaExceeded`, `notFound`).
    #[serde(default)]
    pub errors: Vec<HttpErrorItem>,
}

/// One legacy error entry.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct HttpErrorItem {
    /// Reason.
    #[serde(default)]
    pub reason: Option<String>,
    /// Message.
    #[serde(default)]
    pub message: Option<String>,
}

/// The last segment of a resource URL: `.../zones/us-central1-a` → `us-central1-a`.
pub fn short_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}

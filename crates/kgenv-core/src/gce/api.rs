//! Request builders: one function per Compute v1 method kgenv calls. They only build an
//! [`ApiRequest`] (method, path under the service root, query, JSON body) — no I/O — and
//! check every path segment first, so a malformed project or name is an error before any
//! byte is sent and can never change the URL's shape.

use std::time::Duration;

use reqwest::{Method, Url};
use serde::Serialize;

use super::model;
use crate::backends::BackendResult;
use crate::error::BackendError;
use crate::http::Request;

/// How long a `wait` long-poll may take on the wire (the server returns after ~2 minutes).
pub const LONG_POLL_TIMEOUT: Duration = Duration::from_secs(150);

/// One Compute API call, ready for the transport.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiRequest {
    /// HTTP method.
    pub method: Method,
    /// Path under the service root (`projects/p/zones/z/instances`).
    pub path: String,
    /// Query parameters (the transport adds `requestId` to mutating calls).
    pub query: Vec<(&'static str, String)>,
    /// JSON body.
    pub body: Option<serde_json::Value>,
    /// Whether the call changes anything: it then carries a `requestId`.
    pub mutating: bool,
    /// A long-poll (`operations.wait`) that may take minutes to answer.
    pub long_poll: bool,
    /// What the call is about, for error messages (`instance p/z/n`).
    pub resource: String,
}

impl ApiRequest {
    fn new(method: Method, path: String, resource: String) -> Self {
        Self {
            method,
            path,
            query: Vec::new(),
            body: None,
            mutating: false,
            long_poll: false,
            resource,
        }
    }
    fn mutating(mut self) -> Self {
        self.mutating = true;
        self
    }
    fn body(mut self, body: &impl Serialize) -> BackendResult<Self> {
        let v = serde_json::to_value(body).map_err(|e| {
            BackendError::other(format!("encoding the request for {}: {e}", self.resource))
        })?;
        self.body = Some(v);
        Ok(self)
    }
    fn query(mut self, k: &'static str, v: impl Into<String>) -> Self {
        self.query.push((k, v.into()));
        self
    }

    /// The HTTP request under the service root `base` (with its trailing slash). A mutating
    /// call carries `request_id`, the same on every attempt of the call.
    pub fn to_http(&self, base: &str, request_id: Option<&str>) -> BackendResult<Request> {
        let endpoint = format!("{base}{}", self.path);
        let mut url = Url::parse(&endpoint).map_err(|e| BackendError::InvalidArgument {
            resource: self.resource.clone(),
            message: format!("bad request path: {e}"),
        })?;
        if !self.query.is_empty() || request_id.is_some() {
            let mut q = url.query_pairs_mut();
            for (k, v) in &self.query {
                q.append_pair(k, v);
            }
            if let Some(id) = request_id {
                q.append_pair("requestId", id);
            }
        }
        let what = format!("{} {endpoint}", self.method);
        let mut req = Request::new(self.method.clone(), url, what).endpoint(endpoint);
        if self.long_poll {
            req = req.timeout(LONG_POLL_TIMEOUT);
        }
        Ok(match &self.body {
            Some(b) => req.json_value(b),
            // Compute's POST actions (start, stop, wait) take an empty body with a length.
            None if self.method == Method::POST => req.empty_body(),
            None => req,
        })
    }
}

fn invalid(what: &str, v: &str, rule: &str) -> BackendError {
    BackendError::InvalidArgument {
        resource: format!("{what} `{v}`"),
        message: rule.to_string(),
    }
}

/// A project id: `[a-z][-a-z0-9]{4,28}[a-z0-9]`, optionally domain-scoped (`example.com:p`).
pub fn project(v: &str) -> BackendResult<&str> {
    let (domain, id) = match v.rsplit_once(':') {
        Some((d, id)) => (Some(d), id),
        None => (None, v),
    };
    let b = id.as_bytes();
    let id_ok = (6..=30).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b.last() != Some(&b'-');
    let domain_ok = domain.is_none_or(|d| {
        !d.is_empty()
            && d.bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.')
    });
    if id_ok && domain_ok {
        Ok(v)
    } else {
        Err(invalid("project", v, "is not a GCP project id (6-30 lowercase letters, digits and hyphens, starting with a letter); check `project` in kgenv.toml or `gcloud projects list`"))
    }
}

/// A resource name (instance, firewall, zone, machine type, image family, ...): RFC 1035.
pub fn name<'a>(what: &str, v: &'a str) -> BackendResult<&'a str> {
    let b = v.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b.last() != Some(&b'-');
    if ok {
        Ok(v)
    } else {
        Err(invalid(what, v, "is not a valid GCE name (1-63 lowercase letters, digits and hyphens, starting with a letter)"))
    }
}

/// An operation name or numeric id, as the server returned it.
fn operation(v: &str) -> BackendResult<&str> {
    let ok = !v.is_empty()
        && v.len() <= 128
        && v.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_');
    if ok {
        Ok(v)
    } else {
        Err(invalid(
            "operation",
            v,
            "is not an operation name the API returns",
        ))
    }
}

fn zonal(p: &str, z: &str) -> BackendResult<String> {
    Ok(format!(
        "projects/{}/zones/{}",
        project(p)?,
        name("zone", z)?
    ))
}

fn instance_path(p: &str, z: &str, n: &str) -> BackendResult<String> {
    Ok(format!(
        "{}/instances/{}",
        zonal(p, z)?,
        name("instance", n)?
    ))
}

fn instance_res(p: &str, z: &str, n: &str) -> String {
    format!("instance {p}/{z}/{n}")
}

/// `instances.get`.
pub fn get_instance(p: &str, z: &str, n: &str) -> BackendResult<ApiRequest> {
    Ok(ApiRequest::new(
        Method::GET,
        instance_path(p, z, n)?,
        instance_res(p, z, n),
    ))
}

/// `instances.insert`.
pub fn insert_instance(p: &str, z: &str, body: &model::Instance) -> BackendResult<ApiRequest> {
    name("instance", &body.name)?;
    ApiRequest::new(
        Method::POST,
        format!("{}/instances", zonal(p, z)?),
        instance_res(p, z, &body.name),
    )
    .mutating()
    .body(body)
}

/// `instances.delete`.
pub fn delete_instance(p: &str, z: &str, n: &str) -> BackendResult<ApiRequest> {
    Ok(ApiRequest::new(
        Method::DELETE,
        instance_path(p, z, n)?,
        instance_res(p, z, n),
    )
    .mutating())
}

/// `instances.start`.
pub fn start_instance(p: &str, z: &str, n: &str) -> BackendResult<ApiRequest> {
    Ok(ApiRequest::new(
        Method::POST,
        format!("{}/start", instance_path(p, z, n)?),
        instance_res(p, z, n),
    )
    .mutating())
}

/// `instances.stop`.
pub fn stop_instance(p: &str, z: &str, n: &str) -> BackendResult<ApiRequest> {
    Ok(ApiRequest::new(
        Method::POST,
        format!("{}/stop", instance_path(p, z, n)?),
        instance_res(p, z, n),
    )
    .mutating())
}

/// `instances.setMetadata` (the body carries the fingerprint read from the instance).
pub fn set_metadata(
    p: &str,
    z: &str,
    n: &str,
    body: &model::Metadata,
) -> BackendResult<ApiRequest> {
    ApiRequest::new(
        Method::POST,
        format!("{}/setMetadata", instance_path(p, z, n)?),
        instance_res(p, z, n),
    )
    .mutating()
    .body(body)
}

/// `instances.setTags`.
pub fn set_tags(p: &str, z: &str, n: &str, body: &model::Tags) -> BackendResult<ApiRequest> {
    ApiRequest::new(
        Method::POST,
        format!("{}/setTags", instance_path(p, z, n)?),
        instance_res(p, z, n),
    )
    .mutating()
    .body(body)
}

/// `instances.setLabels`.
pub fn set_labels(
    p: &str,
    z: &str,
    n: &str,
    body: &model::SetLabelsRequest,
) -> BackendResult<ApiRequest> {
    ApiRequest::new(
        Method::POST,
        format!("{}/setLabels", instance_path(p, z, n)?),
        instance_res(p, z, n),
    )
    .mutating()
    .body(body)
}

/// `instances.getGuestAttributes` under `query_path` (e.g. `hostkeys/`).
pub fn get_guest_attributes(
    p: &str,
    z: &str,
    n: &str,
    query_path: &str,
) -> BackendResult<ApiRequest> {
    if query_path.is_empty()
        || query_path.len() > 256
        || !query_path
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"/-_.".contains(&c))
    {
        return Err(invalid(
            "guest attribute path",
            query_path,
            "use a namespace path like `hostkeys/`",
        ));
    }
    Ok(ApiRequest::new(
        Method::GET,
        format!("{}/getGuestAttributes", instance_path(p, z, n)?),
        instance_res(p, z, n),
    )
    .query("queryPath", query_path))
}

/// `instances.setMachineType` (the instance must be stopped).
pub fn set_machine_type(
    p: &str,
    z: &str,
    n: &str,
    body: &model::InstancesSetMachineTypeRequest,
) -> BackendResult<ApiRequest> {
    instance_action(p, z, n, "setMachineType")?.body(body)
}

/// `instances.setMachineResources`: the GPUs (the instance must be stopped).
pub fn set_machine_resources(
    p: &str,
    z: &str,
    n: &str,
    body: &model::InstancesSetMachineResourcesRequest,
) -> BackendResult<ApiRequest> {
    instance_action(p, z, n, "setMachineResources")?.body(body)
}

/// `instances.setServiceAccount` (the instance must be stopped).
pub fn set_service_account(
    p: &str,
    z: &str,
    n: &str,
    body: &model::InstancesSetServiceAccountRequest,
) -> BackendResult<ApiRequest> {
    instance_action(p, z, n, "setServiceAccount")?.body(body)
}

/// `instances.attachDisk`.
pub fn attach_disk(
    p: &str,
    z: &str,
    n: &str,
    body: &model::AttachedDisk,
) -> BackendResult<ApiRequest> {
    if let Some(d) = &body.device_name {
        device_name(d)?;
    }
    instance_action(p, z, n, "attachDisk")?.body(body)
}

/// `instances.detachDisk` of the disk attached under `device`.
pub fn detach_disk(p: &str, z: &str, n: &str, device: &str) -> BackendResult<ApiRequest> {
    Ok(instance_action(p, z, n, "detachDisk")?.query("deviceName", device_name(device)?))
}

/// A device name: what GCE accepts for `deviceName` (RFC 1035 like other names).
pub fn device_name(v: &str) -> BackendResult<&str> {
    name("device name", v)
}

fn instance_action(p: &str, z: &str, n: &str, action: &str) -> BackendResult<ApiRequest> {
    Ok(ApiRequest::new(
        Method::POST,
        format!("{}/{action}", instance_path(p, z, n)?),
        instance_res(p, z, n),
    )
    .mutating())
}

fn disk_path(p: &str, z: &str, n: &str) -> BackendResult<String> {
    Ok(format!("{}/disks/{}", zonal(p, z)?, name("disk", n)?))
}

fn disk_res(p: &str, z: &str, n: &str) -> String {
    format!("disk {p}/{z}/{n}")
}

/// `disks.get`.
pub fn get_disk(p: &str, z: &str, n: &str) -> BackendResult<ApiRequest> {
    Ok(ApiRequest::new(
        Method::GET,
        disk_path(p, z, n)?,
        disk_res(p, z, n),
    ))
}

/// `disks.insert` (blank, or from the body's `sourceSnapshot`).
pub fn insert_disk(p: &str, z: &str, body: &model::Disk) -> BackendResult<ApiRequest> {
    name("disk", &body.name)?;
    ApiRequest::new(
        Method::POST,
        format!("{}/disks", zonal(p, z)?),
        disk_res(p, z, &body.name),
    )
    .mutating()
    .body(body)
}

/// `disks.delete`.
pub fn delete_disk(p: &str, z: &str, n: &str) -> BackendResult<ApiRequest> {
    Ok(ApiRequest::new(Method::DELETE, disk_path(p, z, n)?, disk_res(p, z, n)).mutating())
}

/// `disks.resize`.
pub fn resize_disk(
    p: &str,
    z: &str,
    n: &str,
    body: &model::DisksResizeRequest,
) -> BackendResult<ApiRequest> {
    ApiRequest::new(
        Method::POST,
        format!("{}/resize", disk_path(p, z, n)?),
        disk_res(p, z, n),
    )
    .mutating()
    .body(body)
}

/// `disks.createSnapshot` (the body names the snapshot and its labels).
pub fn create_snapshot(
    p: &str,
    z: &str,
    n: &str,
    body: &model::Snapshot,
) -> BackendResult<ApiRequest> {
    name("snapshot", &body.name)?;
    ApiRequest::new(
        Method::POST,
        format!("{}/createSnapshot", disk_path(p, z, n)?),
        disk_res(p, z, n),
    )
    .mutating()
    .body(body)
}

fn snapshot_path(p: &str, n: &str) -> BackendResult<String> {
    Ok(format!(
        "projects/{}/global/snapshots/{}",
        project(p)?,
        name("snapshot", n)?
    ))
}

fn snapshot_res(p: &str, n: &str) -> String {
    format!("snapshot {p}/{n}")
}

/// `snapshots.get`.
pub fn get_snapshot(p: &str, n: &str) -> BackendResult<ApiRequest> {
    Ok(ApiRequest::new(
        Method::GET,
        snapshot_path(p, n)?,
        snapshot_res(p, n),
    ))
}

/// `snapshots.delete`.
pub fn delete_snapshot(p: &str, n: &str) -> BackendResult<ApiRequest> {
    Ok(ApiRequest::new(Method::DELETE, snapshot_path(p, n)?, snapshot_res(p, n)).mutating())
}

fn firewall_path(p: &str, n: &str) -> BackendResult<String> {
    Ok(format!(
        "projects/{}/global/firewalls/{}",
        project(p)?,
        name("firewall", n)?
    ))
}

fn firewall_res(p: &str, n: &str) -> String {
    format!("firewall rule {p}/{n}")
}

/// `firewalls.get`.
pub fn get_firewall(p: &str, n: &str) -> BackendResult<ApiRequest> {
    Ok(ApiRequest::new(
        Method::GET,
        firewall_path(p, n)?,
        firewall_res(p, n),
    ))
}

/// `firewalls.insert`.
pub fn insert_firewall(p: &str, body: &model::Firewall) -> BackendResult<ApiRequest> {
    name("firewall", &body.name)?;
    ApiRequest::new(
        Method::POST,
        format!("projects/{}/global/firewalls", project(p)?),
        firewall_res(p, &body.name),
    )
    .mutating()
    .body(body)
}

/// `firewalls.patch`.
pub fn patch_firewall(p: &str, body: &model::Firewall) -> BackendResult<ApiRequest> {
    ApiRequest::new(
        Method::PATCH,
        firewall_path(p, &body.name)?,
        firewall_res(p, &body.name),
    )
    .mutating()
    .body(body)
}

/// `firewalls.delete`.
pub fn delete_firewall(p: &str, n: &str) -> BackendResult<ApiRequest> {
    Ok(ApiRequest::new(Method::DELETE, firewall_path(p, n)?, firewall_res(p, n)).mutating())
}

/// `images.getFromFamily`.
pub fn image_from_family(p: &str, family: &str) -> BackendResult<ApiRequest> {
    Ok(ApiRequest::new(
        Method::GET,
        format!(
            "projects/{}/global/images/family/{}",
            project(p)?,
            name("image family", family)?
        ),
        format!("image family {p}/{family}"),
    ))
}

/// `acceleratorTypes.get`.
pub fn get_accelerator_type(p: &str, z: &str, t: &str) -> BackendResult<ApiRequest> {
    Ok(ApiRequest::new(
        Method::GET,
        format!(
            "{}/acceleratorTypes/{}",
            zonal(p, z)?,
            name("accelerator type", t)?
        ),
        format!("accelerator type {t} in zone {z}"),
    ))
}

/// `machineTypes.get`.
pub fn get_machine_type(p: &str, z: &str, t: &str) -> BackendResult<ApiRequest> {
    Ok(ApiRequest::new(
        Method::GET,
        format!("{}/machineTypes/{}", zonal(p, z)?, name("machine type", t)?),
        format!("machine type {t} in zone {z}"),
    ))
}

/// `acceleratorTypes.aggregatedList` of the types named `t` (every zone), from the page
/// at `page_token` (`None`: the first).
pub fn list_accelerator_zones(
    p: &str,
    t: &str,
    page_token: Option<&str>,
) -> BackendResult<ApiRequest> {
    aggregated(
        p,
        "acceleratorTypes",
        name("accelerator type", t)?,
        page_token,
    )
}

/// `machineTypes.aggregatedList` of the types named `t`, from the page at `page_token`.
pub fn list_machine_type_zones(
    p: &str,
    t: &str,
    page_token: Option<&str>,
) -> BackendResult<ApiRequest> {
    aggregated(p, "machineTypes", name("machine type", t)?, page_token)
}

fn aggregated(
    p: &str,
    collection: &str,
    t: &str,
    page_token: Option<&str>,
) -> BackendResult<ApiRequest> {
    let mut r = ApiRequest::new(
        Method::GET,
        format!("projects/{}/aggregated/{collection}", project(p)?),
        format!("{collection} named {t} in project {p}"),
    )
    // `name` is checked by `name()`: no quote or operator can reach the filter.
    .query("filter", format!("name = \"{t}\""));
    if let Some(tok) = page_token {
        r = r.query("pageToken", tok);
    }
    Ok(r)
}

/// `zoneOperations.list` of the `compute.instances.preempted` operations on the instance
/// with GCE id `target_id`, newest first (`orderBy=creationTimestamp desc`, the one order
/// besides `name` the API supports), one to a page: the newest is all kgenv needs.
pub fn list_preemptions(p: &str, z: &str, target_id: &str) -> BackendResult<ApiRequest> {
    if target_id.is_empty() || !target_id.bytes().all(|c| c.is_ascii_digit()) {
        return Err(invalid("instance id", target_id, "is not a GCE numeric id"));
    }
    Ok(ApiRequest::new(
        Method::GET,
        format!("{}/operations", zonal(p, z)?),
        format!("operations of instance {target_id} in {p}/{z}"),
    )
    .query(
        "filter",
        format!("(operationType = \"compute.instances.preempted\") (targetId = \"{target_id}\")"),
    )
    .query("orderBy", "creationTimestamp desc")
    .query("maxResults", "1"))
}

/// `zoneOperations.wait`: returns when the operation is DONE or after about two minutes.
pub fn wait_zone_operation(p: &str, z: &str, op: &str) -> BackendResult<ApiRequest> {
    let mut r = ApiRequest::new(
        Method::POST,
        format!("{}/operations/{}/wait", zonal(p, z)?, operation(op)?),
        format!("operation {op}"),
    );
    r.long_poll = true;
    Ok(r)
}

/// `globalOperations.wait`.
pub fn wait_global_operation(p: &str, op: &str) -> BackendResult<ApiRequest> {
    let mut r = ApiRequest::new(
        Method::POST,
        format!(
            "projects/{}/global/operations/{}/wait",
            project(p)?,
            operation(op)?
        ),
        format!("operation {op}"),
    );
    r.long_poll = true;
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_segments_never_reach_a_url() {
        for bad in ["", "My-Project", "proj/../x", "p", "proj ect", "-project"] {
            assert!(get_instance(bad, "us-central1-a", "kg").is_err(), "{bad}");
        }
        assert!(get_instance("my-project", "us-central1-a/../b", "kg").is_err());
        assert!(get_instance("my-project", "us-central1-a", "kg?x=1").is_err());
        assert!(get_guest_attributes("my-project", "us-central1-a", "kg", "hostkeys/&x").is_err());
        let r = get_instance("example.com:my-project", "us-central1-a", "kg")
            .expect("domain-scoped project");
        assert_eq!(
            r.path,
            "projects/example.com:my-project/zones/us-central1-a/instances/kg"
        );
    }

    #[test]
    fn http_requests_carry_the_request_id_and_timeouts() {
        let base = "https://compute.googleapis.com/compute/v1/";
        let r = get_guest_attributes("my-project", "us-central1-a", "kg", "hostkeys/")
            .expect("ok")
            .to_http(base, None)
            .expect("request");
        assert_eq!(r.url.as_str(), "https://compute.googleapis.com/compute/v1/projects/my-project/zones/us-central1-a/instances/kg/getGuestAttributes?queryPath=hostkeys%2F");
        assert!(r.timeout.is_none());
        let r = delete_instance("my-project", "us-central1-a", "kg")
            .expect("ok")
            .to_http(base, Some("id-1"))
            .expect("request");
        assert_eq!(r.url.query(), Some("requestId=id-1"));
        assert_eq!(r.endpoint.as_deref(), Some("https://compute.googleapis.com/compute/v1/projects/my-project/zones/us-central1-a/instances/kg"));
        let w = wait_global_operation("my-project", "operation-1")
            .expect("ok")
            .to_http(base, None)
            .expect("request");
        assert_eq!(w.timeout, Some(LONG_POLL_TIMEOUT));
        assert!(matches!(w.body, crate::http::Body::Empty));
    }

    #[test]
    fn disk_and_snapshot_paths() {
        let r = detach_disk("my-project", "us-central1-a", "kg", "kgenv-data").expect("ok");
        assert_eq!(
            r.path,
            "projects/my-project/zones/us-central1-a/instances/kg/detachDisk"
        );
        assert_eq!(r.query, vec![("deviceName", "kgenv-data".to_string())]);
        assert!(r.mutating);
        assert!(detach_disk("my-project", "us-central1-a", "kg", "a&b=c").is_err());
        assert_eq!(
            get_snapshot("my-project", "kg-move-1").expect("ok").path,
            "projects/my-project/global/snapshots/kg-move-1"
        );
        assert!(get_disk("my-project", "us-central1-a", "../x").is_err());
        let body = model::DisksResizeRequest { size_gb: Some(300) };
        let r = resize_disk("my-project", "us-central1-a", "kg-data", &body).expect("ok");
        assert_eq!(r.body, Some(serde_json::json!({"sizeGb": "300"})));
    }

    #[test]
    fn mutating_calls_are_marked() {
        assert!(
            delete_instance("my-project", "us-central1-a", "kg")
                .expect("ok")
                .mutating
        );
        assert!(
            !get_instance("my-project", "us-central1-a", "kg")
                .expect("ok")
                .mutating
        );
        let w =
            wait_zone_operation("my-project", "us-central1-a", "operation-123-abc").expect("ok");
        assert!(!w.mutating && w.long_poll && w.method == Method::POST);
    }
}

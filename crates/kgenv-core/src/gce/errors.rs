//! Maps what Compute Engine says went wrong — a synchronous HTTP error with Google's JSON
//! error body, or a finished operation's `error.errors[]` and `httpErrorStatusCode` — to the
//! typed [`BackendError`] variants, so callers ask `is_stockout()` or `quota()` instead of
//! matching strings. The codes are matched before the HTTP status: a stockout arrives as a
//! 503 that must not be retried, and a rate limit as a 403 that must be.

use std::time::Duration;

use super::model::{self, ErrorBody, Operation};
use crate::backends::compute::region_of;
use crate::error::{BackendError, QuotaInfo, QuotaScope};

const SERVICE: &str = "compute";

/// Codes that mean "this zone has no capacity for what you asked".
const STOCKOUT_CODES: [&str; 2] = [
    "ZONE_RESOURCE_POOL_EXHAUSTED",
    "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS",
];

/// Codes that mean "another resource uses this one" (deleting an attached disk).
const IN_USE_CODES: [&str; 2] = [
    "resourceInUseByAnotherResource",
    "RESOURCE_IN_USE_BY_ANOTHER_RESOURCE",
];

/// Codes that mean "not in the state this request needs" (changing a running instance's
/// machine type, GPUs or service account).
const PRECONDITION_CODES: [&str; 3] = [
    "invalidResourceUsage",
    "INVALID_USAGE",
    "FAILED_PRECONDITION",
];

/// Codes that mean "the resource is between two states" (an instance PROVISIONING,
/// STAGING or STOPPING; a snapshot still uploading).
const NOT_READY_CODES: [&str; 2] = ["resourceNotReady", "RESOURCE_NOT_READY"];

/// Legacy and new reasons that mean "slow down".
const RATE_LIMIT_REASONS: [&str; 4] = [
    "rateLimitExceeded",
    "userRateLimitExceeded",
    "RATE_LIMIT_EXCEEDED",
    "rateLimited",
];

/// What is known of one error, whichever path it came from.
struct Facts<'a> {
    status: Option<u16>,
    codes: Vec<&'a str>,
    message: String,
    zone: Option<&'a str>,
    quota_info: Option<&'a model::QuotaExceededInfo>,
    retry_after: Option<Duration>,
}

/// The typed error of a non-2xx response. `body` is the raw response body (Google's JSON
/// error, or anything a proxy sent).
pub fn from_http(
    status: u16,
    body: &[u8],
    retry_after: Option<Duration>,
    resource: &str,
) -> BackendError {
    let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
    let (message, codes) = match &parsed {
        Some(b) => {
            let mut codes: Vec<&str> = b
                .error
                .errors
                .iter()
                .filter_map(|e| e.reason.as_deref())
                .collect();
            codes.extend(b.error.status.as_deref());
            (b.error.message.clone(), codes)
        }
        None => (
            String::from_utf8_lossy(body)
                .chars()
                .take(300)
                .collect::<String>()
                .trim()
                .to_string(),
            Vec::new(),
        ),
    };
    let message = if message.is_empty() {
        format!("HTTP {status}")
    } else {
        message
    };
    classify(
        Facts {
            status: Some(status),
            codes,
            message,
            zone: None,
            quota_info: None,
            retry_after,
        },
        resource,
    )
}

/// The typed error of a finished operation, or `None` when it succeeded.
pub fn from_operation(op: &Operation, resource: &str) -> Option<BackendError> {
    let errors = op
        .error
        .as_ref()
        .map(|e| e.errors.as_slice())
        .unwrap_or_default();
    if errors.is_empty() && op.http_error_status_code.is_none_or(|c| c < 400) {
        return None;
    }
    let codes: Vec<&str> = errors.iter().filter_map(|e| e.code.as_deref()).collect();
    // `message (CODE)`: the code is what users search for.
    let mut messages: Vec<String> = errors
        .iter()
        .filter_map(|e| match (&e.message, &e.code) {
            (Some(m), Some(c)) if !m.contains(c.as_str()) => Some(format!("{m} ({c})")),
            (Some(m), _) => Some(m.clone()),
            (None, c) => c.clone(),
        })
        .collect();
    if messages.is_empty() {
        messages.extend(op.http_error_message.clone());
    }
    let quota_info = errors
        .iter()
        .flat_map(|e| e.error_details.iter())
        .find_map(|d| d.quota_info.as_ref());
    let status = op
        .http_error_status_code
        .and_then(|c| u16::try_from(c).ok());
    let message = if messages.is_empty() {
        format!("operation {} failed", op.name)
    } else {
        messages.join("; ")
    };
    Some(classify(
        Facts {
            status,
            codes,
            message,
            zone: op.zone.as_deref().map(model::short_name),
            quota_info,
            retry_after: None,
        },
        resource,
    ))
}

fn classify(f: Facts<'_>, resource: &str) -> BackendError {
    let has = |set: &[&str]| f.codes.iter().any(|c| set.contains(c));
    if has(&STOCKOUT_CODES) || STOCKOUT_CODES.iter().any(|c| f.message.contains(c)) {
        let zone = f
            .zone
            .map(str::to_string)
            .or_else(|| zone_in(&f.message))
            .unwrap_or_else(|| "unknown".into());
        return BackendError::Stockout {
            zone,
            resource: resource.to_string(),
            message: f.message,
        };
    }
    let quota_code = has(&["QUOTA_EXCEEDED", "quotaExceeded"]);
    let per_time = f.message.contains("per minute")
        || f.message.contains("per 100 seconds")
        || f.message.contains("per second");
    if f.status == Some(429)
        || has(&RATE_LIMIT_REASONS)
        || (quota_code && per_time)
        || (has(&["RESOURCE_EXHAUSTED"]) && !quota_code)
    {
        return BackendError::RateLimited {
            service: SERVICE,
            retry_after: f.retry_after,
        };
    }
    if quota_code || f.message.starts_with("Quota '") {
        let quota = quota(&f.message, f.quota_info, f.zone);
        let what = match &quota.scope {
            QuotaScope::Global => {
                "this quota covers every region, so no other zone will help".to_string()
            }
            QuotaScope::Region(r) => format!("zones outside {r} may still have room"),
        };
        return BackendError::Quota {
            message: format!("{}; {what}; request more at https://console.cloud.google.com/iam-admin/quotas (metric {})", f.message, quota.metric),
            quota,
        };
    }
    if has(&["RESOURCE_NOT_FOUND", "notFound", "NOT_FOUND"]) || f.status == Some(404) {
        return BackendError::NotFound {
            resource: format!("{resource} ({})", f.message),
        };
    }
    if has(&IN_USE_CODES) {
        return BackendError::InUse {
            resource: resource.to_string(),
            message: f.message,
        };
    }
    // Between two states (PROVISIONING, STAGING, STOPPING, ...), GCE refuses most calls on
    // an instance with 400 `resourceNotReady`; the instance step waits for it and retries.
    if has(&NOT_READY_CODES) {
        return BackendError::FailedPrecondition {
            resource: resource.to_string(),
            message: format!(
                "{} (it is changing state; wait until it settles, then try again)",
                f.message
            ),
        };
    }
    if has(&PRECONDITION_CODES) {
        return BackendError::FailedPrecondition {
            resource: resource.to_string(),
            message: format!("{} (stop the instance first)", f.message),
        };
    }
    if has(&["RESOURCE_ALREADY_EXISTS", "alreadyExists", "ALREADY_EXISTS"]) || f.status == Some(409)
    {
        return BackendError::AlreadyExists {
            resource: resource.to_string(),
        };
    }
    match f.status {
        Some(401) => BackendError::Unauthenticated {
            service: SERVICE,
            message: format!("{} ({})", f.message, crate::google_auth::HOW_TO_AUTH),
        },
        Some(403) => BackendError::PermissionDenied {
            resource: resource.to_string(),
            message: format!("{} (grant the caller roles/compute.instanceAdmin.v1 and roles/compute.securityAdmin on the project, or check that the Compute Engine API is enabled)", f.message),
        },
        Some(400) | Some(412) | Some(413) => BackendError::InvalidArgument { resource: resource.to_string(), message: f.message },
        Some(408) | Some(500..=599) => BackendError::transient(SERVICE, format!("{resource}: {}", f.message)),
        _ => BackendError::other(format!("{resource}: {}", f.message)),
    }
}

/// `... in zone 'us-central1-a' ...` → `us-central1-a`.
fn zone_in(message: &str) -> Option<String> {
    let rest = &message[message.find("zone '")? + 6..];
    Some(model::short_name(&rest[..rest.find('\'')?]).to_string())
}

/// The quota named in an error: from Google's message (`Quota 'NVIDIA_T4_GPUS' exceeded.
/// Limit: 1.0 in region us-central1.` / `... Limit: 0.0 globally.`), completed from the
/// structured `quotaInfo` when present.
fn quota(message: &str, info: Option<&model::QuotaExceededInfo>, zone: Option<&str>) -> QuotaInfo {
    let quoted = message.find("Quota '").and_then(|i| {
        let rest = &message[i + 7..];
        rest.find('\'').map(|j| rest[..j].to_string())
    });
    let metric = quoted
        .or_else(|| {
            info.and_then(|q| q.metric_name.as_deref())
                .map(|m| model::short_name(m).to_ascii_uppercase())
        })
        .unwrap_or_else(|| "unknown".into());
    let limit = message
        .find("Limit: ")
        .and_then(|i| message[i + 7..].split_whitespace().next())
        .and_then(|s| s.trim_end_matches('.').parse::<f64>().ok())
        .or_else(|| info.and_then(|q| q.limit));
    let msg_region = message.find(" in region ").map(|i| {
        message[i + 11..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect::<String>()
    });
    let info_region = info.and_then(|q| q.dimensions.get("region").cloned());
    let global = message.contains("globally")
        || metric.contains("ALL_REGIONS")
        || info
            .and_then(|q| q.limit_name.as_deref())
            .is_some_and(|l| l.to_ascii_uppercase().contains("ALL-REGIONS"));
    let scope = match (msg_region.filter(|r| !r.is_empty()).or(info_region), global) {
        (_, true) => QuotaScope::Global,
        (Some(r), false) => QuotaScope::Region(r),
        (None, false) => match zone {
            Some(z) => QuotaScope::Region(region_of(z).to_string()),
            // Unknown scope: stop rather than hammer every region.
            None => QuotaScope::Global,
        },
    };
    QuotaInfo {
        metric,
        limit,
        scope,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(v: serde_json::Value) -> Operation {
        serde_json::from_value(v).expect("operation json")
    }

    #[test]
    fn stockout_in_an_operation_is_not_transient() {
        let e = from_operation(
            &op(serde_json::json!({"name": "op-1", "status": "DONE", "zone": "https://x/compute/v1/projects/p/zones/us-central1-a",
                "httpErrorStatusCode": 503,
                "error": {"errors": [{"code": "ZONE_RESOURCE_POOL_EXHAUSTED_WITH_DETAILS", "message": "The zone 'projects/p/zones/us-central1-a' does not have enough resources"}]}})),
            "instance p/us-central1-a/kg",
        )
        .expect("an error");
        assert!(e.is_stockout(), "{e}");
        assert!(!e.is_retryable());
        assert!(
            matches!(&e, BackendError::Stockout { zone, .. } if zone == "us-central1-a"),
            "{e:?}"
        );
    }

    #[test]
    fn quota_scope_comes_from_the_message_or_details() {
        let regional = from_operation(
            &op(serde_json::json!({"name": "op", "status": "DONE", "zone": "zones/europe-west4-b", "httpErrorStatusCode": 403,
                "error": {"errors": [{"code": "QUOTA_EXCEEDED", "message": "Quota 'NVIDIA_T4_GPUS' exceeded.  Limit: 1.0 in region europe-west4."}]}})),
            "i",
        )
        .expect("error");
        let q = regional.quota().expect("quota");
        assert_eq!(
            (q.metric.as_str(), q.limit, &q.scope),
            (
                "NVIDIA_T4_GPUS",
                Some(1.0),
                &QuotaScope::Region("europe-west4".into())
            )
        );
        let global = from_operation(
            &op(serde_json::json!({"name": "op", "status": "DONE", "httpErrorStatusCode": 403,
                "error": {"errors": [{"code": "QUOTA_EXCEEDED", "message": "Quota exceeded",
                  "errorDetails": [{"quotaInfo": {"metricName": "compute.googleapis.com/gpus_all_regions", "limitName": "GPUS-ALL-REGIONS-per-project", "limit": 0}}]}]}})),
            "i",
        )
        .expect("error");
        let q = global.quota().expect("quota");
        assert_eq!(
            (q.metric.as_str(), q.limit, &q.scope),
            ("GPUS_ALL_REGIONS", Some(0.0), &QuotaScope::Global)
        );
        assert!(
            global.to_string().contains("no other zone will help"),
            "{global}"
        );
    }

    #[test]
    fn http_errors_map_by_reason_then_status() {
        let body = |reason: &str, msg: &str| {
            serde_json::json!({"error": {"code": 403, "message": msg, "errors": [{"reason": reason, "message": msg}]}}).to_string()
        };
        assert!(matches!(
            from_http(
                403,
                body("rateLimitExceeded", "Rate Limit Exceeded").as_bytes(),
                None,
                "r"
            ),
            BackendError::RateLimited { .. }
        ));
        assert!(matches!(
            from_http(
                403,
                body(
                    "quotaExceeded",
                    "Quota exceeded for quota metric 'Queries' and limit 'Queries per minute'"
                )
                .as_bytes(),
                None,
                "r"
            ),
            BackendError::RateLimited { .. }
        ));
        assert!(matches!(
            from_http(
                403,
                body(
                    "forbidden",
                    "Required 'compute.instances.create' permission"
                )
                .as_bytes(),
                None,
                "r"
            ),
            BackendError::PermissionDenied { .. }
        ));
        assert!(
            matches!(from_http(429, b"", Some(Duration::from_secs(3)), "r"), BackendError::RateLimited { retry_after: Some(d), .. } if d.as_secs() == 3)
        );
        assert!(from_http(503, b"<html>unavailable</html>", None, "r").is_retryable());
        let sync_stockout = br#"{"error":{"code":503,"message":"The zone 'projects/p/zones/europe-west4-b' does not have enough resources available to fulfill the request.","errors":[{"reason":"ZONE_RESOURCE_POOL_EXHAUSTED"}]}}"#;
        assert!(
            matches!(from_http(503, sync_stockout, None, "r"), BackendError::Stockout { zone, .. } if zone == "europe-west4-b")
        );
        assert!(from_http(
            404,
            br#"{"error":{"code":404,"message":"The resource was not found"}}"#,
            None,
            "r"
        )
        .is_not_found());
        assert!(matches!(
            from_http(409, b"{}", None, "r"),
            BackendError::AlreadyExists { .. }
        ));
        assert!(matches!(
            from_http(400, b"{}", None, "r"),
            BackendError::InvalidArgument { .. }
        ));
        assert!(from_http(401, b"{}", None, "r").is_auth());
        let in_use = from_http(400, body("resourceInUseByAnotherResource", "The disk resource 'projects/p/zones/z/disks/d' is already being used by 'projects/p/zones/z/instances/i'").as_bytes(), None, "disk p/z/d");
        assert!(in_use.is_in_use() && !in_use.is_retryable(), "{in_use:?}");
        let running = from_http(
            400,
            body(
                "invalidResourceUsage",
                "Invalid resource usage: 'Instance must be stopped.'",
            )
            .as_bytes(),
            None,
            "instance p/z/i",
        );
        assert!(running.is_failed_precondition(), "{running:?}");
        let not_ready = from_http(
            400,
            body(
                "resourceNotReady",
                "The resource 'projects/p/zones/z/instances/i' is not ready",
            )
            .as_bytes(),
            None,
            "instance p/z/i",
        );
        assert!(
            not_ready.is_failed_precondition() && !not_ready.is_retryable(),
            "{not_ready:?}"
        );
        assert!(
            not_ready.to_string().contains("changing state"),
            "{not_ready}"
        );
    }

    #[test]
    fn a_successful_operation_is_no_error() {
        assert!(from_operation(
            &op(serde_json::json!({"name": "op", "status": "DONE"})),
            "i"
        )
        .is_none());
    }
}

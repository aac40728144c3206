//! GCS answers that are not a success → typed [`BackendError`]s: 404 not found, 409
//! already exists, 401 unauthenticated, 403 permission denied, 429 rate limited (with
//! `Retry-After`), 400/411/412/413/416 invalid, 5xx transient; Google's JSON error message
//! is kept.

use super::model::ErrorBody;
use crate::error::BackendError;
use crate::http::Response;

/// The service name in errors.
pub(super) const SERVICE: &str = "storage";

/// The typed error for a non-success answer about `what`.
pub(super) fn status_error(r: &Response, what: &str) -> BackendError {
    let message = serde_json::from_slice::<ErrorBody>(&r.body)
        .map(|b| b.error.message)
        .unwrap_or_else(|_| r.snippet(200));
    match r.status.as_u16() {
        404 => BackendError::NotFound {
            resource: what.to_string(),
        },
        409 => BackendError::AlreadyExists {
            resource: what.to_string(),
        },
        401 => BackendError::Unauthenticated {
            service: SERVICE,
            message: format!("{what}: {message}"),
        },
        403 => BackendError::PermissionDenied {
            resource: what.to_string(),
            message,
        },
        429 => BackendError::RateLimited {
            service: SERVICE,
            retry_after: r.retry_after(),
        },
        400 | 411 | 412 | 413 | 416 => BackendError::InvalidArgument {
            resource: what.to_string(),
            message,
        },
        s if s >= 500 => BackendError::transient(SERVICE, format!("{what}: HTTP {s}: {message}")),
        s => BackendError::other(format!("{what}: HTTP {s}: {message}")),
    }
}

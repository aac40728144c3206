//! Turns bollard's errors into kgenv's typed [`BackendError`]s, so callers ask
//! `is_not_found()`, `is_retryable()` or `is_gpu_unavailable()` instead of reading messages.

use bollard::errors::Error as DockerError;

use crate::error::BackendError;

/// Maps a bollard error about `what` (`container kgenv-kg`, `image busybox`) on the engine
/// at `endpoint`.
pub(crate) fn map_err(err: DockerError, what: &str, endpoint: &str) -> BackendError {
    match err {
        DockerError::DockerResponseServerError { status_code, message } => from_status(status_code, message, what, endpoint),
        DockerError::DockerStreamError { error } => from_stream_message(&error, what, endpoint),
        DockerError::RequestTimeoutError => BackendError::Timeout {
            what: format!("the Docker engine at {endpoint} to answer about {what}"),
            after: super::REQUEST_TIMEOUT,
            last_seen: None,
        },
        DockerError::SocketNotFoundError(path) => BackendError::Unavailable {
            backend: "docker",
            hint: format!("no Docker engine socket at {path}: install and start Docker, or set DOCKER_HOST"),
        },
        e @ (DockerError::HyperLegacyError { .. } | DockerError::HyperResponseError { .. } | DockerError::IOError { .. }) => {
            let mut message = chain(&e);
            if message.to_ascii_lowercase().contains("permission denied") && !message.contains(super::transport::DOCKER_GROUP_HINT) {
                message.push_str(". The login user cannot open the engine socket: add it to the `docker` group (`sudo usermod -aG docker USER`, then log in again)");
            }
            BackendError::Connection { endpoint: format!("docker engine at {endpoint}"), message, source: Some(Box::new(e)) }
        }

        e @ DockerError::APIVersionParseError {} => BackendError::Other {
            message: format!("the engine at {endpoint} did not say which API version it speaks; is it a Docker Engine?"),
            source: Some(Box::new(e)),
        },
        e => BackendError::Other { message: format!("docker ({what}): {e}"), source: Some(Box::new(e)) },
    }
}

/// Whether a pull failed because the registry refused it without (or with these)
/// credentials: the engine answers 401/403, or reports the registry's refusal in its message
/// (`unauthorized: authentication required`, `no basic auth credentials`, `denied: …`, Docker
/// Hub's `pull access denied … may require 'docker login'`), as a status or in the stream.
/// Such a pull is worth one more try with credentials; no other failure is.
pub(crate) fn refused_anonymous(err: &DockerError) -> bool {
    let message = match err {
        DockerError::DockerResponseServerError {
            status_code: 401 | 403,
            ..
        } => return true,
        DockerError::DockerResponseServerError { message, .. } => message,
        DockerError::DockerStreamError { error } => error,
        _ => return false,
    };
    is_auth_refusal(message)
}

/// Maps a pull the registry refused (see [`refused_anonymous`]), saying what kgenv tried
/// and what to do.
pub(crate) fn pull_refused(err: &DockerError, what: &str, with_credentials: bool) -> BackendError {
    let message = match err {
        DockerError::DockerResponseServerError { message, .. } => message.clone(),
        DockerError::DockerStreamError { error } => error.clone(),
        e => e.to_string(),
    };
    let hint = if with_credentials {
        "the registry refused kgenv's read-only credentials too: check the image name, and that the account has read access to it (Artifact Registry Reader)"
    } else {
        "kgenv pulls anonymously and has no credentials for this registry: it has some only for gcr.io and Artifact Registry (Application Default Credentials from `gcloud auth application-default login`, or GOOGLE_OAUTH_ACCESS_TOKEN); check the image name"
    };
    BackendError::Unauthenticated {
        service: "docker",
        message: format!("{what}: {message}. {hint}"),
    }
}

/// A registry's refusal for want of (valid) credentials, by its message.
fn is_auth_refusal(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    lower.contains("unauthorized")
        || lower.contains("authentication required")
        || lower.contains("no basic auth credentials")
        || lower.contains("denied")
}

/// An error and its sources, `: `-joined (hyper's "client error (Connect)" alone says little).
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = s.source();
    }
    parts.join(": ")
}

/// Maps an HTTP error status of the Engine API.
pub(crate) fn from_status(
    status: u16,
    message: String,
    what: &str,
    endpoint: &str,
) -> BackendError {
    let lower = message.to_ascii_lowercase();
    if lower.contains("could not select device driver") {
        return BackendError::GpuUnavailable {
            host: endpoint.into(),
            message: format!("{message}. The engine has no NVIDIA device driver: install the NVIDIA driver and the NVIDIA Container Toolkit on the host (`nvidia-ctk runtime configure --runtime=docker`, then restart Docker), or set `gpus = \"none\"`"),
        };
    }
    if lower.contains("not a shared or slave mount") || lower.contains("not a shared mount") {
        return BackendError::InvalidArgument {
            resource: what.into(),
            message: format!("{message}. `rslave` propagation needs the host path on a shared mount: run `mount --make-rshared /` on the host (systemd hosts are shared already)"),
        };
    }
    if lower.contains("port is already allocated") || lower.contains("address already in use") {
        return BackendError::InvalidArgument {
            resource: what.into(),
            message: format!("{message}. Another process or container holds that host port: pick another `host` port in [container] ports"),
        };
    }
    match status {
        404 => BackendError::NotFound {
            resource: what.into(),
        },
        409 if lower.contains("already in use") || lower.contains("conflict") => {
            BackendError::AlreadyExists {
                resource: format!("{what} ({message})"),
            }
        }
        401 => BackendError::Unauthenticated {
            service: "docker",
            message,
        },
        403 => BackendError::PermissionDenied {
            resource: what.into(),
            message,
        },
        400 | 409 => BackendError::InvalidArgument {
            resource: what.into(),
            message,
        },
        429 => BackendError::RateLimited {
            service: "docker",
            retry_after: None,
        },
        502..=504 => BackendError::transient("docker", format!("{what}: {message}")),
        _ => BackendError::Other {
            message: format!("docker engine at {endpoint} ({what}): {message}"),
            source: None,
        },
    }
}

/// Maps an error reported inside a streamed answer (pull, build).
pub(crate) fn from_stream_message(message: &str, what: &str, endpoint: &str) -> BackendError {
    let lower = message.to_ascii_lowercase();
    if let Some(code) = build_step_exit_code(message) {
        return BackendError::CommandFailed {
            command: format!("docker build of {what}"),
            exit_code: code,
            stderr_tail: message.trim().to_string(),
        };
    }
    if lower.contains("unauthorized")
        || lower.contains("authentication required")
        || lower.contains("no basic auth credentials")
    {
        return BackendError::Unauthenticated {
            service: "docker",
            message: format!("{what}: {message}. For gcr.io and Artifact Registry kgenv pulls the image first (anonymously, then with a read-only token from Application Default Credentials or GOOGLE_OAUTH_ACCESS_TOKEN if refused); a build gets no credentials"),
        };
    }
    if lower.contains("denied") {
        return BackendError::PermissionDenied {
            resource: what.into(),
            message: message.into(),
        };
    }
    if lower.contains("manifest unknown")
        || lower.contains("not found")
        || lower.contains("does not exist")
    {
        return BackendError::NotFound {
            resource: format!("{what} ({message})"),
        };
    }
    if lower.contains("toomanyrequests") || lower.contains("rate limit") {
        return BackendError::RateLimited {
            service: "docker registry",
            retry_after: None,
        };
    }
    if lower.contains("connection reset")
        || lower.contains("i/o timeout")
        || lower.contains("tls handshake timeout")
        || lower.contains("unexpected eof")
    {
        return BackendError::transient("docker registry", format!("{what}: {message}"));
    }
    BackendError::Other {
        message: format!("docker engine at {endpoint} ({what}): {message}"),
        source: None,
    }
}

/// `The command '/bin/sh -c apt-get …' returned a non-zero code: 100` → 100.
fn build_step_exit_code(message: &str) -> Option<i64> {
    let (_, rest) = message.rsplit_once("returned a non-zero code:")?;
    rest.trim().trim_end_matches('.').parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_become_typed_errors() {
        assert!(
            from_status(404, "No such container: x".into(), "container x", "local").is_not_found()
        );
        assert!(matches!(
            from_status(
                409,
                "Conflict. The container name \"/x\" is already in use".into(),
                "container x",
                "local"
            ),
            BackendError::AlreadyExists { .. }
        ));
        assert!(matches!(
            from_status(
                409,
                "Container abc is not running".into(),
                "container x",
                "local"
            ),
            BackendError::InvalidArgument { .. }
        ));
        assert!(from_status(503, "busy".into(), "x", "local").is_retryable());
        let gpu = from_status(
            500,
            "could not select device driver \"nvidia\" with capabilities: [[gpu]]".into(),
            "container x",
            "local",
        );
        assert!(gpu.is_gpu_unavailable(), "{gpu}");
        assert!(
            gpu.to_string().contains("NVIDIA Container Toolkit"),
            "{gpu}"
        );
        let mount = from_status(
            500,
            "path /mnt/gcs is mounted on / but it is not a shared or slave mount".into(),
            "container x",
            "local",
        );
        assert!(mount.to_string().contains("make-rshared"), "{mount}");
    }

    #[test]
    fn stream_errors_become_typed_errors() {
        let e = from_stream_message(
            "The command '/bin/sh -c apt-get update' returned a non-zero code: 100",
            "image kgenv/extras:1",
            "local",
        );
        assert!(
            matches!(e, BackendError::CommandFailed { exit_code: 100, .. }),
            "{e}"
        );
        for refused in [
            DockerError::DockerResponseServerError {
                status_code: 500,
                message: "Head \"http://127.0.0.1:5000/v2/p/manifests/v1\": no basic auth credentials".into(),
            },
            DockerError::DockerResponseServerError {
                status_code: 404,
                message: "pull access denied for p, repository does not exist or may require 'docker login': denied: requested access to the resource is denied".into(),
            },
            DockerError::DockerResponseServerError {
                status_code: 401,
                message: String::new(),
            },
            DockerError::DockerStreamError {
                error: "unauthorized: authentication required".into(),
            },
        ] {
            assert!(refused_anonymous(&refused), "{refused}");
        }
        for other in [
            DockerError::DockerResponseServerError {
                status_code: 404,
                message: "manifest for p:v1 not found: manifest unknown".into(),
            },
            DockerError::DockerStreamError {
                error: "read tcp: connection reset by peer".into(),
            },
            DockerError::RequestTimeoutError,
        ] {
            assert!(!refused_anonymous(&other), "{other}");
        }
        assert!(from_stream_message(
            "unauthorized: authentication required",
            "image gcr.io/p/i",
            "local"
        )
        .is_auth());
        assert!(from_stream_message(
            "manifest for busybox:nope not found: manifest unknown",
            "image busybox:nope",
            "local"
        )
        .is_not_found());
        assert!(
            from_stream_message("read tcp: connection reset by peer", "image x", "local")
                .is_retryable()
        );
    }
}

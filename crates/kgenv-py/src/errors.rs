//! Core errors as Python exceptions. The exception classes live in `kgenv._errors`
//! (Python, so they carry docstrings and typed fields); this module picks the class from
//! the core error's kind and fills its fields, looking through step and run wrappers:
//! `Error::RunFailed { first: Step { source: Backend(Stockout { zone, .. }) } }` becomes
//! `kgenv.StockoutError(zone=..., step=..., failed_steps=[...])`.

use kgenv_core::error::error_chain;
use kgenv_core::error::{QuotaScope, StateError};
use kgenv_core::{BackendError, Error};
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// `kgenv._errors.<class_name>(message, **fields)` as a raisable error.
fn build(py: Python<'_>, class_name: &str, message: String, fields: &Bound<'_, PyDict>) -> PyErr {
    let made = py
        .import("kgenv._errors")
        .and_then(|m| m.getattr(class_name))
        .and_then(|cls| cls.call((message,), Some(fields)));
    match made {
        Ok(exc) => PyErr::from_value(exc),
        // The package is broken (the pure-Python half is missing): say so rather than hide the error.
        Err(e) => e,
    }
}

/// A validation error naming `field`, raised as `kgenv.ValidationError`.
pub(crate) fn validation(py: Python<'_>, field: &str, rule: &str, message: String) -> PyErr {
    let fields = PyDict::new(py);
    let filled = fields
        .set_item("kind", "validation")
        .and_then(|()| fields.set_item("field", field))
        .and_then(|()| fields.set_item("rule", rule));
    if let Err(e) = filled {
        return e;
    }
    build(py, "ValidationError", message, &fields)
}

/// The Python exception for a core error.
pub(crate) fn to_py(py: Python<'_>, err: &Error) -> PyErr {
    let fields = PyDict::new(py);
    match fill(&fields, err) {
        Ok(class_name) => build(py, class_name, error_chain(err), &fields),
        Err(e) => e,
    }
}

/// Fills the fields and returns the class name.
fn fill(f: &Bound<'_, PyDict>, err: &Error) -> PyResult<&'static str> {
    f.set_item("kind", err.kind())?;
    f.set_item("retryable", err.is_retryable())?;
    let mut cur = err;
    loop {
        match cur {
            Error::Step { step, source } => {
                if !f.contains("step")? {
                    f.set_item("step", step)?;
                }
                cur = source;
            }
            Error::RunFailed { failed, first } => {
                f.set_item("failed_steps", failed.clone())?;
                cur = first;
            }
            _ => break,
        }
    }
    Ok(match cur {
        Error::Config(c) => {
            f.set_item("path", c.path.clone())?;
            f.set_item("line", c.line)?;
            f.set_item("column", c.column)?;
            f.set_item("field", c.field.clone())?;
            "ConfigError"
        }
        Error::Validation(v) => {
            f.set_item("field", &v.field)?;
            f.set_item("rule", &v.rule)?;
            "ValidationError"
        }
        Error::Usage(_) => "UsageError",
        Error::NotConfirmed(u) => {
            f.set_item("operation", &u.operation)?;
            f.set_item("changes", u.changes.clone())?;
            f.set_item("keeps", u.keeps.clone())?;
            "ConfirmationRequiredError"
        }
        Error::Cancelled => "CancelledError",
        Error::State(s) => {
            f.set_item("path", s.path().to_path_buf())?;
            f.set_item("reason", s.reason())?;
            if matches!(s, StateError::Locked { .. }) {
                "EnvLockedError"
            } else {
                "StateError"
            }
        }
        Error::Backend(b) => fill_backend(f, b)?,
        _ => "KgenvError",
    })
}

fn fill_backend(f: &Bound<'_, PyDict>, b: &BackendError) -> PyResult<&'static str> {
    Ok(match b {
        BackendError::NotFound { resource } => {
            f.set_item("resource", resource)?;
            "NotFoundError"
        }
        BackendError::AlreadyExists { resource } => {
            f.set_item("resource", resource)?;
            "AlreadyExistsError"
        }
        BackendError::Unauthenticated { service, .. } => {
            f.set_item("service", *service)?;
            "AuthError"
        }
        BackendError::PermissionDenied { resource, .. } => {
            f.set_item("resource", resource)?;
            "AuthError"
        }
        BackendError::Stockout { zone, resource, .. } => {
            f.set_item("zone", zone)?;
            f.set_item("resource", resource)?;
            "StockoutError"
        }
        BackendError::Quota { quota, .. } => {
            f.set_item("metric", &quota.metric)?;
            f.set_item("limit", quota.limit)?;
            match &quota.scope {
                QuotaScope::Region(r) => {
                    f.set_item("scope", "region")?;
                    f.set_item("region", r)?;
                }
                QuotaScope::Global => f.set_item("scope", "global")?,
            }
            "QuotaError"
        }
        BackendError::RateLimited {
            service,
            retry_after,
        } => {
            f.set_item("service", *service)?;
            f.set_item("retry_after", retry_after.map(|d| d.as_secs_f64()))?;
            "RateLimitedError"
        }
        BackendError::Transient { service, .. } => {
            f.set_item("service", *service)?;
            "TransientError"
        }
        BackendError::InvalidArgument { resource, .. } => {
            f.set_item("resource", resource)?;
            "InvalidRequestError"
        }
        BackendError::Timeout {
            what,
            after,
            last_seen,
        } => {
            f.set_item("what", what)?;
            f.set_item("after", after.as_secs_f64())?;
            f.set_item("last_seen", last_seen.clone())?;
            "OperationTimeoutError"
        }
        BackendError::CommandTimeout(t) => {
            if !f.contains("step")? {
                f.set_item("step", t.step.clone())?;
            }
            // The fields of OperationTimeoutError too, for code that catches that.
            f.set_item("what", format!("`{}` on {}", t.command, t.host))?;
            f.set_item("after", t.after.as_secs_f64())?;
            f.set_item("last_seen", t.last_lines.last().cloned())?;
            f.set_item("command", &t.command)?;
            f.set_item("host", &t.host)?;
            f.set_item("inactivity", t.inactivity)?;
            f.set_item("last_lines", t.last_lines.clone())?;
            "CommandTimeoutError"
        }
        BackendError::HostKeyMismatch {
            host,
            expected,
            found,
            known_hosts,
        } => {
            f.set_item("host", host)?;
            f.set_item("expected", expected)?;
            f.set_item("found", found)?;
            f.set_item("known_hosts", known_hosts)?;
            "HostKeyMismatchError"
        }
        BackendError::Connection { endpoint, .. } => {
            f.set_item("endpoint", endpoint)?;
            "ConnectionFailedError"
        }
        BackendError::CommandFailed {
            command,
            exit_code,
            stderr_tail,
        } => {
            f.set_item("command", command)?;
            f.set_item("exit_code", *exit_code)?;
            f.set_item("stderr_tail", stderr_tail)?;
            "CommandFailedError"
        }
        BackendError::Unavailable { backend, hint } => {
            f.set_item("backend", *backend)?;
            f.set_item("hint", hint)?;
            "UnavailableError"
        }
        BackendError::Io { context, .. } => {
            f.set_item("context", context)?;
            "LocalIOError"
        }
        BackendError::Cancelled => "CancelledError",
        _ => "BackendError",
    })
}

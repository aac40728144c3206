//! How the GCE VM is provisioned (`[instance] provisioning`): `standard`, `spot` or
//! `flex-start`, validated against what Compute Engine accepts before any call.
//!
//! - `spot` (also `spot = true`, the older key): discounted, preempted whenever GCE needs
//!   the capacity back; kgenv asks GCE to *stop* it then, so the boot and data disks stay
//!   and `kgenv start` / `up` brings the same VM back.
//! - `flex-start`: capacity from the Dynamic Workload Scheduler, discounted, running at
//!   most `max_run_duration` (required). Google's "About Flex-start VMs"
//!   (https://cloud.google.com/compute/docs/instances/about-flex-start-vms) documents that
//!   flex-start VMs "run for up to seven days", that afterwards Compute Engine "stops or
//!   deletes the VMs based on the termination action", and that they "support all
//!   accelerator-optimized machine types (except A4X and G4) and H4D machine types";
//!   "Create a Flex-start VM" (https://cloud.google.com/compute/docs/instances/create-flex-start-vm)
//!   sets the run duration in seconds, from 600 (ten minutes) to 604800 (seven days).
//!   kgenv's termination action is STOP: at the end the VM stops, its disks and the user's
//!   data stay.
//!
//! ```
//! use kgenv_core::spec::{provisioning, Provisioning};
//! let p = provisioning::resolve(None, Some("flex-start"), Some("8h"), "a2-highgpu-1g").expect("valid");
//! assert_eq!(p, Provisioning::FlexStart { max_run_duration_secs: 8 * 3600 });
//! assert_eq!(provisioning::resolve(Some(true), None, None, "n1-standard-8").expect("valid"), Provisioning::Spot);
//! ```

use std::time::Duration;

pub use crate::backends::compute::Provisioning;
use crate::error::ValidationError;

/// The shortest flex-start run GCE accepts (`maxRunDuration.seconds` = 600).
pub const FLEX_START_MIN_RUN: Duration = Duration::from_secs(600);
/// The longest flex-start run GCE accepts: seven days (604800 s).
pub const FLEX_START_MAX_RUN: Duration = Duration::from_secs(7 * 24 * 3600);

/// Machine-type families that take flex-start: the accelerator-optimized ones (A2, A3, A4,
/// G2; not A4X or G4) and H4D, as "About Flex-start VMs" lists them.
const FLEX_START_FAMILIES: [&str; 5] = ["a2", "a3", "a4", "g2", "h4d"];

/// The provisioning the config asks for: `provisioning` (`standard`, `spot`,
/// `flex-start`), the older `spot = true|false`, and `max_run_duration` (flex-start only,
/// required there). `machine_type` is checked for flex-start.
///
/// # Errors
/// A [`ValidationError`] naming the field: an unknown model, `spot` contradicting
/// `provisioning`, a missing, unreadable or out-of-range `max_run_duration`, one given
/// without flex-start, or a machine type flex-start does not take.
pub fn resolve(
    spot: Option<bool>,
    provisioning: Option<&str>,
    max_run_duration: Option<&str>,
    machine_type: &str,
) -> Result<Provisioning, ValidationError> {
    let named = match provisioning.map(str::trim) {
        None => None,
        Some("standard") => Some("standard"),
        Some("spot") => Some("spot"),
        Some("flex-start") => Some("flex-start"),
        Some(other) => {
            return Err(ValidationError::new(
                "provisioning",
                format!("`{other}` is not one of standard, spot, flex-start"),
            ))
        }
    };
    let model = match (named, spot) {
        (Some(m), Some(s)) if (m == "spot") != s => {
            return Err(ValidationError::new(
                "spot",
                format!(
                    "`spot = {s}` contradicts `provisioning = \"{m}\"`: remove `spot` (the older key) and keep `provisioning`"
                ),
            ))
        }
        (Some(m), _) => m,
        (None, Some(true)) => "spot",
        (None, _) => "standard",
    };
    if model != "flex-start" {
        if max_run_duration.is_some() {
            return Err(ValidationError::new(
                "max_run_duration",
                format!("applies to `provisioning = \"flex-start\"` only (this VM is {model}): remove it, or use flex-start"),
            ));
        }
        return Ok(if model == "spot" {
            Provisioning::Spot
        } else {
            Provisioning::Standard
        });
    }
    let Some(text) = max_run_duration else {
        return Err(ValidationError::new(
            "max_run_duration",
            "is required with `provisioning = \"flex-start\"`: how long the VM may run before GCE stops it, e.g. \"8h\" (10m to 7d)",
        ));
    };
    let d = humantime::parse_duration(text.trim()).map_err(|e| {
        ValidationError::new(
            "max_run_duration",
            format!("`{text}` is not a duration ({e}); write it like \"8h\" or \"2d 12h\""),
        )
    })?;
    if d < FLEX_START_MIN_RUN || d > FLEX_START_MAX_RUN {
        return Err(ValidationError::new(
            "max_run_duration",
            format!(
                "`{text}` is outside what GCE allows a flex-start VM: from 10m to 7d (604800 s)"
            ),
        ));
    }
    check_machine_type(
        &Provisioning::FlexStart {
            max_run_duration_secs: 0,
        },
        "machine_type",
        machine_type,
    )?;
    Ok(Provisioning::FlexStart {
        // Whole seconds: `maxRunDuration` is sent in seconds.
        max_run_duration_secs: d.as_secs(),
    })
}

/// Checks that `machine_type` can be provisioned so (only flex-start restricts it); `field`
/// names it in the error (`machine_type`, or a GPU choice's `gpu[1].machine_type`).
///
/// # Errors
/// A [`ValidationError`] on `field` when flex-start cannot run that machine type.
pub fn check_machine_type(
    provisioning: &Provisioning,
    field: &str,
    machine_type: &str,
) -> Result<(), ValidationError> {
    if !matches!(provisioning, Provisioning::FlexStart { .. }) {
        return Ok(());
    }
    let family = machine_type.split('-').next().unwrap_or_default();
    if FLEX_START_FAMILIES.contains(&family) {
        return Ok(());
    }
    Err(ValidationError::new(
        field.to_string(),
        format!(
            "`{machine_type}` cannot be a flex-start VM: GCE offers flex-start on accelerator-optimized machine types (a2-, a3-, a4-, g2-; not a4x- or g4-) and h4d-; use e.g. `g2-standard-8` (L4) or `a2-highgpu-1g` (A100), or `provisioning = \"spot\"`"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spot_and_provisioning_agree_or_the_error_names_the_field() {
        let r = |spot, p| resolve(spot, p, None, "n1-standard-8");
        assert_eq!(r(None, None), Ok(Provisioning::Standard));
        assert_eq!(r(Some(true), None), Ok(Provisioning::Spot));
        assert_eq!(r(Some(false), None), Ok(Provisioning::Standard));
        assert_eq!(r(Some(true), Some("spot")), Ok(Provisioning::Spot));
        assert_eq!(r(Some(false), Some("standard")), Ok(Provisioning::Standard));
        for (spot, p) in [
            (Some(true), "standard"),
            (Some(false), "spot"),
            (Some(true), "flex-start"),
        ] {
            let e = resolve(spot, Some(p), Some("8h"), "a2-highgpu-1g").expect_err(p);
            assert_eq!(e.field, "spot", "{e}");
        }
        let e = r(None, Some("preemptible")).expect_err("unknown");
        assert_eq!(e.field, "provisioning", "{e}");
    }

    #[test]
    fn flex_start_needs_a_run_duration_within_gces_limits() {
        let f = |d| resolve(None, Some("flex-start"), d, "g2-standard-8");
        assert_eq!(
            f(Some("8h")),
            Ok(Provisioning::FlexStart {
                max_run_duration_secs: 28_800
            })
        );
        assert_eq!(
            f(Some("7d")),
            Ok(Provisioning::FlexStart {
                max_run_duration_secs: 604_800
            })
        );
        assert_eq!(
            f(Some("10m")),
            Ok(Provisioning::FlexStart {
                max_run_duration_secs: 600
            })
        );
        for bad in [None, Some("7d 1s"), Some("9m"), Some("soon"), Some("30d")] {
            let e = f(bad).expect_err("bad duration");
            assert_eq!(e.field, "max_run_duration", "{bad:?}: {e}");
        }
        let e = resolve(Some(true), None, Some("8h"), "n1-standard-8").expect_err("spot");
        assert_eq!(e.field, "max_run_duration", "{e}");
    }

    #[test]
    fn flex_start_takes_only_the_documented_machine_families() {
        for ok in [
            "a2-highgpu-1g",
            "a3-highgpu-8g",
            "a4-highgpu-8g",
            "g2-standard-8",
            "h4d-highmem-192",
        ] {
            assert!(
                resolve(None, Some("flex-start"), Some("1h"), ok).is_ok(),
                "{ok}"
            );
        }
        for bad in [
            "n1-standard-8",
            "a4x-highgpu-4g",
            "g4-standard-48",
            "n2-standard-8",
        ] {
            let e = resolve(None, Some("flex-start"), Some("1h"), bad).expect_err(bad);
            assert_eq!(e.field, "machine_type", "{bad}: {e}");
        }
        assert!(
            check_machine_type(&Provisioning::Spot, "gpu[1].machine_type", "n1-standard-8").is_ok()
        );
        let e = check_machine_type(
            &Provisioning::FlexStart {
                max_run_duration_secs: 3600,
            },
            "gpu[1].machine_type",
            "n1-standard-8",
        )
        .expect_err("n1");
        assert_eq!(e.field, "gpu[1].machine_type");
    }
}

//! GPU choices: which GPU goes with which machine type, and how many.
//!
//! GCE attaches GPUs in two ways (see <https://cloud.google.com/compute/docs/gpus> and
//! <https://cloud.google.com/compute/docs/accelerator-optimized-machines>, checked December
//! 2026):
//! - the accelerator-optimized families come with their GPUs: L4 on G2 (`g2-standard-4`,
//!   `-8`, `-12`, `-16`, `-32`: 1; `-24`: 2; `-48`: 4; `-96`: 8), A100 40GB on A2 standard
//!   (`a2-highgpu-{1,2,4,8}g`, `a2-megagpu-16g`), A100 80GB on A2 ultra
//!   (`a2-ultragpu-{1,2,4,8}g`), H100 80GB on A3 (`a3-highgpu-{1,2,4,8}g`) and H100 Mega on
//!   `a3-megagpu-8g`. The count is part of the machine type; a count given beside it must
//!   match. Which shape comes with what is the one table in [`crate::pricing::machine`],
//!   which also prices them;
//! - the older GPUs attach to N1 machine types only: T4 and V100 in 1, 2, 4 or 8, P100 and
//!   P4 in 1, 2 or 4.
//!
//! A GPU type this table does not know (a newer one) is let through with the general
//! 1/2/4/8 rule: the preflight asks GCE whether the zones offer it before anything is made.

use serde::{Deserialize, Serialize};

use crate::error::ValidationError;
use crate::pricing::machine;

/// One acceptable machine: a GPU type on a machine type, with its count.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct GpuChoice {
    /// Accelerator type (`nvidia-l4`), `None` for a CPU-only VM.
    pub gpu_type: Option<String>,
    /// Machine type (`g2-standard-8`).
    pub machine_type: String,
    /// GPU count (0 without a GPU).
    pub count: u8,
}

impl GpuChoice {
    /// `1x nvidia-l4 on g2-standard-8`, or `g2-standard-8 (no GPU)`.
    pub fn describe(&self) -> String {
        match &self.gpu_type {
            Some(t) => format!("{}x {t} on {}", self.count, self.machine_type),
            None => format!("{} (no GPU)", self.machine_type),
        }
    }

    /// The GPUs as the Compute backend takes them.
    pub fn gpu(&self) -> Option<(String, u8)> {
        self.gpu_type.clone().map(|t| (t, self.count))
    }
}

/// One entry of `gpu = [...]` as written in kgenv.toml.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GpuChoiceInput {
    #[serde(rename = "type")]
    pub(crate) gpu_type: String,
    pub(crate) machine_type: String,
    #[serde(default)]
    pub(crate) count: Option<u32>,
}

/// The count a machine type comes with for `gpu_type`: `Ok(Some(n))` for the families
/// with built-in GPUs, `Ok(None)` for N1 (count chosen by the user, `allowed`), and
/// `Err(rule)` when the GPU does not go on that machine type.
fn built_in_count(gpu_type: &str, machine_type: &str) -> Result<Option<u8>, String> {
    let families = machine::machine_types_with(gpu_type);
    if !families.is_empty() {
        return match machine::bundled_gpus(machine_type) {
            Some((t, n)) if t == gpu_type => Ok(Some(n)),
            _ => Err(format!(
                "`{gpu_type}` comes only with the machine types {}",
                families.join(", ")
            )),
        };
    }
    match gpu_type {
        "nvidia-tesla-t4" | "nvidia-tesla-v100" | "nvidia-tesla-p100" | "nvidia-tesla-p4" => {
            if machine_type.starts_with("n1-") {
                Ok(None)
            } else {
                Err(format!(
                    "`{gpu_type}` attaches only to N1 machine types (`n1-standard-8`, `n1-highmem-16`, ...)"
                ))
            }
        }
        _ => Ok(None),
    }
}

/// The counts GCE takes for a GPU attached to an N1 (or unknown) machine type.
fn allowed_counts(gpu_type: &str) -> &'static [u32] {
    match gpu_type {
        "nvidia-tesla-p100" | "nvidia-tesla-p4" => &[1, 2, 4],
        _ => &[1, 2, 4, 8],
    }
}

/// Field names of one choice in an error: the list form's `gpu[1].type`, or the single
/// form's `gpu_type`.
pub(crate) struct Fields {
    pub(crate) gpu_type: String,
    pub(crate) machine_type: String,
    pub(crate) count: String,
}

impl Fields {
    /// The single form's keys.
    pub(crate) fn single() -> Self {
        Self {
            gpu_type: "gpu_type".into(),
            machine_type: "machine_type".into(),
            count: "gpu_count".into(),
        }
    }
    /// Entry `i` of `gpu = [...]`.
    pub(crate) fn entry(i: usize) -> Self {
        Self {
            gpu_type: format!("gpu[{i}].type"),
            machine_type: format!("gpu[{i}].machine_type"),
            count: format!("gpu[{i}].count"),
        }
    }
}

/// Checks one choice: a GCE accelerator type, a machine type it goes on, and a count that
/// machine takes (filled in from the machine type where it comes with its GPUs).
pub(crate) fn choice(
    f: &Fields,
    gpu_type: Option<&str>,
    machine_type: &str,
    count: Option<u32>,
) -> Result<GpuChoice, ValidationError> {
    super::rules::gce_name(&f.machine_type, machine_type)?;
    let Some(t) = gpu_type else {
        return Ok(GpuChoice {
            gpu_type: None,
            machine_type: machine_type.into(),
            count: 0,
        });
    };
    if !t.starts_with("nvidia-") {
        return Err(ValidationError::new(&f.gpu_type, format!("`{t}` is not a GCE accelerator type like `nvidia-tesla-t4` or `nvidia-l4` (or \"none\")")));
    }
    super::rules::gce_name(&f.gpu_type, t)?;
    let count = match built_in_count(t, machine_type) {
        Err(rule) => {
            return Err(ValidationError::new(
                &f.machine_type,
                format!("`{machine_type}` cannot carry {t}: {rule}"),
            ))
        }
        Ok(Some(n)) => {
            if let Some(given) = count.filter(|c| *c != u32::from(n)) {
                return Err(ValidationError::new(
                    &f.count,
                    format!("{machine_type} comes with {n}x {t}, not {given}: leave the count out, or pick the machine type with {given} GPUs"),
                ));
            }
            n
        }
        Ok(None) => {
            let n = count.unwrap_or(1);
            let allowed = allowed_counts(t);
            if !allowed.contains(&n) {
                let list: Vec<String> = allowed.iter().map(u32::to_string).collect();
                return Err(ValidationError::new(
                    &f.count,
                    format!(
                        "{n} GPUs cannot be attached: GCE takes {} of {t}",
                        list.join(", ")
                    ),
                ));
            }
            // In `allowed`, so at most 8.
            u8::try_from(n).unwrap_or(8)
        }
    };
    Ok(GpuChoice {
        gpu_type: Some(t.into()),
        machine_type: machine_type.into(),
        count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(t: &str, m: &str, n: Option<u32>) -> Result<GpuChoice, ValidationError> {
        choice(&Fields::entry(1), Some(t), m, n)
    }

    #[test]
    fn l4_comes_with_g2_and_its_count() {
        for (m, n) in [
            ("g2-standard-4", 1),
            ("g2-standard-8", 1),
            ("g2-standard-12", 1),
            ("g2-standard-16", 1),
            ("g2-standard-32", 1),
            ("g2-standard-24", 2),
            ("g2-standard-48", 4),
            ("g2-standard-96", 8),
        ] {
            assert_eq!(one("nvidia-l4", m, None).expect(m).count, n, "{m}");
            assert_eq!(one("nvidia-l4", m, Some(u32::from(n))).expect(m).count, n);
        }
        let e = one("nvidia-l4", "n1-standard-8", None).expect_err("l4 on n1");
        assert_eq!(e.field, "gpu[1].machine_type", "{e}");
        let e = one("nvidia-l4", "g2-standard-6", None).expect_err("no such g2");
        assert_eq!(e.field, "gpu[1].machine_type", "{e}");
        let e = one("nvidia-l4", "g2-standard-24", Some(1)).expect_err("24 has 2");
        assert_eq!(e.field, "gpu[1].count", "{e}");
    }

    #[test]
    fn a100_and_h100_come_with_their_machine_types() {
        let ok = [
            ("nvidia-tesla-a100", "a2-highgpu-1g", 1),
            ("nvidia-tesla-a100", "a2-highgpu-8g", 8),
            ("nvidia-tesla-a100", "a2-megagpu-16g", 16),
            ("nvidia-a100-80gb", "a2-ultragpu-4g", 4),
            ("nvidia-h100-80gb", "a3-highgpu-2g", 2),
            ("nvidia-h100-mega-80gb", "a3-megagpu-8g", 8),
        ];
        for (t, m, n) in ok {
            assert_eq!(one(t, m, None).expect(m).count, n, "{t} {m}");
        }
        let bad = [
            ("nvidia-tesla-a100", "a2-ultragpu-1g", "gpu[1].machine_type"),
            ("nvidia-tesla-a100", "a2-highgpu-3g", "gpu[1].machine_type"),
            ("nvidia-a100-80gb", "a2-highgpu-1g", "gpu[1].machine_type"),
            ("nvidia-h100-80gb", "n1-standard-8", "gpu[1].machine_type"),
            (
                "nvidia-h100-mega-80gb",
                "a3-highgpu-8g",
                "gpu[1].machine_type",
            ),
        ];
        for (t, m, field) in bad {
            assert_eq!(one(t, m, None).expect_err(m).field, field, "{t} {m}");
        }
        let e = one("nvidia-h100-80gb", "a3-highgpu-4g", Some(8)).expect_err("4g has 4");
        assert_eq!(e.field, "gpu[1].count", "{e}");
    }

    #[test]
    fn older_gpus_go_on_n1_in_the_counts_gce_takes() {
        for t in ["nvidia-tesla-t4", "nvidia-tesla-v100"] {
            for n in [1, 2, 4, 8] {
                assert_eq!(one(t, "n1-standard-16", Some(n)).expect(t).count as u32, n);
            }
            assert_eq!(
                one(t, "n1-standard-8", Some(3)).expect_err("3").field,
                "gpu[1].count"
            );
        }
        for t in ["nvidia-tesla-p100", "nvidia-tesla-p4"] {
            assert_eq!(one(t, "n1-standard-8", Some(4)).expect(t).count, 4);
            assert_eq!(
                one(t, "n1-standard-8", Some(8)).expect_err("8").field,
                "gpu[1].count"
            );
        }
        assert_eq!(
            one("nvidia-tesla-t4", "n1-standard-8", None)
                .expect("t4")
                .count,
            1
        );
        let e = one("nvidia-tesla-t4", "g2-standard-8", None).expect_err("t4 on g2");
        assert_eq!(e.field, "gpu[1].machine_type", "{e}");
        let e = one("tpu-v4", "n1-standard-8", None).expect_err("not a GPU");
        assert_eq!(e.field, "gpu[1].type", "{e}");
        let e = choice(
            &Fields::single(),
            Some("nvidia-tesla-t4"),
            "n1-standard-8",
            Some(3),
        )
        .expect_err("single form");
        assert_eq!(e.field, "gpu_count", "{e}");
    }

    #[test]
    fn an_unknown_nvidia_type_is_left_to_the_preflight() {
        let c = one("nvidia-b200", "a4-highgpu-8g", Some(8)).expect("newer GPU");
        assert_eq!(c.count, 8);
        assert_eq!(c.describe(), "8x nvidia-b200 on a4-highgpu-8g");
    }
}

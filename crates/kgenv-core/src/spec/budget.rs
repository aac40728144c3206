//! The budget spec: a limit on the VM's running hours and/or its cost, enforced by the
//! agent on the host (so it holds while the user's laptop is closed), which powers the VM
//! off once the budget is used.

use serde::{Deserialize, Serialize};

use crate::error::ValidationError;

/// A validated budget: at least one of its limits is set; both are finite and positive.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Budget {
    /// Hours the VM may run (stopped time never counts).
    pub max_hours: Option<f64>,
    /// US dollars the VM may cost, turned into running hours with its hourly price.
    pub max_cost: Option<f64>,
}

// Validation admits only finite numbers, so equality is an equivalence (no NaN).
impl Eq for Budget {}

/// Builder for [`Budget`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[must_use]
pub struct BudgetBuilder {
    max_hours: Option<f64>,
    max_cost: Option<f64>,
}

impl Budget {
    /// A builder with no limit yet (set `max_hours`, `max_cost` or both).
    pub fn builder() -> BudgetBuilder {
        BudgetBuilder::default()
    }

    /// What the budget was set for, as one token (`max_hours=10,max_cost=25`): the host
    /// agent resets the used time only when this changes.
    pub fn set_for(&self) -> String {
        let mut parts = Vec::new();
        if let Some(h) = self.max_hours {
            parts.push(format!("max_hours={h}"));
        }
        if let Some(c) = self.max_cost {
            parts.push(format!("max_cost={c}"));
        }
        parts.join(",")
    }
}

impl BudgetBuilder {
    /// Running hours after which the VM is stopped (more than 0, at most 87600).
    pub fn max_hours(mut self, h: f64) -> Self {
        self.max_hours = Some(h);
        self
    }

    /// US dollars after which the VM is stopped (more than 0), counted with the VM's
    /// hourly price.
    pub fn max_cost(mut self, usd: f64) -> Self {
        self.max_cost = Some(usd);
        self
    }

    /// Validates and returns the spec.
    pub fn build(self) -> Result<Budget, ValidationError> {
        if let Some(h) = self.max_hours {
            if !(h.is_finite() && h > 0.0 && h <= 87_600.0) {
                return Err(ValidationError::new(
                    "max_hours",
                    format!("{h} is out of range: use more than 0 and at most 87600 hours"),
                ));
            }
        }
        if let Some(c) = self.max_cost {
            if !(c.is_finite() && c > 0.0 && c <= 1e9) {
                return Err(ValidationError::new(
                    "max_cost",
                    format!("{c} is out of range: use a positive number of US dollars"),
                ));
            }
        }
        if self.max_hours.is_none() && self.max_cost.is_none() {
            return Err(ValidationError::new(
                "max_hours",
                "[budget] sets no limit: set max_hours (running hours) or max_cost (USD), or remove [budget]",
            ));
        }
        Ok(Budget {
            max_hours: self.max_hours,
            max_cost: self.max_cost,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_checked_and_named() {
        let b = Budget::builder()
            .max_hours(10.0)
            .max_cost(25.5)
            .build()
            .expect("valid");
        assert_eq!(b.set_for(), "max_hours=10,max_cost=25.5");
        assert_eq!(
            Budget::builder().build().expect_err("empty").field,
            "max_hours"
        );
        assert_eq!(
            Budget::builder()
                .max_hours(0.0)
                .build()
                .expect_err("0")
                .field,
            "max_hours"
        );
        assert_eq!(
            Budget::builder()
                .max_cost(f64::NAN)
                .build()
                .expect_err("NaN")
                .field,
            "max_cost"
        );
        assert_eq!(
            Budget::builder()
                .max_cost(-1.0)
                .build()
                .expect_err("negative")
                .field,
            "max_cost"
        );
    }
}

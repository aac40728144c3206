//! The autostop spec: stop an idle GPU VM so a forgotten environment stops billing.

use serde::{Deserialize, Serialize};

use crate::error::ValidationError;

/// A validated autostop spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Autostop {
    /// Minutes without Jupyter kernel activity or SSH session before the VM is stopped.
    pub idle_minutes: u32,
}

/// Builder for [`Autostop`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[must_use]
pub struct AutostopBuilder {
    idle_minutes: Option<u32>,
}

impl Autostop {
    /// A builder stopping after `idle_minutes`.
    pub fn builder(idle_minutes: u32) -> AutostopBuilder {
        AutostopBuilder {
            idle_minutes: Some(idle_minutes),
        }
    }
}

impl AutostopBuilder {
    /// Validates and returns the spec.
    pub fn build(self) -> Result<Autostop, ValidationError> {
        let idle_minutes = self.idle_minutes.unwrap_or(60);
        if !(5..=10_080).contains(&idle_minutes) {
            return Err(ValidationError::new("idle_minutes", format!("{idle_minutes} is out of range: use 5 to 10080 minutes (a week), or remove [autostop]")));
        }
        Ok(Autostop { idle_minutes })
    }
}

//! The autostop spec: stop an idle GPU VM so a forgotten environment stops billing, and
//! never a VM that is working — a busy kernel, a GPU or a CPU at work counts as activity.

use serde::{Deserialize, Serialize};

use crate::error::ValidationError;

/// Default `gpu_util_percent`: any GPU at or above it counts as activity.
pub const DEFAULT_GPU_UTIL_PERCENT: u32 = 10;
/// Default `cpu_percent`: any container process at or above it counts as activity.
pub const DEFAULT_CPU_PERCENT: u32 = 20;
/// Default `warn_minutes` (half the idle time when that is shorter).
pub const DEFAULT_WARN_MINUTES: u32 = 5;

/// A validated autostop spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Autostop {
    /// Minutes without activity (SSH session, Jupyter activity, busy kernel, GPU or CPU at
    /// work) before the VM is stopped.
    pub idle_minutes: u32,
    /// GPU utilisation (percent) at or above which any GPU counts as working.
    pub gpu_util_percent: u32,
    /// CPU (percent of one core, sampled over a few seconds) at or above which a process
    /// in the container counts as working.
    pub cpu_percent: u32,
    /// Minutes before a stop (idle or budget) when logged-in users and open Jupyter
    /// terminals are warned; 0: no warning.
    pub warn_minutes: u32,
}

/// Builder for [`Autostop`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[must_use]
pub struct AutostopBuilder {
    idle_minutes: Option<u32>,
    gpu_util_percent: Option<u32>,
    cpu_percent: Option<u32>,
    warn_minutes: Option<u32>,
}

impl Autostop {
    /// A builder stopping after `idle_minutes`.
    pub fn builder(idle_minutes: u32) -> AutostopBuilder {
        AutostopBuilder {
            idle_minutes: Some(idle_minutes),
            ..AutostopBuilder::default()
        }
    }

    /// The same thresholds with another idle time (`kgenv autostop MINUTES`). A warning
    /// lead that would no longer be shorter than the idle time takes its default for the
    /// new time, so a short in-place setting is not refused for a key it does not name.
    pub fn with_idle_minutes(self, idle_minutes: u32) -> Result<Autostop, ValidationError> {
        let warn = (self.warn_minutes < idle_minutes).then_some(self.warn_minutes);
        AutostopBuilder {
            idle_minutes: Some(idle_minutes),
            gpu_util_percent: Some(self.gpu_util_percent),
            cpu_percent: Some(self.cpu_percent),
            warn_minutes: warn,
        }
        .build()
    }
}

impl AutostopBuilder {
    /// GPU utilisation (1 to 100 percent) at or above which the VM counts as working
    /// (default 10).
    pub fn gpu_util_percent(mut self, p: u32) -> Self {
        self.gpu_util_percent = Some(p);
        self
    }

    /// CPU percent of one core (1 to 100) at or above which a container process counts as
    /// working (default 20).
    pub fn cpu_percent(mut self, p: u32) -> Self {
        self.cpu_percent = Some(p);
        self
    }

    /// Minutes of warning before a stop, less than `idle_minutes`; 0 for none (default 5,
    /// or half of `idle_minutes` when that is shorter).
    pub fn warn_minutes(mut self, m: u32) -> Self {
        self.warn_minutes = Some(m);
        self
    }

    /// Validates and returns the spec.
    pub fn build(self) -> Result<Autostop, ValidationError> {
        let idle_minutes = self.idle_minutes.unwrap_or(60);
        if !(5..=10_080).contains(&idle_minutes) {
            return Err(ValidationError::new("idle_minutes", format!("{idle_minutes} is out of range: use 5 to 10080 minutes (a week), or remove [autostop]")));
        }
        let percent = |field: &str, v: Option<u32>, default: u32, what: &str| match v {
            None => Ok(default),
            Some(p) if (1..=100).contains(&p) => Ok(p),
            Some(p) => Err(ValidationError::new(
                field,
                format!("{p} is out of range: use 1 to 100 ({what})"),
            )),
        };
        let gpu_util_percent = percent(
            "gpu_util_percent",
            self.gpu_util_percent,
            DEFAULT_GPU_UTIL_PERCENT,
            "percent utilisation at or above which a GPU counts as working",
        )?;
        let cpu_percent = percent(
            "cpu_percent",
            self.cpu_percent,
            DEFAULT_CPU_PERCENT,
            "percent of one core at or above which a container process counts as working",
        )?;
        let warn_minutes = match self.warn_minutes {
            None => DEFAULT_WARN_MINUTES.min(idle_minutes / 2),
            Some(w) if w < idle_minutes => w,
            Some(w) => {
                return Err(ValidationError::new(
                    "warn_minutes",
                    format!("{w} is not less than idle_minutes ({idle_minutes}): the warning comes that many minutes before the stop; use fewer minutes, or 0 for no warning"),
                ))
            }
        };
        Ok(Autostop {
            idle_minutes,
            gpu_util_percent,
            cpu_percent,
            warn_minutes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_ranges() {
        let a = Autostop::builder(60).build().expect("valid");
        assert_eq!(
            (a.gpu_util_percent, a.cpu_percent, a.warn_minutes),
            (10, 20, 5)
        );
        // A short idle time gets a shorter default warning, never one as long as itself.
        assert_eq!(Autostop::builder(5).build().expect("valid").warn_minutes, 2);
        let e = Autostop::builder(60)
            .gpu_util_percent(0)
            .build()
            .expect_err("0%");
        assert_eq!(e.field, "gpu_util_percent");
        let e = Autostop::builder(60)
            .cpu_percent(101)
            .build()
            .expect_err("101%");
        assert_eq!(e.field, "cpu_percent");
        let e = Autostop::builder(30)
            .warn_minutes(30)
            .build()
            .expect_err("as long as the idle time");
        assert_eq!(e.field, "warn_minutes");
        assert!(e.rule.contains("0 for no warning"), "{}", e.rule);
        assert_eq!(
            Autostop::builder(30)
                .warn_minutes(0)
                .build()
                .expect("no warning")
                .warn_minutes,
            0
        );
    }

    #[test]
    fn another_idle_time_keeps_the_thresholds() {
        let a = Autostop::builder(60)
            .gpu_util_percent(50)
            .cpu_percent(70)
            .warn_minutes(10)
            .build()
            .expect("valid");
        let b = a.with_idle_minutes(30).expect("valid");
        assert_eq!(
            (
                b.idle_minutes,
                b.gpu_util_percent,
                b.cpu_percent,
                b.warn_minutes
            ),
            (30, 50, 70, 10)
        );
        assert_eq!(a.with_idle_minutes(8).expect("valid").warn_minutes, 4);
        assert_eq!(
            a.with_idle_minutes(2).expect_err("short").field,
            "idle_minutes"
        );
    }
}

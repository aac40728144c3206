//! `[timeouts]`: how long each step's commands on the host may run before kgenv kills them
//! and fails the step, keyed by step id, with durations written for people (`"90s"`,
//! `"10m"`, `"1h 30m"`).
//!
//! Every remote command a step runs has a limit: the step's own default (a few minutes
//! for `mount` or an install script; for the data download, a limit on *silence* rather
//! than on the total, since pulling hundreds of GB is legitimately long). An entry here
//! replaces the step's duration and keeps what it measures. Lookup order for step
//! `data/titanic`: `"data/titanic"`, then its family `data`, then `default`.
//!
//! One key is not a step's: `first-boot` bounds how long the `host` step waits for a fresh
//! VM's first boot (the NVIDIA driver install, dpkg's lock, Docker's restart) — a wait of
//! many short probes, not one command, so `default` does not apply to it.
//!
//! ```
//! use std::time::Duration;
//! use kgenv_core::spec::Timeouts;
//! let t = Timeouts::builder().set("data", "2h").set("default", "20m").build().expect("valid");
//! assert_eq!(t.for_step("data/titanic"), Some(Duration::from_secs(7200)));
//! assert_eq!(t.for_step("bucket"), Some(Duration::from_secs(1200)));
//! assert!(Timeouts::builder().set("bukket", "1m").build().is_err());
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ValidationError;

/// The ids of the steps (and step families: `firewall/<name>`, `data/<competition>`)
/// whose commands `[timeouts]` can limit. A test in `steps` checks that every step an
/// environment can have is named here.
pub const STEP_FAMILIES: &[&str] = &[
    "preflight",
    "firewall",
    "instance",
    "data-disk",
    "host",
    "disk-mount",
    "bucket",
    "github-key",
    "image",
    "container",
    "gpu",
    "jupyter",
    "data",
    "autostop",
    "move",
];

/// The key that applies to every step without an entry of its own.
pub const DEFAULT_KEY: &str = "default";

/// The key bounding the host step's wait for first boot (only its own entry applies).
pub const FIRST_BOOT_KEY: &str = "first-boot";

/// The shortest limit accepted: anything shorter would kill healthy commands.
const MIN: Duration = Duration::from_secs(1);

/// Per-step limits on remote commands, validated. Build with [`Timeouts::builder`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeouts {
    by_key: BTreeMap<String, Duration>,
}

impl Timeouts {
    /// An empty builder (every step keeps its default).
    pub fn builder() -> TimeoutsBuilder {
        TimeoutsBuilder::default()
    }

    /// The limit the user set for `step`: its own entry, else its family's (`data` for
    /// `data/titanic`), else `default`; `None` when none applies.
    pub fn for_step(&self, step: &str) -> Option<Duration> {
        let family = step.split_once('/').map(|(f, _)| f);
        self.by_key
            .get(step)
            .or_else(|| family.and_then(|f| self.by_key.get(f)))
            .or_else(|| self.by_key.get(DEFAULT_KEY))
            .copied()
    }

    /// How long the host step may wait for first boot, when the user set it
    /// (`first-boot`; `default` does not apply).
    pub fn first_boot(&self) -> Option<Duration> {
        self.by_key.get(FIRST_BOOT_KEY).copied()
    }

    /// Whether no limit was set.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    /// Every entry, by key.
    pub fn entries(&self) -> impl Iterator<Item = (&str, Duration)> {
        self.by_key.iter().map(|(k, d)| (k.as_str(), *d))
    }
}

/// Builder for [`Timeouts`]: the `[timeouts]` table as written, checked by
/// [`build`](Self::build).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(transparent)]
#[must_use]
pub struct TimeoutsBuilder {
    entries: BTreeMap<String, String>,
}

/// A duration as kgenv's config and flags take it (`"90s"`, `"10m"`, `"1h 30m"`,
/// humantime's syntax); an error names `field`.
pub fn parse_duration(field: &str, value: &str) -> Result<Duration, ValidationError> {
    humantime::parse_duration(value.trim()).map_err(|e| {
        ValidationError::new(
            field,
            format!(
                "`{value}` is not a duration ({e}); write it like \"90s\", \"10m\" or \"1h 30m\""
            ),
        )
    })
}

impl TimeoutsBuilder {
    /// Limits the commands of step `key` (a step id, a family such as `data`, or
    /// `default`) to `duration` (`"10m"`, `"1h 30m"`).
    pub fn set(mut self, key: impl Into<String>, duration: impl Into<String>) -> Self {
        self.entries.insert(key.into(), duration.into());
        self
    }

    /// Checks every key names a step and every value is a duration of at least a second;
    /// an error's field is the key (`data/titanic`), to put under `timeouts`.
    pub fn build(self) -> Result<Timeouts, ValidationError> {
        let mut by_key = BTreeMap::new();
        for (key, value) in self.entries {
            check_key(&key)?;
            let d = parse_duration(&key, &value)?;
            if d < MIN {
                return Err(ValidationError::new(
                    &key,
                    format!("`{value}` is shorter than a second: it would kill healthy commands; give at least \"1s\""),
                ));
            }
            by_key.insert(key, d);
        }
        Ok(Timeouts { by_key })
    }
}

/// A key is `default`, a step id or family, or `firewall/<name>` / `data/<competition>`.
fn check_key(key: &str) -> Result<(), ValidationError> {
    let (family, name) = match key.split_once('/') {
        Some((f, n)) => (f, Some(n)),
        None => (key, None),
    };
    let known = key == DEFAULT_KEY
        || key == FIRST_BOOT_KEY
        || match name {
            None => STEP_FAMILIES.contains(&family),
            Some(n) => ["firewall", "data"].contains(&family) && !n.is_empty(),
        };
    if known {
        return Ok(());
    }
    Err(ValidationError::new(
        key,
        format!(
            "no step is called `{key}`: use a step id as `kgenv plan` lists them (`data/titanic`), a family ({}), `{DEFAULT_KEY}` for every step, or `{FIRST_BOOT_KEY}` for the wait for a fresh VM's first boot",
            STEP_FAMILIES.join(", ")
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_boot_has_its_own_key_that_default_does_not_set() {
        let t = Timeouts::builder()
            .set("default", "2m")
            .build()
            .expect("valid");
        assert_eq!(t.first_boot(), None);
        let t = Timeouts::builder()
            .set("first-boot", "45m")
            .build()
            .expect("valid");
        assert_eq!(t.first_boot(), Some(Duration::from_secs(45 * 60)));
        assert_eq!(t.for_step("host"), None, "first-boot limits no command");
        assert!(Timeouts::builder().set("first_boot", "1m").build().is_err());
    }

    #[test]
    fn lookup_prefers_the_step_then_its_family_then_default() {
        let t = Timeouts::builder()
            .set("data/titanic", "90s")
            .set("data", "2h")
            .set("default", "5m")
            .build()
            .expect("valid");
        assert_eq!(t.for_step("data/titanic"), Some(Duration::from_secs(90)));
        assert_eq!(t.for_step("data/houses"), Some(Duration::from_secs(7200)));
        assert_eq!(t.for_step("disk-mount"), Some(Duration::from_secs(300)));
        let none = Timeouts::builder()
            .set("bucket", "1h 30m")
            .build()
            .expect("valid");
        assert_eq!(none.for_step("bucket"), Some(Duration::from_secs(5400)));
        assert_eq!(none.for_step("disk-mount"), None);
    }

    #[test]
    fn bad_keys_and_durations_name_the_key() {
        let e = Timeouts::builder()
            .set("disk-mount", "ten minutes")
            .build()
            .expect_err("not a duration");
        assert_eq!(e.field, "disk-mount");
        assert!(e.rule.contains("\"10m\""), "{e}");
        let e = Timeouts::builder()
            .set("bukket", "1m")
            .build()
            .expect_err("unknown step");
        assert_eq!(e.field, "bukket");
        assert!(e.rule.contains("bucket"), "lists the steps: {e}");
        let e = Timeouts::builder()
            .set("gpu", "500ms")
            .build()
            .expect_err("too short");
        assert!(e.rule.contains("at least"), "{e}");
        assert!(Timeouts::builder().set("image/x", "1m").build().is_err());
        assert!(Timeouts::builder()
            .set("firewall/kg-ssh", "1m")
            .build()
            .is_ok());
    }
}

//! The firewall spec (guide step 2). kgenv never opens a port to the world on its own.

use serde::{Deserialize, Serialize};

use super::rules;
use crate::error::ValidationError;

/// A validated firewall rule spec. Build one with [`Firewall::builder`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Firewall {
    /// Rule name.
    pub name: String,
    /// `tcp` or `udp`.
    pub protocol: String,
    /// Ports or ranges.
    pub ports: Vec<String>,
    /// Allowed sources. Empty means "the caller's public IP /32", detected at run time.
    pub source_ranges: Vec<String>,
    /// Network tags the rule applies to (kgenv's instance tag by default).
    pub target_tags: Vec<String>,
}

/// Builder for [`Firewall`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[must_use]
pub struct FirewallBuilder {
    name: Option<String>,
    protocol: Option<String>,
    ports: Option<Vec<PortValue>>,
    source_ranges: Option<Vec<String>>,
    target_tags: Option<Vec<String>>,
}

/// A port written as a number (`22`) or a range string (`"8000-8100"`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
enum PortValue {
    Number(i64),
    Text(String),
}

impl Firewall {
    /// A builder for a rule named `name`, TCP, no ports yet.
    pub fn builder(name: impl Into<String>) -> FirewallBuilder {
        FirewallBuilder {
            name: Some(name.into()),
            ..FirewallBuilder::default()
        }
    }

    /// The default rule: SSH from the caller's IP only, on the environment's tag.
    pub fn default_ssh(env: &str, tag: &str) -> Firewall {
        Firewall {
            name: format!("{env}-ssh"),
            protocol: "tcp".into(),
            ports: vec!["22".into()],
            source_ranges: Vec::new(),
            target_tags: vec![tag.to_string()],
        }
    }

    /// Whether the source ranges open to the whole internet: one of them is `0.0.0.0/0` or
    /// `::/0`, or together they cover every address of a family (`0.0.0.0/1` + `128.0.0.0/1`).
    pub fn is_world_open(&self) -> bool {
        rules::is_world_open(&self.source_ranges)
    }
}

impl FirewallBuilder {
    /// Protocol, `tcp` (default) or `udp`.
    pub fn protocol(mut self, v: impl Into<String>) -> Self {
        self.protocol = Some(v.into());
        self
    }
    /// Adds a port.
    pub fn port(mut self, v: u16) -> Self {
        self.ports
            .get_or_insert_with(Vec::new)
            .push(PortValue::Number(v.into()));
        self
    }
    /// Adds a port range like `8000-8100`.
    pub fn port_range(mut self, v: impl Into<String>) -> Self {
        self.ports
            .get_or_insert_with(Vec::new)
            .push(PortValue::Text(v.into()));
        self
    }
    /// Adds an allowed source range (CIDR).
    pub fn source_range(mut self, v: impl Into<String>) -> Self {
        self.source_ranges
            .get_or_insert_with(Vec::new)
            .push(v.into());
        self
    }
    /// Adds a target tag.
    pub fn target_tag(mut self, v: impl Into<String>) -> Self {
        self.target_tags.get_or_insert_with(Vec::new).push(v.into());
        self
    }
    pub(crate) fn default_target_tag(mut self, tag: &str) -> Self {
        if self.target_tags.as_ref().is_none_or(Vec::is_empty) {
            self.target_tags = Some(vec![tag.to_string()]);
        }
        self
    }

    /// Validates and returns the spec.
    pub fn build(self) -> Result<Firewall, ValidationError> {
        let name = self
            .name
            .ok_or_else(|| ValidationError::new("name", "is required"))?;
        rules::gce_name("name", &name)?;
        let protocol = self.protocol.unwrap_or_else(|| "tcp".into());
        if !["tcp", "udp"].contains(&protocol.as_str()) {
            return Err(ValidationError::new(
                "protocol",
                format!("`{protocol}` is not `tcp` or `udp`"),
            ));
        }
        let mut ports = Vec::new();
        for p in self.ports.unwrap_or_default() {
            match p {
                PortValue::Number(n) => {
                    rules::port("ports", u32::try_from(n).unwrap_or(0))?;
                    ports.push(n.to_string());
                }
                PortValue::Text(t) => {
                    rules::port_range("ports", &t)?;
                    ports.push(t);
                }
            }
        }
        if ports.is_empty() {
            return Err(ValidationError::new(
                "ports",
                "list at least one port, e.g. [22]",
            ));
        }
        let source_ranges = self.source_ranges.unwrap_or_default();
        for r in &source_ranges {
            rules::cidr("source_ranges", r)?;
        }
        let target_tags = self.target_tags.unwrap_or_default();
        if target_tags.is_empty() {
            return Err(ValidationError::new(
                "target_tags",
                "a rule must target a network tag so it applies only to kgenv's instance",
            ));
        }
        for t in &target_tags {
            rules::gce_name("target_tags", t)?;
        }
        Ok(Firewall {
            name,
            protocol,
            ports,
            source_ranges,
            target_tags,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_fields_are_named() {
        let base = || Firewall::builder("kg-ssh").port(22).target_tag("kg");
        assert_eq!(
            Firewall::builder("Bad")
                .port(22)
                .target_tag("kg")
                .build()
                .expect_err("")
                .field,
            "name"
        );
        assert_eq!(
            base().protocol("icmpx").build().expect_err("").field,
            "protocol"
        );
        assert_eq!(base().port(0).build().expect_err("").field, "ports");
        assert_eq!(
            base().port_range("10-5").build().expect_err("").field,
            "ports"
        );
        assert_eq!(
            base()
                .source_range("10.0.0.0/99")
                .build()
                .expect_err("")
                .field,
            "source_ranges"
        );
        assert_eq!(
            Firewall::builder("kg")
                .port(22)
                .build()
                .expect_err("")
                .field,
            "target_tags"
        );
        assert_eq!(
            Firewall::builder("kg")
                .target_tag("kg")
                .build()
                .expect_err("")
                .field,
            "ports"
        );
    }

    #[test]
    fn world_open_is_detected() {
        let f = Firewall::builder("kg-jupyter")
            .port(8888)
            .source_range("0.0.0.0/0")
            .target_tag("kg")
            .build()
            .expect("valid");
        assert!(f.is_world_open());
        assert!(!Firewall::default_ssh("kg", "kg").is_world_open());
        let halves = Firewall::builder("kg-jupyter")
            .port(8888)
            .source_range("0.0.0.0/1")
            .source_range("128.0.0.0/1")
            .target_tag("kg")
            .build()
            .expect("valid");
        assert!(halves.is_world_open(), "two halves are the whole internet");
    }
}

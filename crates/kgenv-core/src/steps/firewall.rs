//! Guide step 2: a firewall rule. By default SSH from the caller's public IP only; never
//! world-open unless written out, and then `plan` warns.

use async_trait::async_trait;

use crate::backends::compute::FirewallRule;
use crate::error::{BackendError, Result};
use crate::plan::{CheckOutcome, Destroyed, Step, StepCtx};
use crate::spec::{Env, Firewall};

/// Description marker of rules kgenv owns (firewall rules have no labels).
fn owner_marker(env: &str) -> String {
    format!("managed by kgenv ({}={env})", super::OWNER_LABEL)
}

/// The caller's public IP, detected once per run whatever the number of rules.
#[derive(Default)]
struct CallerIp(tokio::sync::OnceCell<String>);

/// The range that admits exactly `ip`: `/32` for IPv4, `/128` for IPv6.
fn host_range(ip: &str) -> String {
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(_)) => format!("{ip}/128"),
        _ => format!("{ip}/32"),
    }
}

/// Creates, updates or removes one firewall rule.
pub struct FirewallStep {
    id: String,
    env: String,
    project: String,
    spec: Firewall,
    deps: Vec<String>,
}

impl FirewallStep {
    /// The step for `spec` in `env`'s project, after `deps` (the GCE preflight).
    pub fn new(env: &Env, spec: Firewall, deps: Vec<String>) -> Self {
        let project = env
            .instance
            .as_ref()
            .map(|i| i.project.clone())
            .unwrap_or_default();
        Self {
            id: format!("firewall/{}", spec.name),
            env: env.name.clone(),
            project,
            spec,
            deps,
        }
    }

    fn owned(&self, rule: &FirewallRule) -> bool {
        rule.description.contains(&owner_marker(&self.env))
    }

    fn not_ours(&self) -> crate::Error {
        BackendError::AlreadyExists {
            resource: format!(
                "firewall rule {} (not created by kgenv for `{}`; rename the rule in kgenv.toml)",
                self.spec.name, self.env
            ),
        }
        .into()
    }

    async fn desired(&self, ctx: &StepCtx) -> Result<FirewallRule> {
        let source_ranges = if self.spec.source_ranges.is_empty() {
            // Detected once per run, whatever the number of rules.
            let caller = ctx.shared::<CallerIp>();
            let ip = caller
                .0
                .get_or_try_init(|| ctx.backends.compute.caller_ip())
                .await?;
            vec![host_range(ip)]
        } else {
            self.spec.source_ranges.clone()
        };
        Ok(FirewallRule {
            project: self.project.clone(),
            name: self.spec.name.clone(),
            network: "default".into(),
            protocol: self.spec.protocol.clone(),
            ports: self.spec.ports.clone(),
            source_ranges,
            target_tags: self.spec.target_tags.clone(),
            description: owner_marker(&self.env),
        })
    }

    fn describe(r: &FirewallRule) -> String {
        format!(
            "allow {}:{} from {} to tag {}",
            r.protocol,
            r.ports.join(","),
            r.source_ranges.join(","),
            r.target_tags.join(",")
        )
    }
}

fn diff(have: &FirewallRule, want: &FirewallRule) -> Vec<String> {
    let mut d = Vec::new();
    let mut field = |name: &str, a: &Vec<String>, b: &Vec<String>| {
        if a != b {
            d.push(format!("{name}: {} → {}", a.join(","), b.join(",")));
        }
    };
    field("ports", &have.ports, &want.ports);
    field("source_ranges", &have.source_ranges, &want.source_ranges);
    field("target_tags", &have.target_tags, &want.target_tags);
    if have.protocol != want.protocol {
        d.push(format!("protocol: {} → {}", have.protocol, want.protocol));
    }
    d
}

#[async_trait]
impl Step for FirewallStep {
    fn id(&self) -> &str {
        &self.id
    }
    fn deps(&self) -> &[String] {
        &self.deps
    }
    fn summary(&self) -> String {
        let from = if self.spec.source_ranges.is_empty() {
            "your public IP /32".to_string()
        } else {
            self.spec.source_ranges.join(",")
        };
        format!(
            "firewall rule {}: {} {} from {}",
            self.spec.name,
            self.spec.protocol,
            self.spec.ports.join(","),
            from
        )
    }
    fn warnings(&self) -> Vec<String> {
        if self.spec.is_world_open() {
            vec![format!("firewall rule {} opens {} port(s) {} to the WHOLE INTERNET; prefer the SSH tunnel (`kgenv jupyter`) or your IP range", self.spec.name, self.spec.protocol, self.spec.ports.join(","))]
        } else {
            Vec::new()
        }
    }
    fn planned_actions(&self) -> Vec<String> {
        vec![format!(
            "POST compute/v1/projects/{}/global/firewalls (insert {})",
            self.project, self.spec.name
        )]
    }
    async fn check(&self, ctx: &StepCtx) -> Result<CheckOutcome> {
        let want = self.desired(ctx).await?;
        match ctx
            .backends
            .compute
            .get_firewall(&self.project, &self.spec.name)
            .await?
        {
            None => Ok(CheckOutcome::missing(vec![format!(
                "POST compute/v1/projects/{}/global/firewalls (insert {}: {})",
                self.project,
                want.name,
                Self::describe(&want)
            )])),
            Some(have) if !self.owned(&have) => Err(self.not_ours()),
            Some(have) => {
                let d = diff(&have, &want);
                if d.is_empty() {
                    Ok(CheckOutcome::satisfied())
                } else {
                    Ok(CheckOutcome::drifted(
                        d,
                        vec![format!(
                            "PATCH compute/v1/projects/{}/global/firewalls/{}",
                            self.project, want.name
                        )],
                    ))
                }
            }
        }
    }
    async fn apply(&self, ctx: &StepCtx) -> Result<()> {
        let want = self.desired(ctx).await?;
        let compute = &ctx.backends.compute;
        match compute.get_firewall(&self.project, &self.spec.name).await? {
            None => match compute.insert_firewall(&want).await {
                Ok(()) => {}
                // Made meanwhile (another run, or an insert that landed): adopt it only if
                // it is ours, never rewrite someone else's rule.
                Err(BackendError::AlreadyExists { .. }) => {
                    match compute.get_firewall(&self.project, &self.spec.name).await? {
                        Some(have) if self.owned(&have) => {
                            if !diff(&have, &want).is_empty() {
                                compute.patch_firewall(&want).await?;
                            }
                        }
                        _ => return Err(self.not_ours()),
                    }
                }
                Err(e) => return Err(e.into()),
            },
            Some(have) if !self.owned(&have) => return Err(self.not_ours()),
            Some(have) => {
                if !diff(&have, &want).is_empty() {
                    compute.patch_firewall(&want).await?;
                }
            }
        }
        ctx.state
            .update(&self.id, |r| {
                r.created.insert(
                    "firewall".into(),
                    format!(
                        "projects/{}/global/firewalls/{}",
                        self.project, self.spec.name
                    ),
                );
            })
            .await?;
        ctx.log(format!("firewall {}: {}", want.name, Self::describe(&want)));
        Ok(())
    }
    async fn destroy(&self, ctx: &StepCtx) -> Result<Destroyed> {
        let state = ctx.state.snapshot().await;
        if state.step(&self.id).is_none_or(|r| r.created.is_empty()) {
            // Not recorded (a run that died between insert and record): delete it only if
            // its description says it is this environment's.
            match ctx
                .backends
                .compute
                .get_firewall(&self.project, &self.spec.name)
                .await?
            {
                Some(have) if self.owned(&have) => {}
                _ => return Ok(Destroyed::Nothing),
            }
        }
        match ctx
            .backends
            .compute
            .delete_firewall(&self.project, &self.spec.name)
            .await
        {
            Ok(()) | Err(BackendError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        ctx.state
            .update(&self.id, |r| *r = Default::default())
            .await?;
        Ok(Destroyed::Removed)
    }
}

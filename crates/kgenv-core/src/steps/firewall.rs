//! Guide step 2: a firewall rule. By default SSH from the caller's public IP only; never
//! world-open unless written out, and then `plan` warns.
//!
//! Firewall rules have no labels: the environment's owner id is written into the rule's
//! description, `up` changes only a rule that carries it, and `down` deletes the rule the
//! state recorded after checking the description still carries it.

use async_trait::async_trait;

use crate::backends::compute::FirewallRule;
use crate::error::{BackendError, Result};
use crate::plan::{CheckOutcome, Destroyed, Step, StepCtx};
use crate::spec::{Env, Firewall};
use crate::state::{Owner, State};

/// Description of rules kgenv owns (firewall rules have no labels).
fn owner_marker(owner: &Owner) -> String {
    format!("managed by kgenv ({})", owner.mark())
}

/// The rule the state recorded for step `id` (`projects/p/global/firewalls/n`).
fn recorded_rule(state: &State, id: &str) -> Option<(String, String)> {
    let link = state.step(id)?.created.get("firewall")?;
    let rest = &link[link.find("projects/")?..];
    match rest.split('/').collect::<Vec<_>>().as_slice() {
        ["projects", p, "global", "firewalls", n] => Some(((*p).into(), (*n).into())),
        _ => None,
    }
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

    fn not_ours(&self) -> crate::Error {
        BackendError::AlreadyExists {
            resource: format!(
                "firewall rule {} (its description does not carry the owner id of `{}`: another person's or another state directory's rule, or one made outside kgenv); kgenv leaves it alone — rename the rule in kgenv.toml",
                self.spec.name, self.env
            ),
        }
        .into()
    }

    async fn desired(&self, ctx: &StepCtx, owner: &Owner) -> Result<FirewallRule> {
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
            description: owner_marker(owner),
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
    if have.description != want.description {
        // A rule made before owner ids: mark it with the id.
        d.push(format!(
            "description: `{}` → `{}`",
            have.description, want.description
        ));
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
        let owner = ctx.owner().await;
        let want = self.desired(ctx, &owner).await?;
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
            Some(have) if !owner.owns_text(&have.description) => Err(self.not_ours()),
            Some(have) => {
                let d = diff(&have, &want);
                if d.is_empty() {
                    // Made by a run killed before it recorded the rule: record it now, so
                    // the state file lists it and `down` deletes it by its record.
                    if recorded_rule(&ctx.state.snapshot().await, &self.id).is_none() {
                        return Ok(CheckOutcome::drifted(
                            vec!["not recorded in the state file yet".into()],
                            vec![],
                        ));
                    }
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
        let owner = ctx.owner().await;
        let want = self.desired(ctx, &owner).await?;
        let compute = &ctx.backends.compute;
        match compute.get_firewall(&self.project, &self.spec.name).await? {
            None => match compute.insert_firewall(&want).await {
                Ok(()) => {}
                // Made meanwhile (another run, or an insert that landed): adopt it only if
                // it is ours, never rewrite someone else's rule.
                Err(BackendError::AlreadyExists { .. }) => {
                    match compute.get_firewall(&self.project, &self.spec.name).await? {
                        Some(have) if owner.owns_text(&have.description) => {
                            if !diff(&have, &want).is_empty() {
                                compute.patch_firewall(&want).await?;
                            }
                        }
                        _ => return Err(self.not_ours()),
                    }
                }
                Err(e) => return Err(e.into()),
            },
            Some(have) if !owner.owns_text(&have.description) => return Err(self.not_ours()),
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
        let owner = state.owner();
        let compute = &ctx.backends.compute;
        // The rule the state recorded (never one found by a renamed config's name); not
        // recorded (a run that died between insert and record): the spec's name, if the
        // rule carries this environment's owner id.
        let (project, name) = match recorded_rule(&state, &self.id) {
            Some(r) => r,
            None if owner.id.is_some() => (self.project.clone(), self.spec.name.clone()),
            None => return Ok(Destroyed::Nothing),
        };
        match compute.get_firewall(&project, &name).await? {
            Some(have) if owner.owns_text(&have.description) => {}
            Some(_) => {
                ctx.warn(format!("firewall rule {name} no longer carries this environment's owner id; kgenv leaves it alone and forgets it"));
                return self.forget(ctx, &state).await;
            }
            None => return self.forget(ctx, &state).await,
        }
        match compute.delete_firewall(&project, &name).await {
            Ok(()) | Err(BackendError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        ctx.state
            .update(&self.id, |r| *r = Default::default())
            .await?;
        Ok(Destroyed::Removed)
    }
}

impl FirewallStep {
    /// Drops the record of a rule that is gone or no longer ours.
    async fn forget(&self, ctx: &StepCtx, state: &State) -> Result<Destroyed> {
        if state.step(&self.id).is_none() {
            return Ok(Destroyed::Nothing);
        }
        ctx.state
            .update(&self.id, |r| *r = Default::default())
            .await?;
        Ok(Destroyed::Nothing)
    }
}

//! Guide step 3: an SSH key for GitHub, generated ON the host (the private key never leaves
//! it) and registered through GitHub's keys API — a read-only deploy key by default.

use async_trait::async_trait;

use crate::backends::github::KeyScope;
use crate::backends::remote::ExecRequest;
use crate::backends::no_progress;
use crate::error::{BackendError, Result};
use crate::plan::{CheckOutcome, Destroyed, Step, StepCtx};
use crate::shell::Cmd;
use crate::spec::{Env, GithubKey};

/// Ensures the host's GitHub key is registered.
pub struct GithubKeyStep {
    spec: GithubKey,
    dir: String,
    deps: Vec<String>,
}

impl GithubKeyStep {
    /// The step for `spec` on `env`'s host.
    pub fn new(env: &Env, spec: GithubKey) -> Self {
        Self { spec, dir: format!("{}/github", env.host_dir()), deps: vec!["host".into()] }
    }

    fn key_path(&self) -> String {
        format!("{}/id_ed25519", self.dir)
    }

    fn scope(&self) -> KeyScope {
        self.spec.repo.clone().map_or(KeyScope::User, KeyScope::Repo)
    }

    /// `ssh-ed25519 AAAA…` without the comment, for comparing with GitHub's copy.
    fn key_body(line: &str) -> String {
        line.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
    }

    async fn host_public_key(&self, ctx: &StepCtx) -> Result<Option<String>> {
        let remote = ctx.require_remote().await?;
        Ok(remote.read_file(&format!("{}.pub", self.key_path())).await?.map(|b| String::from_utf8_lossy(&b).trim().to_string()))
    }
}

#[async_trait]
impl Step for GithubKeyStep {
    fn id(&self) -> &str {
        "github-key"
    }
    fn deps(&self) -> &[String] {
        &self.deps
    }
    fn summary(&self) -> String {
        match &self.spec.repo {
            Some(r) => format!("GitHub deploy key `{}` on {r} ({})", self.spec.title, if self.spec.read_only { "read-only" } else { "read-write" }),
            None => format!("GitHub user key `{}`", self.spec.title),
        }
    }
    fn planned_actions(&self) -> Vec<String> {
        vec![
            format!("host: ssh-keygen -t ed25519 -f {}", self.key_path()),
            match &self.spec.repo {
                Some(r) => format!("POST /repos/{r}/keys"),
                None => "POST /user/keys".into(),
            },
        ]
    }
    async fn check(&self, ctx: &StepCtx) -> Result<CheckOutcome> {
        let Some(public) = self.host_public_key(ctx).await? else {
            return Ok(CheckOutcome::missing(self.planned_actions()));
        };
        let body = Self::key_body(&public);
        let keys = ctx.backends.github.list_keys(&self.scope()).await?;
        if keys.iter().any(|k| Self::key_body(&k.key) == body) {
            Ok(CheckOutcome::satisfied())
        } else {
            Ok(CheckOutcome::missing(self.planned_actions()[1..].to_vec()))
        }
    }
    async fn apply(&self, ctx: &StepCtx) -> Result<()> {
        let remote = ctx.require_remote().await?;
        let public = match self.host_public_key(ctx).await? {
            Some(p) => p,
            None => {
                remote.exec(ExecRequest::new(Cmd::new("mkdir").arg("-p").arg(&self.dir).line()), &no_progress).await?;
                let keygen = Cmd::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C"]).arg(&self.spec.title).arg("-f").arg(self.key_path());
                let out = remote.exec(ExecRequest::new(keygen.line()), &no_progress).await?;
                if !out.success() {
                    return Err(BackendError::CommandFailed { command: "ssh-keygen".into(), exit_code: out.exit_code, stderr_tail: out.stderr_tail() }.into());
                }
                self.host_public_key(ctx).await?.ok_or_else(|| BackendError::other(format!("ssh-keygen wrote no {}.pub", self.key_path())))?
            }
        };
        let scope = self.scope();
        let github = &ctx.backends.github;
        let info = match github.add_key(&scope, &self.spec.title, &public, self.spec.read_only).await {
            Ok(info) => info,
            // 422 "key is already in use": ours if it is in this scope.
            Err(BackendError::AlreadyExists { resource }) => {
                let body = Self::key_body(&public);
                github.list_keys(&scope).await?.into_iter().find(|k| Self::key_body(&k.key) == body).ok_or(BackendError::AlreadyExists { resource })?
            }
            Err(e) => return Err(e.into()),
        };
        ctx.state.update("github-key", |r| {
            r.created.insert("github_key_id".into(), info.id.to_string());
            r.facts.insert("public_key".into(), public.clone());
        }).await?;
        ctx.log(format!("registered {} (id {})", self.summary(), info.id));
        Ok(())
    }
    async fn destroy(&self, ctx: &StepCtx) -> Result<Destroyed> {
        let state = ctx.state.snapshot().await;
        let Some(id) = state.step("github-key").and_then(|r| r.created.get("github_key_id")).and_then(|v| v.parse::<u64>().ok()) else {
            return Ok(Destroyed::Nothing);
        };
        match ctx.backends.github.delete_key(&self.scope(), id).await {
            Ok(()) | Err(BackendError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        ctx.state.update("github-key", |r| *r = Default::default()).await?;
        Ok(Destroyed::Removed)
    }
}

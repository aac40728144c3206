//! Guide step 3: an SSH key for GitHub, generated ON the host (the private key never leaves
//! it) and registered through GitHub's keys API — a read-only deploy key by default —,
//! idempotent by the key's SHA-256 fingerprint.
//!
//! The host script also pins GitHub's SSH host keys from its `/meta` endpoint into
//! `{host_dir}/github/known_hosts` and adds an ssh config stanza (for the login user) using
//! that key and that known_hosts file, so `git clone git@github.com:…` works on the host and
//! never trusts a first connection.
//!
//! The container gets the same key and known_hosts, read-only ([`container_mounts`]), so
//! `git clone git@github.com:…` also works from a Jupyter terminal with no setup.
//!
//! Without `GITHUB_TOKEN` the step does not fail: it makes the key, then emits a warning
//! with the public key and the exact settings page to paste it into, and counts as done
//! (it cannot see GitHub's side, so later runs repeat the warning and report satisfied).

use async_trait::async_trait;

use super::script::{HostScript, ScriptBuilder};
use crate::backends::container::BindMount;
use crate::backends::github::{key_fingerprint, ssh_host, KeyScope};
use crate::error::{BackendError, Result};
use crate::plan::{CheckOutcome, Destroyed, Step, StepCtx};
use crate::spec::{Env, GithubKey};
use crate::state::Owner;

/// The step's id (the container step waits for it: the files it mounts must exist).
pub const STEP_ID: &str = "github-key";

/// Where the container sees the private key (and `.pub` beside it): the first default
/// identity OpenSSH tries for root, the user of Kaggle's image (and of the Jupyter
/// terminals it starts), so `ssh` and `git` use it with no config. ssh's check that a key
/// is not group/world readable applies only to keys owned by the user running ssh: the
/// file is 0600 and owned by the host's login user, and the container's root reads it
/// (CAP_DAC_OVERRIDE) whichever uid that is.
pub const KEY_IN_CONTAINER: &str = "/root/.ssh/id_ed25519";

/// Where the container sees GitHub's pinned host keys: OpenSSH's global known_hosts,
/// read for every user and never written by ssh, so a read-only file fits it, while
/// `~/.ssh/known_hosts` stays writable for the user's other hosts. A GitHub key offered
/// that is not pinned there fails ssh's host key check (default `ask` refuses a changed
/// key; with no terminal, an unknown one too).
pub const KNOWN_HOSTS_IN_CONTAINER: &str = "/etc/ssh/ssh_known_hosts";

/// The host directory holding `env`'s GitHub key pair and pinned known_hosts.
pub fn key_dir(env: &Env) -> String {
    format!("{}/github", env.host_dir())
}

/// The read-only bind mounts giving the container the key pair and known_hosts kept in
/// `key_dir` on the host. Single files, not the directory: `~/.ssh` stays the user's.
/// A single-file bind holds the file it found at create time, so the container step
/// labels the container with the key's fingerprint and the known_hosts hash (recorded
/// by this step) and recreates it when either changes.
pub fn container_mounts(key_dir: &str) -> Vec<BindMount> {
    [
        ("id_ed25519", KEY_IN_CONTAINER.to_string()),
        ("id_ed25519.pub", format!("{KEY_IN_CONTAINER}.pub")),
        ("known_hosts", KNOWN_HOSTS_IN_CONTAINER.to_string()),
    ]
    .into_iter()
    .map(|(file, target)| BindMount {
        source: format!("{key_dir}/{file}"),
        target,
        read_only: true,
        propagation: None,
    })
    .collect()
}

/// The state fact holding the key's SHA-256 fingerprint.
pub const FINGERPRINT_FACT: &str = "fingerprint";
/// The state fact holding a short hash of the known_hosts file written on the host.
pub const KNOWN_HOSTS_FACT: &str = "known_hosts";

/// Everything the github-key host script is rendered from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GithubKeyScript {
    /// Directory holding the key pair and known_hosts (made 0700, owned by the login user).
    pub key_dir: String,
    /// The key's comment (the spec's title).
    pub title: String,
    /// GitHub's SSH host name (`github.com`, or the Enterprise server).
    pub ssh_host: String,
    /// GitHub's published host keys (`/meta` `ssh_keys`), `ssh-ed25519 AAAA…` lines.
    pub host_keys: Vec<String>,
    /// The ssh config file the stanza goes to (a drop-in of `/etc/ssh/ssh_config.d`).
    pub ssh_config: String,
}

/// The helper functions of the github-key script.
const GITHUB_KEY_HELPERS: &str = r#"# The login user the key belongs to (the script runs through sudo).
key_owner() {
  printf '%s\n' "${SUDO_USER:-$(id -un)}"
}

# The ssh config stanza: only for the key's owner and only for GitHub's host.
config_text() {
  printf '# kgenv: GitHub key, host keys pinned from /meta\n'
  printf 'Match host %s localuser %s\n' "$SSH_HOST" "$(key_owner)"
  printf '  User git\n'
  printf '  IdentityFile "%s"\n' "$KEY_FILE"
  printf '  IdentitiesOnly yes\n'
  printf '  UserKnownHostsFile "%s"\n' "$KNOWN_HOSTS_FILE"
  printf '  StrictHostKeyChecking yes\n'
}"#;

impl GithubKeyScript {
    /// The private key's path.
    pub fn key_file(&self) -> String {
        format!("{}/id_ed25519", self.key_dir)
    }

    /// known_hosts lines: `HOST KEY` for each published key.
    pub fn known_hosts(&self) -> String {
        self.host_keys
            .iter()
            .map(|k| format!("{} {}", self.ssh_host, k.trim()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Renders the script: `check` (key pair with mode 0600 owned by the login user,
    /// known_hosts and ssh config as rendered), `apply` (generate the key only when missing),
    /// `destroy` (remove the key, known_hosts and stanza).
    pub fn render(&self) -> HostScript {
        ScriptBuilder::new("github-key")
            .var("KEY_DIR", &self.key_dir)
            .var("KEY_FILE", self.key_file())
            .var("KNOWN_HOSTS_FILE", format!("{}/known_hosts", self.key_dir))
            .var("TITLE", &self.title)
            .var("SSH_HOST", &self.ssh_host)
            .var("KNOWN_HOSTS", self.known_hosts())
            .var("SSH_CONFIG", &self.ssh_config)
            .helper(GITHUB_KEY_HELPERS)
            .helper(super::script::FILE_PUT_FN)
            .check(
                r#"[ -s "$KEY_FILE" ] && [ -s "$KEY_FILE.pub" ] || exit 1
[ "$(stat -c %a "$KEY_FILE")" = 600 ] || exit 1
[ "$(stat -c %U "$KEY_FILE")" = "$(key_owner)" ] || exit 1
[ "$(stat -c %a "$KEY_DIR")" = 700 ] || exit 1
[ "$(cat "$KNOWN_HOSTS_FILE" 2>/dev/null)" = "$KNOWN_HOSTS" ] || exit 1
[ "$(cat "$SSH_CONFIG" 2>/dev/null)" = "$(config_text)" ] || exit 1"#,
            )
            .apply(
                r#"owner=$(key_owner)
mkdir -p "$KEY_DIR"
chmod 0700 "$KEY_DIR"
if [ ! -s "$KEY_FILE" ]; then
  rm -f "$KEY_FILE" "$KEY_FILE.pub"
  ssh-keygen -q -t ed25519 -N '' -C "$TITLE" -f "$KEY_FILE"
fi
if [ ! -s "$KEY_FILE.pub" ]; then
  ssh-keygen -y -f "$KEY_FILE" > "$KEY_FILE.pub"
fi
file_put "$KNOWN_HOSTS_FILE" 0644 "$KNOWN_HOSTS"
chmod 0600 "$KEY_FILE"
chmod 0644 "$KEY_FILE.pub" "$KNOWN_HOSTS_FILE"
chown -R "$owner:" "$KEY_DIR"
mkdir -p "$(dirname "$SSH_CONFIG")"
file_put_from "$SSH_CONFIG" 0644 config_text"#,
            )
            .destroy(
                r#"rm -f "$SSH_CONFIG"
rm -rf "$KEY_DIR""#,
            )
            .build()
    }
}

/// Ensures the host's GitHub key is registered.
pub struct GithubKeyStep {
    env: String,
    spec: GithubKey,
    dir: String,
    deps: Vec<String>,
}

impl GithubKeyStep {
    /// The step for `spec` on `env`'s host.
    pub fn new(env: &Env, spec: GithubKey) -> Self {
        Self {
            env: env.name.clone(),
            spec,
            dir: key_dir(env),
            deps: vec![super::data_root_ready(env).into()],
        }
    }

    /// The key's title on GitHub: the spec's title and the environment's owner mark.
    fn title(&self, owner: &Owner) -> String {
        format!("{} ({})", self.spec.title, owner.mark())
    }

    fn key_path(&self) -> String {
        format!("{}/id_ed25519", self.dir)
    }

    fn scope(&self) -> KeyScope {
        self.spec
            .repo
            .clone()
            .map_or(KeyScope::User, KeyScope::Repo)
    }

    /// What the host script for GitHub at `web_url` with its published `host_keys` is
    /// rendered from.
    pub fn script_spec(&self, web_url: &str, host_keys: Vec<String>) -> GithubKeyScript {
        GithubKeyScript {
            key_dir: self.dir.clone(),
            title: self.spec.title.clone(),
            ssh_host: ssh_host(web_url),
            host_keys,
            ssh_config: format!("/etc/ssh/ssh_config.d/kgenv-{}-github.conf", self.env),
        }
    }

    /// The host script for GitHub at `web_url` with its published `host_keys`.
    pub fn script(&self, web_url: &str, host_keys: Vec<String>) -> HostScript {
        self.script_spec(web_url, host_keys).render()
    }

    async fn host_public_key(&self, ctx: &StepCtx) -> Result<Option<String>> {
        let remote = ctx.require_remote().await?;
        Ok(remote
            .read_file(&format!("{}.pub", self.key_path()))
            .await?
            .map(|b| String::from_utf8_lossy(&b).trim().to_string()))
    }

    /// What to tell a user who has no token: the key and where to paste it.
    pub fn manual_instructions(&self, web_url: &str, public: &str) -> String {
        let scope = self.scope();
        let what = match (&scope, self.spec.read_only) {
            (KeyScope::Repo(r), true) => {
                format!("as a deploy key of {r} (leave \"Allow write access\" unticked)")
            }
            (KeyScope::Repo(r), false) => {
                format!("as a deploy key of {r} with \"Allow write access\" ticked")
            }
            (KeyScope::User, _) => "as an authentication key of your account".into(),
        };
        format!(
            "GITHUB_TOKEN is not set, so kgenv cannot register or verify the host's GitHub key. Add it {what} at {url} (title `{title}`, fingerprint {fp}):\n{public}\nor export GITHUB_TOKEN and run `kgenv up` again.",
            url = scope.settings_url(web_url),
            title = self.spec.title,
            fp = key_fingerprint(public).unwrap_or_else(|| "unknown".into()),
        )
    }
}

#[async_trait]
impl Step for GithubKeyStep {
    fn id(&self) -> &str {
        STEP_ID
    }
    fn deps(&self) -> &[String] {
        &self.deps
    }
    fn summary(&self) -> String {
        match &self.spec.repo {
            Some(r) => format!(
                "GitHub deploy key `{}` on {r} ({})",
                self.spec.title,
                if self.spec.read_only {
                    "read-only"
                } else {
                    "read-write"
                }
            ),
            None => format!("GitHub user key `{}`", self.spec.title),
        }
    }
    fn planned_actions(&self) -> Vec<String> {
        vec![
            "GET /meta (GitHub's SSH host keys)".into(),
            format!("host: sh -s -- apply  # github-key: ssh-keygen -t ed25519 -f {} when missing, known_hosts, ssh config", self.key_path()),
            format!("POST {}", self.scope().keys_path()),
        ]
    }
    async fn check(&self, ctx: &StepCtx) -> Result<CheckOutcome> {
        let github = &ctx.backends.github;
        let script = self.script(&github.web_url(), github.ssh_host_keys().await?);
        let remote = ctx.require_remote().await?;
        let converged = script.is_converged(ctx, remote.as_ref()).await?;
        let public = self.host_public_key(ctx).await?;
        let public = match (public, converged) {
            (Some(p), true) => p,
            (Some(_), false) => {
                return Ok(CheckOutcome::drifted(
                    vec!["host: key modes, known_hosts or ssh config differ".into()],
                    self.planned_actions(),
                ))
            }
            (None, _) => return Ok(CheckOutcome::missing(self.planned_actions())),
        };
        let fp = key_fingerprint(&public);
        let recorded = ctx.state.snapshot().await;
        match github.list_keys(&self.scope()).await {
            Ok(keys) => match keys
                .iter()
                .find(|k| fp.is_some() && key_fingerprint(&k.key) == fp)
            {
                Some(k)
                    if recorded
                        .step(STEP_ID)
                        .and_then(|r| r.created.get("github_key_id"))
                        == Some(&k.id.to_string()) =>
                {
                    Ok(CheckOutcome::satisfied())
                }
                // Registered by a run killed before it recorded the key: record it, so
                // `down` removes it.
                Some(_) => Ok(CheckOutcome::drifted(
                    vec!["registered key not recorded in the state file yet".into()],
                    vec![],
                )),
                None => Ok(CheckOutcome::missing(self.planned_actions()[2..].to_vec())),
            },
            Err(BackendError::Unavailable { .. }) => {
                ctx.warn(self.manual_instructions(&github.web_url(), &public));
                Ok(CheckOutcome::satisfied())
            }
            Err(e) => Err(e.into()),
        }
    }
    async fn apply(&self, ctx: &StepCtx) -> Result<()> {
        let github = &ctx.backends.github;
        let web_url = github.web_url();
        let spec = self.script_spec(&web_url, github.ssh_host_keys().await?);
        let known_hosts = super::short_hash(spec.known_hosts().as_bytes());
        let remote = ctx.require_remote().await?;
        spec.render().run(ctx, remote.as_ref(), "apply").await?;
        let public = self.host_public_key(ctx).await?.ok_or_else(|| {
            BackendError::other(format!(
                "the github-key script wrote no {}.pub",
                self.key_path()
            ))
        })?;
        let fp = key_fingerprint(&public).ok_or_else(|| {
            BackendError::other(format!(
                "{}.pub on the host is not an SSH public key",
                self.key_path()
            ))
        })?;
        ctx.state
            .update(STEP_ID, |r| {
                r.created.insert("host_key".into(), self.key_path());
                r.facts.insert("public_key".into(), public.clone());
                r.facts.insert(FINGERPRINT_FACT.into(), fp.clone());
                // The container step recreates the container when these change: its
                // single-file binds keep the files they were made with.
                r.facts.insert(KNOWN_HOSTS_FACT.into(), known_hosts.clone());
            })
            .await?;
        let scope = self.scope();
        let find = |keys: Vec<crate::backends::github::GithubKeyInfo>| {
            keys.into_iter()
                .find(|k| key_fingerprint(&k.key).as_ref() == Some(&fp))
        };
        // Registered already (a re-run after a crash or a lost state file)? Then adopt it.
        let existing = match github.list_keys(&scope).await {
            Ok(keys) => find(keys),
            Err(BackendError::Unavailable { .. }) => {
                ctx.warn(self.manual_instructions(&web_url, &public));
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        let info = match existing {
            Some(k) => k,
            None => match github.add_key(&scope, &self.title(&ctx.owner().await), &public, self.spec.read_only).await {
                Ok(info) => info,
                // 422 "key is already in use": ours if it appeared in this scope meanwhile.
                Err(BackendError::AlreadyExists { resource }) => match find(github.list_keys(&scope).await?) {
                    Some(k) => k,
                    None => {
                        return Err(BackendError::AlreadyExists {
                            resource: format!("{resource}: the host's key {fp} is registered elsewhere on {web_url} (another repository's deploy key, or a user key); remove it there, or delete {} on the host to make a new key", self.key_path()),
                        }
                        .into())
                    }
                },
                Err(e) => return Err(e.into()),
            },
        };
        ctx.state
            .update(STEP_ID, |r| {
                r.created
                    .insert("github_key_id".into(), info.id.to_string());
            })
            .await?;
        ctx.log(format!(
            "registered {} (id {}, {fp})",
            self.summary(),
            info.id
        ));
        Ok(())
    }
    async fn destroy(&self, ctx: &StepCtx) -> Result<Destroyed> {
        let state = ctx.state.snapshot().await;
        let Some(record) = state.step(STEP_ID).filter(|r| !r.created.is_empty()) else {
            return Ok(Destroyed::Nothing);
        };
        let github = &ctx.backends.github;
        if let Some(id) = record
            .created
            .get("github_key_id")
            .and_then(|v| v.parse::<u64>().ok())
        {
            // Delete the key the state recorded only while GitHub still holds that very
            // key (the recorded fingerprint) under that id.
            let still_ours = match github.list_keys(&self.scope()).await {
                Ok(keys) => keys.iter().find(|k| k.id == id).map(|k| {
                    key_fingerprint(&k.key).as_ref() == record.facts.get(FINGERPRINT_FACT)
                }),
                Err(BackendError::Unavailable { .. }) => Some(true),
                Err(e) => return Err(e.into()),
            };
            if still_ours == Some(false) {
                ctx.warn(format!(
                    "GitHub key id {id} no longer holds the host's key; kgenv leaves it alone"
                ));
            }
            let delete = if still_ours == Some(true) {
                github.delete_key(&self.scope(), id).await
            } else {
                Ok(())
            };
            match delete {
                Ok(()) | Err(BackendError::NotFound { .. }) => {}
                Err(BackendError::Unavailable { .. }) => {
                    let url = self.scope().settings_url(&github.web_url());
                    ctx.warn(format!(
                        "GITHUB_TOKEN is not set: remove the key `{}` (id {id}) by hand from {}",
                        self.spec.title,
                        url.trim_end_matches("/new")
                    ));
                }
                Err(e) => return Err(e.into()),
            }
            ctx.state
                .update(STEP_ID, |r| {
                    r.created.remove("github_key_id");
                })
                .await?;
        } else if let Some(fp) = record.facts.get(FINGERPRINT_FACT) {
            let url = self.scope().settings_url(&github.web_url());
            ctx.warn(format!("if you added the host's key {fp} to GitHub by hand, remove it from {} (its private key is deleted from the host now)", url.trim_end_matches("/new")));
        }
        if record.created.contains_key("host_key") {
            // Destroy does not use the host keys: no /meta call needed while tearing down.
            let remote = ctx.require_remote().await?;
            self.script(&github.web_url(), Vec::new())
                .run(ctx, remote.as_ref(), "destroy")
                .await?;
        }
        ctx.state
            .update(STEP_ID, |r| *r = Default::default())
            .await?;
        Ok(Destroyed::Removed)
    }
}

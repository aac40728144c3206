//! The state file: what kgenv created for an environment and where, so `status` and `down`
//! work from another shell and after a crash. Written atomically after every change, with
//! the previous file kept as `<env>.json.bak`; never holds a secret (only names, ids, zones,
//! paths and public keys).
//!
//! A file is trusted only when it can be: a newer format, an empty or corrupt file, or a
//! state for another target is refused with an error naming the file, and never rewritten.
//! An older format is migrated on read; fields kgenv does not know are kept on rewrite.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::error::StateError;
use crate::paths;

/// Current state-file format version. Version 1 is what every kgenv before owner ids wrote
/// (no `owner`); version 2 adds `owner` and `owner_pending` and keeps unknown fields. A file
/// with a higher version is refused: its meaning may have changed in ways this kgenv cannot
/// see, and rewriting it would drop what the newer kgenv recorded.
pub const STATE_VERSION: u32 = 2;

/// Label (and description mark) with the environment's name, on everything kgenv makes.
pub const ENV_LABEL: &str = "kgenv-env";

/// Label with the environment's owner id: what makes a resource this environment's.
/// Two state directories using one environment name in one project get different ids.
pub const OWNER_ID_LABEL: &str = "kgenv-owner";

/// Who owns a resource: the environment name and, once the first `up` made it, the
/// random owner id kept in the state file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// Environment name.
    pub env: String,
    /// The owner id (`None` for a state from before owner ids, until the next `up`).
    pub id: Option<String>,
    /// This state had resources before it had an id: resources labelled with the
    /// environment name alone are accepted (and marked with the id) until an `up` ends.
    pub legacy: bool,
}

impl Owner {
    /// The labels kgenv writes on what it makes.
    pub fn labels(&self) -> BTreeMap<String, String> {
        let mut l = BTreeMap::from([
            (ENV_LABEL.to_string(), self.env.clone()),
            ("managed-by".to_string(), "kgenv".to_string()),
        ]);
        if let Some(id) = &self.id {
            l.insert(OWNER_ID_LABEL.into(), id.clone());
        }
        l
    }

    /// Whether a resource with `labels` is this environment's: it carries the owner id, or
    /// (only for a state from before owner ids) the environment name and no owner id.
    pub fn owns(&self, labels: &BTreeMap<String, String>) -> bool {
        let named = labels.get(ENV_LABEL) == Some(&self.env);
        match (&self.id, labels.get(OWNER_ID_LABEL)) {
            (Some(id), Some(theirs)) => id == theirs,
            (Some(_), None) => self.legacy && named,
            (None, Some(_)) => false,
            (None, None) => named,
        }
    }

    /// The mark kgenv writes where a resource has no labels (a firewall's description, a
    /// GitHub key's title): `kgenv-env=<env> kgenv-owner=<id>`.
    pub fn mark(&self) -> String {
        match &self.id {
            Some(id) => format!("{ENV_LABEL}={} {OWNER_ID_LABEL}={id}", self.env),
            None => format!("{ENV_LABEL}={}", self.env),
        }
    }

    /// Whether a description or title carries this environment's [`mark`](Self::mark)
    /// (with the same rules as [`owns`](Self::owns)).
    pub fn owns_text(&self, text: &str) -> bool {
        let words: BTreeMap<String, String> = text
            .split(|c: char| c.is_whitespace() || c == '(' || c == ')' || c == ',')
            .filter_map(|w| w.split_once('='))
            .filter(|(k, _)| *k == ENV_LABEL || *k == OWNER_ID_LABEL)
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.owns(&words)
    }
}

/// A new random owner id: 16 lowercase hex characters (a valid GCE label value).
pub fn new_owner_id() -> String {
    let mut bytes = [0u8; 8];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
    hex::encode(bytes)
}

/// What one step created.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    /// Resources the step created, by role (`instance` → `projects/p/zones/z/instances/n`).
    pub created: BTreeMap<String, String>,
    /// Facts the step observed that later steps or commands need (zone used, external IP,
    /// host keys, key paths).
    pub facts: BTreeMap<String, String>,
    /// Fingerprint of the spec the step last applied, to detect drift.
    pub spec_hash: Option<String>,
    /// Fields this kgenv does not know (added by a tool or by hand), kept on rewrite.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl StepRecord {
    /// Whether the record says nothing kgenv uses: the step is then dropped from the state
    /// (with any unknown fields, which belonged to the step's record).
    fn is_blank(&self) -> bool {
        self.created.is_empty() && self.facts.is_empty() && self.spec_hash.is_none()
    }
}

/// The whole state of one environment.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Format version.
    pub version: u32,
    /// Environment name.
    pub env: String,
    /// Target kind (`gce`, `ssh`, `local`).
    pub target: String,
    /// The environment's owner id, made at the first `up` and written on every resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Set when an id was given to a state that already had resources: those labelled
    /// with the environment name alone are adopted and marked until an `up` completes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub owner_pending: bool,
    /// Per-step records, by step id.
    pub steps: BTreeMap<String, StepRecord>,
    /// Fields this kgenv does not know (added by a tool or by hand), kept on rewrite.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl State {
    /// An empty state for `env`.
    pub fn new(env: &str, target: &str) -> Self {
        Self {
            version: STATE_VERSION,
            env: env.into(),
            target: target.into(),
            owner: None,
            owner_pending: false,
            steps: BTreeMap::new(),
            extra: BTreeMap::new(),
        }
    }

    /// Reads a state file's bytes: refuses an empty, corrupt or newer file (naming `path`
    /// and its backup, if one exists) and migrates an older one to [`STATE_VERSION`].
    fn parse(path: &Path, bytes: &[u8]) -> Result<Self, StateError> {
        let backup = || {
            let b = backup_of(path);
            b.exists().then_some(b)
        };
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(StateError::Empty {
                path: path.to_path_buf(),
                backup: backup(),
            });
        }
        let corrupt = |source| StateError::Corrupt {
            path: path.to_path_buf(),
            backup: backup(),
            source,
        };
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(corrupt)?;
        // The version is read on its own first: a newer file must be refused for its
        // version, not reported as corrupt because its shape changed.
        #[derive(Deserialize)]
        struct Version {
            version: u64,
        }
        let Version { version } = Version::deserialize(&value).map_err(corrupt)?;
        if version > u64::from(STATE_VERSION) {
            return Err(StateError::Newer {
                path: path.to_path_buf(),
                found: version,
                supported: STATE_VERSION,
            });
        }
        let value = migrate(version, value).map_err(corrupt)?;
        let mut state = Self::deserialize(value).map_err(corrupt)?;
        state.version = STATE_VERSION;
        Ok(state)
    }

    /// Who owns this environment's resources.
    pub fn owner(&self) -> Owner {
        Owner {
            env: self.env.clone(),
            id: self.owner.clone(),
            legacy: self.owner.is_none() || self.owner_pending,
        }
    }

    /// The record of `step`, if any.
    pub fn step(&self, step: &str) -> Option<&StepRecord> {
        self.steps.get(step)
    }

    /// A fact recorded by `step`.
    pub fn fact(&self, step: &str, key: &str) -> Option<&str> {
        self.steps.get(step)?.facts.get(key).map(String::as_str)
    }

    /// Whether kgenv created anything that still stands.
    pub fn is_empty(&self) -> bool {
        self.steps.values().all(|r| r.created.is_empty())
    }
}

/// Brings the JSON of a state file of format `version` to [`STATE_VERSION`].
fn migrate(version: u64, value: serde_json::Value) -> Result<serde_json::Value, serde_json::Error> {
    match version {
        // Version 1 is version 2 without `owner` and `owner_pending`: their defaults (none,
        // false) make the state legacy, so the next `up` gives it an id and adopts what it
        // made by the environment name, once. Everything else in the file is kept.
        1 | 2 => Ok(value),
        v => Err(<serde_json::Error as serde::de::Error>::custom(format!(
            "format version {v} was never written by kgenv (versions start at 1)"
        ))),
    }
}

/// The backup kept beside a state file: `<env>.json.bak`.
fn backup_of(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".bak");
    path.with_file_name(name)
}

/// Removes `path`; a file already gone is fine.
fn remove_if_present(path: &Path) -> Result<(), StateError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StateError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// The state file of one environment, shared by the steps of a run. Every mutation is
/// written to disk before it returns.
#[derive(Debug, Clone)]
pub struct StateStore {
    path: PathBuf,
    inner: Arc<Mutex<State>>,
}

impl StateStore {
    /// The state file path for `env` under `dir`.
    pub fn path_for(dir: &Path, env: &str) -> PathBuf {
        dir.join(format!("{env}.json"))
    }

    /// The backup of the state file for `env` under `dir` (`<env>.json.bak`): the file as it
    /// was before kgenv's last write, to restore by hand if the state file is damaged.
    pub fn backup_path_for(dir: &Path, env: &str) -> PathBuf {
        backup_of(&Self::path_for(dir, env))
    }

    /// The default state directory (XDG state dir).
    pub fn default_dir() -> PathBuf {
        paths::state_dir()
    }

    /// Opens (or starts) the state of `env` in `dir` for a run on `target`.
    ///
    /// Refuses (and never rewrites) a file that is empty, corrupt or from a newer kgenv,
    /// and a state recorded for another target: acting on it would remove or change
    /// things on this target by names recorded for the other one.
    pub fn open(dir: &Path, env: &str, target: &str) -> Result<Self, StateError> {
        let path = Self::path_for(dir, env);
        let state = match std::fs::read(&path) {
            Ok(bytes) => {
                let state = State::parse(&path, &bytes)?;
                if state.target != target {
                    return Err(StateError::TargetMismatch {
                        path,
                        recorded: state.target,
                        requested: target.to_string(),
                    });
                }
                state
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::new(env, target),
            Err(source) => return Err(StateError::Io { path, source }),
        };
        Ok(Self {
            path,
            inner: Arc::new(Mutex::new(state)),
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's backup (`<env>.json.bak`), the file as it was before the last write.
    pub fn backup_path(&self) -> PathBuf {
        backup_of(&self.path)
    }

    /// A copy of the current state.
    pub async fn snapshot(&self) -> State {
        self.inner.lock().await.clone()
    }

    /// The owner id, made (and written) now if this environment has none yet. A state
    /// that already records resources gets its id with `owner_pending` set, so what it
    /// made before owner ids is adopted by the next `up`.
    ///
    /// The id is on disk before this returns, even while no step has recorded anything:
    /// a run killed after a create call landed but before its step recorded it has left a
    /// resource that carries the id, and the next `up` (or `down`) must know the id to
    /// adopt (or delete) it rather than refuse it as someone else's.
    pub async fn ensure_owner(&self) -> Result<Owner, StateError> {
        let mut state = self.inner.lock().await;
        if state.owner.is_none() {
            state.owner = Some(new_owner_id());
            state.owner_pending = !state.is_empty();
            self.persist(&state)?;
        }
        Ok(state.owner())
    }

    /// Removes the state file (and its backup) when it records nothing: for a `down` that
    /// went through every step, after which no resource of this environment stands, so its
    /// owner id no longer matters.
    pub async fn forget_if_empty(&self) -> Result<(), StateError> {
        let state = self.inner.lock().await;
        if state.steps.is_empty() {
            self.write(&state)?;
        }
        Ok(())
    }

    /// Ends the adoption of resources made before owner ids (after an `up` that went
    /// through every step, each of which marked what it adopted).
    pub async fn settle_owner(&self) -> Result<(), StateError> {
        let mut state = self.inner.lock().await;
        if state.owner_pending {
            state.owner_pending = false;
            self.write(&state)?;
        }
        Ok(())
    }

    /// Changes the record of `step` and writes the file atomically.
    pub async fn update<F>(&self, step: &str, f: F) -> Result<(), StateError>
    where
        F: FnOnce(&mut StepRecord),
    {
        let mut state = self.inner.lock().await;
        let rec = state.steps.entry(step.to_string()).or_default();
        f(rec);
        if rec.is_blank() {
            state.steps.remove(step);
        }
        self.write(&state)
    }

    fn write(&self, state: &State) -> Result<(), StateError> {
        let backup = self.backup_path();
        if state.steps.is_empty() {
            // Nothing of kgenv's stands: no file left behind (nor a killed run's temp file),
            // and no backup of a record that no longer matters.
            if let Some(dir) = self.path.parent() {
                paths::sweep_stale_temps(dir);
            }
            remove_if_present(&self.path)?;
            return remove_if_present(&backup);
        }
        self.persist(state)
    }

    /// Writes `state` atomically (keeping the previous file as the backup), whatever it
    /// records.
    fn persist(&self, state: &State) -> Result<(), StateError> {
        let backup = self.backup_path();
        let bytes = serde_json::to_vec_pretty(state).map_err(|e| StateError::Io {
            path: self.path.clone(),
            source: std::io::Error::other(e),
        })?;
        self.keep_backup(&backup)?;
        paths::write_atomic(&self.path, &bytes, 0o600).map_err(|source| StateError::Io {
            path: self.path.clone(),
            source,
        })
    }

    /// Copies the file as it is now to `backup` (atomically, mode 0600) before it is
    /// replaced, so a damaged state file can be restored by hand.
    fn keep_backup(&self, backup: &Path) -> Result<(), StateError> {
        let previous = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(StateError::Io {
                    path: self.path.clone(),
                    source,
                })
            }
        };
        // A file damaged since it was opened is not worth keeping: the backup then
        // still holds the last good copy.
        if serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&previous).is_err()
        {
            return Ok(());
        }
        paths::write_atomic(backup, &previous, 0o600).map_err(|source| StateError::Io {
            path: backup.to_path_buf(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn updates_persist_and_empty_state_leaves_no_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateStore::open(dir.path(), "kg", "gce").expect("open");
        store
            .update("instance", |r| {
                r.created
                    .insert("instance".into(), "projects/p/zones/z/instances/kg".into());
                r.facts.insert("zone".into(), "z".into());
            })
            .await
            .expect("write");
        let again = StateStore::open(dir.path(), "kg", "gce").expect("reopen");
        assert_eq!(again.snapshot().await.fact("instance", "zone"), Some("z"));
        again
            .update("instance", |r| *r = StepRecord::default())
            .await
            .expect("clear");
        assert!(!store.path().exists());
    }

    #[tokio::test]
    async fn owner_id_is_made_once_and_legacy_states_adopt_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateStore::open(dir.path(), "kg", "gce").expect("open");
        let first = store.ensure_owner().await.expect("owner");
        let id = first.id.clone().expect("an id");
        assert_eq!(id.len(), 16);
        assert!(!first.legacy, "a new environment has nothing to adopt");
        assert_eq!(
            store.ensure_owner().await.expect("again").id,
            Some(id.clone())
        );
        let mut theirs = first.labels();
        theirs.insert(OWNER_ID_LABEL.into(), "0123456789abcdef".into());
        assert!(!first.owns(&theirs), "same name, another owner id");
        assert!(first.owns(&first.labels()));
        let name_only = BTreeMap::from([(ENV_LABEL.to_string(), "kg".to_string())]);
        assert!(!first.owns(&name_only));
        assert!(first.owns_text(&format!("managed by kgenv ({})", first.mark())));
        assert!(!first.owns_text("managed by kgenv (kgenv-env=kg)"));

        // A state from before owner ids: its resources carry the name only.
        let old = tempfile::tempdir().expect("tempdir");
        let store = StateStore::open(old.path(), "kg", "gce").expect("open");
        store
            .update("instance", |r| {
                r.created
                    .insert("instance".into(), "projects/p/zones/z/instances/kg".into());
            })
            .await
            .expect("write");
        let owner = store.ensure_owner().await.expect("owner");
        assert!(owner.legacy && owner.owns(&name_only));
        store.settle_owner().await.expect("settle");
        let settled = StateStore::open(old.path(), "kg", "gce").expect("reopen");
        let owner = settled.snapshot().await.owner();
        assert!(!owner.legacy && !owner.owns(&name_only));
        assert!(owner.owns(&owner.labels()));
    }

    #[tokio::test]
    async fn a_new_owner_id_is_on_disk_before_anything_is_recorded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateStore::open(dir.path(), "kg", "gce").expect("open");
        let id = store.ensure_owner().await.expect("owner").id;
        // A run killed now may have a create call in flight whose resource carries the id.
        let reopened = StateStore::open(dir.path(), "kg", "gce").expect("reopen");
        assert_eq!(reopened.snapshot().await.owner, id);
        assert_eq!(reopened.ensure_owner().await.expect("again").id, id);
        store
            .update("instance", |r| {
                r.created
                    .insert("instance".into(), "projects/p/zones/z/instances/kg".into());
            })
            .await
            .expect("write");
        store.forget_if_empty().await.expect("not empty");
        assert!(
            store.path().exists(),
            "a state that records something stays"
        );
        // A full `down` of a state holding only its owner id: nothing is left to record.
        let other = tempfile::tempdir().expect("tempdir");
        let store = StateStore::open(other.path(), "kg", "gce").expect("open");
        store.ensure_owner().await.expect("owner");
        assert!(store.path().exists());
        store.forget_if_empty().await.expect("forget");
        assert!(!store.path().exists() && !store.backup_path().exists());
    }

    #[test]
    fn the_backup_sits_beside_the_file_with_bak_appended() {
        let dir = Path::new("/s");
        assert_eq!(
            StateStore::backup_path_for(dir, "kg.v2"),
            Path::new("/s/kg.v2.json.bak")
        );
    }

    #[test]
    fn a_blank_step_record_ignores_unknown_fields() {
        let mut rec = StepRecord::default();
        rec.extra
            .insert("note".into(), serde_json::json!("hand-written"));
        assert!(rec.is_blank(), "a step with nothing kgenv uses is dropped");
        rec.spec_hash = Some("h".into());
        assert!(!rec.is_blank());
    }

    #[test]
    fn corrupt_state_is_reported_not_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(StateStore::path_for(dir.path(), "kg"), b"{not json").expect("write");
        let err = StateStore::open(dir.path(), "kg", "gce").expect_err("corrupt");
        assert!(err.to_string().contains("corrupt"), "{err}");
    }
}

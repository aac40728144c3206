//! The state file: what kgenv created for an environment and where, so `status` and `down`
//! work from another shell and after a crash. Written atomically after every change; never
//! holds a secret (only names, ids, zones, paths and public keys).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::error::StateError;
use crate::paths;

/// Current state-file format version.
pub const STATE_VERSION: u32 = 1;

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
    /// Per-step records, by step id.
    pub steps: BTreeMap<String, StepRecord>,
}

impl State {
    /// An empty state for `env`.
    pub fn new(env: &str, target: &str) -> Self {
        Self {
            version: STATE_VERSION,
            env: env.into(),
            target: target.into(),
            steps: BTreeMap::new(),
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

    /// The default state directory (XDG state dir).
    pub fn default_dir() -> PathBuf {
        paths::state_dir()
    }

    /// Opens (or starts) the state of `env` in `dir`.
    pub fn open(dir: &Path, env: &str, target: &str) -> Result<Self, StateError> {
        let path = Self::path_for(dir, env);
        let state = match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice::<State>(&bytes).map_err(|source| StateError::Corrupt {
                    path: path.clone(),
                    source,
                })?
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

    /// A copy of the current state.
    pub async fn snapshot(&self) -> State {
        self.inner.lock().await.clone()
    }

    /// Changes the record of `step` and writes the file atomically.
    pub async fn update<F>(&self, step: &str, f: F) -> Result<(), StateError>
    where
        F: FnOnce(&mut StepRecord),
    {
        let mut state = self.inner.lock().await;
        let rec = state.steps.entry(step.to_string()).or_default();
        f(rec);
        if rec == &StepRecord::default() {
            state.steps.remove(step);
        }
        self.write(&state)
    }

    fn write(&self, state: &State) -> Result<(), StateError> {
        if state.steps.is_empty() {
            // Nothing of kgenv's stands: no file left behind (nor a killed run's temp file).
            if let Some(dir) = self.path.parent() {
                paths::sweep_stale_temps(dir);
            }
            return match std::fs::remove_file(&self.path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(source) => Err(StateError::Io {
                    path: self.path.clone(),
                    source,
                }),
            };
        }
        let bytes = serde_json::to_vec_pretty(state).map_err(|e| StateError::Io {
            path: self.path.clone(),
            source: std::io::Error::other(e),
        })?;
        paths::write_atomic(&self.path, &bytes, 0o600).map_err(|source| StateError::Io {
            path: self.path.clone(),
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

    #[test]
    fn corrupt_state_is_reported_not_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(StateStore::path_for(dir.path(), "kg"), b"{not json").expect("write");
        let err = StateStore::open(dir.path(), "kg", "gce").expect_err("corrupt");
        assert!(err.to_string().contains("corrupt"), "{err}");
    }
}

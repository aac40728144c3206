//! The state file as users and other kgenv versions leave it: newer, older, empty, corrupt
//! and target-mismatched files, unknown fields, and the backup kept from the previous write.

use kgenv_core::error::{Error, StateError};
use kgenv_core::state::{StateStore, StepRecord, STATE_VERSION};

/// A state file exactly as kgenv wrote it before owner ids (format version 1).
const V1: &str = r#"{
  "version": 1,
  "env": "kg",
  "target": "gce",
  "steps": {
    "firewall": {
      "created": {
        "firewall": "projects/p/global/firewalls/kg-ssh"
      },
      "facts": {},
      "spec_hash": null
    },
    "instance": {
      "created": {
        "instance": "projects/p/zones/us-central1-a/instances/kg"
      },
      "facts": {
        "external_ip": "203.0.113.7",
        "zone": "us-central1-a"
      },
      "spec_hash": "4f2a9c"
    }
  }
}"#;

fn state_path(dir: &tempfile::TempDir) -> std::path::PathBuf {
    StateStore::path_for(dir.path(), "kg")
}

fn write_state(dir: &tempfile::TempDir, bytes: &[u8]) -> std::path::PathBuf {
    let path = state_path(dir);
    std::fs::write(&path, bytes).expect("write state");
    path
}

fn raw(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).expect("read")).expect("json")
}

/// Records that `step` created `link` (under the role named like the step).
async fn record(store: &StateStore, step: &str, link: &str) {
    let (role, link) = (step.to_string(), link.to_string());
    store
        .update(step, move |r| {
            r.created.insert(role, link);
        })
        .await
        .expect("write");
}

#[tokio::test]
async fn a_version_1_file_is_migrated_and_keeps_everything() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_state(&dir, V1.as_bytes());

    let store = StateStore::open(dir.path(), "kg", "gce").expect("a v1 file opens");
    let state = store.snapshot().await;
    assert_eq!(state.version, STATE_VERSION);
    assert_eq!(state.fact("instance", "zone"), Some("us-central1-a"));
    assert_eq!(state.fact("instance", "external_ip"), Some("203.0.113.7"));
    assert_eq!(
        state.step("instance").and_then(|r| r.spec_hash.as_deref()),
        Some("4f2a9c")
    );
    assert_eq!(
        state
            .step("firewall")
            .map(|r| r.created["firewall"].as_str()),
        Some("projects/p/global/firewalls/kg-ssh")
    );
    let owner = state.owner();
    assert_eq!(owner.id, None);
    assert!(owner.legacy, "a v1 state adopts its resources by name");
    assert_eq!(
        std::fs::read_to_string(&path).expect("read"),
        V1,
        "reading does not rewrite the file"
    );

    // The next `up` gives it an id; the rewrite is version 2 and the v1 file is the backup.
    let owner = store.ensure_owner().await.expect("owner");
    assert!(owner.id.is_some() && owner.legacy);
    let now = raw(&path);
    assert_eq!(now["version"], 2);
    assert_eq!(now["owner_pending"], true);
    assert_eq!(
        now["steps"]["instance"]["facts"]["zone"], "us-central1-a",
        "{now}"
    );
    assert_eq!(
        std::fs::read_to_string(store.backup_path()).expect("backup"),
        V1
    );
}

#[tokio::test]
async fn a_newer_file_is_refused_with_the_version_needed_and_left_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A future format whose shape this kgenv cannot read: refused for its version, not
    // called corrupt.
    let newer = br#"{"version": 3, "env": "kg", "target": "gce", "steps": [{"id": "instance"}]}"#;
    let path = write_state(&dir, newer);
    let err = StateStore::open(dir.path(), "kg", "gce").expect_err("newer");
    assert!(
        matches!(
            err,
            StateError::Newer {
                found: 3,
                supported: 2,
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains("version 3"), "{msg}");
    assert!(msg.contains("reads version 2"), "{msg}");
    assert!(msg.contains("upgrade kgenv"), "{msg}");
    assert!(err.is_unreadable() && !err.is_config());
    assert_eq!(std::fs::read(&path).expect("read"), newer);
    assert!(!StateStore::backup_path_for(dir.path(), "kg").exists());
}

#[tokio::test]
async fn an_empty_file_is_refused_and_names_the_backup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = StateStore::open(dir.path(), "kg", "gce").expect("open");
    record(&store, "instance", "projects/p/zones/z/instances/kg").await;
    record(&store, "firewall", "projects/p/global/firewalls/kg-ssh").await;
    let path = store.path().to_path_buf();
    let backup = store.backup_path();

    for empty in [&b""[..], b"\n  \n"] {
        std::fs::write(&path, empty).expect("truncate");
        let err = StateStore::open(dir.path(), "kg", "gce").expect_err("empty");
        assert!(matches!(err, StateError::Empty { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        assert!(msg.contains("is empty"), "{msg}");
        assert!(msg.contains(&backup.display().to_string()), "{msg}");
        assert!(msg.contains("copy it over"), "{msg}");
        assert_eq!(
            std::fs::read(&path).expect("read"),
            empty,
            "never rewritten"
        );
    }

    // The backup is the state before the last write, and restoring it works.
    std::fs::copy(&backup, &path).expect("restore");
    let restored = StateStore::open(dir.path(), "kg", "gce").expect("restored");
    let state = restored.snapshot().await;
    assert!(state.step("instance").is_some());
    assert!(state.step("firewall").is_none(), "the backup predates it");
}

#[tokio::test]
async fn a_corrupt_file_is_refused_names_the_backup_and_is_never_overwritten() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = StateStore::open(dir.path(), "kg", "gce").expect("open");
    record(&store, "instance", "projects/p/zones/z/instances/kg").await;
    record(&store, "firewall", "projects/p/global/firewalls/kg-ssh").await;
    let path = store.path().to_path_buf();
    let whole = std::fs::read(&path).expect("read");
    let cut = &whole[..whole.len() / 2];
    std::fs::write(&path, cut).expect("cut");

    let err = StateStore::open(dir.path(), "kg", "gce").expect_err("corrupt");
    let StateError::Corrupt { backup, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(backup.as_deref(), Some(store.backup_path().as_path()));
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(msg.contains(".json.bak"), "{msg}");
    assert!(msg.contains("aside to start over"), "{msg}");
    assert_eq!(std::fs::read(&path).expect("read"), cut, "never rewritten");

    // Valid JSON of the wrong shape, a missing version, a version never written: corrupt.
    let other = tempfile::tempdir().expect("tempdir");
    for bad in [
        &br#"{"version": 2, "env": "kg", "target": "gce", "steps": 3}"#[..],
        br#"{"env": "kg", "target": "gce", "steps": {}}"#,
        br#"{"version": 0, "env": "kg", "target": "gce", "steps": {}}"#,
        br#"["kg"]"#,
    ] {
        let path = write_state(&other, bad);
        let err = StateStore::open(other.path(), "kg", "gce").expect_err("bad shape");
        assert!(
            matches!(err, StateError::Corrupt { backup: None, .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("no backup"), "{err}");
        assert_eq!(std::fs::read(&path).expect("read"), bad);
    }
}

#[tokio::test]
async fn a_state_for_another_target_is_a_usage_error_naming_both() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_state(&dir, V1.as_bytes());
    let err = StateStore::open(dir.path(), "kg", "ssh").expect_err("mismatch");
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(
        msg.contains("target `gce`") && msg.contains("target `ssh`"),
        "{msg}"
    );
    assert!(msg.contains("--target gce"), "{msg}");
    assert!(msg.contains("move the state file aside"), "{msg}");
    assert!(err.is_config());
    let err = Error::from(err).in_step("host");
    assert!(
        err.is_config(),
        "exit code 2 in the CLI, even inside a step"
    );
    assert_eq!(std::fs::read_to_string(&path).expect("read"), V1);
    // The right target still opens it.
    assert!(StateStore::open(dir.path(), "kg", "gce").is_ok());
}

#[tokio::test]
async fn unknown_fields_survive_a_rewrite() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut with_extras: serde_json::Value = serde_json::from_str(V1).expect("json");
    with_extras["notes"] = serde_json::json!({"by": "a tool", "tags": [1, 2]});
    with_extras["steps"]["instance"]["checked_by"] = serde_json::json!("ops-script");
    with_extras["steps"]["firewall"]["ticket"] = serde_json::json!(42);
    let path = write_state(&dir, with_extras.to_string().as_bytes());

    let store = StateStore::open(dir.path(), "kg", "gce").expect("open");
    // One step changed, one untouched, one new.
    store
        .update("instance", |r| {
            r.facts.insert("zone".into(), "us-central1-b".into());
        })
        .await
        .expect("write");
    record(&store, "bucket", "kg-bucket").await;

    let now = raw(&path);
    assert_eq!(now["notes"], with_extras["notes"], "{now}");
    assert_eq!(
        now["steps"]["instance"]["checked_by"], "ops-script",
        "{now}"
    );
    assert_eq!(now["steps"]["instance"]["facts"]["zone"], "us-central1-b");
    assert_eq!(now["steps"]["firewall"]["ticket"], 42, "{now}");
    assert!(now["steps"]["bucket"].is_object());
    // And again through a fresh open.
    let again = StateStore::open(dir.path(), "kg", "gce").expect("reopen");
    let state = again.snapshot().await;
    assert_eq!(state.extra["notes"]["by"], "a tool");
    assert_eq!(
        state.step("firewall").map(|r| &r.extra["ticket"]),
        Some(&serde_json::json!(42))
    );
}

#[tokio::test]
async fn every_write_keeps_the_previous_file_and_an_empty_state_leaves_neither() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = StateStore::open(dir.path(), "kg", "gce").expect("open");
    record(&store, "instance", "projects/p/zones/z/instances/kg").await;
    assert!(
        !store.backup_path().exists(),
        "the first write has nothing to keep"
    );
    let first = std::fs::read(store.path()).expect("read");
    record(&store, "firewall", "projects/p/global/firewalls/kg-ssh").await;
    assert_eq!(std::fs::read(store.backup_path()).expect("backup"), first);
    let second = std::fs::read(store.path()).expect("read");
    store
        .update("instance", |r| *r = StepRecord::default())
        .await
        .expect("write");
    assert_eq!(std::fs::read(store.backup_path()).expect("backup"), second);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(store.backup_path())
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    // A file damaged behind kgenv's back while it runs does not replace the good backup.
    std::fs::write(store.path(), b"{garbage").expect("damage");
    record(&store, "bucket", "kg-bucket").await;
    assert_eq!(std::fs::read(store.backup_path()).expect("backup"), second);

    // Nothing stands: neither the file nor its backup is left.
    for step in ["firewall", "bucket"] {
        store
            .update(step, |r| r.created.clear())
            .await
            .expect("write");
    }
    assert!(!store.path().exists());
    assert!(!store.backup_path().exists());
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .expect("dir")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(names.is_empty(), "{names:?}");
}

//! gcsfuse's documented config-file options (`[bucket.gcsfuse]` in `kgenv.toml`): the names
//! and value types of the fields of the YAML file gcsfuse reads with `--config-file`, as
//! Google documents them ("Cloud Storage FUSE configuration file"), so that a misspelt name
//! or a wrong type is a config error naming the field and the nearest documented name —
//! before anything is sent — rather than a mount that fails on the VM.
//!
//! Options are keyed by their dotted path in that file (`file-cache.max-size-mb`); in TOML,
//! dotted keys and nested tables both give that path.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::error::ValidationError;

/// The type gcsfuse reads an option as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `true` / `false`.
    Bool,
    /// A whole number.
    Int,
    /// Any number.
    Float,
    /// A string.
    Str,
    /// A Go duration string such as `30s` or `1m`.
    Duration,
    /// Permission bits as a string of octal digits, e.g. `"664"`.
    Octal,
    /// A list of strings.
    StrList,
}

/// The documented options: dotted config-file path, the gcsfuse flag of the same setting
/// (how a `-o` mount option would name it), and the type. Hidden, experimental and
/// deprecated options are left out on purpose.
pub const OPTIONS: &[(&str, &str, Kind)] = &[
    ("app-name", "app-name", Kind::Str),
    ("cache-dir", "cache-dir", Kind::Str),
    (
        "debug.exit-on-invariant-violation",
        "debug_invariants",
        Kind::Bool,
    ),
    ("debug.log-mutex", "debug_mutex", Kind::Bool),
    (
        "file-cache.cache-file-for-range-read",
        "file-cache-cache-file-for-range-read",
        Kind::Bool,
    ),
    (
        "file-cache.download-chunk-size-mb",
        "file-cache-download-chunk-size-mb",
        Kind::Int,
    ),
    (
        "file-cache.enable-parallel-downloads",
        "file-cache-enable-parallel-downloads",
        Kind::Bool,
    ),
    (
        "file-cache.exclude-regex",
        "file-cache-exclude-regex",
        Kind::Str,
    ),
    (
        "file-cache.include-regex",
        "file-cache-include-regex",
        Kind::Str,
    ),
    (
        "file-cache.max-parallel-downloads",
        "file-cache-max-parallel-downloads",
        Kind::Int,
    ),
    (
        "file-cache.max-size-mb",
        "file-cache-max-size-mb",
        Kind::Int,
    ),
    (
        "file-cache.parallel-downloads-per-file",
        "file-cache-parallel-downloads-per-file",
        Kind::Int,
    ),
    ("file-system.dir-mode", "dir-mode", Kind::Octal),
    ("file-system.file-mode", "file-mode", Kind::Octal),
    ("file-system.fuse-options", "o", Kind::StrList),
    ("file-system.gid", "gid", Kind::Int),
    (
        "file-system.ignore-interrupts",
        "ignore-interrupts",
        Kind::Bool,
    ),
    (
        "file-system.kernel-list-cache-ttl-secs",
        "kernel-list-cache-ttl-secs",
        Kind::Int,
    ),
    (
        "file-system.rename-dir-limit",
        "rename-dir-limit",
        Kind::Int,
    ),
    ("file-system.temp-dir", "temp-dir", Kind::Str),
    ("file-system.uid", "uid", Kind::Int),
    ("foreground", "foreground", Kind::Bool),
    ("gcs-auth.anonymous-access", "anonymous-access", Kind::Bool),
    ("gcs-auth.key-file", "key-file", Kind::Str),
    (
        "gcs-auth.reuse-token-from-url",
        "reuse-token-from-url",
        Kind::Bool,
    ),
    ("gcs-auth.token-url", "token-url", Kind::Str),
    (
        "gcs-connection.billing-project",
        "billing-project",
        Kind::Str,
    ),
    (
        "gcs-connection.client-protocol",
        "client-protocol",
        Kind::Str,
    ),
    (
        "gcs-connection.custom-endpoint",
        "custom-endpoint",
        Kind::Str,
    ),
    (
        "gcs-connection.http-client-timeout",
        "http-client-timeout",
        Kind::Duration,
    ),
    (
        "gcs-connection.limit-bytes-per-sec",
        "limit-bytes-per-sec",
        Kind::Float,
    ),
    (
        "gcs-connection.limit-ops-per-sec",
        "limit-ops-per-sec",
        Kind::Float,
    ),
    (
        "gcs-connection.max-conns-per-host",
        "max-conns-per-host",
        Kind::Int,
    ),
    (
        "gcs-connection.max-idle-conns-per-host",
        "max-idle-conns-per-host",
        Kind::Int,
    ),
    (
        "gcs-connection.sequential-read-size-mb",
        "sequential-read-size-mb",
        Kind::Int,
    ),
    (
        "gcs-retries.max-retry-attempts",
        "max-retry-attempts",
        Kind::Int,
    ),
    (
        "gcs-retries.max-retry-sleep",
        "max-retry-sleep",
        Kind::Duration,
    ),
    ("gcs-retries.multiplier", "retry-multiplier", Kind::Float),
    ("implicit-dirs", "implicit-dirs", Kind::Bool),
    ("logging.file-path", "log-file", Kind::Str),
    ("logging.format", "log-format", Kind::Str),
    (
        "logging.log-rotate.backup-file-count",
        "log-rotate-backup-file-count",
        Kind::Int,
    ),
    (
        "logging.log-rotate.compress",
        "log-rotate-compress",
        Kind::Bool,
    ),
    (
        "logging.log-rotate.max-file-size-mb",
        "log-rotate-max-file-size-mb",
        Kind::Int,
    ),
    ("logging.severity", "log-severity", Kind::Str),
    (
        "metadata-cache.enable-nonexistent-type-cache",
        "enable-nonexistent-type-cache",
        Kind::Bool,
    ),
    (
        "metadata-cache.negative-ttl-secs",
        "metadata-cache-negative-ttl-secs",
        Kind::Int,
    ),
    (
        "metadata-cache.stat-cache-max-size-mb",
        "stat-cache-max-size-mb",
        Kind::Int,
    ),
    (
        "metadata-cache.ttl-secs",
        "metadata-cache-ttl-secs",
        Kind::Int,
    ),
    (
        "metadata-cache.type-cache-max-size-mb",
        "type-cache-max-size-mb",
        Kind::Int,
    ),
    (
        "metrics.cloud-metrics-export-interval-secs",
        "cloud-metrics-export-interval-secs",
        Kind::Int,
    ),
    ("metrics.prometheus-port", "prometheus-port", Kind::Int),
    ("only-dir", "only-dir", Kind::Str),
    ("profile", "profile", Kind::Str),
    (
        "read.enable-buffered-read",
        "enable-buffered-read",
        Kind::Bool,
    ),
    (
        "read.global-max-blocks",
        "read-global-max-blocks",
        Kind::Int,
    ),
    ("write.create-empty-file", "create-empty-file", Kind::Bool),
    (
        "write.enable-rapid-appends",
        "enable-rapid-appends",
        Kind::Bool,
    ),
    (
        "write.enable-streaming-writes",
        "enable-streaming-writes",
        Kind::Bool,
    ),
    (
        "write.global-max-blocks",
        "write-global-max-blocks",
        Kind::Int,
    ),
];

/// Options kgenv sets itself and the user may not, with why.
const KGENV_OWNED: &[(&str, &str)] = &[
    ("cache-dir", "kgenv keeps the file cache under the environment's data root (on the data disk of a gce VM); size it with `file-cache.max-size-mb`"),
    ("foreground", "a mount from /etc/fstab must return once mounted"),
];

/// The documented option at `path`, if any.
pub fn option(path: &str) -> Option<(&'static str, &'static str, Kind)> {
    OPTIONS.iter().copied().find(|(p, _, _)| *p == path)
}

/// The documented path nearest to `name` by edit distance: within its section the last parts
/// are compared (`metadata-cache.ttl` finds `metadata-cache.ttl-secs`), a bare name is
/// compared with every last part (`max-size-mb` finds `file-cache.max-size-mb`), and another
/// section costs a little more than the same one. `_` counts as `-`.
pub fn nearest(name: &str) -> &'static str {
    let name = name.replace('_', "-");
    let split = |p: &str| -> (String, String) {
        match p.rsplit_once('.') {
            Some((sec, leaf)) => (sec.to_string(), leaf.to_string()),
            None => (String::new(), p.to_string()),
        }
    };
    let (sec, leaf) = split(&name);
    OPTIONS
        .iter()
        .map(|(p, flag, _)| {
            let (psec, pleaf) = split(p);
            let by_leaf = strsim::levenshtein(&leaf, &pleaf);
            let d = if sec.is_empty() || sec == psec {
                by_leaf
            } else {
                strsim::levenshtein(&name, p).min(by_leaf + 3)
            };
            (d.min(strsim::levenshtein(&name, flag)), *p)
        })
        .min_by_key(|(d, _)| *d)
        .map_or("file-cache.max-size-mb", |(_, p)| p)
}

/// The documented path whose gcsfuse flag `mount_option` names (`file_mode=644` → the
/// flag `file-mode` → `file-system.file-mode`), if any.
pub fn for_mount_option(mount_option: &str) -> Option<&'static str> {
    let name = mount_option
        .split_once('=')
        .map_or(mount_option, |(n, _)| n)
        .replace('_', "-");
    OPTIONS
        .iter()
        .find(|(p, flag, _)| *flag == name || *p == name)
        .map(|(p, _, _)| *p)
}

/// Flattens a `[bucket.gcsfuse]` table into dotted paths and checks each against the
/// documented options: its name, its type, and that kgenv does not own it. Errors name the
/// field as `gcsfuse.PATH` (the caller prefixes `bucket.`).
pub fn validate(
    table: &serde_json::Map<String, Value>,
) -> Result<BTreeMap<String, Value>, ValidationError> {
    let mut flat = BTreeMap::new();
    flatten("", table, &mut flat);
    for (path, value) in &flat {
        let field = format!("gcsfuse.{path}");
        let Some((_, _, kind)) = option(path) else {
            return Err(ValidationError::new(
                field,
                format!("`{path}` is not a documented gcsfuse config-file option; did you mean `{}`? (see https://cloud.google.com/storage/docs/cloud-storage-fuse/config-file)", nearest(path)),
            ));
        };
        if let Some((_, why)) = KGENV_OWNED.iter().find(|(p, _)| p == path) {
            return Err(ValidationError::new(
                field,
                format!("is set by kgenv: {why}"),
            ));
        }
        check_kind(kind, value)
            .map_err(|want| ValidationError::new(field, format!("{value} is not {want}")))?;
    }
    Ok(flat)
}

fn flatten(
    prefix: &str,
    table: &serde_json::Map<String, Value>,
    out: &mut BTreeMap<String, Value>,
) {
    for (k, v) in table {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            Value::Object(inner) => flatten(&path, inner, out),
            v => {
                out.insert(path, v.clone());
            }
        }
    }
}

fn check_kind(kind: Kind, v: &Value) -> Result<(), &'static str> {
    let ok = match kind {
        Kind::Bool => v.is_boolean(),
        Kind::Int => v.is_i64(),
        Kind::Float => v.is_number(),
        Kind::Str => v.is_string(),
        Kind::Duration => v.as_str().is_some_and(|s| {
            !s.is_empty()
                && s.starts_with(|c: char| c.is_ascii_digit())
                && s.ends_with(|c: char| c.is_ascii_alphabetic())
        }),
        Kind::Octal => v.as_str().is_some_and(|s| {
            !s.is_empty() && s.len() <= 4 && s.chars().all(|c| ('0'..='7').contains(&c))
        }),
        Kind::StrList => v.as_array().is_some_and(|a| a.iter().all(Value::is_string)),
    };
    if ok {
        Ok(())
    } else {
        Err(match kind {
            Kind::Bool => "true or false",
            Kind::Int => "a whole number",
            Kind::Float => "a number",
            Kind::Str => "a string",
            Kind::Duration => "a duration string like \"30s\" or \"2m\"",
            Kind::Octal => "a string of octal permission bits like \"664\"",
            Kind::StrList => "a list of strings",
        })
    }
}

/// Sets `path` to `value` in the nested `table` (creating the sections on the way).
pub fn insert_path(table: &mut serde_json::Map<String, Value>, path: &str, value: Value) {
    match path.split_once('.') {
        None => {
            table.insert(path.to_string(), value);
        }
        Some((head, rest)) => {
            let inner = table
                .entry(head.to_string())
                .or_insert_with(|| Value::Object(serde_json::Map::new()));
            if !inner.is_object() {
                *inner = Value::Object(serde_json::Map::new());
            }
            if let Value::Object(m) = inner {
                insert_path(m, rest, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn table(v: Value) -> serde_json::Map<String, Value> {
        v.as_object().cloned().expect("an object")
    }

    #[test]
    fn nested_and_dotted_tables_flatten_to_documented_paths() {
        let flat = validate(&table(json!({
            "file-cache": {"max-size-mb": 1024, "enable-parallel-downloads": true},
            "metadata-cache": {"ttl-secs": -1},
            "implicit-dirs": true,
            "file-system": {"file-mode": "644", "fuse-options": ["ro"]},
            "gcs-retries": {"max-retry-sleep": "30s", "multiplier": 1.5},
        })))
        .expect("valid");
        assert_eq!(flat["file-cache.max-size-mb"], json!(1024));
        assert_eq!(flat["metadata-cache.ttl-secs"], json!(-1));
        assert_eq!(flat.len(), 8);
    }

    #[test]
    fn a_misspelt_name_is_refused_with_the_nearest_documented_one() {
        for (given, nearest) in [
            (
                json!({"file-cache": {"max-sise-mb": 1}}),
                "file-cache.max-size-mb",
            ),
            (
                json!({"file-cache": {"max_size_mb": 1}}),
                "file-cache.max-size-mb",
            ),
            (
                json!({"metadata-cache": {"ttl": 1}}),
                "metadata-cache.ttl-secs",
            ),
            (json!({"implicit-dir": true}), "implicit-dirs"),
        ] {
            let e = validate(&table(given.clone())).expect_err("misspelt");
            assert!(e.field.starts_with("gcsfuse."), "{e}");
            assert!(
                e.rule.contains(&format!("did you mean `{nearest}`")),
                "{given}: {e}"
            );
        }
    }

    #[test]
    fn wrong_types_and_kgenv_owned_options_are_refused() {
        for (given, field) in [
            (
                json!({"file-cache": {"max-size-mb": "big"}}),
                "gcsfuse.file-cache.max-size-mb",
            ),
            (json!({"implicit-dirs": "yes"}), "gcsfuse.implicit-dirs"),
            (
                json!({"file-system": {"file-mode": 644}}),
                "gcsfuse.file-system.file-mode",
            ),
            (
                json!({"file-system": {"file-mode": "0999"}}),
                "gcsfuse.file-system.file-mode",
            ),
            (
                json!({"gcs-retries": {"max-retry-sleep": "30"}}),
                "gcsfuse.gcs-retries.max-retry-sleep",
            ),
            (json!({"cache-dir": "/tmp/c"}), "gcsfuse.cache-dir"),
            (json!({"foreground": true}), "gcsfuse.foreground"),
        ] {
            let e = validate(&table(given.clone())).expect_err("refused");
            assert_eq!(e.field, field, "{given}: {e}");
        }
    }

    #[test]
    fn mount_options_that_are_gcsfuse_settings_are_found() {
        assert_eq!(
            for_mount_option("file_mode=644"),
            Some("file-system.file-mode")
        );
        assert_eq!(for_mount_option("implicit_dirs"), Some("implicit-dirs"));
        assert_eq!(
            for_mount_option("file_cache_max_size_mb=10240"),
            Some("file-cache.max-size-mb")
        );
        assert_eq!(for_mount_option("noatime"), None);
        assert_eq!(for_mount_option("ro"), None);
    }

    #[test]
    fn insert_path_builds_sections() {
        let mut t = serde_json::Map::new();
        insert_path(&mut t, "file-cache.max-size-mb", json!(5));
        insert_path(&mut t, "file-cache.enable-parallel-downloads", json!(true));
        insert_path(&mut t, "implicit-dirs", json!(true));
        assert_eq!(
            Value::Object(t),
            json!({"file-cache": {"max-size-mb": 5, "enable-parallel-downloads": true}, "implicit-dirs": true})
        );
    }
}

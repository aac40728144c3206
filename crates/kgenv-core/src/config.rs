//! `kgenv.toml`: a file that maps 1:1 onto the spec builders. Every error names the file,
//! line, column and field, and nothing is sent anywhere until the whole file is valid.
//!
//! ```
//! let env = kgenv_core::config::parse_str(
//!     "name = \"kg\"\ntarget = \"local\"\n[image]\n[container]\ngpus = \"none\"\n",
//!     std::path::Path::new("kgenv.toml"),
//!     &kgenv_core::config::Overrides::default(),
//! ).expect("valid");
//! assert_eq!(env.container.map(|c| c.name), Some("kgenv-kg".to_string()));
//! ```

use std::path::Path;

use serde::Deserialize;

use crate::error::{ConfigError, ValidationError};
use crate::spec::{
    AutostopBuilder, BucketMountBuilder, BudgetBuilder, ContainerBuilder, DataBuilder, Env,
    FirewallBuilder, GithubKeyBuilder, ImageBuilder, InstanceBuilder, JupyterBuilder, SshHost,
    Target, TimeoutsBuilder,
};

/// The commented template `kgenv init` writes.
pub const TEMPLATE: &str = include_str!("../../../examples/kgenv.toml");

/// What the command line or the environment overrides.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--target gce|ssh|local`. Sections that do not apply to the chosen target
    /// (`[instance]`, `[[firewall]]`, `[autostop]`, `[budget]`, and `[bucket]` for local) are ignored.
    pub target: Option<String>,
    /// `user@host[:port]` for the ssh target (`--host`).
    pub ssh_host: Option<String>,
    /// Project when the file has none (`CLOUDSDK_CORE_PROJECT`).
    pub project: Option<String>,
    /// Zone when the file has none (`CLOUDSDK_COMPUTE_ZONE`).
    pub zone: Option<String>,
}

impl Overrides {
    /// Project and zone from gcloud's environment variables.
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Self {
            project: var("CLOUDSDK_CORE_PROJECT"),
            zone: var("CLOUDSDK_COMPUTE_ZONE"),
            ..Self::default()
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSsh {
    host: String,
    identity_file: Option<String>,
    trust_on_first_use: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    name: String,
    target: Option<String>,
    ssh: Option<RawSsh>,
    instance: Option<InstanceBuilder>,
    firewall: Option<Vec<FirewallBuilder>>,
    bucket: Option<BucketMountBuilder>,
    github_key: Option<GithubKeyBuilder>,
    image: Option<ImageBuilder>,
    container: Option<ContainerBuilder>,
    jupyter: Option<JupyterBuilder>,
    #[serde(default)]
    data: Vec<DataBuilder>,
    autostop: Option<AutostopBuilder>,
    budget: Option<BudgetBuilder>,
    timeouts: Option<TimeoutsBuilder>,
}

/// Reads and validates `path`, with project and zone defaults from the environment.
pub fn load(path: &Path) -> Result<Env, ConfigError> {
    load_with(path, &Overrides::from_env())
}

/// Reads and validates `path` with `overrides`.
pub fn load_with(path: &Path, overrides: &Overrides) -> Result<Env, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        path: path.to_path_buf(),
        line: 1,
        column: 1,
        field: None,
        message: format!("cannot read the config: {e} (create one with `kgenv init`)"),
    })?;
    parse_str(&text, path, overrides)
}

/// Parses and validates config text; `path` is used in messages.
pub fn parse_str(text: &str, path: &Path, overrides: &Overrides) -> Result<Env, ConfigError> {
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        let (line, column) = e.span().map_or((1, 1), |s| line_col(text, s.start));
        ConfigError {
            path: path.to_path_buf(),
            line,
            column,
            field: None,
            message: e.message().trim().to_string(),
        }
    })?;
    build(raw, overrides).map_err(|e| locate(text, path, e))
}

/// Builds an environment from a document shaped like `kgenv.toml` that is already in
/// memory (the Python bindings pass their keyword arguments this way). Errors name the
/// dotted field, as [`crate::spec`]'s builders do; there is no file to point into.
pub fn from_json(value: serde_json::Value, overrides: &Overrides) -> Result<Env, ValidationError> {
    let raw: RawConfig =
        serde_json::from_value(value).map_err(|e| ValidationError::new("config", e.to_string()))?;
    build(raw, overrides)
}

fn build(mut raw: RawConfig, o: &Overrides) -> Result<Env, ValidationError> {
    let overridden = o.target.is_some();
    let kind = o
        .target
        .clone()
        .or(raw.target.take())
        .unwrap_or_else(|| "gce".into());
    let target = match kind.as_str() {
        "gce" => Target::Gce,
        "local" => Target::Local,
        "ssh" => {
            let (host, identity, tofu) = match (&o.ssh_host, &raw.ssh) {
                (Some(h), s) => (h.clone(), s.as_ref().and_then(|s| s.identity_file.clone()), s.as_ref().and_then(|s| s.trust_on_first_use)),
                (None, Some(s)) => (s.host.clone(), s.identity_file.clone(), s.trust_on_first_use),
                (None, None) => return Err(ValidationError::new("ssh", "target = \"ssh\" needs an [ssh] section with `host = \"user@host:port\"` (or pass --host)")),
            };
            let mut h =
                SshHost::parse(&host).map_err(|e| ValidationError::new("ssh.host", e.rule))?;
            if let Some(i) = identity {
                h = h.identity_file(i);
            }
            Target::Ssh(h.trust_on_first_use(tofu.unwrap_or(false)))
        }
        other => {
            return Err(ValidationError::new(
                "target",
                format!("`{other}` is not \"gce\", \"ssh\" or \"local\""),
            ))
        }
    };
    if overridden && target != Target::Gce {
        raw.instance = None;
        raw.firewall = None;
        raw.autostop = None;
        raw.budget = None;
        if target == Target::Local {
            raw.bucket = None;
        }
    }
    let mut b = Env::builder(raw.name)
        .target(target)
        .location_defaults(o.project.clone(), o.zone.clone());
    if let Some(i) = raw.instance {
        b = b.instance(i);
    }
    for f in raw.firewall.unwrap_or_default() {
        b = b.firewall(f);
    }
    if let Some(x) = raw.bucket {
        b = b.bucket(x);
    }
    if let Some(x) = raw.github_key {
        b = b.github_key(x);
    }
    if let Some(x) = raw.image {
        b = b.image(x);
    }
    if let Some(x) = raw.container {
        b = b.container(x);
    }
    if let Some(x) = raw.jupyter {
        b = b.jupyter(x);
    }
    for d in raw.data {
        b = b.data(d);
    }
    if let Some(x) = raw.autostop {
        b = b.autostop(x);
    }
    if let Some(x) = raw.budget {
        b = b.budget(x);
    }
    if let Some(x) = raw.timeouts {
        b = b.timeouts(x);
    }
    b.build()
}

/// 1-based line and column of byte `offset`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Finds where the field of a validation error is written (`instance.gpu_count`,
/// `firewall[0].ports`); falls back to its section, then to the top of the file.
fn locate(text: &str, path: &Path, e: ValidationError) -> ConfigError {
    let span = field_span(text, &e.field);
    let (line, column) = span.map_or((1, 1), |s| line_col(text, s));
    ConfigError {
        path: path.to_path_buf(),
        line,
        column,
        message: format!("`{}`: {}", e.field, e.rule),
        field: Some(e.field),
    }
}

fn field_span(text: &str, field: &str) -> Option<usize> {
    use toml_edit::{Item, TableLike};
    let doc = toml_edit::Document::parse(text).ok()?;
    let mut table: &dyn TableLike = doc.as_table();
    let mut best = None;
    for part in field.split('.') {
        let (key, index) = match part.split_once('[') {
            Some((k, rest)) => (k, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        let Some((k, item)) = table.get_key_value(key) else {
            break;
        };
        best = k.span().map(|s| s.start).or(best);
        match (item, index) {
            (Item::ArrayOfTables(a), Some(i)) => {
                let Some(t) = a.get(i) else { break };
                best = t.span().map(|s| s.start).or(best);
                table = t;
            }
            (Item::Table(t), None) => table = t,
            (Item::Value(v), index) => {
                best = v.span().map(|s| s.start).or(best);
                // `gpu = [{ ... }, { ... }]`: an array of inline tables, entry `index`.
                let v = match (v.as_array(), index) {
                    (Some(a), Some(i)) => match a.get(i) {
                        Some(e) => {
                            best = e.span().map(|s| s.start).or(best);
                            e
                        }
                        None => break,
                    },
                    _ => v,
                };
                match v.as_inline_table() {
                    Some(t) => table = t,
                    None => break,
                }
            }
            _ => break,
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Env, ConfigError> {
        parse_str(text, Path::new("kgenv.toml"), &Overrides::default())
    }

    #[test]
    fn gpu_choices_and_auto_zones_parse_and_errors_point_at_the_entry() {
        let text = "name = \"kg\"\n[instance]\nproject = \"my-project\"\nzones = \"auto\"\ngpu = [\n  { type = \"nvidia-l4\", machine_type = \"g2-standard-8\" },\n  { type = \"nvidia-tesla-t4\", machine_type = \"n1-standard-8\", count = 1 },\n]\n";
        let i = parse(text).expect("valid").instance.expect("instance");
        assert_eq!(i.zones, crate::spec::Zones::Auto);
        assert_eq!(i.gpus.len(), 2);
        assert_eq!(i.machine_type, "g2-standard-8");
        let bad = text.replace("\"n1-standard-8\", count = 1", "\"g2-standard-8\"");
        let e = parse(&bad).expect_err("t4 on g2");
        assert_eq!(e.field.as_deref(), Some("instance.gpu[1].machine_type"));
        assert!(e.to_string().starts_with("kgenv.toml:7:"), "{e}");
        let both = text.replace(
            "zones = \"auto\"",
            "zones = \"auto\"\nmachine_type = \"n1-standard-8\"",
        );
        let e = parse(&both).expect_err("both forms");
        assert_eq!(e.field.as_deref(), Some("instance.machine_type"), "{e}");
        let regions = text.replace("\"auto\"", "[\"us-central1\", \"europe-west4-a\"]");
        let i = parse(&regions)
            .expect("regions")
            .instance
            .expect("instance");
        assert_eq!(i.zones.listed(), ["us-central1", "europe-west4-a"]);
    }

    #[test]
    fn the_example_parses() {
        let env = parse_str(TEMPLATE, Path::new("kgenv.toml"), &Overrides::default())
            .expect("example is valid");
        assert_eq!(env.target, Target::Gce);
        assert!(env.instance.is_some());
    }

    #[test]
    fn bad_value_points_at_line_and_column() {
        let text = "name = \"kg\"\n[instance]\nproject = \"my-project\"\nzones = [\"us-central1-a\"]\ngpu_count = 3\n";
        let e = parse(text).expect_err("gpu_count");
        assert_eq!((e.line, e.column), (5, 13), "{e}");
        assert_eq!(e.field.as_deref(), Some("instance.gpu_count"));
        assert!(
            e.to_string()
                .starts_with("kgenv.toml:5:13: `instance.gpu_count`"),
            "{e}"
        );
    }

    #[test]
    fn unknown_keys_and_types_are_syntax_errors_with_position() {
        let e = parse("name = \"kg\"\ntarget = \"local\"\n[image]\nbase = 5\n").expect_err("type");
        assert_eq!(e.line, 4, "{e}");
        let e = parse("name = \"kg\"\ntarget = \"local\"\n[image]\nbasse = \"x\"\n")
            .expect_err("unknown");
        assert_eq!(e.line, 4, "{e}");
        assert!(e.message.contains("basse"), "{e}");
    }

    #[test]
    fn the_data_disk_table_parses_and_its_errors_are_located() {
        let base =
            "name = \"kg\"\n[instance]\nproject = \"my-project\"\nzones = [\"us-central1-a\"]\n";
        let env = parse(&format!(
            "{base}[instance.data_disk]\nsize_gb = 500\ntype = \"pd-ssd\"\n"
        ))
        .expect("valid");
        let disk = env.instance.and_then(|i| i.data_disk).expect("a data disk");
        assert_eq!((disk.size_gb, disk.disk_type.as_str()), (500, "pd-ssd"));
        let off = parse(&format!("{base}[instance.data_disk]\nenabled = false\n")).expect("valid");
        assert_eq!(off.instance.and_then(|i| i.data_disk), None);
        let e = parse(&format!("{base}[instance.data_disk]\nsize_gb = 1\n")).expect_err("small");
        assert_eq!(e.field.as_deref(), Some("instance.data_disk.size_gb"));
        assert_eq!(e.line, 6, "{e}");
    }

    #[test]
    fn gcsfuse_options_pass_through_and_a_misspelt_one_is_located() {
        let base =
            "name = \"kg\"\n[instance]\nproject = \"my-project\"\nzones = [\"us-central1-a\"]\n[bucket]\nbucket = \"kg-data\"\n";
        let env = parse(&format!(
            "{base}[bucket.gcsfuse]\nfile-cache.max-size-mb = 20480\nmetadata-cache = {{ ttl-secs = -1 }}\n"
        ))
        .expect("valid");
        let b = env.bucket.expect("bucket");
        assert_eq!(
            b.gcsfuse["file-cache.max-size-mb"],
            serde_json::json!(20480)
        );
        assert_eq!(b.gcsfuse["metadata-cache.ttl-secs"], serde_json::json!(-1));
        let e = parse(&format!(
            "{base}[bucket.gcsfuse]\nfile-cache.max-sise-mb = 20480\n"
        ))
        .expect_err("misspelt");
        assert_eq!(
            e.field.as_deref(),
            Some("bucket.gcsfuse.file-cache.max-sise-mb")
        );
        assert_eq!(e.line, 8, "{e}");
        assert!(
            e.message.contains("did you mean `file-cache.max-size-mb`"),
            "{e}"
        );
        let e = parse(&format!(
            "{base}options = [\"file_cache_max_size_mb=10240\"]\n"
        ))
        .expect_err("a gcsfuse setting as a mount option");
        assert_eq!(e.field.as_deref(), Some("bucket.options"));
        assert!(e.message.contains("[bucket.gcsfuse]"), "{e}");
    }

    #[test]
    fn leaving_scopes_out_gives_least_privilege_by_bucket() {
        let base =
            "name = \"kg\"\n[instance]\nproject = \"my-project\"\nzones = [\"us-central1-a\"]\n";
        let plain = parse(base).expect("valid").instance.expect("instance");
        assert!(plain.scopes_defaulted);
        assert!(
            plain.scopes[0].ends_with("/devstorage.read_only"),
            "{:?}",
            plain.scopes
        );
        let with_bucket = parse(&format!("{base}[bucket]\nbucket = \"kg-data\"\n"))
            .expect("valid")
            .instance
            .expect("instance");
        assert!(with_bucket.can_write_storage(), "{:?}", with_bucket.scopes);
        assert!(!with_bucket.has_cloud_platform_scope());
    }

    #[test]
    fn array_of_tables_fields_are_located() {
        let text = "name = \"kg\"\n[instance]\nproject = \"my-project\"\nzones = [\"us-central1-a\"]\n[[firewall]]\nname = \"kg-ssh\"\nports = [22]\n[[firewall]]\nname = \"kg-web\"\nports = [70000]\n";
        let e = parse(text).expect_err("port");
        assert_eq!(e.field.as_deref(), Some("firewall[1].ports"));
        assert_eq!(e.line, 10, "{e}");
    }

    #[test]
    fn env_defaults_fill_project_and_zone() {
        let text = "name = \"kg\"\n[instance]\n";
        let o = Overrides {
            project: Some("env-project".into()),
            zone: Some("europe-west4-a".into()),
            ..Overrides::default()
        };
        let env = parse_str(text, Path::new("k.toml"), &o).expect("valid");
        let i = env.instance.expect("instance");
        assert_eq!(
            (i.project.as_str(), i.zones.listed()[0].as_str()),
            ("env-project", "europe-west4-a")
        );
    }

    #[test]
    fn json_documents_build_like_files() {
        let doc = serde_json::json!({ "name": "kg", "target": "local", "image": {}, "container": { "gpus": "none" }, "autostop": { "idle_minutes": 30 } });
        let e = from_json(doc, &Overrides::default()).expect_err("autostop on local");
        assert_eq!(e.field, "autostop");
        let env = from_json(
            serde_json::json!({ "name": "kg", "target": "local", "image": {}, "container": {} }),
            &Overrides::default(),
        )
        .expect("valid");
        assert_eq!(env.container.map(|c| c.name), Some("kgenv-kg".to_string()));
    }

    #[test]
    fn timeouts_parse_and_their_errors_point_at_the_key() {
        let base = "name = \"kg\"\ntarget = \"local\"\n[timeouts]\n";
        let env = parse(&format!(
            "{base}disk-mount = \"2m\"\n\"data/titanic\" = \"1h 30m\"\n"
        ))
        .expect("valid");
        assert_eq!(
            env.timeouts.for_step("disk-mount"),
            Some(std::time::Duration::from_secs(120))
        );
        assert_eq!(
            env.timeouts.for_step("data/titanic"),
            Some(std::time::Duration::from_secs(5400))
        );
        let e = parse(&format!(
            "{base}bucket = \"2m\"\n\"data/titanic\" = \"soon\"\n"
        ))
        .expect_err("bad duration");
        assert_eq!(e.field.as_deref(), Some("timeouts.data/titanic"));
        assert_eq!((e.line, e.column), (5, 18), "points at the value: {e}");
        let e = parse(&format!("{base}mount = \"2m\"\n")).expect_err("unknown step");
        assert_eq!(e.field.as_deref(), Some("timeouts.mount"));
        assert_eq!(e.line, 4, "{e}");
    }

    #[test]
    fn autostop_keys_and_the_budget_parse_and_their_errors_are_located() {
        let base =
            "name = \"kg\"\n[instance]\nproject = \"my-project\"\nzones = [\"us-central1-a\"]\n";
        let env = parse(&format!(
            "{base}[autostop]\nidle_minutes = 45\ngpu_util_percent = 30\ncpu_percent = 50\nwarn_minutes = 10\n[budget]\nmax_hours = 12.5\nmax_cost = 40\n"
        ))
        .expect("valid");
        let a = env.autostop.expect("autostop");
        assert_eq!(
            (
                a.idle_minutes,
                a.gpu_util_percent,
                a.cpu_percent,
                a.warn_minutes
            ),
            (45, 30, 50, 10)
        );
        let b = env.budget.expect("budget");
        assert_eq!((b.max_hours, b.max_cost), (Some(12.5), Some(40.0)));
        let e = parse(&format!(
            "{base}[autostop]\nidle_minutes = 30\nwarn_minutes = 30\n"
        ))
        .expect_err("warning as long as the idle time");
        assert_eq!(e.field.as_deref(), Some("autostop.warn_minutes"));
        assert_eq!(e.line, 7, "{e}");
        let e = parse(&format!("{base}[budget]\nmax_cost = -3\n")).expect_err("negative");
        assert_eq!(e.field.as_deref(), Some("budget.max_cost"));
        assert_eq!(e.line, 6, "{e}");
        let e = parse("name = \"kg\"\ntarget = \"local\"\n[budget]\nmax_hours = 3\n")
            .expect_err("budget on local");
        assert_eq!(e.field.as_deref(), Some("budget"));
    }

    #[test]
    fn target_override_drops_gce_only_sections() {
        let o = Overrides {
            target: Some("local".into()),
            ..Overrides::default()
        };
        let env = parse_str(TEMPLATE, Path::new("kgenv.toml"), &o).expect("valid");
        assert_eq!(env.target, Target::Local);
        assert!(env.instance.is_none() && env.firewalls.is_empty() && env.autostop.is_none());
    }
}

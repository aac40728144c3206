//! Google's Compute v1 discovery document as a request validator for the GCE tests.
//!
//! The document comes from the pinned google-api-python-client wheel installed by
//! `scripts/setup/30-gce.sh`, which exports its path as `KGENV_COMPUTE_DISCOVERY`; nothing is
//! copied into the repository. [`Discovery::route`] finds the method a request is for (by
//! HTTP method and path template) and [`Discovery::check_request`] lists every way the
//! request breaks the document: unknown path, unknown or mistyped query parameter, a path
//! parameter that does not match its pattern, and in the body an unknown field, a wrong JSON
//! type (int64/uint64 travel as strings), a value outside an enum, an output-only field, a
//! field the document marks as required for that method, or a string breaking its pattern.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::Value;

/// The environment variable set by `scripts/setup/30-gce.sh`.
pub const ENV: &str = "KGENV_COMPUTE_DISCOVERY";

#[derive(Debug, Clone)]
enum Seg {
    Lit(String),
    Var(String),
}

/// One method of the document.
#[derive(Debug, Clone)]
pub struct Method {
    /// e.g. `compute.instances.insert`.
    pub id: String,
    /// `GET`, `POST`, ...
    pub http_method: String,
    segments: Vec<Seg>,
    params: serde_json::Map<String, Value>,
    /// The request schema, if the method takes a body.
    pub request: Option<String>,
}

/// The loaded document.
pub struct Discovery {
    schemas: serde_json::Map<String, Value>,
    global_params: serde_json::Map<String, Value>,
    methods: Vec<Method>,
    /// The service path, e.g. `compute/v1/`.
    pub service_path: String,
    /// The document's revision.
    pub revision: String,
    regexes: Mutex<BTreeMap<String, Option<regex::Regex>>>,
}

impl std::fmt::Debug for Discovery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Discovery(compute v1 rev {}, {} methods)",
            self.revision,
            self.methods.len()
        )
    }
}

fn collect(resources: &serde_json::Map<String, Value>, out: &mut Vec<Method>) {
    for res in resources.values() {
        if let Some(methods) = res.get("methods").and_then(Value::as_object) {
            for m in methods.values() {
                let path = m["path"].as_str().unwrap_or_default();
                let segments = path
                    .split('/')
                    .map(
                        |s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                            Some(v) => Seg::Var(v.trim_start_matches('+').to_string()),
                            None => Seg::Lit(s.to_string()),
                        },
                    )
                    .collect();
                out.push(Method {
                    id: m["id"].as_str().unwrap_or_default().to_string(),
                    http_method: m["httpMethod"].as_str().unwrap_or_default().to_string(),
                    segments,
                    params: m
                        .get("parameters")
                        .and_then(Value::as_object)
                        .cloned()
                        .unwrap_or_default(),
                    request: m
                        .get("request")
                        .and_then(|r| r.get("$ref"))
                        .and_then(Value::as_str)
                        .map(str::to_string),
                });
            }
        }
        if let Some(sub) = res.get("resources").and_then(Value::as_object) {
            collect(sub, out);
        }
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Some(v) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Discovery {
    /// The document named by `KGENV_COMPUTE_DISCOVERY`, loaded once per test process.
    /// Panics with the way to fix it when the variable is unset or the file unreadable.
    pub fn load() -> Arc<Discovery> {
        static DOC: OnceLock<Arc<Discovery>> = OnceLock::new();
        DOC.get_or_init(|| {
            let path = std::env::var(ENV).unwrap_or_else(|_| {
                panic!(
                    "{ENV} is not set: the GCE tests check every request against Google's Compute v1 discovery document \
                     from the pinned google-api-python-client wheel. Run the tests through scripts/test.sh, or first \
                     `export KGENV_VENV=$PWD/.venv; . scripts/setup/00-base.sh; . scripts/setup/30-gce.sh`"
                )
            });
            Arc::new(Self::from_path(&path).unwrap_or_else(|e| panic!("{ENV}={path}: {e}; re-run scripts/setup/30-gce.sh")))
        })
        .clone()
    }

    /// Loads a document from a file.
    pub fn from_path(path: &str) -> Result<Discovery, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the discovery document: {e}"))?;
        let doc: Value = serde_json::from_str(&text).map_err(|e| format!("not JSON: {e}"))?;
        if doc["name"] != "compute" || doc["version"] != "v1" {
            return Err(format!(
                "not the Compute v1 document (name {}, version {})",
                doc["name"], doc["version"]
            ));
        }
        let mut methods = Vec::new();
        collect(
            doc["resources"].as_object().ok_or("no resources")?,
            &mut methods,
        );
        Ok(Discovery {
            schemas: doc["schemas"].as_object().cloned().ok_or("no schemas")?,
            global_params: doc["parameters"].as_object().cloned().unwrap_or_default(),
            methods,
            service_path: doc["servicePath"]
                .as_str()
                .unwrap_or("compute/v1/")
                .to_string(),
            revision: doc["revision"].as_str().unwrap_or_default().to_string(),
            regexes: Mutex::default(),
        })
    }

    /// The method for `http_method` on `path` (relative to the service path) and its path
    /// parameters; the most specific template wins.
    pub fn route(
        &self,
        http_method: &str,
        path: &str,
    ) -> Option<(&Method, BTreeMap<String, String>)> {
        let parts: Vec<String> = path
            .trim_matches('/')
            .split('/')
            .map(percent_decode)
            .collect();
        let mut best: Option<(&Method, BTreeMap<String, String>, usize)> = None;
        for m in self
            .methods
            .iter()
            .filter(|m| m.http_method == http_method && m.segments.len() == parts.len())
        {
            let mut params = BTreeMap::new();
            let mut literals = 0;
            let ok = m.segments.iter().zip(&parts).all(|(seg, part)| match seg {
                Seg::Lit(l) => {
                    literals += 1;
                    l == part
                }
                Seg::Var(v) => {
                    params.insert(v.clone(), part.clone());
                    !part.is_empty()
                }
            });
            if ok && best.as_ref().is_none_or(|b| literals > b.2) {
                best = Some((m, params, literals));
            }
        }
        best.map(|(m, p, _)| (m, p))
    }

    /// The method with this id.
    pub fn method(&self, id: &str) -> Option<&Method> {
        self.methods.iter().find(|m| m.id == id)
    }

    fn full_match(&self, pattern: &str, v: &str) -> bool {
        let mut cache = self.regexes.lock().unwrap_or_else(|p| p.into_inner());
        let re = cache
            .entry(pattern.to_string())
            .or_insert_with(|| regex::Regex::new(&format!("^(?:{pattern})$")).ok());
        // A pattern the regex crate cannot compile is not checked (none of kgenv's fields).
        re.as_ref().is_none_or(|re| re.is_match(v))
    }

    /// Every way the request breaks the document (empty when it conforms).
    pub fn check_request(
        &self,
        m: &Method,
        path_params: &BTreeMap<String, String>,
        query: &[(String, String)],
        body: Option<&Value>,
    ) -> Vec<String> {
        let mut errs = Vec::new();
        for (name, value) in path_params {
            if let Some(pattern) = m.params.get(name).and_then(|p| p["pattern"].as_str()) {
                if !self.full_match(pattern, value) {
                    errs.push(format!(
                        "{}: path parameter {name}=`{value}` does not match {pattern}",
                        m.id
                    ));
                }
            }
        }
        for (name, value) in query {
            let spec = m
                .params
                .get(name)
                .filter(|p| p["location"] == "query")
                .or_else(|| self.global_params.get(name));
            match spec {
                None => errs.push(format!("{}: unknown query parameter `{name}`", m.id)),
                Some(p) => {
                    let ok = match p["type"].as_str() {
                        Some("boolean") => value == "true" || value == "false",
                        Some("integer") => value.parse::<i64>().is_ok(),
                        _ => true,
                    };
                    if !ok {
                        errs.push(format!(
                            "{}: query parameter `{name}`=`{value}` is not a {}",
                            m.id, p["type"]
                        ));
                    }
                    if let Some(e) = p["enum"].as_array() {
                        if !e.iter().any(|x| x == value.as_str()) {
                            errs.push(format!(
                                "{}: query parameter `{name}`=`{value}` is not one of {e:?}",
                                m.id
                            ));
                        }
                    }
                }
            }
        }
        for (name, p) in &m.params {
            if p["required"] == true
                && p["location"] == "query"
                && !query.iter().any(|(k, _)| k == name)
            {
                errs.push(format!(
                    "{}: required query parameter `{name}` is missing",
                    m.id
                ));
            }
        }
        match (&m.request, body) {
            (Some(schema), Some(b)) => self.check_value(
                b,
                &serde_json::json!({"$ref": schema}),
                schema,
                &m.id,
                &mut errs,
            ),
            (Some(schema), None) => errs.push(format!(
                "{}: the method takes a {schema} body and none was sent",
                m.id
            )),
            (None, Some(_)) => errs.push(format!(
                "{}: the method takes no body and one was sent",
                m.id
            )),
            (None, None) => {}
        }
        errs
    }

    /// Every way `value` breaks schema `name` when sent to `method_id`.
    pub fn check_schema(&self, name: &str, value: &Value, method_id: &str) -> Vec<String> {
        let mut errs = Vec::new();
        self.check_value(
            value,
            &serde_json::json!({"$ref": name}),
            name,
            method_id,
            &mut errs,
        );
        errs
    }

    fn check_value(
        &self,
        v: &Value,
        schema: &Value,
        at: &str,
        method_id: &str,
        errs: &mut Vec<String>,
    ) {
        if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
            match self.schemas.get(r) {
                Some(s) => self.check_value(v, s, at, method_id, errs),
                None => errs.push(format!("{at}: schema {r} is not in the document")),
            }
            return;
        }
        let ty = schema.get("type").and_then(Value::as_str).unwrap_or("any");
        match ty {
            "object" => {
                let Some(obj) = v.as_object() else {
                    errs.push(format!("{at}: expected an object, got {v}"));
                    return;
                };
                let props = schema.get("properties").and_then(Value::as_object);
                if let Some(props) = props {
                    for (k, p) in props {
                        let required = p["annotations"]["required"]
                            .as_array()
                            .is_some_and(|r| r.iter().any(|m| m == method_id));
                        if required && !obj.contains_key(k) {
                            errs.push(format!("{at}.{k}: required by {method_id} but missing"));
                        }
                    }
                }
                for (k, val) in obj {
                    let path = format!("{at}.{k}");
                    match props.and_then(|p| p.get(k)) {
                        Some(p) => {
                            if p["readOnly"] == true {
                                errs.push(format!("{path}: output-only field sent in a request"));
                            }
                            self.check_value(val, p, &path, method_id, errs);
                        }
                        None => match schema.get("additionalProperties") {
                            Some(ap) => self.check_value(val, ap, &path, method_id, errs),
                            None => errs.push(format!("{path}: unknown field")),
                        },
                    }
                }
            }
            "array" => match v.as_array() {
                Some(items) => {
                    for (i, item) in items.iter().enumerate() {
                        self.check_value(
                            item,
                            &schema["items"],
                            &format!("{at}[{i}]"),
                            method_id,
                            errs,
                        );
                    }
                }
                None => errs.push(format!("{at}: expected an array, got {v}")),
            },
            "string" => {
                let Some(s) = v.as_str() else {
                    let fmt = schema["format"]
                        .as_str()
                        .map(|f| format!(" ({f} travels as a JSON string)"))
                        .unwrap_or_default();
                    errs.push(format!("{at}: expected a string{fmt}, got {v}"));
                    return;
                };
                let ok = match schema["format"].as_str() {
                    Some("int64") => s.parse::<i64>().is_ok(),
                    Some("uint64") => s.parse::<u64>().is_ok(),
                    Some("byte") => s
                        .bytes()
                        .all(|c| c.is_ascii_alphanumeric() || b"+/=-_".contains(&c)),
                    _ => true,
                };
                if !ok {
                    errs.push(format!("{at}: `{s}` is not a valid {}", schema["format"]));
                }
                if let Some(e) = schema["enum"].as_array() {
                    if !e.iter().any(|x| x == s) {
                        errs.push(format!(
                            "{at}: `{s}` is not one of {}",
                            Value::Array(e.clone())
                        ));
                    }
                }
                if let Some(p) = schema["pattern"].as_str() {
                    if !self.full_match(p, s) {
                        errs.push(format!("{at}: `{s}` does not match {p}"));
                    }
                }
            }
            "integer" => {
                let n = v
                    .as_i64()
                    .or_else(|| v.as_u64().and_then(|u| i64::try_from(u).ok()));
                let ok = match (n, schema["format"].as_str()) {
                    (None, _) => false,
                    (Some(n), Some("int32")) => i32::try_from(n).is_ok(),
                    (Some(n), Some("uint32")) => u32::try_from(n).is_ok(),
                    (Some(_), _) => true,
                };
                if !ok {
                    errs.push(format!(
                        "{at}: expected an integer ({}), got {v}",
                        schema["format"]
                    ));
                }
            }
            "number" if !v.is_number() => errs.push(format!("{at}: expected a number, got {v}")),
            "boolean" if !v.is_boolean() => errs.push(format!("{at}: expected a boolean, got {v}")),
            _ => {}
        }
    }
}

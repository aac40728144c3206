//! The shape of the code, checked: no import cycle between kgenv-core's top-level modules,
//! the layering DESIGN.md draws (surfaces → runner → steps and engine → backend traits ←
//! clients), the surfaces reaching the core only through the runner, and the README's
//! architecture diagram naming every module there is.
//!
//! Dependencies are read from the source: every `crate::<module>` path outside comments,
//! in each top-level module's files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn core_src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn rust_files(path: &Path) -> Vec<PathBuf> {
    if path.is_file() {
        return vec![path.to_path_buf()];
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(path).expect("readable source dir") {
        let p = entry.expect("dir entry").path();
        if p.is_dir() {
            out.extend(rust_files(&p));
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
    out
}

/// Source text without `//` comments (doc links name modules without depending on them).
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("readable source");
    text.lines()
        .map(|l| match l.find("//") {
            // `://` in a string (a URL) is not a comment.
            Some(i) if !l[..i].ends_with(':') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Names following `prefix` (`crate::` → `backends`, `plan`, ...).
fn referenced(text: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find(prefix) {
        rest = &rest[i + prefix.len()..];
        let name: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.insert(name);
        }
    }
    out
}

/// kgenv-core's top-level modules and the modules each one's code names.
fn core_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = core_src();
    let lib = code(&src.join("lib.rs"));
    let modules: Vec<String> = lib
        .lines()
        .filter_map(|l| l.trim().strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';').to_string())
        .collect();
    assert!(modules.len() > 10, "lib.rs lists the modules: {modules:?}");
    let mut graph = BTreeMap::new();
    for m in &modules {
        let dir = src.join(m);
        let path = if dir.is_dir() {
            dir
        } else {
            src.join(format!("{m}.rs"))
        };
        let mut deps = BTreeSet::new();
        for f in rust_files(&path) {
            deps.extend(referenced(&code(&f), "crate::"));
        }
        deps.retain(|d| d != m && modules.contains(d));
        graph.insert(m.clone(), deps);
    }
    graph
}

/// The strongly connected components with more than one module (Tarjan's algorithm).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct Tarjan<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        found: Vec<Vec<String>>,
    }
    impl<'a> Tarjan<'a> {
        fn visit(&mut self, v: &'a str) {
            self.index.insert(v, self.next);
            self.low.insert(v, self.next);
            self.next += 1;
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in &self.graph[v] {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut scc = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    scc.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if scc.len() > 1 {
                    scc.sort();
                    self.found.push(scc);
                }
            }
        }
    }
    let mut t = Tarjan {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v.as_str()) {
            t.visit(v);
        }
    }
    t.found
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let g: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_iter().map(str::to_string).collect()))
    .collect();
    assert_eq!(cycles(&g), vec![vec!["a", "b", "c"]]);
}

#[test]
fn no_import_cycle_between_top_level_modules() {
    let graph = core_graph();
    let found = cycles(&graph);
    assert!(
        found.is_empty(),
        "import cycles between kgenv-core's top-level modules: {found:?}\ngraph: {graph:#?}"
    );
}

/// The clients of outside systems: below the engine, beside each other.
const CLIENTS: &[&str] = &[
    "gce", "gcs", "ssh", "docker", "kaggle", "github", "billing", "download", "http",
];

#[test]
fn layers_point_one_way() {
    let graph = core_graph();
    let deps = |m: &str| graph.get(m).cloned().unwrap_or_default();
    let forbid = |m: &str, banned: &[&str]| {
        let bad: Vec<String> = deps(m)
            .into_iter()
            .filter(|d| banned.contains(&d.as_str()))
            .collect();
        assert!(bad.is_empty(), "`{m}` must not import {bad:?}");
    };
    assert_eq!(
        deps("backends").into_iter().collect::<Vec<_>>(),
        vec!["error".to_string()],
        "backends holds the traits and depends on error alone"
    );
    let above_engine = ["steps", "runner", "wiring"];
    let mut engine_banned: Vec<&str> = CLIENTS.to_vec();
    engine_banned.extend(above_engine);
    engine_banned.push("mock");
    forbid("plan", &engine_banned);
    let mut steps_banned: Vec<&str> = CLIENTS.to_vec();
    steps_banned.extend(["runner", "wiring", "mock"]);
    forbid("steps", &steps_banned);
    for client in CLIENTS {
        forbid(
            client,
            &["plan", "steps", "runner", "wiring", "mock", "spec", "state"],
        );
    }
    forbid("mock", &["plan", "steps", "runner", "wiring"]);
    forbid(
        "runner",
        &CLIENTS
            .iter()
            .copied()
            .filter(|c| *c != "kaggle")
            .collect::<Vec<_>>(),
    );
}

#[test]
fn surfaces_reach_the_core_through_the_runner() {
    // The CLI and the Python bindings call the runner's verbs; what the core does below
    // it (its steps, its files, its state) is not theirs to touch.
    for krate in ["kgenv-cli", "kgenv-py"] {
        let src = repo().join("crates").join(krate).join("src");
        for f in rust_files(&src) {
            let used = referenced(&code(&f), "kgenv_core::");
            for banned in ["steps", "paths", "state", "plan", "ssh", "keys"] {
                assert!(
                    !used.contains(banned),
                    "{} uses kgenv_core::{banned}: call the runner instead",
                    f.display()
                );
            }
        }
    }
}

#[test]
fn the_readme_diagram_names_every_module() {
    let readme = std::fs::read_to_string(repo().join("README.md")).expect("README.md");
    let start = readme
        .find("## How it is built")
        .expect("a `How it is built` section");
    let section = &readme[start..];
    let diagram = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    for m in core_graph().keys() {
        let named = diagram.contains(&format!("{m}/")) || diagram.contains(&format!(" {m} "));
        assert!(
            named,
            "README's architecture diagram does not name module `{m}`"
        );
    }
}

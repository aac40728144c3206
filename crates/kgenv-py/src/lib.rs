//! `kgenv._kgenv`: the compiled half of the `kgenv` Python package.
//!
//! The pure-Python half (`crates/kgenv-py/python/kgenv`) gives the public API its shape —
//! keyword-argument specs, result objects with notebook views, typed events and
//! exceptions, progress, asyncio — and calls into this module, which wraps `kgenv-core`:
//!
//! - [`spec`]: validated environments from TOML or keyword arguments;
//! - [`ops`], [`tunnel`], [`data`]: the core runner's verbs started as [`run::Run`]s on the
//!   shared [`runtime`], which Python waits for (blocking, GIL released, Ctrl-C cancels
//!   cleanly) or polls from an asyncio loop;
//! - [`world`]: the core's mock backends; [`backends`]: where the real ones plug in;
//! - [`errors`]: core errors as `kgenv` exceptions; [`convert`]: plain data across.

mod backends;
mod convert;
mod data;
mod errors;
mod jupyter;
mod ops;
mod run;
mod runtime;
mod spec;
mod tunnel;
mod world;

use pyo3::prelude::*;

/// The version of the compiled module (the kgenv workspace version).
#[pyfunction]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// Does nothing; `scripts/bench` times it to measure the cost of crossing into Rust.
#[pyfunction]
fn noop() {}

/// The core's verbs, for the parity test: `(verb, cli, python, rust)` each.
#[pyfunction]
fn verbs() -> Vec<(String, &'static str, &'static str, &'static str)> {
    kgenv_core::runner::VERBS
        .iter()
        .map(|v| {
            let name = serde_json::to_value(v.verb)
                .ok()
                .and_then(|n| n.as_str().map(str::to_string))
                .unwrap_or_default();
            (name, v.cli, v.python, v.rust)
        })
        .collect()
}

/// The compiled module.
#[pymodule]
fn _kgenv(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(version, m)?)?;
    m.add_function(wrap_pyfunction!(noop, m)?)?;
    m.add_class::<spec::EnvSpec>()?;
    m.add_function(wrap_pyfunction!(spec::validate_section, m)?)?;
    m.add_class::<world::PyMockWorld>()?;
    m.add_class::<world::PyMockHold>()?;
    m.add_class::<run::Run>()?;
    m.add_class::<tunnel::JupyterTunnel>()?;
    m.add_function(wrap_pyfunction!(ops::start_run, m)?)?;
    m.add_function(wrap_pyfunction!(ops::start_down_preview, m)?)?;
    m.add_function(wrap_pyfunction!(ops::start_ssh, m)?)?;
    m.add_function(wrap_pyfunction!(ops::start_exec, m)?)?;
    m.add_function(wrap_pyfunction!(ops::start_logs, m)?)?;
    m.add_function(wrap_pyfunction!(ops::start_gpu, m)?)?;
    m.add_function(wrap_pyfunction!(ops::start_autostop, m)?)?;
    m.add_function(wrap_pyfunction!(tunnel::start_jupyter, m)?)?;
    m.add_function(wrap_pyfunction!(data::start_download, m)?)?;
    m.add_function(wrap_pyfunction!(data::start_list, m)?)?;
    m.add_function(wrap_pyfunction!(verbs, m)?)?;
    m.add_function(wrap_pyfunction!(jupyter::hash_password, m)?)?;
    m.add_function(wrap_pyfunction!(jupyter::verify_password, m)?)?;
    Ok(())
}

//! The verbs every surface offers, in one list: each surface's parity test walks it (the
//! CLI's subcommands, the Python package's functions, the Rust API in `tests/verbs.rs`), so
//! a verb added to one surface and not the others fails a test.

use serde::Serialize;

/// One of kgenv's verbs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verb {
    /// What `up` would change.
    Plan,
    /// Converge the environment (a change that restarts the VM is confirmed first).
    Up,
    /// List what it deletes and keeps, confirm, then remove what kgenv created (buckets
    /// and data disks deleted only by name).
    Down,
    /// What kgenv created, and a live check.
    Status,
    /// Stop the VM, keep its disks.
    Stop,
    /// Start the VM again.
    Start,
    /// A command on the host.
    Ssh,
    /// The container's logs.
    Logs,
    /// A command in the container.
    Exec,
    /// What the container sees of the GPU.
    Gpu,
    /// Jupyter through an SSH tunnel.
    Jupyter,
    /// Change the idle stop in place.
    Autostop,
    /// Move the data disk (by snapshot) and the VM to another zone, confirmed first.
    Move,
    /// A competition's files.
    DataList,
    /// Download a competition's files (optionally unpacked).
    DataPull,
    /// Hash a Jupyter password.
    HashPassword,
}

/// A verb and its name on each surface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct VerbInfo {
    /// The verb.
    pub verb: Verb,
    /// The CLI's subcommand words (`data pull`).
    pub cli: &'static str,
    /// The Python name, relative to the `kgenv` package (`Env.up`, `data.download`); each
    /// blocking `Env` method has an `_async` twin.
    pub python: &'static str,
    /// The Rust call (`Runner::up`, `runner::data::pull`).
    pub rust: &'static str,
    /// One line on what it does.
    pub about: &'static str,
}

macro_rules! verbs {
    ($($verb:ident, $cli:literal, $py:literal, $rust:literal, $about:literal;)*) => {
        /// Every verb, in the order `kgenv --help` lists them.
        pub const VERBS: &[VerbInfo] = &[
            $(VerbInfo { verb: Verb::$verb, cli: $cli, python: $py, rust: $rust, about: $about },)*
        ];
    };
}

verbs! {
    Plan, "plan", "Env.plan", "Runner::plan", "what `up` would change, and the calls it would make";
    Up, "up", "Env.up", "Runner::up", "create or fix whatever differs from the config; asks before restarting the VM";
    Down, "down", "Env.down", "Runner::down_confirmed", "list, confirm, remove what kgenv created; buckets and disks only when named";
    Status, "status", "Env.status", "Runner::status", "what kgenv created, and a live check";
    Stop, "stop", "Env.stop", "Runner::stop", "stop the VM and keep its disks";
    Start, "start", "Env.start", "Runner::start", "start the VM and reach it again";
    Ssh, "ssh", "Env.ssh", "Runner::ssh", "run a command on the host (the CLI also logs in)";
    Logs, "logs", "Env.logs", "Runner::logs", "the container's logs";
    Exec, "exec", "Env.exec", "Runner::exec", "run a command in the container";
    Gpu, "gpu", "Env.gpu", "Runner::gpu_report", "what the container sees of the GPU";
    Jupyter, "jupyter", "Env.jupyter", "Runner::jupyter", "Jupyter through an SSH tunnel";
    Autostop, "autostop", "Env.autostop", "Runner::autostop", "change the idle stop of a running VM";
    Move, "move", "Env.move", "Runner::move_to", "move the data disk and the VM to another zone; asks first";
    DataList, "data list", "data.list_files", "runner::data::list", "a competition's files and sizes";
    DataPull, "data pull", "data.download", "runner::data::pull", "download a competition's files";
    HashPassword, "hash-password", "jupyter.hash_password", "runner::hash_password", "hash a Jupyter password locally";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_verb_is_listed_once() {
        let all = [
            Verb::Plan,
            Verb::Up,
            Verb::Down,
            Verb::Status,
            Verb::Stop,
            Verb::Start,
            Verb::Ssh,
            Verb::Logs,
            Verb::Exec,
            Verb::Gpu,
            Verb::Jupyter,
            Verb::Autostop,
            Verb::Move,
            Verb::DataList,
            Verb::DataPull,
            Verb::HashPassword,
        ];
        assert_eq!(VERBS.len(), all.len());
        for v in all {
            assert_eq!(VERBS.iter().filter(|i| i.verb == v).count(), 1, "{v:?}");
        }
    }
}

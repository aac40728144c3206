//! The Kaggle data agent (`kaggle::agent_main`) as a test binary: the test executable,
//! re-run on its ignored `agent_child` test with [`VAR`] set, is the agent the "host" runs.
//! Each test file that uses it declares:
//!
//! ```ignore
//! #[test]
//! #[ignore = "helper: the data agent the host runs"]
//! fn agent_child() {
//!     data_agent::run_if_requested();
//! }
//! ```
#![allow(dead_code)]

use std::path::Path;

use kgenv_core::kaggle::AgentCommand;

/// Set (to anything) in the environment of the process that is to be the agent.
pub const VAR: &str = "KGENV_TEST_AGENT_CHILD";

/// The test-harness arguments that run only the ignored `agent_child` test, its output
/// not captured (the agent speaks on stdout).
const ARGS: [&str; 6] = [
    "--exact",
    "agent_child",
    "--ignored",
    "--nocapture",
    "--test-threads",
    "1",
];

/// Runs the agent and exits with its code when this process is the agent; does nothing
/// otherwise (a plain `--ignored` run of the test binary).
pub fn run_if_requested() {
    if std::env::var_os(VAR).is_none() {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    std::process::exit(rt.block_on(kgenv_core::kaggle::agent_main()));
}

/// This test binary with the arguments that make it the agent. Whoever runs it sets [`VAR`].
pub fn command() -> AgentCommand {
    AgentCommand {
        binary: std::env::current_exe().expect("test binary"),
        args: ARGS.map(String::from).to_vec(),
    }
}

/// Writes an executable `sh` script at `path` that runs `before`, then the agent with
/// [`VAR`] set (`before` may end in `|` to feed the agent's stdin through a filter), and
/// returns the command that runs the script.
pub fn write_wrapper(path: &Path, before: &str) -> AgentCommand {
    use std::os::unix::fs::PermissionsExt;
    let exe = std::env::current_exe().expect("test binary");
    std::fs::write(
        path,
        format!(
            "#!/bin/sh\n{before}{VAR}=1 exec '{}' {}\n",
            exe.display(),
            ARGS.join(" ")
        ),
    )
    .expect("wrapper");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    AgentCommand {
        binary: path.to_path_buf(),
        args: Vec::new(),
    }
}

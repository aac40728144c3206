//! What the tests of the `kgenv` binary on the simulated backends share (`mod support;`):
//! the binary run with an isolated `KGENV_HOME` and no cloud variables, the example config,
//! and the output as text.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `kgenv` binary Cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_kgenv");

/// The Jupyter password every run gets, so a test can check it is never printed.
pub const PASSWORD: &str = "cli-test-password";

/// The repository's example config.
pub fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/kgenv.toml")
}

/// Gives `cmd` the test environment: `home` as `KGENV_HOME`, [`PASSWORD`], no colour, and
/// none of the variables that would point it at a real project or another config.
pub fn isolated<'c>(cmd: &'c mut Command, home: &Path) -> &'c mut Command {
    cmd.env("KGENV_HOME", home)
        .env("KGENV_JUPYTER_PASSWORD", PASSWORD)
        .env_remove("CLOUDSDK_CORE_PROJECT")
        .env_remove("CLOUDSDK_COMPUTE_ZONE")
        .env_remove("KGENV_CONFIG")
        .env("NO_COLOR", "1")
}

/// Runs kgenv with `args` in the [`isolated`] environment.
pub fn kgenv(home: &Path, args: &[&str]) -> Output {
    isolated(Command::new(BIN).args(args), home)
        .output()
        .expect("kgenv runs")
}

/// The run's stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The run's stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

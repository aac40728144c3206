//! `up`, a second `up` and `down` from Rust on the simulated world: the whole pipeline of
//! `examples/kgenv.toml` (VM, firewall, bucket, GitHub key, image, container, GPU check,
//! Jupyter, data, autostop) converges, a second run changes nothing, and `down` removes
//! what kgenv made but the bucket and the data.
//!
//! ```sh
//! cargo run -p kgenv-core --example up
//! ```

use kgenv_core::mock::MockWorld;
use kgenv_core::runner::{Event, RunOptions, Runner};

#[tokio::main]
async fn main() -> kgenv_core::Result<()> {
    // Keys and certificates go to a throwaway KGENV_HOME, not your real kgenv config.
    let home = tempfile::tempdir().map_err(|e| kgenv_core::BackendError::io("a home dir", e))?;
    if std::env::var_os("KGENV_HOME").is_none() {
        std::env::set_var("KGENV_HOME", home.path());
    }
    if std::env::var_os("KGENV_JUPYTER_PASSWORD").is_none() {
        // The example's Jupyter wants a password; a real one comes from your shell.
        std::env::set_var("KGENV_JUPYTER_PASSWORD", "example only");
    }
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/kgenv.toml");
    let env = kgenv_core::config::load(path.as_ref())?;
    let world = MockWorld::new();
    let runner = Runner::new(env, world.backends()).state_dir(home.path().join("state"));
    let show = |e: Event| {
        if matches!(
            e,
            Event::Done { .. } | Event::Warning { .. } | Event::Failed { .. }
        ) {
            println!("  {e}");
        }
    };

    let first = runner.up(RunOptions::default(), show).await?;
    println!("up: {} step(s) changed", first.changed());
    let again = runner.up(RunOptions::default(), show).await?;
    println!("up again: {} step(s) changed", again.changed());
    assert_eq!(again.changed(), 0, "a second up changes nothing");

    let gpu = runner.gpu_report().await?;
    println!("gpu: {}", gpu.lines().join("; "));

    let down = runner.down(RunOptions::default(), show).await?;
    println!(
        "down: {} step(s) removed; bucket and data kept",
        down.changed()
    );
    Ok(())
}

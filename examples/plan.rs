//! `plan` from Rust: what `up` would change for `examples/kgenv.toml`, observed on the
//! simulated world (nothing real is contacted).
//!
//! ```sh
//! cargo run -p kgenv-core --example plan [-- path/to/kgenv.toml]
//! ```
//!
//! With real credentials, build the backends with `kgenv_core::wiring::from_env().await`
//! instead of `MockWorld::new().backends()`: what kgenv cannot observe is shown as unknown.

use kgenv_core::mock::MockWorld;
use kgenv_core::runner::{Change, Event, RunOptions, Runner};

#[tokio::main]
async fn main() -> kgenv_core::Result<()> {
    let config = std::env::args().nth(1).unwrap_or_else(|| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/kgenv.toml").into()
    });
    let env = kgenv_core::config::load(config.as_ref())?;
    let state = tempfile::tempdir().map_err(|e| kgenv_core::BackendError::io("a state dir", e))?;
    let runner = Runner::new(env, MockWorld::new().backends()).state_dir(state.path());
    let report = runner
        .plan(RunOptions::default(), |event| {
            if let Event::Planned { .. } = &event {
                println!("{event}");
            }
        })
        .await?;
    let creates = report
        .steps
        .iter()
        .filter(|s| {
            matches!(
                s.outcome,
                kgenv_core::runner::Outcome::Planned {
                    change: Change::Create
                }
            )
        })
        .count();
    println!("plan: {} step(s), {creates} to create", report.steps.len());
    Ok(())
}

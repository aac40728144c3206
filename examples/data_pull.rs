//! Competition data from Rust, no environment needed: list a competition's files and pull
//! the CSVs twice (the second pull skips what is already complete), on the simulated Kaggle.
//!
//! ```sh
//! cargo run -p kgenv-core --example data_pull
//! ```
//!
//! For Kaggle itself use `kgenv_core::wiring::kaggle_from_env()` (credentials as the
//! official client finds them) and a real directory or `gs://bucket/prefix`.

use kgenv_core::mock::MockWorld;
use kgenv_core::runner::data::{self, PullOptions};
use kgenv_core::runner::Event;

#[tokio::main]
async fn main() -> kgenv_core::Result<()> {
    let kaggle = MockWorld::new().backends().kaggle;
    for f in data::list(kaggle.as_ref(), "titanic").await? {
        println!("{:>10}  {}", f.size, f.name);
    }
    let opts = PullOptions::new("/data/titanic").files("*.csv");
    let log = |e: Event| {
        if let Event::Log { line, .. } = e {
            println!("  {line}");
        }
    };
    let first = data::pull(kaggle.as_ref(), "titanic", &opts, log).await?;
    println!(
        "pulled {} file(s), {} bytes",
        first.fetched.len(),
        first.bytes
    );
    let again = data::pull(kaggle.as_ref(), "titanic", &opts, log).await?;
    println!(
        "again: {} fetched, {} already complete",
        again.fetched.len(),
        again.skipped.len()
    );
    assert!(again.fetched.is_empty(), "a second pull fetches nothing");
    Ok(())
}

//! The Rust side of `scripts/bench/python.sh`: the same no-op operations the Python
//! benchmark times through `import kgenv`, called directly on kgenv-core, so the script can
//! print the bindings' overhead as a ratio. Prints one JSON object (microseconds, median).
//!
//! Run through the script; alone: `cargo bench -p kgenv-py --bench overhead`.

use std::time::{Duration, Instant};

use kgenv_core::mock::MockWorld;
use kgenv_core::runner::{RunOptions, Runner};
use kgenv_core::spec::{Container, Data, Env, Gpus, Image, Target};

fn spec() -> Env {
    Env::builder("bench")
        .target(Target::Local)
        .image(Image::builder())
        .container(Container::builder().gpus(Gpus::None))
        .data(Data::builder("titanic"))
        .build()
        .expect("the benchmark's spec is valid")
}

/// Median microseconds per call of `f` over `n` calls (after `n / 10` warm-up calls).
fn median_us(n: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..n / 10 {
        f();
    }
    let mut times: Vec<Duration> = (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[n / 2].as_secs_f64() * 1e6
}

fn main() {
    let home = tempfile::tempdir().expect("temp dir");
    // Safe here: single-threaded until the runtime below starts.
    std::env::set_var("KGENV_HOME", home.path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let world = MockWorld::new();
    let state = home.path().join("state");
    let env = spec();
    // Bring it up once: every later `up` is the no-op this benchmark is about.
    rt.block_on(
        Runner::new(env.clone(), world.backends())
            .state_dir(&state)
            .up(RunOptions::default(), |_| {}),
    )
    .expect("first up");

    // A batch, so the clock's own cost does not swamp a call that does nothing.
    let noop = std::hint::black_box(|| ());
    let t = Instant::now();
    for _ in 0..10_000_000 {
        std::hint::black_box(noop)();
    }
    let noop_ns = t.elapsed().as_secs_f64() * 1e9 / 10_000_000.0;
    let build_us = median_us(2_000, || {
        std::hint::black_box(spec());
    });
    let plan_us = median_us(300, || {
        let runner = Runner::new(env.clone(), world.backends()).state_dir(&state);
        rt.block_on(runner.plan(RunOptions::default(), |_| {}))
            .expect("plan");
    });
    let up_us = median_us(300, || {
        let runner = Runner::new(env.clone(), world.backends()).state_dir(&state);
        let report = rt
            .block_on(runner.up(RunOptions::default(), |_| {}))
            .expect("up");
        assert_eq!(report.changed(), 0, "a second up changes nothing");
    });
    println!(
        "{{\"noop_ns\": {noop_ns:.1}, \"build_us\": {build_us:.2}, \"plan_us\": {plan_us:.1}, \"up_us\": {up_us:.1}}}"
    );
}

//! Drives the data benchmark (`scripts/bench/data.sh`) until the CLI wires `kgenv data`:
//!
//! - `data_bench gen PATH BYTES`: writes deterministic test data, prints its SHA-256;
//! - `data_bench serve ADDR COMPETITION NAME=PATH...`: runs the fake Kaggle API + signed
//!   URL storage server (`tests/support/kaggle_fake.rs`); accepts `FAKE_USER`/`FAKE_KEY`;
//! - `data_bench pull COMPETITION DEST [--concurrency N] [--chunk BYTES] [--files GLOB]`:
//!   `kgenv data pull`'s operation (`runner::data::pull`) on the real Kaggle backend
//!   configured from the environment (KAGGLE_API_ENVIRONMENT, Kaggle credentials,
//!   STORAGE_EMULATOR_HOST), with the downloader's streams and chunk size set;
//! - `data_bench gs-sha256 BUCKET OBJECT`: SHA-256 of an object (STORAGE_EMULATOR_HOST).

#[path = "../tests/support/kaggle_fake.rs"]
mod kaggle_fake;

use std::process::ExitCode;

use kgenv_core::download::DownloadOptions;
use kgenv_core::kaggle::KaggleData;
use kgenv_core::runner::data::{self, PullOptions};
use kgenv_core::runner::Event;
use sha2::Digest;

fn usage() -> ExitCode {
    eprintln!("usage: data_bench gen PATH BYTES | serve ADDR COMPETITION NAME=PATH... | pull COMPETITION DEST [--concurrency N] [--chunk BYTES] [--files GLOB] | gs-sha256 BUCKET OBJECT");
    ExitCode::from(2)
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("gen") if args.len() == 3 => {
            let Ok(size) = args[2].parse() else {
                return usage();
            };
            println!(
                "{}",
                kaggle_fake::generate(std::path::Path::new(&args[1]), size, 1)
            );
            ExitCode::SUCCESS
        }
        Some("serve") if args.len() >= 4 => {
            let Ok(addr) = args[1].parse() else {
                return usage();
            };
            let user = std::env::var("FAKE_USER").unwrap_or_else(|_| "bench".into());
            let key = std::env::var("FAKE_KEY").unwrap_or_else(|_| "bench-key".into());
            let fake =
                kaggle_fake::FakeKaggle::start_on(addr, kaggle_fake::FakeAuth::ApiKey(user, key))
                    .await;
            for spec in &args[3..] {
                let Some((name, path)) = spec.split_once('=') else {
                    return usage();
                };
                fake.add_file(&args[2], name, std::path::Path::new(path));
            }
            println!("ready {}", fake.endpoint());
            let _ = tokio::signal::ctrl_c().await;
            eprintln!(
                "served {} bytes, {} signed URLs",
                fake.served(),
                fake.state
                    .signed_urls
                    .load(std::sync::atomic::Ordering::SeqCst)
            );
            ExitCode::SUCCESS
        }
        Some("pull") if args.len() >= 3 => {
            let mut dl = DownloadOptions::default();
            let mut opts = PullOptions::new(args[2].clone());
            let mut it = args[3..].iter();
            while let Some(flag) = it.next() {
                let Some(v) = it.next() else { return usage() };
                match flag.as_str() {
                    "--concurrency" => dl = dl.concurrency(v.parse().unwrap_or(8)),
                    "--chunk" => dl = dl.chunk_size(v.parse().unwrap_or(8 << 20)),
                    "--files" => opts = opts.files(v.clone()),
                    _ => return usage(),
                }
            }
            let kaggle = match KaggleData::from_env(dl) {
                Ok(k) => k,
                Err(e) => {
                    eprintln!("kgenv: {e}");
                    return ExitCode::FAILURE;
                }
            };
            let on_event = |e: Event| {
                if let Event::Log { line, .. } = e {
                    eprintln!("{line}");
                }
            };
            match data::pull(&kaggle, &args[1], &opts, on_event).await {
                Ok(r) => {
                    let secs = r.elapsed_ms as f64 / 1000.0;
                    eprintln!(
                        "kgenv: {} file(s), {} bytes in {secs:.2}s ({:.0} MB/s)",
                        r.fetched.len(),
                        r.bytes,
                        r.bytes as f64 / 1e6 / secs.max(1e-3)
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("kgenv: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Some("gs-sha256") if args.len() == 3 => {
            let gcs = match kgenv_core::gcs::GcsClient::from_env() {
                Ok(g) => g,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::FAILURE;
                }
            };
            let mut h = sha2::Sha256::new();
            match gcs
                .read_object(&args[1], &args[2], &mut |b| h.update(b))
                .await
            {
                Ok(_) => {
                    println!("{}", hex::encode(h.finalize()));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
        _ => usage(),
    }
}

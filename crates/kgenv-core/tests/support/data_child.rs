//! Runs a `pull` in a child process (the test binary re-executed on its ignored
//! `pull_child` test), so tests can SIGKILL a download mid-file and resume it in a fresh
//! process. Each test file that uses it declares:
//!
//! ```ignore
//! #[test]
//! #[ignore = "helper: run by the tests in a child process"]
//! fn pull_child() {
//!     data_child::run_if_requested();
//! }
//! ```
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};

use serde::{Deserialize, Serialize};

const VAR: &str = "KGENV_TEST_PULL_CHILD";

/// What the child pulls.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChildPull {
    /// Fake Kaggle base URL.
    pub endpoint: String,
    /// Bearer token the fake accepts.
    pub token: String,
    /// Competition.
    pub competition: String,
    /// Destination.
    pub dest: String,
    /// Streams per file.
    pub concurrency: usize,
    /// Chunk size.
    pub chunk_size: u64,
    /// fake-gcs-server `host:port` for gs:// destinations.
    pub gcs_host: Option<String>,
}

/// Starts the child; its stdout gets one JSON event a line, then `DONE` or `ERROR …`.
pub fn spawn(cfg: &ChildPull, kgenv_home: &std::path::Path) -> Child {
    let exe = std::env::current_exe().expect("test binary path");
    Command::new(exe)
        .args([
            "--exact",
            "pull_child",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(VAR, serde_json::to_string(cfg).expect("config json"))
        .env("KGENV_HOME", kgenv_home)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn the child pull")
}

/// Runs the pull when this process is the child; does nothing otherwise.
pub fn run_if_requested() {
    let Ok(cfg) = std::env::var(VAR) else { return };
    let cfg: ChildPull = serde_json::from_str(&cfg).expect("child config");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        use kgenv_core::download::DownloadOptions;
        use kgenv_core::kaggle::{
            credentials::Secret, Credentials, KaggleClient, KaggleData, KaggleEndpoint,
        };
        use kgenv_core::runner::data::{pull, PullOptions};
        let client = KaggleClient::new(
            KaggleEndpoint::custom(&cfg.endpoint).expect("endpoint"),
            Credentials::Token {
                token: Secret::new(cfg.token.clone()),
                source: "test".into(),
            },
        )
        .expect("client");
        let dl = DownloadOptions::default()
            .concurrency(cfg.concurrency)
            .chunk_size(cfg.chunk_size);
        let mut data = KaggleData::new(client, dl.clone()).expect("backend");
        if let Some(h) = &cfg.gcs_host {
            data = data.with_gcs(kgenv_core::gcs::GcsClient::emulator(h).expect("gcs"));
        }
        let opts = PullOptions::new(cfg.dest.clone()).parallel_files(1);
        let print = |e: kgenv_core::runner::Event| {
            println!("{}", serde_json::to_string(&e).expect("event json"))
        };
        match pull(&data, &cfg.competition, &opts, print).await {
            Ok(_) => println!("DONE"),
            Err(e) => println!("ERROR {e}"),
        }
    });
}

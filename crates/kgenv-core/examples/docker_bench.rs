//! Times N container inspects through kgenv's Docker layer, for `scripts/bench/docker.sh`.
//!
//! ```text
//! cargo run --release -p kgenv-core --example docker_bench -- --via local   --container NAME -n 100
//! cargo run --release -p kgenv-core --example docker_bench -- --via forward --container NAME -n 100
//! ```
//!
//! ```text
//! cargo run --release -p kgenv-core --example docker_bench -- --via ssh --container NAME -n 100 \
//!     --ssh USER@127.0.0.1:PORT --identity KEY --known-hosts FILE
//! ```
//!
//! `local` uses `DOCKER_HOST` (the script points it at an OpenSSH-forwarded socket to time a
//! tunnel); `forward` uses the tunnelled transport with an in-process `Remote` whose
//! `open_unix` connects to the local socket (no SSH); `ssh` logs in with kgenv's own
//! `SshConnector` (host key checked against `--known-hosts`) and reaches the host's
//! `/var/run/docker.sock` through russh `direct-streamlocal` channels on that one
//! connection. `connect_ms` includes the SSH login. Prints one line:
//! `kgenv <via> n=<N> connect_ms=<..> total_ms=<..> per_call_us=<..>`.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use kgenv_core::backends::container::{ContainerEngine, EngineConnector, EngineLocation};
use kgenv_core::backends::remote::{ByteStream, ExecOutput, ExecRequest, HostAddr, Remote};
use kgenv_core::backends::{BackendResult, ProgressFn, RemoteConnector};
use kgenv_core::docker::DockerConnector;
use kgenv_core::spec::SshHost;
use kgenv_core::ssh::SshConnector;
use kgenv_core::BackendError;

/// A `Remote` that only forwards `open_unix` to this machine's socket.
struct Forward(String);

#[async_trait]
impl Remote for Forward {
    fn endpoint(&self) -> String {
        "bench@forward:0".into()
    }
    async fn exec(
        &self,
        _req: ExecRequest,
        _progress: ProgressFn<'_>,
    ) -> BackendResult<ExecOutput> {
        Err(BackendError::other("not used by the benchmark"))
    }
    async fn put_file(&self, _path: &str, _content: &[u8], _mode: u32) -> BackendResult<()> {
        Err(BackendError::other("not used by the benchmark"))
    }
    async fn read_file(&self, _path: &str) -> BackendResult<Option<Vec<u8>>> {
        Err(BackendError::other("not used by the benchmark"))
    }
    async fn open_tcp(&self, _host: &str, _port: u16) -> BackendResult<Box<dyn ByteStream>> {
        Err(BackendError::other("not used by the benchmark"))
    }
    async fn open_unix(&self, _path: &str) -> BackendResult<Box<dyn ByteStream>> {
        let s = tokio::net::UnixStream::connect(&self.0)
            .await
            .map_err(|e| BackendError::io("connecting to the docker socket", e))?;
        Ok(Box::new(s))
    }
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let via = arg(&args, "--via").unwrap_or_else(|| "local".into());
    let container = arg(&args, "--container").ok_or("--container NAME is required")?;
    let n: u32 = arg(&args, "-n").map_or(Ok(100), |v| v.parse())?;
    let socket = arg(&args, "--socket").unwrap_or_else(|| "/var/run/docker.sock".into());

    let t0 = Instant::now();
    let at = match via.as_str() {
        "local" => EngineLocation::Local,
        "forward" => EngineLocation::Remote(Arc::new(Forward(socket))),
        "ssh" => {
            let host =
                SshHost::parse(&arg(&args, "--ssh").ok_or("--ssh USER@HOST:PORT is required")?)?;
            let known_hosts =
                arg(&args, "--known-hosts").ok_or("--known-hosts FILE is required")?;
            let addr = HostAddr {
                user: host.user,
                host: host.host,
                port: host.port,
                identity_file: Some(
                    arg(&args, "--identity")
                        .ok_or("--identity KEY is required")?
                        .into(),
                ),
                pinned_host_keys: Vec::new(),
                trust_on_first_use: false,
            };
            let session = SshConnector::new()
                .known_hosts(known_hosts)
                .connect(&addr, std::time::Duration::from_secs(20))
                .await?;
            EngineLocation::Remote(session)
        }
        other => return Err(format!("--via {other}: use local, forward or ssh").into()),
    };
    let engine: Arc<dyn ContainerEngine> = DockerConnector::new().connect(at).await?;
    // One call to warm the connection pool, as a CLI session would after connecting.
    engine
        .inspect_container(&container)
        .await?
        .ok_or("no such container")?;
    let connect_ms = t0.elapsed().as_secs_f64() * 1e3;

    let t = Instant::now();
    for _ in 0..n {
        let info = engine.inspect_container(&container).await?;
        if !info.is_some_and(|c| c.running) {
            return Err("the container stopped during the benchmark".into());
        }
    }
    let total = t.elapsed();
    println!(
        "kgenv {via} n={n} connect_ms={connect_ms:.1} total_ms={:.1} per_call_us={:.0}",
        total.as_secs_f64() * 1e3,
        total.as_secs_f64() * 1e6 / f64::from(n.max(1))
    );
    Ok(())
}

//! The data agent's server side: what runs ON the host as the hidden `kgenv data agent`.
//! [`agent_main`] reads one [`AgentRequest`] from stdin, does the work with the local
//! backend ([`KaggleData`], so the bytes go from Kaggle to the host's disk or bucket
//! directly) and prints [`AgentLine`]s: progress and log lines while it works, then one
//! result or typed error.

use super::protocol::{encode, AgentLine, AgentOp, AgentRequest, WireError};
use crate::backends::{BackendResult, Progress};
use crate::download::DownloadOptions;
use crate::error::BackendError;
use crate::kaggle::data::KaggleData;
use crate::kaggle::KaggleClient;

/// The exit status of an agent whose caller went away (128 + SIGPIPE, as a shell reports a
/// command killed by SIGPIPE).
const SIGPIPE_EXIT: i32 = 141;

/// Runs one agent request: reads it from stdin, writes JSON lines to stdout. Returns the
/// process exit code (0 on success, 1 on a failure that was reported as an error line).
pub async fn agent_main() -> i32 {
    let out = std::sync::Mutex::new(std::io::stdout());
    let print = |l: AgentLine| {
        use std::io::Write;
        if let Ok(mut o) = out.lock() {
            let written = writeln!(o, "{}", encode(l)).and_then(|()| o.flush());
            // The caller is gone: when the kgenv that started the agent dies (SIGKILL, a
            // dropped connection), sshd closes the session's pipes but sends no signal to a
            // command without a terminal, so nothing else would stop a download nobody
            // waits for, and the next `up` would start a second writer of the same file.
            // Stop as a process killed by SIGPIPE would (Rust ignores SIGPIPE, so the write
            // fails instead); the partial file and its record stay for the next run.
            if let Err(e) = written {
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    std::process::exit(SIGPIPE_EXIT);
                }
            }
        }
    };
    let read = tokio::task::spawn_blocking(|| {
        use std::io::Read;
        let mut input = Vec::new();
        std::io::stdin().read_to_end(&mut input).map(|_| input)
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
    let input = match read {
        Ok(i) => i,
        Err(e) => {
            print(AgentLine::Error(WireError::from(&BackendError::io(
                "reading the request",
                e,
            ))));
            return 1;
        }
    };
    let result = match serde_json::from_slice::<AgentRequest>(&input) {
        Ok(req) => serve(req, &|l| print(l)).await,
        Err(e) => Err(BackendError::InvalidArgument {
            resource: "agent request".into(),
            message: e.to_string(),
        }),
    };
    match result {
        Ok(value) => {
            print(AgentLine::Result(value));
            0
        }
        Err(e) => {
            print(AgentLine::Error(WireError::from(&e)));
            1
        }
    }
}

async fn serve(
    req: AgentRequest,
    print: &(dyn Fn(AgentLine) + Send + Sync),
) -> BackendResult<serde_json::Value> {
    let json = |v: Result<serde_json::Value, serde_json::Error>| {
        v.map_err(|e| BackendError::other(e.to_string()))
    };
    let (endpoint, credentials) = (req.endpoint, req.credentials);
    let (concurrency, chunk_size) = (req.concurrency, req.chunk_size);
    // Only reaching Kaggle needs the client: `plan` and `status` send no credentials.
    let with_client = move || -> BackendResult<KaggleData> {
        let credentials = credentials.ok_or_else(|| BackendError::Unauthenticated {
            service: "kaggle",
            message: "the data agent was asked to reach Kaggle without credentials".into(),
        })?;
        let client = KaggleClient::new(endpoint, credentials.into())?;
        let opts = DownloadOptions::default()
            .concurrency(concurrency)
            .chunk_size(chunk_size);
        KaggleData::new(client, opts)
    };
    match req.op {
        AgentOp::Present { dest, file } => json(serde_json::to_value(
            KaggleData::present_without_client(&dest, &file).await?,
        )),
        AgentOp::Space { dest, files } => json(serde_json::to_value(
            KaggleData::space_at(&dest, &files).await?,
        )),
        AgentOp::List { competition } => json(serde_json::to_value(
            with_client()?.list(&competition).await?,
        )),
        AgentOp::Fetch {
            competition,
            file,
            opts,
        } => {
            let data = with_client()?;
            let progress = |p: Progress| match p {
                Progress::Transfer {
                    item,
                    done,
                    total,
                    bytes_per_sec,
                    eta_secs,
                } => print(AgentLine::Progress {
                    item,
                    done,
                    total,
                    bytes_per_sec,
                    eta_secs,
                }),
                Progress::Bytes { item, done, total } => print(AgentLine::Progress {
                    item,
                    done,
                    total,
                    bytes_per_sec: 0,
                    eta_secs: None,
                }),
                Progress::Line { line, .. } => print(AgentLine::Log { line }),
            };
            json(serde_json::to_value(
                data.fetch_to(&competition, &file, &opts, &progress).await?,
            ))
        }
    }
}

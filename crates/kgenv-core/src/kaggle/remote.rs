//! Running the data step ON a remote host, so competition data never passes through the
//! user's machine.
//!
//! [`RemoteKaggle`] implements [`Kaggle`] over the [`Remote`] trait:
//!
//! 1. it asks the host for `$HOME` and `uname -sm`, and copies kgenv's own Linux binary
//!    there once (`~/.cache/kgenv/bin/kgenv-<sha256 prefix>`, mode 0755, through
//!    `put_file`; an existing copy with the same hash is reused). The binary is the running
//!    executable, or the file named by `KGENV_REMOTE_BINARY` (a Linux build for hosts of
//!    another OS or architecture than the user's machine);
//! 2. every call runs the hidden agent command (`kgenv data agent`) there, with a JSON
//!    [`AgentRequest`] on stdin — the Kaggle credentials travel only on that stdin, never
//!    on a command line or in the environment;
//! 3. the agent answers with JSON lines on stdout: progress lines (turned back into
//!    [`Progress::Transfer`]), log lines, and one final result or typed error.
//!
//! The CLI wires `kgenv data agent` to [`agent_main`].

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

use super::credentials::{Credentials, Secret};
use super::data::KaggleData;
use super::env::KaggleEndpoint;
use super::KaggleClient;
use crate::backends::kaggle::{DataFile, Kaggle};
use crate::backends::remote::{ExecRequest, Remote};
use crate::backends::{BackendResult, Progress, ProgressFn, Stream};
use crate::download::DownloadOptions;
use crate::error::BackendError;
use crate::shell::Cmd;

/// Tag on every agent output line, so other output (a login banner) is ignored.
const TAG: &str = "kgenv_agent";

/// Credentials on the wire to the agent (stdin only).
#[derive(Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum WireCredentials {
    Token {
        token: String,
        source: String,
    },
    ApiKey {
        username: String,
        key: String,
        source: String,
    },
}

impl From<&Credentials> for WireCredentials {
    fn from(c: &Credentials) -> Self {
        match c {
            Credentials::Token { token, source } => Self::Token {
                token: token.expose().into(),
                source: format!("{source} (forwarded)"),
            },
            Credentials::ApiKey {
                username,
                key,
                source,
            } => Self::ApiKey {
                username: username.clone(),
                key: key.expose().into(),
                source: format!("{source} (forwarded)"),
            },
        }
    }
}

impl From<WireCredentials> for Credentials {
    fn from(w: WireCredentials) -> Self {
        match w {
            WireCredentials::Token { token, source } => Self::Token {
                token: Secret::new(token),
                source,
            },
            WireCredentials::ApiKey {
                username,
                key,
                source,
            } => Self::ApiKey {
                username,
                key: Secret::new(key),
                source,
            },
        }
    }
}

/// What the agent is asked to do.
#[derive(Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum AgentOp {
    /// List a competition's files.
    List {
        /// Competition.
        competition: String,
    },
    /// Is `file` fully at `dest`?
    Present {
        /// Destination.
        dest: String,
        /// File.
        file: String,
    },
    /// Fetch `file` to `dest`.
    Fetch {
        /// Competition.
        competition: String,
        /// File.
        file: DataFile,
        /// Destination.
        dest: String,
    },
}

/// One request to the agent, read from its stdin. Holds the Kaggle credentials: never log it.
#[derive(Clone, Serialize, Deserialize)]
pub struct AgentRequest {
    op: AgentOp,
    endpoint: KaggleEndpoint,
    credentials: WireCredentials,
    concurrency: usize,
    chunk_size: u64,
    extract: bool,
}

impl std::fmt::Debug for AgentRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentRequest")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

/// A typed error on the wire.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct WireError {
    kind: String,
    resource: Option<String>,
    message: String,
}

impl From<&BackendError> for WireError {
    fn from(e: &BackendError) -> Self {
        let (resource, message) = match e {
            BackendError::NotFound { resource } => (Some(resource.clone()), String::new()),
            BackendError::PermissionDenied { resource, message }
            | BackendError::InvalidArgument { resource, message } => {
                (Some(resource.clone()), message.clone())
            }
            BackendError::Unauthenticated { message, .. } => (None, message.clone()),
            other => (None, other.to_string()),
        };
        Self {
            kind: e.kind().into(),
            resource,
            message,
        }
    }
}

impl WireError {
    fn into_error(self, host: &str) -> BackendError {
        let on = |m: String| format!("{m} (on {host})");
        match self.kind.as_str() {
            "not_found" => BackendError::NotFound {
                resource: on(self.resource.unwrap_or(self.message)),
            },
            "permission_denied" => BackendError::PermissionDenied {
                resource: self.resource.unwrap_or_default(),
                message: self.message,
            },
            "invalid_argument" => BackendError::InvalidArgument {
                resource: self.resource.unwrap_or_default(),
                message: self.message,
            },
            "unauthenticated" => BackendError::Unauthenticated {
                service: "kaggle",
                message: self.message,
            },
            "transient" | "rate_limited" | "connection" | "timeout" => {
                BackendError::transient("kaggle", on(self.message))
            }
            _ => BackendError::other(on(self.message)),
        }
    }
}

/// One line the agent prints.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum AgentLine {
    Progress {
        item: String,
        done: u64,
        total: Option<u64>,
        bytes_per_sec: u64,
        eta_secs: Option<u64>,
    },
    Log {
        line: String,
    },
    Result(serde_json::Value),
    Error(WireError),
}

#[derive(Serialize, Deserialize)]
struct Tagged {
    #[serde(rename = "kgenv_agent")]
    version: u32,
    #[serde(flatten)]
    line: AgentLine,
}

fn encode(line: AgentLine) -> String {
    serde_json::to_string(&Tagged { version: 1, line }).unwrap_or_default()
}

fn decode(line: &str) -> Option<AgentLine> {
    // The line may carry a prefix (a test harness, a shell); the JSON starts at the tag.
    let start = line.find(&format!("{{\"{TAG}\""))?;
    serde_json::from_str::<Tagged>(line[start..].trim())
        .ok()
        .map(|t| t.line)
}

/// Runs one agent request: reads it from stdin, writes JSON lines to stdout. Returns the
/// process exit code (0 on success, 1 on a failure that was reported as an error line).
pub async fn agent_main() -> i32 {
    let out = std::sync::Mutex::new(std::io::stdout());
    let print = |l: AgentLine| {
        use std::io::Write;
        if let Ok(mut o) = out.lock() {
            let _ = writeln!(o, "{}", encode(l));
            let _ = o.flush();
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
    let client = KaggleClient::new(req.endpoint, req.credentials.into())?;
    let opts = DownloadOptions::default()
        .concurrency(req.concurrency)
        .chunk_size(req.chunk_size);
    let data = KaggleData::new(client, opts)?.extract(req.extract);
    let json = |v: Result<serde_json::Value, serde_json::Error>| {
        v.map_err(|e| BackendError::other(e.to_string()))
    };
    match req.op {
        AgentOp::List { competition } => {
            json(serde_json::to_value(data.list_files(&competition).await?))
        }
        AgentOp::Present { dest, file } => {
            json(serde_json::to_value(data.present(&dest, &file).await?))
        }
        AgentOp::Fetch {
            competition,
            file,
            dest,
        } => {
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
                data.fetch(&competition, &file, &dest, &progress).await?,
            ))
        }
    }
}

/// Which binary is copied to the host, and the arguments that make it the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentCommand {
    /// A Linux executable on this machine.
    pub binary: PathBuf,
    /// Arguments that run [`agent_main`] (`["data", "agent"]` for the kgenv CLI).
    pub args: Vec<String>,
}

impl AgentCommand {
    /// The running kgenv executable (or `KGENV_REMOTE_BINARY`) with `data agent`.
    pub fn current() -> BackendResult<Self> {
        let binary = match std::env::var_os("KGENV_REMOTE_BINARY").filter(|v| !v.is_empty()) {
            Some(p) => PathBuf::from(p),
            None => {
                if !cfg!(target_os = "linux") {
                    return Err(BackendError::Unavailable {
                        backend: "remote data",
                        hint: "this kgenv is not a Linux build; set KGENV_REMOTE_BINARY to a Linux kgenv binary for the host".into(),
                    });
                }
                std::env::current_exe()
                    .map_err(|e| BackendError::io("finding the kgenv executable", e))?
            }
        };
        Ok(Self {
            binary,
            args: vec!["data".into(), "agent".into()],
        })
    }
}

/// The [`Kaggle`] backend that runs on a remote host (see the module docs).
pub struct RemoteKaggle {
    remote: Arc<dyn Remote>,
    agent: AgentCommand,
    endpoint: KaggleEndpoint,
    credentials: Credentials,
    download: DownloadOptions,
    extract: bool,
    installed: OnceCell<String>,
}

impl std::fmt::Debug for RemoteKaggle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteKaggle")
            .field("host", &self.remote.endpoint())
            .field("agent", &self.agent)
            .field("credentials", &self.credentials.describe())
            .finish_non_exhaustive()
    }
}

impl RemoteKaggle {
    /// Runs the data work on `remote` with the local client's endpoint and credentials.
    pub fn new(remote: Arc<dyn Remote>, client: &KaggleClient, agent: AgentCommand) -> Self {
        Self {
            remote,
            agent,
            endpoint: client.endpoint().clone(),
            credentials: client.credentials().clone(),
            download: DownloadOptions::default(),
            extract: false,
            installed: OnceCell::new(),
        }
    }

    /// Downloader settings used on the host.
    #[must_use]
    pub fn download(mut self, opts: DownloadOptions) -> Self {
        self.download = opts;
        self
    }

    /// Unpack zips on the host.
    #[must_use]
    pub fn extract(mut self, yes: bool) -> Self {
        self.extract = yes;
        self
    }

    /// Copies the agent binary to the host when it is not there yet; returns its path there.
    pub async fn install(&self) -> BackendResult<String> {
        self.installed
            .get_or_try_init(|| self.install_once())
            .await
            .cloned()
    }

    async fn install_once(&self) -> BackendResult<String> {
        let host = self.remote.endpoint();
        let out = self
            .remote
            .exec(
                ExecRequest::new(r#"printf '%s\n' "$HOME"; uname -sm"#),
                &crate::backends::no_progress,
            )
            .await?;
        if !out.success() {
            return Err(BackendError::CommandFailed {
                command: "uname".into(),
                exit_code: out.exit_code,
                stderr_tail: out.stderr_tail(),
            });
        }
        let text = out.stdout_text();
        let mut lines = text.lines();
        let home = lines.next().unwrap_or_default().trim().to_string();
        let uname = lines.next().unwrap_or_default().trim().to_string();
        if home.is_empty() {
            return Err(BackendError::other(format!(
                "{host}: could not find the login user's home directory"
            )));
        }
        if std::env::var_os("KGENV_REMOTE_BINARY").is_none() {
            let want = format!("Linux {}", std::env::consts::ARCH);
            if uname != want {
                return Err(BackendError::Unavailable {
                    backend: "remote data",
                    hint: format!("{host} is `{uname}` but this kgenv is built for `{want}`; set KGENV_REMOTE_BINARY to a kgenv build for the host"),
                });
            }
        }
        let binary = self.agent.binary.clone();
        let bytes = tokio::fs::read(&binary)
            .await
            .map_err(|e| BackendError::io(format!("reading {}", binary.display()), e))?;
        let hash = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(&bytes))
        };
        let path = format!("{home}/.cache/kgenv/bin/kgenv-{}", &hash[..16]);
        let check = Cmd::new("test").arg("-x").arg(&path).to_string();
        let present = self
            .remote
            .exec(ExecRequest::new(check), &crate::backends::no_progress)
            .await?
            .success();
        if !present {
            tracing::info!(host = %host, path = %path, "copying kgenv to the host for the data step");
            self.remote.put_file(&path, &bytes, 0o755).await?;
        }
        Ok(path)
    }

    async fn call(
        &self,
        op: AgentOp,
        progress: ProgressFn<'_>,
    ) -> BackendResult<serde_json::Value> {
        let path = self.install().await?;
        let req = AgentRequest {
            op,
            endpoint: self.endpoint.clone(),
            credentials: WireCredentials::from(&self.credentials),
            concurrency: self.download.concurrency,
            chunk_size: self.download.chunk_size,
            extract: self.extract,
        };
        let stdin = serde_json::to_vec(&req).map_err(|e| BackendError::other(e.to_string()))?;
        let cmd = Cmd::new(&path).args(&self.agent.args).to_string();
        let forward = |p: Progress| {
            if let Progress::Line {
                stream: Stream::Stdout,
                line,
            } = &p
            {
                match decode(line) {
                    Some(AgentLine::Progress {
                        item,
                        done,
                        total,
                        bytes_per_sec,
                        eta_secs,
                    }) => progress(Progress::Transfer {
                        item,
                        done,
                        total,
                        bytes_per_sec,
                        eta_secs,
                    }),
                    Some(AgentLine::Log { line }) => progress(Progress::Line {
                        stream: Stream::Stdout,
                        line,
                    }),
                    _ => {}
                }
            }
        };
        let out = self
            .remote
            .exec(ExecRequest::new(cmd).stdin(stdin), &forward)
            .await?;
        let host = self.remote.endpoint();
        for line in out.stdout_text().lines().rev() {
            match decode(line) {
                Some(AgentLine::Result(value)) => return Ok(value),
                Some(AgentLine::Error(error)) => return Err(error.into_error(&host)),
                _ => {}
            }
        }
        Err(BackendError::CommandFailed {
            command: "kgenv data agent".into(),
            exit_code: out.exit_code,
            stderr_tail: out.stderr_tail(),
        })
    }

    fn parse<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> BackendResult<T> {
        serde_json::from_value(v)
            .map_err(|e| BackendError::other(format!("unexpected answer from the data agent: {e}")))
    }
}

#[async_trait]
impl Kaggle for RemoteKaggle {
    async fn list_files(&self, competition: &str) -> BackendResult<Vec<DataFile>> {
        Self::parse(
            self.call(
                AgentOp::List {
                    competition: competition.into(),
                },
                &crate::backends::no_progress,
            )
            .await?,
        )
    }

    async fn present(&self, dest: &str, file: &str) -> BackendResult<Option<u64>> {
        Self::parse(
            self.call(
                AgentOp::Present {
                    dest: dest.into(),
                    file: file.into(),
                },
                &crate::backends::no_progress,
            )
            .await?,
        )
    }

    async fn fetch(
        &self,
        competition: &str,
        file: &DataFile,
        dest: &str,
        progress: ProgressFn<'_>,
    ) -> BackendResult<u64> {
        let op = AgentOp::Fetch {
            competition: competition.into(),
            file: file.clone(),
            dest: dest.into(),
        };
        Self::parse(self.call(op, progress).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_and_ignore_noise() {
        let l = encode(AgentLine::Progress {
            item: "a".into(),
            done: 5,
            total: Some(9),
            bytes_per_sec: 3,
            eta_secs: Some(2),
        });
        assert!(matches!(
            decode(&l),
            Some(AgentLine::Progress { done: 5, .. })
        ));
        assert!(decode("Welcome to Ubuntu").is_none());
        assert!(matches!(
            decode(&format!("test agent ... {l}")),
            Some(AgentLine::Progress { done: 5, .. })
        ));
        assert!(decode("{\"kgenv_agent\": 1, \"bogus\": {}}").is_none());
    }

    #[test]
    fn request_debug_hides_credentials() {
        let req = AgentRequest {
            op: AgentOp::List {
                competition: "c".into(),
            },
            endpoint: KaggleEndpoint::prod(),
            credentials: WireCredentials::Token {
                token: "sekrit-token".into(),
                source: "x".into(),
            },
            concurrency: 1,
            chunk_size: 1,
            extract: false,
        };
        assert!(!format!("{req:?}").contains("sekrit"));
    }
}

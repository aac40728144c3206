//! The data agent's client side: [`RemoteKaggle`], the [`Kaggle`] backend that works ON a
//! remote host. It copies kgenv's own binary there once ([`AgentCommand`] says which file
//! and which arguments make it the agent), then runs the agent for every call with the
//! request on stdin, and turns the agent's lines back into [`Progress`] and results.
//!
//! [`RemoteKaggle::observe_only`] makes the variant `plan` and `status` use: it copies
//! nothing, sends no credentials, and answers only what the agent already on the host can
//! tell by looking (`present`, `space`).

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::OnceCell;

use super::protocol::{decode, AgentLine, AgentOp, AgentRequest, WireCredentials};
use crate::backends::kaggle::{DataFile, DestSpace, FetchOptions, Kaggle};
use crate::backends::remote::{ExecRequest, Remote};
use crate::backends::{BackendResult, Progress, ProgressFn, Stream};
use crate::download::DownloadOptions;
use crate::error::BackendError;
use crate::kaggle::credentials::Credentials;
use crate::kaggle::env::KaggleEndpoint;
use crate::kaggle::KaggleClient;
use crate::shell::Cmd;

/// Which binary is copied to the host, and the arguments that make it the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentCommand {
    /// A Linux executable on this machine.
    pub binary: PathBuf,
    /// Arguments that run [`agent_main`](super::agent_main) (`["data", "agent"]` for the kgenv CLI).
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

/// The [`Kaggle`] backend that runs on a remote host (see [the agent module](super)).
pub struct RemoteKaggle {
    remote: Arc<dyn Remote>,
    agent: AgentCommand,
    endpoint: KaggleEndpoint,
    credentials: Credentials,
    download: DownloadOptions,
    observe_only: bool,
    installed: OnceCell<String>,
}

impl std::fmt::Debug for RemoteKaggle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteKaggle")
            .field("host", &self.remote.endpoint())
            .field("agent", &self.agent)
            .field("credentials", &self.credentials.describe())
            .field("observe_only", &self.observe_only)
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
            observe_only: false,
            installed: OnceCell::new(),
        }
    }

    /// Only looks, for `plan` and `status`: never copies the agent to the host (a host
    /// without it answers [`BackendError::Unavailable`], shown as unknown), never sends the
    /// Kaggle credentials, and refuses to list or fetch.
    #[must_use]
    pub fn observe_only(mut self) -> Self {
        self.observe_only = true;
        self
    }

    /// Downloader settings used on the host.
    #[must_use]
    pub fn download(mut self, opts: DownloadOptions) -> Self {
        self.download = opts;
        self
    }

    /// Copies the agent binary to the host when it is not there yet (in observe-only mode,
    /// fails instead); returns its path there.
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
        if !present && self.observe_only {
            return Err(BackendError::Unavailable {
                backend: "remote data",
                hint: format!("kgenv's data agent is not on {host} yet (`kgenv up` copies it to {path}); plan and status copy nothing there, so what the destination holds is not known"),
            });
        }
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
        // How a timeout names the call: the operation and its file, never the request.
        let label = match &op {
            AgentOp::List { competition } => format!("kgenv data agent: list {competition}"),
            AgentOp::Present { file, .. } => format!("kgenv data agent: look for {file}"),
            AgentOp::Space { .. } => "kgenv data agent: free space".to_string(),
            AgentOp::Fetch {
                competition, file, ..
            } => format!("kgenv data agent: fetch {competition}/{}", file.name),
        };
        // Credentials go only where Kaggle is reached: looking needs none.
        let reaches_kaggle = matches!(op, AgentOp::List { .. } | AgentOp::Fetch { .. });
        if reaches_kaggle && self.observe_only {
            return Err(BackendError::Unavailable {
                backend: "remote data",
                hint: "plan and status only look at the host: they list and fetch nothing there"
                    .into(),
            });
        }
        let req = AgentRequest {
            op,
            endpoint: self.endpoint.clone(),
            credentials: reaches_kaggle.then(|| WireCredentials::from(&self.credentials)),
            concurrency: self.download.concurrency,
            chunk_size: self.download.chunk_size,
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
            .exec(ExecRequest::new(cmd).stdin(stdin).label(label), &forward)
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

    async fn space(&self, dest: &str, files: &[String]) -> BackendResult<Option<DestSpace>> {
        let answer: Option<DestSpace> = Self::parse(
            self.call(
                AgentOp::Space {
                    dest: dest.into(),
                    files: files.to_vec(),
                },
                &crate::backends::no_progress,
            )
            .await?,
        )?;
        // Say which host the directory is on: the message names it to the user.
        Ok(answer.map(|s| DestSpace {
            path: format!("{}:{}", self.remote.endpoint(), s.path),
            ..s
        }))
    }

    async fn fetch(
        &self,
        competition: &str,
        file: &DataFile,
        opts: &FetchOptions,
        progress: ProgressFn<'_>,
    ) -> BackendResult<u64> {
        let op = AgentOp::Fetch {
            competition: competition.into(),
            file: file.clone(),
            opts: opts.clone(),
        };
        Self::parse(self.call(op, progress).await?)
    }
}

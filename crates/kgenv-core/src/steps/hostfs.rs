//! Files and directories on the host the steps work on: over SSH for `gce`/`ssh`, this
//! machine's file system for `local`.

use std::sync::Arc;

use crate::backends::no_progress;
use crate::backends::remote::{ExecRequest, Remote};
use crate::error::{BackendError, Result};
use crate::plan::StepCtx;
use crate::shell::Cmd;

/// The host's file system.
#[derive(Clone)]
pub enum HostFs {
    /// A remote host over SSH.
    Remote(Arc<dyn Remote>),
    /// This machine.
    Local,
}

impl HostFs {
    /// The host of the run.
    pub async fn of(ctx: &StepCtx) -> Result<Self> {
        Ok(match ctx.remote().await? {
            Some(r) => Self::Remote(r),
            None => Self::Local,
        })
    }

    /// Reads a file; `None` when absent.
    pub async fn read(&self, path: &str) -> Result<Option<Vec<u8>>> {
        match self {
            Self::Remote(r) => Ok(r.read_file(path).await?),
            Self::Local => match tokio::fs::read(path).await {
                Ok(b) => Ok(Some(b)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(BackendError::io(format!("reading {path}"), e).into()),
            },
        }
    }

    /// Writes a file with `mode` (atomically locally), creating parent directories.
    pub async fn write(&self, path: &str, content: &[u8], mode: u32) -> Result<()> {
        match self {
            Self::Remote(r) => Ok(r.put_file(path, content, mode).await?),
            Self::Local => {
                let (p, c) = (std::path::PathBuf::from(path), content.to_vec());
                tokio::task::spawn_blocking(move || crate::paths::write_atomic(&p, &c, mode))
                    .await
                    .map_err(|e| BackendError::other(e.to_string()))?
                    .map_err(|e| BackendError::io(format!("writing {path}"), e).into())
            }
        }
    }

    /// Creates directories (and parents).
    pub async fn mkdirs(&self, dirs: &[&str]) -> Result<()> {
        match self {
            Self::Remote(r) => {
                r.exec(
                    ExecRequest::new(Cmd::new("mkdir").arg("-p").args(dirs).line()).sudo(),
                    &no_progress,
                )
                .await?
                .or_failed("mkdir -p")?;
                Ok(())
            }
            Self::Local => {
                for d in dirs {
                    tokio::fs::create_dir_all(d)
                        .await
                        .map_err(|e| BackendError::io(format!("creating {d}"), e))?;
                }
                Ok(())
            }
        }
    }

    /// Creates directories (and parents) that belong to the login user: what the user and
    /// kgenv's data agent write into without sudo (`input/<competition>`, `working/`). On a
    /// remote host they are made as root (their parents are system directories) and handed
    /// to the login user — only the directories named, never what is inside them.
    pub async fn mkdirs_for_user(&self, dirs: &[&str]) -> Result<()> {
        match self {
            Self::Remote(r) => {
                // sudo sets SUDO_UID/SUDO_GID to the login user; a root login has neither.
                let line = format!(
                    "{} && chown -- \"${{SUDO_UID:-$(id -u)}}:${{SUDO_GID:-$(id -g)}}\" {}",
                    Cmd::new("mkdir").arg("-p").arg("--").args(dirs).line(),
                    dirs.iter()
                        .map(|d| crate::shell::quote(d))
                        .collect::<Vec<_>>()
                        .join(" ")
                );
                r.exec(ExecRequest::new(line).sudo(), &no_progress)
                    .await?
                    .or_failed("mkdir -p && chown (the login user's directories)")?;
                Ok(())
            }
            Self::Local => self.mkdirs(dirs).await,
        }
    }

    /// Removes a file or directory tree; absent is fine.
    pub async fn remove(&self, path: &str) -> Result<()> {
        match self {
            Self::Remote(r) => {
                r.exec(
                    ExecRequest::new(Cmd::new("rm").arg("-rf").arg("--").arg(path).line()).sudo(),
                    &no_progress,
                )
                .await?
                .or_failed("rm -rf")?;
                Ok(())
            }
            Self::Local => match tokio::fs::remove_dir_all(path).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(_) => match tokio::fs::remove_file(path).await {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(BackendError::io(format!("removing {path}"), e).into()),
                },
            },
        }
    }
}

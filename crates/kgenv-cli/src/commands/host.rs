//! `ssh`, `jupyter` and `autostop`: the environment's host.

use kgenv_core::runner::Event;
use kgenv_core::{BackendError, Error};

use super::Session;
use crate::cli::Autostop;
use crate::render;

/// `kgenv ssh [-- COMMAND]`: the system `ssh` through the `ssh <env>` alias, so a login is
/// interactive and the host key is the pinned one.
pub fn ssh(s: &Session, command: &[String], tty: bool) -> Result<(), Error> {
    let status = s
        .runner
        .ssh_command(command, tty)?
        .status()
        .map_err(|e| BackendError::io("running ssh (is OpenSSH's client installed?)", e))?;
    match status.code() {
        Some(0) => Ok(()),
        code => Err(BackendError::CommandFailed {
            command: "ssh".into(),
            exit_code: code.map_or(-1, i64::from),
            stderr_tail: String::new(),
        }
        .into()),
    }
}

/// `kgenv jupyter`: opens the tunnel, prints where to go, serves until Ctrl-C.
pub async fn jupyter(s: &Session, port: u16, show_token: bool) -> Result<(), Error> {
    let tunnel = s.runner.jupyter(port).await?;
    render::jupyter(&tunnel, show_token, s.json);
    if tunnel.tunnelled() {
        eprintln!("tunnel open through SSH; Ctrl-C to close");
        tokio::select! {
            () = tunnel.closed() => {}
            () = s.cancel.cancelled() => {}
        }
    }
    Ok(())
}

/// `kgenv autostop MINUTES|off`.
pub async fn autostop(s: &Session, setting: Autostop) -> Result<(), Error> {
    let minutes = match setting {
        Autostop::Off => None,
        Autostop::Minutes(m) => Some(m),
    };
    let renderer = s.renderer.clone();
    let result = s
        .runner
        .autostop(minutes, move |e: Event| renderer.event(&e))
        .await;
    s.renderer.finish();
    result?;
    render::autostop(&s.runner.env().name, minutes, s.json);
    Ok(())
}

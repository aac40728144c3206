//! `ssh`, `jupyter` and `autostop`: the environment's host.

use kgenv_core::runner::Event;
use kgenv_core::{BackendError, Error};

use super::Session;
use crate::cli::Autostop;
use crate::render;

/// `kgenv ssh [-- COMMAND]`: the system `ssh` through the `ssh <env>` alias, so a login is
/// interactive and the host key is the pinned one. Returns ssh's exit status, as `ssh`
/// itself would exit: the remote command's (`exit 3` → 3), or 255 for ssh's own errors.
pub fn ssh(s: &Session, command: &[String], tty: bool) -> Result<u8, Error> {
    let status = s
        .runner
        .ssh_command(command, tty)?
        .status()
        .map_err(|e| BackendError::io("running ssh (is OpenSSH's client installed?)", e))?;
    Ok(exit_code(status))
}

/// A child's exit status as a shell reports it: its code, or 128 + the signal that ended it.
fn exit_code(status: std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code).unwrap_or(1),
        (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(1),
        (None, None) => 1,
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
    let budget = s.runner.env().budget.map(|b| b.set_for());
    render::autostop(&s.runner.env().name, minutes, budget.as_deref(), s.json);
    Ok(())
}

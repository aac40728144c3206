//! `logs`, `exec` and `gpu`: the environment's container.

use kgenv_core::runner::{Event, LogOptions, Stream};
use kgenv_core::{BackendError, Error};

use super::Session;
use crate::{out, render};

/// `kgenv logs`.
pub async fn logs(s: &Session, follow: bool, tail: Option<u64>) -> Result<(), Error> {
    let opts = LogOptions {
        follow,
        tail,
        timestamps: false,
    };
    let json = s.json;
    // The container's lines on stdout; how the host was reached stays out of them.
    let print = move |e: Event| match (&e, json) {
        (Event::Log { step, .. }, true) if step == "logs" => render::json(&e),
        (Event::Log { step, line, .. }, false) if step == "logs" => out!("{line}"),
        _ => {}
    };
    tokio::select! {
        r = s.runner.logs(opts, print) => r,
        () = s.cancel.cancelled() => Ok(()),
    }
}

/// `kgenv exec`: the command's output on stdout and stderr, its failure as exit 1.
pub async fn exec(s: &Session, command: &[String]) -> Result<(), Error> {
    let json = s.json;
    let output = s
        .runner
        .exec(command, move |e| match (&e, json) {
            (Event::Log { step, .. }, true) if step == "exec" => render::json(&e),
            (
                Event::Log {
                    step, line, stream, ..
                },
                false,
            ) if step == "exec" => match stream {
                Stream::Stdout => out!("{line}"),
                Stream::Stderr => eprintln!("{line}"),
            },
            _ => {}
        })
        .await?;
    if output.success() {
        Ok(())
    } else {
        Err(BackendError::CommandFailed {
            command: command.join(" "),
            exit_code: output.exit_code,
            stderr_tail: String::new(),
        }
        .into())
    }
}

/// `kgenv gpu`.
pub async fn gpu(s: &Session) -> Result<(), Error> {
    let report = s.runner.gpu_report().await?;
    if s.json {
        render::json(&report);
    } else {
        render::gpu(&report);
    }
    Ok(())
}

//! `logs`, `exec`, `shell` and `gpu`: the environment's container.

use std::io::{IsTerminal, Read};

use kgenv_core::runner::{Event, LogOptions, ShellIo, Stream, TermSize};
use kgenv_core::{BackendError, Error};
use rustix::termios::{self, OptionalActions, Termios};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

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

/// `kgenv shell`: this terminal, raw, wired to a terminal in the container until the
/// program there exits; returns its exit status.
pub async fn shell(s: &Session, command: &[String]) -> Result<u8, Error> {
    if !std::io::stdin().is_terminal() || !std::io::stdout().is_terminal() {
        return Err(Error::Usage(
            "`kgenv shell` needs a terminal on stdin and stdout; in scripts run commands with `kgenv exec -- CMD`".into(),
        ));
    }
    let (key_tx, keys) = mpsc::channel(64);
    let (size_tx, resizes) = mpsc::channel(8);
    let io = ShellIo {
        input: keys,
        output: tokio::io::stdout(),
        resizes,
        size: term_size(),
        term: std::env::var("TERM").ok().filter(|t| !t.is_empty()),
    };
    // Raw: keys reach the container as typed (Ctrl-C, arrows, Ctrl-D), and what it prints
    // is shown as it is; restored however this returns.
    let raw = RawMode::enter()?;
    spawn_key_reader(key_tx);
    let winch = tokio::spawn(async move {
        let Ok(mut changes) = signal(SignalKind::window_change()) else {
            return;
        };
        while changes.recv().await.is_some() {
            if size_tx.send(term_size()).await.is_err() {
                break;
            }
        }
    });
    // Ctrl-C is a key in raw mode; a SIGINT from elsewhere ends the session here, so the
    // terminal is restored before kgenv exits 130.
    let result = tokio::select! {
        r = s.runner.shell(command, io, |_| {}) => r,
        () = s.cancel.cancelled() => Err(Error::Cancelled),
    };
    winch.abort();
    drop(raw);
    // A code outside 0..=255 (none is known: -1) is a failure all the same.
    Ok(u8::try_from(result?).unwrap_or(1))
}

/// This terminal's size (24×80 when it does not say).
fn term_size() -> TermSize {
    match termios::tcgetwinsize(std::io::stdout()) {
        Ok(w) if w.ws_row > 0 && w.ws_col > 0 => TermSize {
            rows: w.ws_row,
            cols: w.ws_col,
        },
        _ => TermSize { rows: 24, cols: 80 },
    }
}

/// Reads keys on a thread of its own: a blocking read of stdin cannot be cancelled, and
/// tokio's stdin would hold the runtime's shutdown until the next key; this thread just
/// ends with the process.
fn spawn_key_reader(keys: mpsc::Sender<Vec<u8>>) {
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = [0u8; 4096];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if keys.blocking_send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
}

/// Stdin's terminal in raw mode until dropped, then as it was.
struct RawMode(Termios);

impl RawMode {
    fn enter() -> Result<Self, Error> {
        let fail = |e: rustix::io::Errno| {
            Error::from(BackendError::io(
                "setting this terminal to raw mode",
                e.into(),
            ))
        };
        let saved = termios::tcgetattr(std::io::stdin()).map_err(fail)?;
        let mut raw = saved.clone();
        raw.make_raw();
        termios::tcsetattr(std::io::stdin(), OptionalActions::Now, &raw).map_err(fail)?;
        Ok(Self(saved))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin(), OptionalActions::Now, &self.0);
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

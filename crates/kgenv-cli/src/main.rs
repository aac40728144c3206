//! The `kgenv` command: a thin layer over kgenv-core's runner. [`cli`] parses arguments,
//! [`commands`] turns each command into runner calls, [`render`] prints what comes back;
//! this file starts the runtime and maps errors to exit codes.

mod cli;
mod commands;
mod render;

use std::process::ExitCode;

use clap::Parser;
use kgenv_core::error::error_chain;
use kgenv_core::Error;

use cli::{Cli, Command};
use commands::{container, data, host, lifecycle, local, Session, EXIT_CANCELLED};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.global.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let json = cli.global.json;
    match runtime.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let code = if e.is_config() {
                2
            } else if e.is_cancelled() {
                EXIT_CANCELLED
            } else {
                1
            };
            report_error(&e, json);
            ExitCode::from(code)
        }
    }
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info,kgenv_core=info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let ansi = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}

fn report_error(e: &Error, json: bool) {
    if json {
        let mut obj =
            serde_json::json!({ "error": { "kind": e.kind(), "message": error_chain(e) } });
        if let Error::Config(c) = e {
            obj["error"]["file"] = serde_json::json!(c.path);
            obj["error"]["line"] = serde_json::json!(c.line);
            obj["error"]["column"] = serde_json::json!(c.column);
            obj["error"]["field"] = serde_json::json!(c.field);
        }
        if let Some(u) = e.unconfirmed() {
            // What was not done, for the script that must now decide to pass --yes.
            obj["error"]["operation"] = serde_json::json!(u.operation);
            obj["error"]["changes"] = serde_json::json!(u.changes);
            obj["error"]["keeps"] = serde_json::json!(u.keeps);
        }
        if let Some(t) = e.command_timeout() {
            // What was killed and what it printed last, for a script to show or log.
            obj["error"]["timeout"] = serde_json::json!({
                "step": t.step,
                "command": t.command,
                "host": t.host,
                "after_secs": t.after.as_secs_f64(),
                "inactivity": t.inactivity,
                "last_lines": t.last_lines,
            });
        }
        out!("{obj}");
    }
    match e {
        Error::RunFailed { failed, .. } if e.command_timeout().is_some() => {
            eprintln!(
                "error: {} step(s) failed: {}",
                failed.len(),
                failed.join(", ")
            );
            if let Some(t) = e.command_timeout() {
                eprintln!("  first failure: {}", render::command_timeout(t));
            }
        }
        _ if e.command_timeout().is_some() => {
            if let Some(t) = e.command_timeout() {
                eprintln!("error: {}", render::command_timeout(t));
            }
        }
        // The preview was just printed: say what happened and what to do, not the list again.
        _ if !json && e.unconfirmed().is_some_and(|u| u.operation == "down") => {
            eprintln!("error: `down` was not confirmed, so nothing was changed; answer y on a terminal, or pass --yes to delete the above");
        }
        _ if !json && e.unconfirmed().is_some_and(|u| u.operation == "move") => {
            eprintln!("error: `move` was not confirmed, so nothing was changed; answer y on a terminal, or pass --yes to do the above");
        }
        Error::RunFailed { failed, first } => {
            eprintln!(
                "error: {} step(s) failed: {}",
                failed.len(),
                failed.join(", ")
            );
            eprintln!("  first failure: {}", error_chain(first.as_ref()));
        }
        other => eprintln!("error: {}", error_chain(other)),
    }
}

/// Runs the command; its exit code on success (0, or the shell's own for `kgenv shell`).
async fn run(cli: Cli) -> Result<u8, Error> {
    let json = cli.global.json;
    // Commands that need no environment.
    match &cli.command {
        Command::Init { force } => return local::init(&cli.global.config, *force).map(|()| 0),
        Command::HashPassword => return local::hash(json).map(|()| 0),
        Command::Data { command } => return data::run(command, &cli.global).await.map(|()| 0),
        _ => {}
    }
    let s = Session::open(&cli.global).await?;
    // These pass the exit status of what they ran through, as `ssh` and `docker exec -it` do.
    match &cli.command {
        Command::Shell { command } => return container::shell(&s, command).await,
        Command::Ssh { tty, command } => return host::ssh(&s, command, *tty),
        _ => {}
    }
    let done = match &cli.command {
        Command::Init { .. }
        | Command::HashPassword
        | Command::Data { .. }
        | Command::Shell { .. }
        | Command::Ssh { .. } => Ok(()),
        Command::Plan { select } => lifecycle::plan(&s, select).await,
        Command::Up {
            select,
            yes,
            wait_for_capacity,
        } => lifecycle::up(&s, select, *yes, *wait_for_capacity).await,
        Command::Down {
            select,
            yes,
            delete_bucket,
            delete_disk,
        } => {
            let delete = lifecycle::Delete {
                buckets: delete_bucket,
                disks: delete_disk,
            };
            lifecycle::down(&s, select, *yes, &delete).await
        }
        Command::Move { zone, yes } => lifecycle::move_to(&s, zone, *yes).await,
        Command::Status => lifecycle::status(&s).await,
        Command::Stop => lifecycle::stop(&s).await,
        Command::Start { wait_for_capacity } => lifecycle::start(&s, *wait_for_capacity).await,
        Command::Steps => lifecycle::steps(&s),
        Command::Jupyter { port, show_token } => host::jupyter(&s, *port, *show_token).await,
        Command::Autostop { setting } => host::autostop(&s, *setting).await,
        Command::Logs { follow, tail } => container::logs(&s, *follow, *tail).await,
        Command::Exec { command } => container::exec(&s, command).await,
        Command::Gpu => container::gpu(&s).await,
    };
    done.map(|()| 0)
}

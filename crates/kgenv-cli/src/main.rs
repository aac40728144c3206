//! The `kgenv` command: a thin layer over kgenv-core that parses arguments, picks the
//! backends (real, or simulated with `--mock`), renders events and maps errors to exit codes.

mod cli;
mod render;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use clap::Parser;
use kgenv_core::backends::Backends;
use kgenv_core::config::{self, Overrides};
use kgenv_core::error::error_chain;
use kgenv_core::mock::MockWorld;
use kgenv_core::plan::{Change, Event, Outcome, Report, RunOptions, Runner};
use kgenv_core::Error;
use tokio_util::sync::CancellationToken;

use cli::{Cli, Command, Selection, TargetArg};
use render::Renderer;

/// Prints a line on stdout; a closed pipe (`kgenv plan | head`) ends the program quietly
/// instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if writeln!(std::io::stdout().lock(), $($arg)*).is_err() {
            std::process::exit(0);
        }
    }};
}

/// Exit code for a cancelled run (128 + SIGINT), as shells expect.
const EXIT_CANCELLED: u8 = 130;

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
        Ok(()) => ExitCode::SUCCESS,
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
        out!("{obj}");
    }
    match e {
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

fn state_dir(cli: &Cli) -> PathBuf {
    cli.global
        .state_dir
        .clone()
        .unwrap_or_else(kgenv_core::state::StateStore::default_dir)
}

fn options(s: &Selection) -> RunOptions {
    RunOptions {
        only: s.only.clone(),
        until: s.until.clone(),
        ..RunOptions::default()
    }
}

async fn run(cli: Cli) -> Result<(), Error> {
    if let Command::Init { force } = &cli.command {
        return init(&cli.global.config, *force);
    }
    if let Command::Data { command } = &cli.command {
        return data(command, cli.global.json).await;
    }
    let overrides = Overrides {
        target: cli.global.target.map(|t| match t {
            TargetArg::Gce => "gce".to_string(),
            TargetArg::Ssh => "ssh".into(),
            TargetArg::Local => "local".into(),
        }),
        ssh_host: cli.global.host.clone(),
        ..Overrides::from_env()
    };
    let env = config::load_with(&cli.global.config, &overrides)?;
    let state_dir = state_dir(&cli);
    let backends = if cli.global.mock {
        eprintln!(
            "SIMULATED (--mock): nothing real is created; the simulated world lives in {}",
            state_dir.join("mock-world.json").display()
        );
        MockWorld::persistent(&state_dir.join("mock-world.json"))?.backends()
    } else {
        Backends::from_env().await
    };
    let cancel = CancellationToken::new();
    spawn_ctrl_c(cancel.clone());
    let mut runner = Runner::new(env, backends)
        .state_dir(&state_dir)
        .cancel_token(cancel.clone());
    if !cli.global.mock {
        // Real hosts get a Host block so `ssh <env>` and editors' remote plugins work.
        runner = runner.ssh_config(kgenv_core::ssh::SshConfigFiles::default_paths()?);
    }
    let renderer = Arc::new(Renderer::new(cli.global.json, cli.global.verbose > 0));
    let planned: Arc<Mutex<Vec<Event>>> = Arc::default();
    let sink = {
        let (renderer, planned) = (renderer.clone(), planned.clone());
        move |e: Event| {
            if matches!(e, Event::Planned { .. }) {
                planned
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(e.clone());
            }
            renderer.event(&e);
        }
    };
    let json = cli.global.json;
    let order: Vec<String> = runner.steps().iter().map(|s| s.id().to_string()).collect();
    match &cli.command {
        Command::Init { .. } | Command::Data { .. } => Ok(()),
        Command::Logs { follow, tail } => {
            let opts = kgenv_core::backends::container::LogOptions {
                follow: *follow,
                tail: *tail,
                timestamps: false,
            };
            let print = |e: Event| {
                if let Event::Log { line, .. } = e {
                    out!("{line}");
                }
            };
            tokio::select! {
                r = runner.logs(opts, print) => r,
                () = cancel.cancelled() => Ok(()),
            }
        }
        Command::Exec { command } => {
            let output = runner
                .exec(command, |e| {
                    if let Event::Log { line, stream, .. } = e {
                        match stream {
                            kgenv_core::backends::Stream::Stdout => out!("{line}"),
                            kgenv_core::backends::Stream::Stderr => eprintln!("{line}"),
                        }
                    }
                })
                .await?;
            if output.success() {
                Ok(())
            } else {
                Err(kgenv_core::BackendError::CommandFailed {
                    command: command.join(" "),
                    exit_code: output.exit_code,
                    stderr_tail: String::new(),
                }
                .into())
            }
        }
        Command::Gpu => {
            let report = runner.gpu_report().await?;
            if json {
                if let Ok(s) = serde_json::to_string(&report) {
                    out!("{s}");
                }
            } else {
                out!("{report:#?}");
            }
            Ok(())
        }
        Command::Stop | Command::Start => {
            let stop = matches!(cli.command, Command::Stop);
            let sink = move |e: Event| renderer.event(&e);
            let info = if stop {
                runner.stop_instance(sink).await?
            } else {
                runner.start_instance(sink).await?
            };
            if json {
                if let Ok(s) = serde_json::to_string(&info) {
                    out!("{s}");
                }
            } else {
                out!(
                    "{}: {:?}{}",
                    info.at,
                    info.status,
                    info.external_ip
                        .as_deref()
                        .map(|ip| format!(" at {ip}"))
                        .unwrap_or_default()
                );
            }
            Ok(())
        }
        Command::Ssh { tty, command } => ssh(&runner, command, *tty, cli.global.mock),
        Command::Jupyter { port, show_token } => {
            jupyter(&runner, *port, *show_token, &cancel).await
        }
        Command::Steps => {
            for s in runner.steps() {
                let deps = if s.deps().is_empty() {
                    String::new()
                } else {
                    format!("  (after {})", s.deps().join(", "))
                };
                out!("{:<22} {}{deps}", s.id(), s.summary());
            }
            Ok(())
        }
        Command::Plan { select } => {
            let result = runner.plan(options(select), sink).await;
            renderer.finish();
            let report = result?;
            if json {
                print_json(&report);
            } else {
                print_plan(
                    &order,
                    &planned.lock().unwrap_or_else(|p| p.into_inner()),
                    &report,
                );
            }
            Ok(())
        }
        Command::Up { select } => {
            let result = runner.up(options(select), sink).await;
            renderer.finish();
            let report = result?;
            if json {
                print_json(&report);
            } else {
                let satisfied = report
                    .steps
                    .iter()
                    .filter(|s| s.outcome == Outcome::Satisfied)
                    .count();
                out!(
                    "up: {} step(s) changed, {satisfied} already as specified ({:.1}s)",
                    report.changed(),
                    report.elapsed_ms as f64 / 1000.0
                );
            }
            Ok(())
        }
        Command::Down {
            select,
            delete_bucket,
        } => {
            let opts = RunOptions {
                delete_buckets: delete_bucket.clone(),
                ..options(select)
            };
            let result = runner.down(opts, sink).await;
            renderer.finish();
            let report = result?;
            if json {
                print_json(&report);
            } else {
                out!(
                    "down: removed {} step(s)' resources; buckets and data are kept ({:.1}s)",
                    report.changed(),
                    report.elapsed_ms as f64 / 1000.0
                );
            }
            Ok(())
        }
        Command::Status => {
            let result = runner.status(sink).await;
            renderer.finish();
            let status = result?;
            if json {
                if let Ok(s) = serde_json::to_string(&status) {
                    out!("{s}");
                }
                return Ok(());
            }
            out!(
                "environment {} (state: {})",
                runner.env().name,
                status.state_file.display()
            );
            if status.state.is_empty() {
                out!("  kgenv has created nothing yet");
            }
            for (step, rec) in &status.state.steps {
                for (role, id) in &rec.created {
                    out!("  {step:<20} {role}: {id}");
                }
                for (k, v) in &rec.facts {
                    let v = if k == "host_keys" {
                        format!("{} key(s) pinned", v.lines().count())
                    } else {
                        v.clone()
                    };
                    out!("  {step:<20} {k} = {v}");
                }
            }
            out!("live:");
            print_plan(
                &order,
                &planned.lock().unwrap_or_else(|p| p.into_inner()),
                &status.live,
            );
            Ok(())
        }
    }
}

fn print_json(report: &Report) {
    if let Ok(s) = serde_json::to_string(&serde_json::json!({ "result": report })) {
        out!("{s}");
    }
}

fn print_plan(order: &[String], planned: &[Event], report: &Report) {
    // The DAG's declared order reads top to bottom; completion order would not.
    let pos = |e: &Event| {
        order
            .iter()
            .position(|id| id == e.step())
            .unwrap_or(usize::MAX)
    };
    let mut planned: Vec<&Event> = planned.iter().collect();
    planned.sort_by_key(|e| pos(e));
    for e in &planned {
        out!("{e}");
    }
    let count = |c: Change| {
        planned
            .iter()
            .filter(|e| matches!(e, Event::Planned { change, .. } if *change == c))
            .count()
    };
    out!(
        "plan: {} to create, {} to update, {} unchanged, {} unknown ({} steps)",
        count(Change::Create),
        count(Change::Update),
        count(Change::None),
        count(Change::Unknown),
        report.steps.len()
    );
    if count(Change::Unknown) > 0 {
        out!("      (unknown: kgenv could not observe them — no credentials or unreachable; see the reasons above)");
    }
}

fn ssh(runner: &Runner, command: &[String], tty: bool, mock: bool) -> Result<(), Error> {
    let env = runner.env();
    if mock || env.target == kgenv_core::spec::Target::Local {
        return Err(Error::Usage(format!(
            "`kgenv ssh` needs a real gce or ssh host; `{}` is {}",
            env.name,
            if mock { "simulated (--mock)" } else { "local" }
        )));
    }
    let files = kgenv_core::ssh::SshConfigFiles::default_paths()?;
    if !files.kgenv_config.exists() {
        return Err(Error::Usage(format!(
            "no SSH config for `{}` yet: run `kgenv up` first",
            env.name
        )));
    }
    let status = files
        .ssh_command(&env.name, command, tty)
        .status()
        .map_err(|e| {
            kgenv_core::BackendError::io("running ssh (is OpenSSH's client installed?)", e)
        })?;
    match status.code() {
        Some(0) => Ok(()),
        code => Err(kgenv_core::BackendError::CommandFailed {
            command: "ssh".into(),
            exit_code: code.map_or(-1, i64::from),
            stderr_tail: String::new(),
        }
        .into()),
    }
}

async fn jupyter(
    runner: &Runner,
    port: u16,
    show_token: bool,
    cancel: &CancellationToken,
) -> Result<(), Error> {
    let env = runner.env();
    let published = env
        .container
        .as_ref()
        .zip(env.jupyter.as_ref())
        .and_then(|(c, j)| {
            c.ports
                .iter()
                .find(|p| p.container == u32::from(j.port))
                .map(|p| {
                    (
                        p.bind.clone().unwrap_or_else(|| "127.0.0.1".into()),
                        p.host.unwrap_or(p.container) as u16,
                    )
                })
        })
        .ok_or_else(|| {
            Error::Usage(format!(
                "`{}` has no [jupyter] published by its [container]",
                env.name
            ))
        })?;
    let (local_port, _forward) = match runner.connect_host().await? {
        Some(remote) => {
            let bind = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            let forward =
                kgenv_core::ssh::forward_local(remote, bind, "127.0.0.1", published.1).await?;
            (forward.local_addr().port(), Some(forward))
        }
        None => (published.1, None),
    };
    let access = kgenv_core::jupyter::access(env, local_port)?;
    out!(
        "Jupyter: {}",
        if show_token {
            access.browser_url()
        } else {
            access.url.clone()
        }
    );
    if let Some(fp) = &access.cert_sha256 {
        out!(
            "certificate SHA-256: {fp}{}",
            if access.self_signed {
                " (self-signed by kgenv: your browser will warn; compare this fingerprint)"
            } else {
                ""
            }
        );
    }
    if access.token.is_some() && !show_token {
        out!("token mode: pass --show-token to print the URL with its token");
    }
    if _forward.is_some() {
        eprintln!("tunnel open through SSH; Ctrl-C to close");
        cancel.cancelled().await;
    }
    Ok(())
}

async fn data(command: &cli::DataCommand, json: bool) -> Result<(), Error> {
    use kgenv_core::kaggle::{self, PullEvent, PullOptions};
    match command {
        cli::DataCommand::Agent => std::process::exit(kaggle::agent_main().await),
        cli::DataCommand::List { competition } => {
            let files = kaggle::list_files(competition).await?;
            if json {
                if let Ok(s) = serde_json::to_string(&files) {
                    out!("{s}");
                }
                return Ok(());
            }
            let total: u64 = files.iter().map(|f| f.size).sum();
            for f in &files {
                out!("{:>14}  {}", f.size, f.name);
            }
            out!("{} file(s), {total} bytes", files.len());
            Ok(())
        }
        cli::DataCommand::Pull {
            competition,
            dest,
            files,
            extract,
        } => {
            let mut opts = PullOptions::new(dest.clone()).extract(*extract);
            for g in files {
                opts = opts.files(g.clone());
            }
            let last = std::sync::Mutex::new(std::time::Instant::now());
            let on_event = move |e: PullEvent| {
                if json {
                    if let Ok(s) = serde_json::to_string(&e) {
                        out!("{s}");
                    }
                    return;
                }
                match &e {
                    PullEvent::Progress {
                        item,
                        done,
                        total,
                        bytes_per_sec,
                        eta_secs,
                    } => {
                        // A line a second is plenty on a log; bars would need a terminal.
                        let mut t = last.lock().unwrap_or_else(|p| p.into_inner());
                        if t.elapsed() >= std::time::Duration::from_secs(1) {
                            *t = std::time::Instant::now();
                            let of = total.map(|t| format!("/{t}")).unwrap_or_default();
                            let eta = eta_secs
                                .map(|s| format!(", {}m{:02}s left", s / 60, s % 60))
                                .unwrap_or_default();
                            eprintln!(
                                "  {item}: {done}{of} bytes, {:.1} MB/s{eta}",
                                *bytes_per_sec as f64 / 1e6
                            );
                        }
                    }
                    PullEvent::Listed {
                        competition,
                        files,
                        selected,
                        bytes,
                    } => eprintln!(
                        "{competition}: {selected} of {files} file(s) selected, {bytes} bytes"
                    ),
                    PullEvent::Skipped { file, .. } => eprintln!("  {file}: already complete"),
                    PullEvent::Started { file, size } => {
                        eprintln!("  {file}: fetching {size} bytes")
                    }
                    PullEvent::Finished { file, bytes } => {
                        eprintln!("  {file}: done ({bytes} bytes)")
                    }
                    PullEvent::Log { line } => eprintln!("  {line}"),
                }
            };
            let report = kaggle::pull(competition, &opts, &on_event).await?;
            if json {
                if let Ok(s) = serde_json::to_string(&serde_json::json!({ "result": report })) {
                    out!("{s}");
                }
            } else {
                out!(
                    "pulled {} file(s), {} already complete, {} bytes in {:.1}s",
                    report.fetched,
                    report.skipped,
                    report.bytes,
                    report.elapsed_ms as f64 / 1000.0
                );
            }
            Ok(())
        }
    }
}

fn init(path: &Path, force: bool) -> Result<(), Error> {
    if path.exists() && !force {
        return Err(Error::Usage(format!(
            "{} exists; pass --force to overwrite it",
            path.display()
        )));
    }
    std::fs::write(path, config::TEMPLATE)
        .map_err(|e| kgenv_core::BackendError::io(format!("writing {}", path.display()), e))?;
    out!(
        "wrote {}: set `instance.project` and `zones`, then run `kgenv plan`",
        path.display()
    );
    Ok(())
}

fn spawn_ctrl_c(cancel: CancellationToken) {
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\ncancelling: running steps finish or roll back so the state stays consistent (Ctrl-C again to abort now)");
            cancel.cancel();
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("aborted");
                std::process::exit(i32::from(EXIT_CANCELLED));
            }
        }
    });
}

//! The command line: arguments and help text. `--help` is the user's manual, so each
//! option says what it does and what the default is.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// kgenv — a Kaggle GPU analysis environment in one command.
///
/// kgenv creates a GCE VM with a GPU (or uses an SSH host or this machine), mounts a GCS
/// bucket, gives the host a GitHub key, runs Kaggle's docker-python image with the GPU
/// visible, starts Jupyter with a hashed password and TLS behind an SSH tunnel, and pulls
/// the competition data. Every command is idempotent: a second `up` changes nothing.
#[derive(Debug, Parser)]
#[command(name = "kgenv", version, propagate_version = true, after_long_help = EXAMPLES)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

const EXAMPLES: &str = "\
Examples:
  kgenv init                      write a commented kgenv.toml here
  kgenv plan                      show what `up` would change (no credentials needed)
  kgenv up                        converge: VM, firewall, bucket, key, image, container, Jupyter, data
  kgenv up --until container      stop after the container step
  kgenv --mock up                 simulate the whole pipeline on in-memory backends
  kgenv status --json             what kgenv created, machine-readable
  kgenv jupyter                   Jupyter through an SSH tunnel: prints the URL
  kgenv exec -- nvidia-smi        a command in the container
  kgenv shell                     an interactive shell in the container (exit to leave)
  kgenv stop / kgenv start        stop paying for the GPU, keep the disks / resume
  kgenv autostop 30               stop the VM after 30 idle minutes (`off`: no idle stop; a budget stays)
  kgenv data pull titanic --dest ./titanic --extract
  kgenv move us-central1-b        move the data disk (by snapshot) and the VM to another zone
  kgenv down                      list what it deletes and keeps, ask, then remove it
  kgenv down --yes                the same without asking (scripts; needed without a terminal)

Environment:
  CLOUDSDK_CORE_PROJECT, CLOUDSDK_COMPUTE_ZONE   project/zone when kgenv.toml has none
  KGENV_JUPYTER_PASSWORD                         Jupyter password (hashed locally)
  KGENV_HOME                                     keep kgenv's config and state under one dir
  RUST_LOG                                       tracing filter (also -v, -vv)
  NO_COLOR                                       no colours

Exit codes: 0 ok, 1 a step failed, 2 bad usage or config (nothing was sent) or a deletion or
restart not confirmed (nothing of it done), 130 cancelled; `kgenv shell` exits with the
shell's own status, `kgenv ssh -- CMD` with the remote command's (255: ssh's own error).";

/// Options for every command.
#[derive(Debug, Args)]
pub struct Global {
    /// The config file.
    #[arg(
        short,
        long,
        global = true,
        env = "KGENV_CONFIG",
        default_value = "kgenv.toml"
    )]
    pub config: PathBuf,
    /// Run on this target instead of the config's (gce-only sections are then ignored).
    #[arg(long, global = true, value_enum)]
    pub target: Option<TargetArg>,
    /// The host for `--target ssh`, as user@host[:port].
    #[arg(long, global = true, value_name = "USER@HOST[:PORT]")]
    pub host: Option<String>,
    /// Machine-readable output on stdout: JSON lines of events, then one JSON result.
    #[arg(long, global = true)]
    pub json: bool,
    /// Simulate everything on in-memory backends (kept in the state dir between commands).
    #[arg(long, global = true)]
    pub mock: bool,
    /// Where state files live (default: the XDG state dir, or $KGENV_HOME/state).
    #[arg(long, global = true, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// More logs (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// Where steps run.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum TargetArg {
    /// A GCE VM kgenv creates.
    Gce,
    /// An existing host over SSH (--host).
    Ssh,
    /// This machine's Docker.
    Local,
}

/// Which steps to run.
#[derive(Debug, Args, Default)]
pub struct Selection {
    /// Only these steps (an id like `container`, or a prefix like `data` for every data step).
    #[arg(long, value_name = "STEP", num_args = 1..)]
    pub only: Vec<String>,
    /// This step and everything it depends on.
    #[arg(long, value_name = "STEP")]
    pub until: Option<String>,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a commented kgenv.toml to start from.
    Init {
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Show what `up` would change, and the API calls and host commands it would make.
    Plan {
        #[command(flatten)]
        select: Selection,
    },
    /// Create or fix whatever differs from the config; a second run changes nothing.
    ///
    /// A change that stops and restarts the VM (a new machine type, GPU, scopes or service
    /// account, a bigger disk) is shown first and asked about on a terminal; without a
    /// terminal it needs --yes, else nothing of that step is changed and kgenv exits 2.
    /// `kgenv plan` marks such a change on the step's line.
    Up {
        #[command(flatten)]
        select: Selection,
        /// Apply changes that stop and restart the VM without asking (for scripts).
        #[arg(short = 'y', long)]
        yes: bool,
        /// When every zone (and GPU choice) is out of capacity, try them all again in
        /// rounds — pauses growing from 30s to 10m, with jitter — for at most DURATION
        /// ("2h", "30m"), or until Ctrl-C without one. Each round is reported; Ctrl-C
        /// deletes the half-made VM of the round, so nothing is left. Quota and bad input
        /// are not waited on.
        #[arg(long, value_name = "DURATION", num_args = 0..=1, require_equals = true, value_parser = parse_wait)]
        wait_for_capacity: Option<Option<Duration>>,
    },
    /// What kgenv created (from the state file) and a live check of every step.
    Status,
    /// Remove what kgenv created, dependents first. Buckets and data disks are kept.
    ///
    /// First lists what it will delete and what it keeps (read from the state file, no
    /// call made), then asks "Delete these N resources? [y/N]" on a terminal. Without a
    /// terminal (a script, CI) it changes nothing and exits 2 unless --yes is given; with
    /// --json the list is in the JSON error. The bucket and the data disk (your
    /// /kaggle/working and /kaggle/input) are deleted only when named with
    /// --delete-bucket / --delete-disk.
    Down {
        #[command(flatten)]
        select: Selection,
        /// Delete without asking (for scripts; required when stdin is not a terminal).
        #[arg(short = 'y', long)]
        yes: bool,
        /// Also delete this bucket (named explicitly; it must be the environment's bucket).
        #[arg(long, value_name = "BUCKET")]
        delete_bucket: Vec<String>,
        /// Also delete this persistent data disk and the work on it (repeatable; it must be
        /// one of the disks this environment keeps, as `down` lists them).
        #[arg(long, value_name = "NAME")]
        delete_disk: Vec<String>,
    },
    /// List the steps of this environment and what each depends on.
    Steps,
    /// Log in to the host (interactive without a command), or run a command there.
    ///
    /// Uses the system `ssh` with kgenv's Host block, so the host key is the pinned one,
    /// and exits with ssh's status: the remote command's (`exit 3` → 3), 255 for ssh's own
    /// errors. As with `ssh`, the words after `--` are joined into one remote shell line.
    Ssh {
        /// Force a terminal (for full-screen programs like htop).
        #[arg(short = 't', long)]
        tty: bool,
        /// The command, after `--`: `kgenv ssh -- nvidia-smi`.
        #[arg(last = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// Kaggle competition data, no environment needed: list files, pull them here or to gs://.
    Data {
        #[command(subcommand)]
        command: DataCommand,
    },
    /// Show the container's logs (Jupyter's output among them).
    Logs {
        /// Keep following new lines until Ctrl-C.
        #[arg(short, long)]
        follow: bool,
        /// Only the last N lines.
        #[arg(long, value_name = "N")]
        tail: Option<u64>,
    },
    /// Run a command in the container: `kgenv exec -- python -c 'import torch'`.
    Exec {
        /// The command, after `--`.
        #[arg(last = true, required = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// An interactive terminal in the container: bash (or sh), or the command after `--`.
    ///
    /// Works like `docker exec -it`, through the same SSH tunnel as everything else on an
    /// SSH or GCE host: keys go to the container as typed (Ctrl-C included), the terminal's
    /// size follows this window's, and kgenv exits with the shell's exit status
    /// (`exit 3` → 3). Needs a terminal; in scripts use `kgenv exec -- CMD`.
    Shell {
        /// The program to run instead of the shell, after `--`: `kgenv shell -- python`.
        #[arg(last = true, value_name = "COMMAND")]
        command: Vec<String>,
    },
    /// What the container sees of the GPU (nvidia-smi, driver, CUDA, torch).
    Gpu,
    /// Stop the GCE instance and keep its disks: the GPU stops billing. `up` or `start` resumes.
    Stop,
    /// Start the stopped GCE instance and reach it again (`up --until host`: new address
    /// recorded, host keys pinned, firewall and `ssh <env>` updated).
    Start {
        /// When the VM's zone has no capacity to start it (a preempted or stopped GPU VM),
        /// try the start again in rounds — pauses growing from 30s to 10m, with jitter —
        /// for at most DURATION ("2h", "30m"), or until Ctrl-C without one. The VM stays
        /// stopped with its disks meanwhile.
        #[arg(long, value_name = "DURATION", num_args = 0..=1, require_equals = true, value_parser = parse_wait)]
        wait_for_capacity: Option<Option<Duration>>,
    },
    /// Change the idle stop of the running VM in place: MINUTES (5 to 10080) or `off`.
    ///
    /// The VM powers off after MINUTES without activity: no SSH session, no Jupyter
    /// activity, no busy kernel, every GPU and container process under the thresholds of
    /// [autostop] in kgenv.toml (kept as they are), with a warning to logged-in users and
    /// open Jupyter terminals first. `off` turns off the idle stop only: a [budget] stays in
    /// force (raise or remove it in kgenv.toml and run `kgenv up`). The next `kgenv up`
    /// brings back what kgenv.toml says.
    Autostop {
        /// Idle minutes before the VM stops, or `off`.
        #[arg(value_name = "MINUTES|off")]
        setting: Autostop,
    },
    /// Move the data disk and the VM to another zone (after a stockout where the disk is).
    ///
    /// A disk cannot change zone, so the data travels by snapshot: kgenv stops the VM,
    /// snapshots the data disk, creates `<name>-data` in ZONE from the snapshot (same size
    /// and type), deletes the VM in the old zone (its boot disk holds nothing `up` cannot
    /// rebuild), and runs `up` in ZONE: the disk is attached and mounted as it is, never
    /// formatted. Only once the new VM is up with the disk mounted are the old disk and
    /// the snapshot deleted — until then your data is safe on the old disk.
    ///
    /// It takes about as long as a first `up`, plus the snapshot and the disk copy (a few
    /// minutes per 100 GB). The machine and GPU types are checked in ZONE first; add ZONE
    /// to `instance.zones` in kgenv.toml too. It lists what it will do and asks on a
    /// terminal; without one it needs --yes, else nothing changes and it exits 2.
    /// Interrupted (Ctrl-C, a stockout in ZONE, a lost connection), run the same
    /// `kgenv move ZONE` again: it goes on where it stopped. Meanwhile `up` and `start`
    /// refuse, and `down` keeps the old disk and the snapshot.
    Move {
        /// The zone to move to, e.g. `us-central1-b` (`gcloud compute zones list`).
        #[arg(value_name = "ZONE")]
        zone: String,
        /// Go ahead without asking (for scripts; required when stdin is not a terminal).
        #[arg(short = 'y', long)]
        yes: bool,
    },
    /// Hash a Jupyter password as jupyter_server does (argon2), locally.
    ///
    /// Asks twice without echo on a terminal, or reads one line from stdin. The password
    /// never leaves this machine; the printed hash can go in a Jupyter config.
    HashPassword,
    /// Open an SSH tunnel to Jupyter and print its URL; runs until Ctrl-C.
    Jupyter {
        /// Local port of the tunnel (0 picks a free one).
        #[arg(long, default_value_t = 8888)]
        port: u16,
        /// Print the token in the URL (token mode; the token is a secret).
        #[arg(long)]
        show_token: bool,
    },
}

/// `kgenv autostop`'s setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Autostop {
    /// Remove the idle agent.
    Off,
    /// Stop after this many idle minutes.
    Minutes(u32),
}

impl std::str::FromStr for Autostop {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(Self::Off);
        }
        s.parse::<u32>()
            .map(Self::Minutes)
            .map_err(|_| format!("`{s}` is not a number of minutes or `off`"))
    }
}

/// `kgenv data …`
#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// List a competition's files and sizes.
    List {
        /// The competition's slug (the part after /competitions/ in its URL).
        competition: String,
    },
    /// Download a competition's files: parallel, resumable, verified.
    Pull {
        /// The competition's slug.
        competition: String,
        /// A directory, or gs://bucket/prefix to stream straight into a bucket.
        #[arg(long, default_value = ".")]
        dest: String,
        /// Only files matching this glob (repeatable), e.g. --files '*.csv'.
        #[arg(long, value_name = "GLOB")]
        files: Vec<String>,
        /// Unpack the .zip files Kaggle serves.
        #[arg(long)]
        extract: bool,
    },
    /// Runs on a VM for the data step (reads one JSON request on stdin).
    #[command(hide = true)]
    Agent,
}

/// `--wait-for-capacity=DURATION`: humantime's syntax, as `[timeouts]` in kgenv.toml.
fn parse_wait(v: &str) -> Result<Duration, String> {
    kgenv_core::spec::parse_duration("--wait-for-capacity", v).map_err(|e| e.rule)
}

//! First boot of a fresh VM, waited out by the `host` step before anything else touches the
//! host.
//!
//! A Deep Learning VM created with `install-nvidia-driver=True` answers SSH long before it is
//! usable: its driver installer runs for minutes after first boot, holding dpkg's lock (an
//! `apt-get` fails at once with "Could not get lock"), with no `nvidia-smi` until it ends, and
//! it restarts Docker at the end when it configures the NVIDIA runtime. A step that started
//! then would fail, or worse, half-succeed against an engine about to restart.
//!
//! [`PROBE`] is one read-only shell script, run as the login user (no sudo: `/proc` and
//! `/proc/locks` are readable by all), that prints one line per reason the host is not ready:
//! - `installer PID CMD`: a driver installer is running — the DLVM's
//!   `/opt/deeplearning/install-driver.sh`, GCE's `install_gpu_driver.py`, or NVIDIA's
//!   `nvidia-installer`;
//! - `dpkg PID CMD`: a process holds dpkg's frontend lock or its own lock (found through
//!   `/proc/locks` by the lock files' inode numbers, as `lslocks` does, without needing root
//!   to resolve other users' file descriptors);
//! - `docker-down`: Docker's socket is there but nothing answers on it (restarting).
//!
//! An empty answer means ready. Docker that is not installed at all is not waited for: the
//! image step reports it with its own hint. [`Busy`] is the parsed form; [`describe`] turns
//! it into the progress line the host step repeats while it waits.

use std::fmt;

/// The probe: prints what the host is busy with, one line each; nothing when it is ready.
///
/// Each pattern is written so it cannot match the probe's own command line (`[i]nstall…`
/// matches `install…`, not the text `[i]nstall…` that `sh -c` carries).
pub const PROBE: &str = r#"# kgenv-probe: first boot (reads /proc, asks Docker; changes nothing)
pgrep -af '[i]nstall-driver\.sh|[i]nstall_gpu_driver|[n]vidia-installer' 2>/dev/null |
  while read -r pid cmd; do printf 'installer %s %s\n' "$pid" "$cmd"; done
for f in /var/lib/dpkg/lock-frontend /var/lib/dpkg/lock; do
  ino=$(stat -c %i "$f" 2>/dev/null) || continue
  awk -v ino="$ino" '$2 != "->" { n = split($6, id, ":"); if (id[n] == ino) print $5 }' /proc/locks
done | sort -u | while read -r pid; do
  printf 'dpkg %s %s\n' "$pid" "$(tr '\0\n' '  ' <"/proc/$pid/cmdline" 2>/dev/null)"
done
if [ -S /var/run/docker.sock ] && command -v docker >/dev/null 2>&1; then
  if ! docker version --format '{{.Server.Version}}' >/dev/null 2>&1 &&
    ! sudo -n docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
    echo docker-down
  fi
fi
exit 0
"#;

/// One reason the host is not ready yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Busy {
    /// A GPU driver installer is running.
    Installer {
        /// Its process id.
        pid: u32,
        /// Its command line (trimmed).
        command: String,
    },
    /// A process holds dpkg's lock.
    PackageManager {
        /// The holder's process id.
        pid: u32,
        /// Its command line (trimmed), empty when it could not be read.
        command: String,
    },
    /// Docker's socket is there but the engine does not answer (restarting).
    DockerDown,
}

impl Busy {
    /// What kgenv waits for, for the progress line: "the NVIDIA driver install (pid 812:
    /// /opt/deeplearning/install-driver.sh)".
    pub fn waiting_for(&self) -> String {
        match self {
            Self::Installer { pid, command } => {
                format!("the NVIDIA driver install (pid {pid}: {})", short(command))
            }
            Self::PackageManager { pid, command } if command.is_empty() => {
                format!("the package manager (dpkg's lock is held by pid {pid})")
            }
            Self::PackageManager { pid, command } => format!(
                "the package manager (dpkg's lock is held by pid {pid}: {})",
                short(command)
            ),
            Self::DockerDown => "Docker to answer (it is restarting)".into(),
        }
    }
}

impl fmt::Display for Busy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.waiting_for())
    }
}

/// A command line cut to something a progress line can hold.
fn short(command: &str) -> String {
    const MAX: usize = 80;
    let command = command.trim();
    if command.chars().count() <= MAX {
        command.to_string()
    } else {
        let cut: String = command.chars().take(MAX).collect();
        format!("{cut}…")
    }
}

/// Parses [`PROBE`]'s output. The installer comes first: while it runs, the lock it holds
/// and the engine it restarts are its doing, and the one line says so.
pub fn parse(output: &str) -> Vec<Busy> {
    let mut busy = Vec::new();
    for line in output.lines() {
        let mut words = line.trim().splitn(3, ' ');
        let kind = words.next().unwrap_or_default();
        let pid = words.next().and_then(|p| p.parse::<u32>().ok());
        let command = words.next().unwrap_or_default().trim().to_string();
        let item = match (kind, pid) {
            ("installer", Some(pid)) => Busy::Installer { pid, command },
            ("dpkg", Some(pid)) => Busy::PackageManager { pid, command },
            ("docker-down", _) => Busy::DockerDown,
            _ => continue,
        };
        if !busy.contains(&item) {
            busy.push(item);
        }
    }
    busy.sort_by_key(|b| match b {
        Busy::Installer { .. } => 0,
        Busy::PackageManager { .. } => 1,
        Busy::DockerDown => 2,
    });
    busy
}

/// The progress line for `busy` after `waited`: "waiting for the NVIDIA driver install
/// (pid 812: …), 2m10s".
pub fn describe(busy: &[Busy], waited: std::time::Duration) -> String {
    let what = busy
        .first()
        .map(Busy::waiting_for)
        .unwrap_or_else(|| "the host".into());
    format!("waiting for {what}, {}", clock(waited))
}

/// `2m10s`, `45s`, `1h02m`.
pub fn clock(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn parses_what_the_probe_prints() {
        let out = "dpkg 812 /usr/bin/python3 -c import fcntl\n\
                   installer 800 bash /opt/deeplearning/install-driver.sh\n\
                   dpkg 812 /usr/bin/python3 -c import fcntl\n\
                   docker-down\n\
                   garbage line\n\
                   dpkg notapid x\n";
        let busy = parse(out);
        assert_eq!(
            busy,
            vec![
                Busy::Installer {
                    pid: 800,
                    command: "bash /opt/deeplearning/install-driver.sh".into()
                },
                Busy::PackageManager {
                    pid: 812,
                    command: "/usr/bin/python3 -c import fcntl".into()
                },
                Busy::DockerDown,
            ]
        );
        assert!(parse("").is_empty());
        assert!(parse("\n\n").is_empty());
    }

    #[test]
    fn progress_names_the_first_reason_and_the_time() {
        let busy = parse("dpkg 9 \ninstaller 8 bash /opt/deeplearning/install-driver.sh\n");
        assert_eq!(
            describe(&busy, Duration::from_secs(130)),
            "waiting for the NVIDIA driver install (pid 8: bash /opt/deeplearning/install-driver.sh), 2m10s"
        );
        assert_eq!(
            describe(&parse("dpkg 9 \n"), Duration::from_secs(5)),
            "waiting for the package manager (dpkg's lock is held by pid 9), 5s"
        );
        assert_eq!(clock(Duration::from_secs(3720)), "1h02m");
        let long = format!("installer 1 {}", "x".repeat(200));
        assert!(describe(&parse(&long), Duration::ZERO).contains('…'));
    }
}

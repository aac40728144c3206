//! Running one command on one SSH session channel: stdin in, stdout/stderr out as they
//! arrive, the exit status, a deadline, and a command that is killed — with everything it
//! started — when the caller stops waiting (timeout or a dropped future).
//!
//! Killing: sshd turns a `signal` request into `killpg` of the session, but refuses it for
//! root logins and cannot reach commands under `sudo`. So kgenv's command lines
//! ([`remote_line`]) first report their process group on stderr (`kgenv-pgid:N`, stripped
//! before anyone sees it), and an abandoned command's group is sent SIGTERM from a second
//! channel (through `sudo -n` when the command ran under it), besides the signal request.
//!
//! This is transport only; [`super::SshSession`] turns it into the [`crate::backends::Remote`]
//! calls (line events, [`ExecOutput`](crate::backends::remote::ExecOutput), typed errors).

use std::sync::Arc;
use std::time::Duration;

use russh::client::Msg;
use russh::{Channel, ChannelMsg, ChannelReadHalf, ChannelWriteHalf, Sig};

use super::connect::Live;
use crate::backends::Stream;
use crate::shell::quote;

/// Why a command did not produce an exit status.
#[derive(Debug)]
pub(crate) enum ExecFail {
    /// A limit passed (`idle`: the one on silence); the remote command was sent SIGTERM
    /// and its channel closed.
    TimedOut {
        /// Whether the inactivity limit passed rather than the total one.
        idle: bool,
    },
    /// The server refused the `exec` request.
    Refused,
    /// The channel or the whole connection went away before an exit status arrived.
    Lost(String),
    /// No channel could be opened (already a typed error).
    Open(crate::error::BackendError),
}

/// What a command ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Exit {
    /// Exit status, -1 when killed by a signal.
    pub code: i64,
    /// The signal that killed it, if any.
    pub signal: Option<String>,
}

/// How long a command may run: in all, and without output. Either may be absent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Limits {
    /// The whole running time.
    pub total: Option<Duration>,
    /// The time since the last output (any bytes, on stdout or stderr).
    pub idle: Option<Duration>,
}

impl Limits {
    /// At most `d` in all.
    pub fn total(d: Duration) -> Self {
        Self {
            total: Some(d),
            idle: None,
        }
    }
}

/// How to kill a command's process group once it reported it.
pub(crate) struct Killer {
    /// The connection to open the killing channel on.
    pub live: Arc<Live>,
    /// The command ran under `sudo -n`, so the kill must too.
    pub sudo: bool,
}

const PGID_MARK: &[u8] = b"kgenv-pgid:";

/// Closes (and kills) a channel whose command is abandoned: on timeout, or when the future
/// running it is dropped (cancellation).
struct CloseOnDrop {
    tx: Option<ChannelWriteHalf<Msg>>,
    killer: Option<Killer>,
    pgid: Option<u32>,
    /// The channel's read side, kept here so that a command abandoned before its
    /// process-group line was read can still be found (and killed) from that line.
    rx: Option<ChannelReadHalf>,
    /// What arrived of stderr while waiting for the process-group line (None once found).
    head: Option<Vec<u8>>,
}

/// Reads `rx` until the process-group line completes `head`: the group, or None when the
/// channel ends first or stderr does not start with the line.
async fn read_pgid(rx: &mut ChannelReadHalf, head: &mut Vec<u8>) -> Option<u32> {
    loop {
        match split_head(head) {
            Head::Found(pgid, _) => return pgid,
            Head::NotOurs => return None,
            Head::NeedMore => {}
        }
        match rx.wait().await? {
            ChannelMsg::ExtendedData { data, ext: 1 } => head.extend_from_slice(&data),
            ChannelMsg::Close | ChannelMsg::Eof => return None,
            _ => {}
        }
    }
}

impl CloseOnDrop {
    fn disarm(&mut self) {
        self.tx = None;
    }
}

/// The line that sends SIGTERM to process group `pgid`.
fn kill_line(pgid: u32, sudo: bool) -> String {
    let kill = format!("kill -TERM -- -{pgid}");
    if sudo {
        format!("sudo -n {kill}")
    } else {
        kill
    }
}

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        let Some(tx) = self.tx.take() else { return };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let known = self.pgid;
        let killer = self.killer.take();
        let pending = match (self.rx.take(), self.head.take()) {
            (Some(rx), Some(head)) if known.is_none() && killer.is_some() => Some((rx, head)),
            _ => None,
        };
        rt.spawn(async move {
            let _ = tx.signal(Sig::TERM).await;
            // Abandoned before its process-group line was read (cancelled right after it
            // started): the line is on its way, as the command's first output.
            let pgid = match pending {
                Some((mut rx, mut head)) => {
                    tokio::time::timeout(Duration::from_secs(10), read_pgid(&mut rx, &mut head))
                        .await
                        .ok()
                        .flatten()
                }
                None => known,
            };
            let kill = match (killer, pgid) {
                (Some(k), Some(pgid)) if pgid > 1 => Some((k, pgid)),
                _ => None,
            };
            if let Some((k, pgid)) = kill {
                let killed = async {
                    let mut ch = k.live.handle.channel_open_session().await.ok()?;
                    ch.exec(true, kill_line(pgid, k.sudo)).await.ok()?;
                    while let Some(msg) = ch.wait().await {
                        if matches!(msg, ChannelMsg::Close) {
                            break;
                        }
                    }
                    Some(())
                };
                if tokio::time::timeout(Duration::from_secs(10), killed)
                    .await
                    .is_err()
                {
                    tracing::debug!("killing abandoned remote process group {pgid} timed out");
                }
            }
            let _ = tx.close().await;
        });
    }
}

/// The shell line kgenv sends for `command`: run by `sh` (kgenv's lines are POSIX, whatever
/// the login shell is), as root through `sudo -n` (never prompts) when `sudo` is asked and
/// the login user is not root. It first reports its process group on stderr (see the module
/// header), then runs `command` as it is.
pub(crate) fn remote_line(command: &str, sudo: bool, login_is_root: bool) -> String {
    let inner = format!(
        "read -r _ _ _ _ kgenv_pg _ 2>/dev/null </proc/$$/stat; printf 'kgenv-pgid:%s\\n' \"$kgenv_pg\" >&2; unset kgenv_pg\n{command}"
    );
    if sudo && !login_is_root {
        format!("exec sudo -n -- sh -c {}", quote(&inner))
    } else {
        format!("exec sh -c {}", quote(&inner))
    }
}

/// A short, secret-free label for a command in messages: its first word.
pub(crate) fn label(command: &str) -> String {
    let first = command.split_whitespace().next().unwrap_or("");
    let first: String = first.chars().take(40).collect();
    if command.trim() == first {
        first
    } else {
        format!("{first} …")
    }
}

/// What the front of stderr holds while kgenv waits for the `kgenv-pgid:N` line.
#[derive(Debug, PartialEq, Eq)]
enum Head {
    /// Not a whole line yet.
    NeedMore,
    /// The marker line: the group (if it parsed) and where the real stderr starts.
    Found(Option<u32>, usize),
    /// Not the marker: everything is real stderr.
    NotOurs,
}

fn split_head(buf: &[u8]) -> Head {
    let n = buf.len().min(PGID_MARK.len());
    if buf[..n] != PGID_MARK[..n] {
        return Head::NotOurs;
    }
    match buf.iter().position(|b| *b == b'\n') {
        Some(i) => {
            let pgid = std::str::from_utf8(&buf[PGID_MARK.len().min(i)..i])
                .ok()
                .and_then(|s| s.trim().parse().ok());
            Head::Found(pgid, i + 1)
        }
        None if buf.len() > 64 => Head::NotOurs,
        None => Head::NeedMore,
    }
}

/// Runs `command` on `channel`, feeding `stdin` (then EOF) and handing every output chunk to
/// `on_chunk` as it arrives. Returns the exit when the server reports one. With `killer`,
/// `command` must come from [`remote_line`]: its process-group line is taken off stderr and
/// used to kill the command if it is abandoned.
pub(crate) async fn run(
    channel: Channel<Msg>,
    command: &str,
    stdin: Option<&[u8]>,
    limits: Limits,
    killer: Option<Killer>,
    on_chunk: &mut (dyn FnMut(Stream, &[u8]) + Send),
) -> Result<Exit, ExecFail> {
    let (rx, tx) = channel.split();
    let head: Option<Vec<u8>> = killer.as_ref().map(|_| Vec::new());
    let mut guard = CloseOnDrop {
        tx: Some(tx),
        killer,
        pgid: None,
        rx: Some(rx),
        head,
    };
    let (Some(tx), Some(rx)) = (guard.tx.as_ref(), guard.rx.as_mut()) else {
        return Err(ExecFail::Lost("channel closed".into()));
    };
    let head = &mut guard.head;
    tx.exec(true, command.as_bytes())
        .await
        .map_err(|e| ExecFail::Lost(format!("sending the command: {e}")))?;

    let exit = {
        let write_stdin = async {
            if let Some(data) = stdin {
                tx.data(data).await?;
            }
            tx.eof().await
        };
        tokio::pin!(write_stdin);
        let mut stdin_done = false;

        // Far enough never to fire: the `if` guards below keep an absent limit out anyway.
        let never = Duration::from_secs(365 * 86_400);
        let total = tokio::time::sleep(limits.total.unwrap_or(never));
        tokio::pin!(total);
        let idle = tokio::time::sleep(limits.idle.unwrap_or(never));
        tokio::pin!(idle);

        let mut exit: Option<Exit> = None;
        loop {
            tokio::select! {
                res = &mut write_stdin, if !stdin_done => {
                    stdin_done = true;
                    if let Err(e) = res {
                        // The command may exit without reading its stdin; its exit status decides.
                        tracing::debug!("writing stdin stopped: {e}");
                    }
                }
                () = &mut total, if limits.total.is_some() => {
                    return Err(ExecFail::TimedOut { idle: false }); // `guard` kills and closes the channel.
                }
                () = &mut idle, if limits.idle.is_some() => {
                    return Err(ExecFail::TimedOut { idle: true });
                }
                msg = rx.wait() => {
                    // Any output is a sign of life: the inactivity limit starts over.
                    if let (Some(d), Some(ChannelMsg::Data { .. } | ChannelMsg::ExtendedData { .. })) = (limits.idle, &msg) {
                        idle.as_mut().reset(tokio::time::Instant::now() + d);
                    }
                    match msg {
                    Some(ChannelMsg::Data { data }) => on_chunk(Stream::Stdout, &data),
                    Some(ChannelMsg::ExtendedData { data, ext: 1 }) => match head.as_mut() {
                        None => on_chunk(Stream::Stderr, &data),
                        Some(buf) => {
                            buf.extend_from_slice(&data);
                            match split_head(buf) {
                                Head::NeedMore => {}
                                Head::Found(pgid, rest) => {
                                    guard.pgid = pgid;
                                    if rest < buf.len() {
                                        on_chunk(Stream::Stderr, &buf[rest..]);
                                    }
                                    *head = None;
                                }
                                Head::NotOurs => {
                                    on_chunk(Stream::Stderr, buf);
                                    *head = None;
                                }
                            }
                        }
                    },
                    Some(ChannelMsg::ExitStatus { exit_status }) => {
                        exit = Some(Exit { code: i64::from(exit_status), signal: None });
                    }
                    Some(ChannelMsg::ExitSignal { signal_name, .. }) => {
                        exit = Some(Exit { code: -1, signal: Some(format!("{signal_name:?}")) });
                    }
                    Some(ChannelMsg::Failure) if exit.is_none() => return Err(ExecFail::Refused),
                    Some(ChannelMsg::Close) | None => break,
                    Some(_) => {}
                    }
                }
            }
        }
        exit
    };
    // Only a partial line can be left; it is real stderr unless it is the marker itself.
    if let Some(buf) = head
        .take()
        .filter(|b| !b.is_empty() && !b.starts_with(PGID_MARK))
    {
        on_chunk(Stream::Stderr, &buf);
    }
    // Dropping the half-written stdin future leaves the channel as the server closed it.
    guard.disarm();
    exit.ok_or_else(|| {
        ExecFail::Lost("the channel closed before the command reported an exit status".into())
    })
}

/// Splits a byte stream into lines for progress events, bounding the pending partial line.
pub(crate) struct LineSplitter {
    stream: Stream,
    pending: Vec<u8>,
}

/// A partial line longer than this is emitted as a line of its own.
const MAX_PENDING: usize = 64 * 1024;

impl LineSplitter {
    /// A splitter for `stream`.
    pub(crate) fn new(stream: Stream) -> Self {
        Self {
            stream,
            pending: Vec::new(),
        }
    }

    /// Feeds a chunk, calling `emit` for each complete line (without its newline).
    pub(crate) fn feed(&mut self, chunk: &[u8], emit: &mut dyn FnMut(Stream, String)) {
        let mut rest = chunk;
        while let Some(i) = rest.iter().position(|b| *b == b'\n') {
            self.pending.extend_from_slice(&rest[..i]);
            self.flush(emit);
            rest = &rest[i + 1..];
        }
        self.pending.extend_from_slice(rest);
        if self.pending.len() >= MAX_PENDING {
            self.flush(emit);
        }
    }

    fn flush(&mut self, emit: &mut dyn FnMut(Stream, String)) {
        let mut line = String::from_utf8_lossy(&self.pending).into_owned();
        if line.ends_with('\r') {
            line.pop();
        }
        self.pending.clear();
        emit(self.stream, line);
    }

    /// Emits what is left after the stream ended.
    pub(crate) fn finish(&mut self, emit: &mut dyn FnMut(Stream, String)) {
        if !self.pending.is_empty() {
            self.flush(emit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_across_chunks() {
        let mut s = LineSplitter::new(Stream::Stdout);
        let mut lines = Vec::new();
        let mut emit = |_: Stream, l: String| lines.push(l);
        s.feed(b"one\ntw", &mut emit);
        s.feed(b"o\r\n\nthree", &mut emit);
        s.finish(&mut emit);
        assert_eq!(lines, vec!["one", "two", "", "three"]);
    }

    #[test]
    fn bounds_a_line_without_newline() {
        let mut s = LineSplitter::new(Stream::Stderr);
        let mut count = 0;
        let mut emit = |_: Stream, l: String| {
            assert!(l.len() <= MAX_PENDING + 20_000);
            count += 1;
        };
        for _ in 0..10 {
            s.feed(&[b'x'; 20_000], &mut emit);
        }
        s.finish(&mut emit);
        assert!(count >= 3, "{count}");
    }

    #[test]
    fn takes_only_the_marker_line_off_stderr() {
        assert_eq!(split_head(b"kgenv-pg"), Head::NeedMore);
        assert_eq!(
            split_head(b"kgenv-pgid:1234\nerr"),
            Head::Found(Some(1234), 16)
        );
        assert_eq!(split_head(b"kgenv-pgid:\n"), Head::Found(None, 12));
        assert_eq!(split_head(b"sudo: a password is required\n"), Head::NotOurs);
        assert_eq!(kill_line(77, true), "sudo -n kill -TERM -- -77");
    }

    #[test]
    fn remote_lines_nest_the_command_through_the_quoting_helper() {
        let plain = remote_line("echo 'a b'", true, true);
        assert!(plain.starts_with("exec sh -c 'read -r "), "{plain}");
        assert!(plain.ends_with("\necho '\\''a b'\\'''"), "{plain}");
        let sudo = remote_line("echo 'a b'", true, false);
        assert!(
            sudo.starts_with("exec sudo -n -- sh -c 'read -r "),
            "{sudo}"
        );
        assert_eq!(
            remote_line("true", false, false),
            remote_line("true", true, true)
        );
        assert_eq!(label("sh -s -- apply"), "sh …");
        assert_eq!(label("true"), "true");
    }
}

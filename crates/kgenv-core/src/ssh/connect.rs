//! Dialing a host and waiting until it is ready.
//!
//! One attempt has two stages: TCP connect plus the server's SSH banner (read here, then
//! replayed to russh), and then key exchange with host-key verification
//! ([`super::verify`]), public-key login and one trivial command (`id -u`, which also tells
//! whether the login user is root). `connect_ready` repeats attempts with backoff until a
//! deadline and, when it gives up, says what it saw last ("connection refused", the banner,
//! the server's login message such as "System is booting up", …).
//!
//! A changed host key stops at once. A refused login is retried for a grace period (a new
//! VM's guest agent installs the key a little after sshd starts), then reported as
//! [`BackendError::Unauthenticated`].

use std::borrow::Cow;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex as StdMutex};
use std::task::{Context, Poll};
use std::time::Duration;

use backon::BackoffBuilder;
use russh::client;
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::exec;
use super::verify::{fingerprint, HostKeyPolicy};
use crate::backends::remote::HostAddr;
use crate::backends::Stream;
use crate::error::BackendError;

/// Tunables of kgenv's SSH client. The defaults suit GCE VMs and ordinary OpenSSH servers.
#[derive(Debug, Clone)]
pub struct SshOptions {
    /// kgenv's known_hosts file (default `<config>/known_hosts`). Empty when there is no
    /// home directory to find that in: connecting then fails with an error saying so,
    /// rather than trusting a file in a shared place.
    pub known_hosts: PathBuf,
    /// At most this many commands run at once on one connection; more wait their turn.
    /// OpenSSH's `MaxSessions` is 10 by default.
    pub max_sessions: usize,
    /// How long a call waits for a dropped connection to come back before failing.
    pub reconnect_within: Duration,
    /// How long a refused login is retried while waiting for a host (keys installed late).
    pub auth_grace: Duration,
    /// Keepalive probe interval; three unanswered probes drop the connection.
    pub keepalive_interval: Duration,
    /// Upper bound of one connection attempt (both stages).
    pub attempt_timeout: Duration,
    /// Run `put_file`/`read_file` as root (`sudo -n` unless the login user is root): kgenv's
    /// host files live in system directories.
    pub files_as_root: bool,
}

impl Default for SshOptions {
    fn default() -> Self {
        Self {
            known_hosts: super::verify::known_hosts_path().unwrap_or_default(),
            max_sessions: 10,
            reconnect_within: Duration::from_secs(30),
            auth_grace: Duration::from_secs(60),
            keepalive_interval: Duration::from_secs(15),
            attempt_timeout: Duration::from_secs(30),
            files_as_root: true,
        }
    }
}

/// Everything needed to (re)connect to one host.
pub(crate) struct Target {
    pub addr: HostAddr,
    pub opts: SshOptions,
    pub key: Arc<PrivateKey>,
    pub key_path: PathBuf,
    pub policy: Arc<HostKeyPolicy>,
}

/// One established, authenticated connection.
pub(crate) struct Live {
    pub handle: client::Handle<Client>,
    /// Distinguishes connections, so a stale one is only replaced once.
    pub id: u64,
    /// Whether the login user is root (then `sudo` is not needed).
    pub login_is_root: bool,
    /// The login user's home directory (`$HOME`), when the login shell set one.
    pub home: Option<String>,
}

/// russh's callbacks: host-key verification and the server's login banner.
pub(crate) struct Client {
    policy: Arc<HostKeyPolicy>,
    banner: Arc<StdMutex<Option<String>>>,
}

/// Why the connection task stopped: russh's own error, or a host key kgenv refused.
#[derive(Debug)]
pub(crate) enum HandlerError {
    Ssh(russh::Error),
    HostKey(BackendError),
}

impl From<russh::Error> for HandlerError {
    fn from(e: russh::Error) -> Self {
        Self::Ssh(e)
    }
}

impl client::Handler for Client {
    type Error = HandlerError;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        match key {
            PublicKeyOrCertificate::PublicKey { key, .. } => {
                self.policy.check(key).map_err(HandlerError::HostKey)?;
                Ok(true)
            }
            // kgenv offers no certificate algorithms, so a server cannot send one.
            PublicKeyOrCertificate::Certificate(_) => Ok(false),
        }
    }

    async fn auth_banner(
        &mut self,
        banner: &str,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        let text: String = banner.trim().chars().take(300).collect();
        if let Ok(mut slot) = self.banner.lock() {
            *slot = Some(text);
        }
        Ok(())
    }
}

/// A stream that first replays bytes already read from `inner` (the SSH banner).
struct Replay<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Replay<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.pos < this.prefix.len() {
            let n = (this.prefix.len() - this.pos).min(buf.remaining());
            buf.put_slice(&this.prefix[this.pos..this.pos + n]);
            this.pos += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replay<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Reads until the server's identification line (`SSH-2.0-…`). Returns every byte read, to
/// be replayed, and the line.
async fn read_banner(tcp: &mut TcpStream) -> Result<(Vec<u8>, String), String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    loop {
        let n = tcp
            .read(&mut chunk)
            .await
            .map_err(|e| format!("TCP connected, then reading the SSH banner failed: {e}"))?;
        if n == 0 {
            let said = String::from_utf8_lossy(&buf).trim().to_string();
            return Err(if said.is_empty() {
                "TCP connected, but the connection closed before the SSH banner".into()
            } else {
                format!("TCP connected, but the connection closed before the SSH banner; the host said: {said}")
            });
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut start = 0;
        while let Some(i) = buf[start..].iter().position(|b| *b == b'\n') {
            let line = &buf[start..start + i];
            if line.starts_with(b"SSH-") {
                let line = String::from_utf8_lossy(line).trim_end().to_string();
                return Ok((buf, line));
            }
            start += i + 1;
        }
        if buf.len() > 16 * 1024 {
            return Err("TCP connected, but no SSH banner in the first 16 KiB".into());
        }
    }
}

/// How one attempt failed.
enum DialError {
    /// Worth another attempt; what was seen.
    Retry(String),
    /// The server refused the key; what it said.
    Auth(String),
    /// Retrying cannot help (a changed host key, a bad local key).
    Fatal(BackendError),
}

fn client_config(target: &Target) -> client::Config {
    client::Config {
        keepalive_interval: Some(target.opts.keepalive_interval),
        keepalive_max: 3,
        inactivity_timeout: None,
        nodelay: true,
        preferred: russh::Preferred {
            key: Cow::Owned(target.policy.preferred_algorithms()),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// One connection attempt. `seen` is kept up to date so a caller that gives up on the
/// attempt (timeout) can say how far it got.
async fn dial(target: &Target, id: u64, seen: &mut String) -> Result<Live, DialError> {
    let addr = &target.addr;
    let hp = format!("{}:{}", addr.host, addr.port);
    *seen = format!("connecting to {hp}");
    let mut tcp = TcpStream::connect((addr.host.as_str(), addr.port))
        .await
        .map_err(|e| DialError::Retry(format!("TCP connect to {hp}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    *seen = format!("TCP connected to {hp}, waiting for the SSH banner");
    let (prefix, banner_line) = read_banner(&mut tcp).await.map_err(DialError::Retry)?;

    *seen = format!("`{banner_line}` at {hp}; key exchange");
    let login_banner = Arc::new(StdMutex::new(None));
    let handler = Client {
        policy: target.policy.clone(),
        banner: login_banner.clone(),
    };
    let stream = Replay {
        prefix,
        pos: 0,
        inner: tcp,
    };
    let mut handle = client::connect_stream(Arc::new(client_config(target)), stream, handler)
        .await
        .map_err(|e| match e {
            HandlerError::HostKey(e) => DialError::Fatal(e),
            HandlerError::Ssh(e) => {
                DialError::Retry(format!("`{banner_line}` at {hp}; key exchange failed: {e}"))
            }
        })?;

    *seen = format!(
        "`{banner_line}` at {hp}; host key verified; logging in as `{}`",
        addr.user
    );
    let said = || {
        login_banner
            .lock()
            .ok()
            .and_then(|b| b.clone())
            .map(|b| format!("; the server said: {b}"))
            .unwrap_or_default()
    };
    let hash = handle
        .best_supported_rsa_hash()
        .await
        .ok()
        .flatten()
        .flatten();
    let auth = handle
        .authenticate_publickey(
            addr.user.clone(),
            PrivateKeyWithHashAlg::new(target.key.clone(), hash),
        )
        .await
        .map_err(|e| DialError::Retry(format!("public-key login to {hp} failed: {e}{}", said())))?;
    if !auth.success() {
        return Err(DialError::Auth(format!(
            "{hp} refused public-key login for user `{}` with {} ({}){}. Check that its public key is in \
             that user's authorized_keys (for gce: the instance's `ssh-keys` metadata)",
            addr.user,
            target.key_path.display(),
            fingerprint(target.key.public_key()),
            said()
        )));
    }

    *seen = format!("logged in to {hp} as `{}`; running `id -u`", addr.user);
    // Who we are and where our home is: root needs no sudo, and files kgenv leaves in the
    // home directory must belong to the login user, not to root.
    let channel = handle.channel_open_session().await.map_err(|e| {
        DialError::Retry(format!(
            "logged in to {hp}, but opening a session failed: {e}{}",
            said()
        ))
    })?;
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let exit = exec::run(
        channel,
        "id -u; printf '%s\\n' \"$HOME\"",
        None,
        exec::Limits::total(target.opts.attempt_timeout),
        None,
        &mut |s, d| match s {
            Stream::Stdout => out.extend_from_slice(d),
            Stream::Stderr => err.extend_from_slice(d),
        },
    )
    .await
    .map_err(|f| {
        DialError::Retry(format!(
            "logged in to {hp}, but `id -u` failed: {f:?}{}",
            said()
        ))
    })?;
    if exit.code != 0 {
        return Err(DialError::Retry(format!(
            "logged in to {hp}, but `id -u` exited {}: {}",
            exit.code,
            String::from_utf8_lossy(&err).trim()
        )));
    }
    let said_text = String::from_utf8_lossy(&out);
    let mut lines = said_text.lines().map(str::trim);
    let login_is_root = lines.next() == Some("0");
    let home = lines
        .next()
        .filter(|h| h.starts_with('/') && *h != "/")
        .map(|h| h.trim_end_matches('/').to_string());
    Ok(Live {
        handle,
        id,
        login_is_root,
        home,
    })
}

/// Connects to the target, retrying both stages with backoff for about `within`. A host-key
/// problem or an unusable local key fails at once; a refused login after
/// [`SshOptions::auth_grace`] is [`BackendError::Unauthenticated`]; anything else at the
/// deadline is [`BackendError::Timeout`] with what was seen last.
pub(crate) async fn connect_ready(
    target: &Target,
    id: u64,
    within: Duration,
) -> Result<Live, BackendError> {
    let start = Instant::now();
    let deadline = start + within;
    let mut delays = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
        .build();
    let mut last_seen: String;
    let mut first_refusal: Option<Instant> = None;
    let mut refused: Option<String>;
    let unauthenticated = |message: String| BackendError::Unauthenticated {
        service: "ssh",
        message,
    };
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let budget = remaining
            .max(Duration::from_secs(2))
            .min(target.opts.attempt_timeout);
        let mut seen = String::new();
        match tokio::time::timeout(budget, dial(target, id, &mut seen)).await {
            Ok(Ok(live)) => {
                tracing::debug!(host = %target.addr, "SSH connection ready");
                return Ok(live);
            }
            Ok(Err(DialError::Fatal(e))) => return Err(e),
            Ok(Err(DialError::Retry(s))) => {
                tracing::debug!(host = %target.addr, "SSH not ready: {s}");
                last_seen = s;
                refused = None;
            }
            Ok(Err(DialError::Auth(s))) => {
                let first = *first_refusal.get_or_insert_with(Instant::now);
                if first.elapsed() >= target.opts.auth_grace {
                    return Err(unauthenticated(s));
                }
                tracing::debug!(host = %target.addr, "SSH login refused (will retry): {s}");
                last_seen = s.clone();
                refused = Some(s);
            }
            Err(_) => {
                last_seen = format!("{seen} (no progress within {}s)", budget.as_secs());
                refused = None;
            }
        }
        let now = Instant::now();
        if now >= deadline {
            if let Some(s) = refused {
                return Err(unauthenticated(s));
            }
            return Err(BackendError::Timeout {
                what: format!(
                    "SSH on {} (TCP and banner, then login and `id -u`)",
                    target.addr
                ),
                after: start.elapsed(),
                last_seen: Some(last_seen),
            });
        }
        let delay = delays.next().unwrap_or(Duration::from_secs(5));
        tokio::time::sleep(delay.min(deadline - now)).await;
    }
}

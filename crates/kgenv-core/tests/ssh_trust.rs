//! Trust against a real OpenSSH sshd: host keys (pinned, known_hosts, trust on first use,
//! mismatch refused), client keys (wrong key refused, encrypted key refused clearly), and
//! the ssh_config integration driven by the real `ssh` client.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kgenv_core::backends::remote::HostAddr;
use kgenv_core::backends::RemoteConnector;
use kgenv_core::ssh::{verify, SshConfigFiles, SshConnector};
use support::sshd::{keygen, Sshd};

fn connector(sshd: &Sshd) -> SshConnector {
    SshConnector::new()
        .known_hosts(sshd.client_known_hosts())
        .auth_grace(Duration::ZERO)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_host_key_mismatch_is_refused_at_once() {
    let sshd = Sshd::start_new();
    let other = keygen(&sshd.dir().join("other_host_key"), "");
    let mut addr = sshd.addr();
    addr.pinned_host_keys = vec![other.clone()];
    let started = Instant::now();
    let err = connector(&sshd)
        .connect(&addr, Duration::from_secs(60))
        .await
        .err()
        .expect("a different host key is refused");
    assert_eq!(err.kind(), "host_key_mismatch", "{err}");
    let msg = err.to_string();
    let found = verify::fingerprint(&verify::parse_public_key(&sshd.host_pub).expect("key"));
    let expected = verify::fingerprint(&verify::parse_public_key(&other).expect("key"));
    assert!(msg.contains(&found) && msg.contains(&expected), "{msg}");
    assert!(msg.contains("intercepting"), "explains the risk: {msg}");
    // Not retried until the readiness deadline: a mismatch is final.
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(
        sshd.accepted_logins(),
        0,
        "never logged in to an unverified host"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_hosts_and_trust_on_first_use() {
    let sshd = Sshd::start_new();
    let kh = sshd.client_known_hosts();
    let mut addr = sshd.addr();
    addr.pinned_host_keys.clear();

    // Unknown host, no TOFU: refused, nothing recorded.
    let err = connector(&sshd)
        .connect(&addr, Duration::from_secs(10))
        .await
        .err()
        .expect("unknown host refused");
    assert_eq!(err.kind(), "invalid_argument", "{err}");
    assert!(err.to_string().contains("trust_on_first_use"), "{err}");
    assert!(!kh.exists());

    // TOFU: accepted and recorded under [127.0.0.1]:PORT.
    addr.trust_on_first_use = true;
    let remote = connector(&sshd)
        .connect(&addr, Duration::from_secs(10))
        .await
        .expect("first use trusted");
    drop(remote);
    let recorded =
        verify::lookup(&kh, &verify::host_pattern("127.0.0.1", sshd.port)).expect("read");
    assert_eq!(
        recorded,
        vec![verify::parse_public_key(&sshd.host_pub).expect("key")]
    );

    // Known now: accepted without TOFU.
    addr.trust_on_first_use = false;
    connector(&sshd)
        .connect(&addr, Duration::from_secs(10))
        .await
        .expect("known host accepted");

    // The host is "rebuilt" with a new key: refused even with TOFU on.
    let other = keygen(&sshd.dir().join("rebuilt"), "");
    verify::set_entries(
        &kh,
        &verify::host_pattern("127.0.0.1", sshd.port),
        &[verify::parse_public_key(&other).expect("key")],
    )
    .expect("rewrite");
    addr.trust_on_first_use = true;
    let err = connector(&sshd)
        .connect(&addr, Duration::from_secs(10))
        .await
        .err()
        .expect("changed key refused");
    assert_eq!(err.kind(), "host_key_mismatch", "{err}");
    assert!(err.to_string().contains(&kh.display().to_string()), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_and_encrypted_client_keys_are_clear_errors() {
    let sshd = Sshd::start_new();
    let wrong = sshd.dir().join("not_authorized");
    keygen(&wrong, "");
    let mut addr = sshd.addr();
    addr.identity_file = Some(wrong.clone());
    let err = connector(&sshd)
        .connect(&addr, Duration::from_secs(10))
        .await
        .err()
        .expect("wrong key refused");
    assert_eq!(err.kind(), "unauthenticated", "{err}");
    assert!(err.is_auth());
    let msg = err.to_string();
    assert!(msg.contains("refused public-key login"), "{msg}");
    assert!(
        msg.contains(&wrong.display().to_string()),
        "names the key file: {msg}"
    );
    assert!(msg.contains(&sshd.user), "names the user: {msg}");

    let encrypted = sshd.dir().join("encrypted");
    let public = keygen(&encrypted, "correct horse");
    sshd.authorize(&public);
    addr.identity_file = Some(encrypted);
    let err = connector(&sshd)
        .connect(&addr, Duration::from_secs(10))
        .await
        .err()
        .expect("encrypted key refused");
    assert_eq!(err.kind(), "unauthenticated", "{err}");
    assert!(err.to_string().contains("passphrase"), "{err}");
    assert!(!err.to_string().contains("correct horse"));
}

fn ssh_client(user_config: &std::path::Path, env: &str, cmd: &str) -> std::process::Output {
    Command::new("ssh")
        .arg("-F")
        .arg(user_config)
        .args(["-o", "BatchMode=yes", "--", env, cmd])
        .stdin(Stdio::null())
        .output()
        .expect("the OpenSSH client runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_config_lets_the_real_ssh_client_in_with_the_pinned_key() {
    let sshd = Sshd::start_new();
    let files = SshConfigFiles {
        user_config: sshd.dir().join("home/.ssh/config"),
        kgenv_config: sshd.dir().join("kgenv/ssh_config"),
        known_hosts: sshd.dir().join("kgenv/known_hosts"),
    };
    let addr: HostAddr = sshd.addr();
    files
        .write_host("dev-box", &addr)
        .expect("write host block");

    // `ssh dev-box` through the user's config (which now includes kgenv's file).
    let out = ssh_client(&files.user_config, "dev-box", "echo via-include");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "via-include\n");

    // The command `kgenv ssh -- CMD` would spawn.
    let out = files
        .ssh_command("dev-box", &["echo".into(), "via-kgenv".into()], false)
        .stdin(Stdio::null())
        .output()
        .expect("ssh runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "via-kgenv\n");

    // A different pinned key: OpenSSH refuses the host too.
    let mut wrong = addr.clone();
    wrong.pinned_host_keys = vec![keygen(&sshd.dir().join("other"), "")];
    files.write_host("dev-box", &wrong).expect("rewrite");
    let out = ssh_client(&files.user_config, "dev-box", "true");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("HOST IDENTIFICATION HAS CHANGED")
            || stderr.contains("Host key verification failed"),
        "{stderr}"
    );

    files.remove_host("dev-box").expect("remove");
    assert!(!files.kgenv_config.exists());
    let user = std::fs::read_to_string(&files.user_config).unwrap_or_default();
    assert!(!user.contains("Include"), "{user}");
    let out = ssh_client(&files.user_config, "dev-box", "true");
    assert!(!out.status.success(), "the alias is gone");
}

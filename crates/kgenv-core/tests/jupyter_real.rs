//! Jupyter against the real jupyter_server from PyPI (installed by
//! `scripts/setup/70-host.sh`): its own `passwd_check` accepts kgenv's argon2 hash; a real
//! server started on 127.0.0.1 with kgenv's rendered config and certificate refuses the API
//! without login, accepts the password login (POST /login with `_xsrf`), serves TLS that
//! verifies against the generated certificate alone, and lets the idle agent's token read
//! `/api/status`; token mode likewise; the container's supervisor loop starts the server
//! when its config lands, restarts it after a crash and after a config change.

#[path = "support/peers.rs"]
mod peers;
use peers::{free_port, venv_python, Proc};

use std::process::Command;
use std::time::{Duration, Instant};

use kgenv_core::jupyter::{
    certificate_sha256, hash_password, render_config, self_signed_certificate, supervisor_command,
    JupyterLayout, CONFIG_FILE, JUPYTER_DIR_IN_CONTAINER,
};
use kgenv_core::spec::{Container, Env, Image, Jupyter, JupyterTls, Target};
use kgenv_core::steps::container::ContainerStep;

struct Site {
    dir: tempfile::TempDir,
    port: u16,
    cert: Option<String>,
}

impl Site {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::create_dir_all(dir.path().join("notebooks")).expect("root dir");
        Site {
            dir,
            port: free_port(),
            cert: None,
        }
    }

    fn path(&self) -> String {
        self.dir.path().display().to_string()
    }

    fn layout(&self) -> JupyterLayout {
        JupyterLayout {
            ip: "127.0.0.1".into(),
            port: self.port,
            config_dir: self.path(),
            root_dir: format!("{}/notebooks", self.path()),
        }
    }

    /// Writes what the jupyter step writes: config, certificate and key.
    fn write(&mut self, spec: &Jupyter, secret: &str, agent: Option<&str>) {
        if spec.tls != JupyterTls::Off && self.cert.is_none() {
            let (cert, key) =
                self_signed_certificate(&["localhost".into(), "127.0.0.1".into()]).expect("cert");
            std::fs::write(self.dir.path().join("cert.pem"), &cert).expect("cert.pem");
            std::fs::write(self.dir.path().join("key.pem"), key).expect("key.pem");
            self.cert = Some(cert);
        }
        let config = render_config(spec, secret, agent, &self.layout());
        // Atomically, as the jupyter step writes it: the supervisor never sees half a file
        // (the temp name is a dotfile, outside the `*` it checksums).
        let tmp = self.dir.path().join(format!(".{CONFIG_FILE}.tmp"));
        std::fs::write(&tmp, serde_json::to_vec_pretty(&config).expect("json")).expect("config");
        std::fs::rename(&tmp, self.dir.path().join(CONFIG_FILE)).expect("config in place");
    }

    fn base(&self) -> String {
        format!(
            "{}://127.0.0.1:{}",
            if self.cert.is_some() { "https" } else { "http" },
            self.port
        )
    }

    /// A client that trusts only the generated certificate (and keeps cookies).
    fn client(&self) -> reqwest::Client {
        kgenv_core::http::ensure_crypto_provider();
        let mut b = reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(20));
        if let Some(c) = &self.cert {
            b = b.tls_certs_only([reqwest::Certificate::from_pem(c.as_bytes()).expect("pem")]);
        }
        b.build().expect("client")
    }

    fn start(&self) -> Proc {
        let mut cmd = Command::new(venv_python("import jupyter_server.auth", "jupyter_server"));
        cmd.args([
            "-m",
            "jupyter_server",
            &format!("--config={}/{CONFIG_FILE}", self.path()),
        ]);
        Proc::spawn(cmd, self.dir.path())
    }
}

/// Waits until the server answers `/api/status` (with any status).
async fn wait_up(site: &Site, proc_: &Proc, within: Duration) {
    let client = site.client();
    let t0 = Instant::now();
    loop {
        if client
            .get(format!("{}/api/status", site.base()))
            .send()
            .await
            .is_ok()
        {
            return;
        }
        assert!(
            t0.elapsed() < within,
            "jupyter_server did not come up in {within:?}; its log:\n{}",
            proc_.log()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn status(client: &reqwest::Client, site: &Site, auth: Option<&str>) -> reqwest::StatusCode {
    let mut req = client.get(format!("{}/api/status", site.base()));
    if let Some(t) = auth {
        req = req.header("Authorization", format!("token {t}"));
    }
    req.send().await.expect("GET /api/status").status()
}

/// GET /login for the `_xsrf` cookie, then POST the password form with it.
async fn login(client: &reqwest::Client, site: &Site, password: &str) -> reqwest::StatusCode {
    try_login(client, site, password)
        .await
        .expect("the login page answers")
}

/// [`login`], retried while the server does not answer: the supervisor may restart it once
/// more when the config and certificate land a moment apart.
async fn login_when_up(
    client: &reqwest::Client,
    site: &Site,
    password: &str,
) -> reqwest::StatusCode {
    let t0 = Instant::now();
    loop {
        if let Some(status) = try_login(client, site, password).await {
            return status;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "the login page never answered"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// [`login`], `None` when the server does not answer (restarting).
async fn try_login(
    client: &reqwest::Client,
    site: &Site,
    password: &str,
) -> Option<reqwest::StatusCode> {
    let page = client
        .get(format!("{}/login", site.base()))
        .send()
        .await
        .ok()?;
    let xsrf = page
        .cookies()
        .find(|c| c.name() == "_xsrf")
        .map(|c| c.value().to_string())
        .expect("jupyter_server sets an _xsrf cookie on /login");
    Some(
        client
            .post(format!("{}/login", site.base()))
            .form(&[("_xsrf", xsrf.as_str()), ("password", password)])
            .send()
            .await
            .ok()?
            .status(),
    )
}

const PASSWORD: &str = "correct horse ☃ 'battery' $(x)";

#[test]
fn jupyter_passwd_check_accepts_kgenv_hash() {
    let hash = hash_password(PASSWORD).expect("hash");
    let check = |pw: &str| {
        let out = Command::new(venv_python("import jupyter_server.auth", "jupyter_server"))
            .args(["-c", "import sys; from jupyter_server.auth import passwd_check; print(passwd_check(sys.argv[1], sys.argv[2]))", &hash, pw])
            .output()
            .expect("python runs");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(
        check(PASSWORD),
        "True",
        "jupyter_server accepts kgenv's hash of the right password"
    );
    assert_eq!(check("wrong password"), "False", "and rejects a wrong one");
}

#[tokio::test]
async fn password_login_over_verified_tls() {
    let spec = Jupyter::builder()
        .password_env("KGENV_TEST_UNUSED")
        .root_dir("/kaggle")
        .build()
        .expect("spec");
    assert_eq!(spec.tls, JupyterTls::SelfSigned, "TLS by default");
    let mut site = Site::new();
    let agent = "agent-token-0123456789abcdef";
    site.write(&spec, &hash_password(PASSWORD).expect("hash"), Some(agent));
    let server = site.start();
    wait_up(&site, &server, Duration::from_secs(90)).await;

    let anon = site.client();
    assert_eq!(
        status(&anon, &site, None).await,
        reqwest::StatusCode::FORBIDDEN,
        "API refused without login"
    );
    let contents = anon
        .get(format!("{}/api/contents", site.base()))
        .send()
        .await
        .expect("GET")
        .status();
    assert_eq!(contents, reqwest::StatusCode::FORBIDDEN);

    let wrong = site.client();
    let st = login(&wrong, &site, "not the password").await;
    assert!(
        !st.is_redirection(),
        "a wrong password does not log in ({st})"
    );
    assert_eq!(
        status(&wrong, &site, None).await,
        reqwest::StatusCode::FORBIDDEN
    );

    let user = site.client();
    let st = login(&user, &site, PASSWORD).await;
    assert!(
        st.is_redirection(),
        "the right password logs in ({st}); log:\n{}",
        server.log()
    );
    let resp = user
        .get(format!("{}/api/status", site.base()))
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), reqwest::StatusCode::OK);
    let body: serde_json::Value = resp.json().await.expect("json");
    assert!(body.get("last_activity").is_some(), "{body}");

    // The idle agent's token reads /api/status; a wrong token does not.
    assert_eq!(
        status(&site.client(), &site, Some(agent)).await,
        reqwest::StatusCode::OK
    );
    assert_eq!(
        status(&site.client(), &site, Some("nope")).await,
        reqwest::StatusCode::FORBIDDEN
    );

    // TLS verifies against the generated certificate only: another certificate is refused.
    let (other, _) = self_signed_certificate(&["127.0.0.1".into()]).expect("cert");
    let stranger = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(other.as_bytes()).expect("pem")])
        .build()
        .expect("client");
    let e = stranger
        .get(format!("{}/api/status", site.base()))
        .send()
        .await
        .expect_err("untrusted certificate");
    assert!(e.is_connect(), "{e:?}");
}

#[tokio::test]
async fn token_mode() {
    let spec = Jupyter::builder().token().build().expect("spec");
    let mut site = Site::new();
    let token = "0f1e2d3c4b5a69788796a5b4c3d2e1f0a1b2c3d4e5f60718";
    site.write(&spec, token, None);
    let server = site.start();
    wait_up(&site, &server, Duration::from_secs(90)).await;
    let c = site.client();
    assert_eq!(
        status(&c, &site, None).await,
        reqwest::StatusCode::FORBIDDEN
    );
    assert_eq!(
        status(&c, &site, Some("wrong")).await,
        reqwest::StatusCode::FORBIDDEN
    );
    assert_eq!(
        status(&c, &site, Some(token)).await,
        reqwest::StatusCode::OK
    );
    let q = c
        .get(format!("{}/api/status?token={token}", site.base()))
        .send()
        .await
        .expect("GET")
        .status();
    assert_eq!(
        q,
        reqwest::StatusCode::OK,
        "the browser URL's ?token= works"
    );
}

#[tokio::test]
async fn supervisor_starts_restarts_and_reloads() {
    let spec = Jupyter::builder()
        .password_env("KGENV_TEST_UNUSED")
        .tls(JupyterTls::Off)
        .build()
        .expect("spec");
    let mut site = Site::new();
    // The supervisor checksums every file of its config directory, so its own log, the
    // Jupyter dirs and the shim below live elsewhere: only a config change restarts it.
    let run_dir = tempfile::tempdir().expect("tmp");
    let venv_bin = venv_python("import jupyter_server.auth", "jupyter_server")
        .parent()
        .expect("bin dir")
        .to_path_buf();
    // `jupyter` on the supervisor's PATH is a shim that appends its pid to `starts` and
    // execs the real one (same pid): every start is counted, however short it lived.
    let shim_dir = run_dir.path().join("shim");
    std::fs::create_dir_all(&shim_dir).expect("shim dir");
    let starts = run_dir.path().join("starts");
    let shim = shim_dir.join("jupyter");
    std::fs::write(
        &shim,
        format!(
            "#!/bin/sh\necho \"$$\" >> {}\nexec {} \"$@\"\n",
            kgenv_core::shell::quote(&starts.display().to_string()),
            kgenv_core::shell::quote(&venv_bin.join("jupyter").display().to_string()),
        ),
    )
    .expect("shim");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let started_pids = || -> Vec<u32> {
        std::fs::read_to_string(&starts)
            .unwrap_or_default()
            .lines()
            .map(|l| l.trim().parse().expect("a pid"))
            .collect()
    };
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &supervisor_command(&site.path())]).env(
        "PATH",
        format!(
            "{}:{}:{}",
            shim_dir.display(),
            venv_bin.display(),
            std::env::var("PATH").unwrap_or_default()
        ),
    );
    let sup = Proc::spawn(cmd, run_dir.path());

    // Nothing starts without a config: the supervisor is seen waiting (its `sleep 2`) in
    // two different rounds, each after a look for the config, and started nothing.
    let mut sleeps: Vec<u32> = Vec::new();
    let t0 = Instant::now();
    while sleeps.len() < 2 {
        for (pid, argv) in children(sup.child.id()) {
            if argv == ["sleep", "2"] && !sleeps.contains(&pid) {
                sleeps.push(pid);
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the supervisor never waited in a loop; log:\n{}",
            sup.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        started_pids(),
        Vec::<u32>::new(),
        "nothing started before the config exists"
    );
    assert!(
        site.client()
            .get(format!("{}/api/status", site.base()))
            .send()
            .await
            .is_err(),
        "nothing listens before the config exists"
    );

    // Starts once the config lands: once.
    site.write(&spec, &hash_password("first").expect("hash"), None);
    wait_up(&site, &sup, Duration::from_secs(90)).await;
    assert!(login_when_up(&site.client(), &site, "first")
        .await
        .is_redirection());
    let first = started_pids();
    assert_eq!(first.len(), 1, "started once: {first:?}");

    // A crash (the server killed) is followed by a restart.
    let killed = Command::new("kill")
        .args(["-KILL", &first[0].to_string()])
        .status()
        .expect("kill runs");
    assert!(killed.success(), "killing the server {}", first[0]);
    let t0 = Instant::now();
    loop {
        if started_pids().len() == 2
            && site
                .client()
                .get(format!("{}/api/status", site.base()))
                .send()
                .await
                .is_ok()
        {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "not restarted after a crash (starts {:?}); log:\n{}",
            started_pids(),
            sup.log()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // A new password: the supervisor restarts the server with it.
    site.write(&spec, &hash_password("second").expect("hash"), None);
    let t0 = Instant::now();
    loop {
        if try_login(&site.client(), &site, "second")
            .await
            .is_some_and(|s| s.is_redirection())
        {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(90),
            "new password not picked up; log:\n{}",
            sup.log()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        started_pids().len(),
        3,
        "one start per crash or config change: {:?}",
        started_pids()
    );
    assert!(
        !login_when_up(&site.client(), &site, "first")
            .await
            .is_redirection(),
        "the old password no longer works"
    );
}

/// The children of `pid` (from /proc), with their argument lists.
fn children(pid: u32) -> Vec<(u32, Vec<String>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let ppid = rest
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            if let Ok(child) = e.file_name().to_string_lossy().parse::<u32>() {
                let cmdline = std::fs::read_to_string(e.path().join("cmdline")).unwrap_or_default();
                let argv = cmdline
                    .split('\0')
                    .filter(|a| !a.is_empty())
                    .map(str::to_string)
                    .collect();
                out.push((child, argv));
            }
        }
    }
    out
}

#[test]
fn container_runs_the_supervisor_and_binds_as_published() {
    let env = Env::builder("jt")
        .target(Target::Local)
        .image(Image::builder())
        .container(Container::builder())
        .jupyter(Jupyter::builder().token())
        .build()
        .expect("env");
    let (c, i, j) = (
        env.container.clone().expect("c"),
        env.image.clone().expect("i"),
        env.jupyter.clone().expect("j"),
    );
    let req = ContainerStep::new(&env, c, i, Vec::new()).request(&[]);
    let cmd = req.command.expect("a command");
    assert_eq!(
        cmd.last().map(String::as_str),
        Some(supervisor_command(JUPYTER_DIR_IN_CONTAINER).as_str())
    );
    let published = req
        .ports
        .iter()
        .find(|p| p.container_port == j.port)
        .expect("Jupyter's port published");
    assert_eq!(
        published.host_ip, "127.0.0.1",
        "published on the host's loopback only"
    );
    let cfg = render_config(&j, "t", None, &JupyterLayout::in_container(&j));
    assert_eq!(
        cfg["ServerApp"]["port"],
        serde_json::json!(j.port),
        "listens on the port the container publishes"
    );
    assert_eq!(
        cfg["ServerApp"]["ip"], "0.0.0.0",
        "inside the container, so Docker's published port reaches it"
    );
    assert_eq!(
        cfg["ServerApp"]["certfile"],
        format!("{JUPYTER_DIR_IN_CONTAINER}/cert.pem")
    );
}

#[test]
fn url_and_certificate_fingerprint() {
    let home = tempfile::tempdir().expect("tmp");
    // Only this test in this binary reads KGENV_HOME.
    std::env::set_var("KGENV_HOME", home.path());
    let env = Env::builder("jt")
        .target(Target::Local)
        .image(Image::builder())
        .container(Container::builder())
        .jupyter(Jupyter::builder().token())
        .build()
        .expect("env");
    assert!(
        kgenv_core::jupyter::access(&env, 18888).is_err(),
        "no certificate before `up`"
    );
    let (cert, _) = self_signed_certificate(&["localhost".into()]).expect("cert");
    let keys = kgenv_core::paths::keys_dir("jt").expect("a home");
    std::fs::create_dir_all(&keys).expect("keys dir");
    std::fs::write(keys.join("jupyter-cert.pem"), &cert).expect("cert");
    let a = kgenv_core::jupyter::access(&env, 18888).expect("access");
    assert_eq!(a.url, "https://127.0.0.1:18888/");
    assert!(a.self_signed);
    let token = a.token.clone().expect("token mode has a token");
    assert_eq!(
        a.browser_url(),
        format!("https://127.0.0.1:18888/?token={token}")
    );
    assert!(!format!("{a:?}").contains(&token), "token not in Debug");
    // The fingerprint is what Python's ssl module computes for the same certificate.
    let out = Command::new(venv_python("import jupyter_server.auth", "jupyter_server"))
        .args(["-c", "import ssl,hashlib,sys; d=hashlib.sha256(ssl.PEM_cert_to_DER_cert(open(sys.argv[1]).read())).hexdigest().upper(); print(':'.join(d[i:i+2] for i in range(0,64,2)))", &keys.join("jupyter-cert.pem").display().to_string()])
        .output()
        .expect("python");
    assert_eq!(
        a.cert_sha256.as_deref(),
        Some(String::from_utf8_lossy(&out.stdout).trim())
    );
    assert_eq!(a.cert_sha256, Some(certificate_sha256(&cert).expect("fp")));
}

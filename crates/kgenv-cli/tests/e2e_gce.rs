//! End to end on the gce target (issue 9): the `kgenv` binary against the Compute API fake
//! (`kgenv-core/tests/support/gce_fake.rs`, every request checked against Google's
//! discovery document), whose instance is this machine: it reports 127.0.0.1 as external IP,
//! publishes the test sshd's host key in its `hostkeys/` guest attributes, and, like GCE's
//! guest agent, turns the `ssh-keys` metadata kgenv sets into the sshd's authorized keys.
//! The login user is kgenv's GCE user `kgenv`, a local account made by
//! `scripts/setup/80-e2e.sh` (docker group, passwordless sudo, as on GCE's images).
//!
//! The sshd cannot listen on port 22 here, so the tests set `KGENV_GCE_SSH_PORT` (a test hook
//! in `steps::host`) to its port.
//!
//! The data disk (on by default on gce) is a real block device in every scenario: a sparse
//! file behind a loop device ([`LoopDisk`]), which the fake links at
//! `/dev/disk/by-id/google-kgenv-data` when kgenv attaches the disk and unlinks when the
//! disk is detached or the instance deleted, as udev does on a VM. So the `disk-mount` step
//! runs for real: `blkid`, `mkfs.ext4`, `/etc/fstab`, `mount`.

#[path = "e2e_support/gce.rs"]
mod e2e_gce_support;
mod e2e_support;
#[path = "../../kgenv-core/tests/support/gce_fake.rs"]
mod gce_fake;
#[path = "../../kgenv-core/tests/support/kaggle_fake.rs"]
mod kaggle_fake;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use e2e_support::{owner_and_mode, serial, E2e, FirstBoot};
use gce_fake::FakeGce;
use kgenv_core::steps::disk_mount::{device_path, DATA_DEVICE_NAME, DEVICE_DIR};

use e2e_gce_support::{PROJECT, ZONE};
/// The loop device's size: room for a small ext4 file system, sparse on this machine's disk.
const LOOP_DISK_BYTES: u64 = 256 << 20;

struct GceE2e {
    e: E2e,
    /// Declared after `e`: the environment's cleanup (container, mount) runs first.
    disk: LoopDisk,
    fake: FakeGce,
    _rt: tokio::runtime::Runtime,
}

/// Runs a command to completion; panics with its stderr unless it succeeds; trimmed stdout.
fn run_ok(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The data disk's stand-in on this machine: a sparse file in a temp dir behind a loop
/// device. Dropping it unmounts the environment's data root, removes its fstab entry and
/// the device link, and detaches the loop device.
struct LoopDisk {
    /// The loop device (`/dev/loopN`).
    device: PathBuf,
    /// Where kgenv mounts it: the environment's data root.
    data_root: PathBuf,
    _dir: tempfile::TempDir,
}

impl LoopDisk {
    fn new(data_root: PathBuf) -> Self {
        let dir = tempfile::tempdir().expect("tempdir for the disk image");
        let image = dir.path().join("data-disk.img");
        std::fs::File::create(&image)
            .and_then(|f| f.set_len(LOOP_DISK_BYTES))
            .expect("sparse disk image");
        let image = image.to_str().expect("UTF-8 temp path").to_string();
        let device = PathBuf::from(run_ok("losetup", &["-f", "--show", &image]));
        // A link left by a crashed run would point at a loop device that is gone.
        let _ = std::fs::remove_file(Self::link());
        Self {
            device,
            data_root,
            _dir: dir,
        }
    }

    /// Where kgenv's host step looks for the data disk: the link the fake makes on attach.
    fn link() -> PathBuf {
        PathBuf::from(device_path(DEVICE_DIR))
    }

    /// What the fake links when the data disk is attached.
    fn device_links(&self) -> gce_fake::DeviceLinks {
        gce_fake::DeviceLinks {
            dir: PathBuf::from(DEVICE_DIR),
            devices: BTreeMap::from([(DATA_DEVICE_NAME.to_string(), self.device.clone())]),
        }
    }

    /// The file system UUID blkid reads from the device itself (a new one after any mkfs).
    fn uuid(&self) -> String {
        let dev = self.device.to_str().expect("UTF-8 device path");
        run_ok("blkid", &["-p", "-s", "UUID", "-o", "value", dev])
    }

    /// What is mounted at the data root (`findmnt`'s SOURCE), empty when nothing is.
    fn mounted_source(&self) -> String {
        Command::new("findmnt")
            .args(["-n", "-o", "SOURCE", "--mountpoint"])
            .arg(&self.data_root)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        if let Err(err) = e2e_support::unmount_and_unlist(&self.data_root) {
            eprintln!("e2e cleanup: {err}");
        }
        let link = Self::link();
        if std::fs::read_link(&link).is_ok_and(|t| t == self.device) {
            let _ = std::fs::remove_file(&link);
        }
        // Still mounted somewhere (a container not yet removed): the kernel frees the device
        // once the last mount goes (losetup -d sets autoclear).
        let _ = Command::new("losetup").arg("-d").arg(&self.device).output();
    }
}

/// A gce environment on the fake; `published_host_key` overrides what `hostkeys/` says.
fn gce(tag: &str, published_host_key: Option<(&str, &str)>) -> GceE2e {
    let rt = e2e_gce_support::runtime();
    let mut e = E2e::new(tag, |_| e2e_gce_support::config(""));
    e2e_support::assert_login_user();
    let disk = LoopDisk::new(e.host_dir());
    let fake = e2e_gce_support::start_fake(&e, &rt, published_host_key, |c| {
        c.device_links = Some(disk.device_links());
    });
    e.env = e2e_gce_support::env(&e, &fake);
    GceE2e {
        e,
        disk,
        fake,
        _rt: rt,
    }
}

/// The Compute fake checks conformance when it is dropped, here as a field of [`GceE2e`]:
/// a request that broke the discovery document fails the test though nothing asserted it.
#[test]
#[should_panic(
    expected = "dropped with 1 conformance problem(s) the test neither took nor expected:\n- compute.instances.stop: mutating call without requestId"
)]
fn a_non_conforming_request_fails_the_test_when_the_environment_is_dropped() {
    let _serial = serial();
    let g = gce("c", None);
    let status = g._rt.block_on(g.fake.send_raw(
        "POST",
        &format!(
            "projects/{PROJECT}/zones/{ZONE}/instances/{}/stop",
            g.e.name
        ),
        None,
    ));
    assert_eq!(status, 400, "refused");
    drop(g);
}

#[test]
fn gce_target_up_login_noop_down() {
    let _serial = serial();
    let GceE2e {
        e,
        disk: _disk,
        fake,
        _rt: rt,
    } = gce("g", None);

    // Competition data, pulled on the VM by the data agent (as the login user) onto the data
    // disk, from the Kaggle fake.
    let kaggle = rt.block_on(kaggle_fake::FakeKaggle::start(
        kaggle_fake::FakeAuth::Token("e2e-gce-kaggle-token".into()),
    ));
    let source = e.dir.path().join("kaggle-src/train.csv");
    std::fs::create_dir_all(source.parent().expect("parent")).expect("fake's source dir");
    std::fs::write(&source, "PassengerId,Survived\n1,0\n").expect("fake's file");
    let served = kaggle.add_file("e2e-gce-comp", "train.csv", &source);
    let mut config = std::fs::read_to_string(&e.config).expect("kgenv.toml");
    config.push_str("\n[[data]]\ncompetition = \"e2e-gce-comp\"\n");
    std::fs::write(&e.config, config).expect("kgenv.toml with [[data]]");
    let mut e = e;
    e.env.extend([
        ("KGENV_KAGGLE_ENDPOINT".to_string(), kaggle.endpoint()),
        (
            "KAGGLE_API_TOKEN".to_string(),
            "e2e-gce-kaggle-token".to_string(),
        ),
    ]);

    // The VM is at its first boot when kgenv reaches it: the driver installer holds dpkg's
    // lock, then restarts dockerd.
    let first_boot = FirstBoot::start(Duration::from_secs(10));
    let up = e.run(&["up"]);
    up.expect_ok("kgenv up (gce on the Compute fake)");
    let boot = first_boot.finish();
    e2e_support::assert_waited_out_first_boot(&up, &boot, &e.container());
    assert_eq!(
        owner_and_mode(&e.host_dir().join("working")).0,
        kgenv_core::keys::GCE_USER,
        "working/ on the data disk is the login user's"
    );
    let pulled = e.host_dir().join("input/e2e-gce-comp/train.csv");
    assert_eq!(
        std::fs::read(&pulled).ok(),
        std::fs::read(&served.path).ok(),
        "the data step pulled the served bytes onto the data disk\n{}",
        up.diagnosis()
    );
    assert_eq!(
        owner_and_mode(&pulled).0,
        kgenv_core::keys::GCE_USER,
        "the data agent ran as the login user"
    );
    e2e_support::login_and_list(&e, "input/e2e-gce-comp", "train.csv");
    for step in [
        "firewall/".to_string() + &e.name + "-ssh",
        "instance".into(),
        "host".into(),
        "container".into(),
        "jupyter".into(),
    ] {
        assert_eq!(
            up.outcome(&step).as_deref(),
            Some("changed"),
            "step {step} changed on the first up\n{}",
            up.diagnosis()
        );
    }
    // The image was built by the ssh scenario or is built now (a cache either way).
    assert!(matches!(
        up.outcome("image").as_deref(),
        Some("changed" | "satisfied")
    ));
    // The key kgenv published in `ssh-keys` is the one the host accepted for its GCE user.
    let inst = fake
        .instance(PROJECT, ZONE, &e.name)
        .expect("the instance exists on the fake");
    let ssh_keys: String = inst["metadata"]["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["key"] == "ssh-keys")
        .filter_map(|i| i["value"].as_str().map(str::to_string))
        .collect();
    let public = std::fs::read_to_string(
        e.kgenv_home()
            .join("config/keys")
            .join(&e.name)
            .join("id_ed25519.pub"),
    )
    .expect("kgenv's public key for the env");
    let key_body = public.split_whitespace().nth(1).expect("key body");
    assert!(
        ssh_keys.starts_with(&format!("{}:", kgenv_core::keys::GCE_USER))
            && ssh_keys.contains(key_body),
        "ssh-keys metadata holds kgenv's key for its user: {ssh_keys}"
    );
    assert!(
        e.sshd.log().contains(&format!(
            "Accepted publickey for {}",
            kgenv_core::keys::GCE_USER
        )),
        "the sshd accepted the published key:\n{}",
        e.sshd.log()
    );
    // The host key pinned in the state is the one the sshd presents.
    let state = std::fs::read_to_string(e.state_file()).expect("state file");
    let sshd_key_body = e
        .sshd
        .host_pub
        .split_whitespace()
        .nth(1)
        .expect("host key body");
    assert!(
        state.contains(sshd_key_body),
        "the sshd's host key is pinned in the state"
    );

    std::fs::write(e.host_dir().join("working/gce.csv"), "a\n1\n").expect("write a file");
    e2e_support::login_and_list(&e, "working", "gce.csv");

    // A second up: nothing mutating reaches the Compute API, nothing is applied.
    fake.clear_requests();
    let id = e.container_id();
    let again = e.run(&["up"]);
    again.expect_ok("second kgenv up (gce)");
    let applied = again.applied();
    assert!(
        applied.is_empty(),
        "second up applied {applied:?}\n{}",
        again.diagnosis()
    );
    let mutating: Vec<String> = fake
        .requests()
        .iter()
        .filter(|r| r.is_mutating())
        .map(|r| format!("{r:?}"))
        .collect();
    assert!(
        mutating.is_empty(),
        "second up sent mutating calls: {mutating:?}"
    );
    assert_eq!(e.container_id(), id, "the container was not recreated");
    fake.assert_conforms();

    let down = e.run(&["down", "--yes"]);
    down.expect_ok("kgenv down (gce)");
    assert!(
        fake.instances().is_empty(),
        "down deleted the instance: {:?}",
        fake.instances()
    );
    assert!(
        fake.firewalls().is_empty(),
        "down deleted kgenv's firewall rule: {:?}",
        fake.firewalls()
    );
    assert!(e.container_id().is_none(), "down removed the container");
    let block =
        std::fs::read_to_string(e.kgenv_home().join("config/ssh_config")).unwrap_or_default();
    assert!(
        !block.contains(&format!("Host {}", e.name)),
        "down removed the Host block: {block}"
    );
    fake.assert_conforms();
}

#[test]
fn gce_wrong_published_host_key_stops_up() {
    let _serial = serial();
    // The instance publishes a host key the sshd does not have.
    let GceE2e {
        e,
        disk: _disk,
        fake,
        _rt,
    } = gce("w", Some(gce_fake::HOST_KEY));
    let up = e.run(&["up"]);
    assert!(
        !up.output.status.success(),
        "up must stop on a wrong host key\n{}",
        up.diagnosis()
    );
    let failed: Vec<&serde_json::Value> = up
        .events
        .iter()
        .filter(|ev| ev["event"] == "failed")
        .collect();
    assert!(
        failed
            .iter()
            .any(|f| f["step"] == "host" && f["kind"] == "host_key_mismatch"),
        "the host step failed with the host-key error: {failed:?}\n{}",
        up.diagnosis()
    );
    assert!(
        e.container_id().is_none(),
        "nothing ran on an unverified host"
    );
    assert!(
        !e.sshd.log().contains("Accepted publickey"),
        "no login to an unverified host:\n{}",
        e.sshd.log()
    );
    let down = e.run(&["down", "--yes"]);
    down.expect_ok("kgenv down after the host-key failure");
    assert!(fake.instances().is_empty(), "down deleted the instance");
}

/// The data disk recorded in the state file, if any (none without a state file).
fn recorded_disk(e: &E2e) -> Option<kgenv_core::backends::compute::DiskRef> {
    let text = match std::fs::read_to_string(e.state_file()) {
        Ok(t) => t,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return None,
        Err(err) => panic!("state file {}: {err}", e.state_file().display()),
    };
    let state: kgenv_core::state::State = serde_json::from_str(&text).expect("state JSON");
    kgenv_core::steps::data_disk::recorded_disk(&state)
}

/// `docker exec -i CONTAINER sh -c SCRIPT` with `input` on stdin; its stdout.
fn container_sh(e: &E2e, script: &str, input: &[u8]) -> Vec<u8> {
    let mut child = Command::new("docker")
        .args(["exec", "-i", &e.container(), "sh", "-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("docker exec starts");
    let mut stdin = child.stdin.take().expect("stdin piped");
    std::io::Write::write_all(&mut stdin, input).expect("write to docker exec");
    drop(stdin);
    let out = child.wait_with_output().expect("docker exec runs");
    assert!(
        out.status.success(),
        "docker exec sh -c {script:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// The user's work on the gce target lives on the data disk, a real block device here: the
/// first `up` formats it (ext4, UUID fstab entry with `nofail`) and mounts it at the data
/// root; a file written in `/kaggle/working` survives `down` (which keeps the disk), a new
/// VM (nothing of the old boot disk left) and the next `up`, which mounts the disk as it is.
#[test]
fn gce_data_disk_keeps_work_across_down_and_up() {
    let _serial = serial();
    let GceE2e { e, disk, fake, _rt } = gce("d", None);
    let disk_name = format!("{}-data", e.name);
    let root = e.host_dir();

    let up = e.run(&["up"]);
    up.expect_ok("kgenv up with a data disk");
    for step in ["data-disk", "disk-mount"] {
        assert_eq!(
            up.outcome(step).as_deref(),
            Some("changed"),
            "step {step} changed on the first up\n{}",
            up.diagnosis()
        );
    }
    let first = up.messages("disk-mount");
    assert!(
        first.iter().any(|m| m.contains("formatting it ext4")),
        "the first up formats the empty disk: {first:?}"
    );
    let uuid = disk.uuid();
    assert!(!uuid.is_empty(), "the first up made a file system");
    assert_eq!(
        disk.mounted_source(),
        disk.device.display().to_string(),
        "the loop device is mounted at the data root {}",
        root.display()
    );
    let fstab = std::fs::read_to_string("/etc/fstab").expect("/etc/fstab");
    let entry = format!(
        "UUID={uuid} {} ext4 discard,defaults,nofail 0 2",
        root.display()
    );
    assert!(
        fstab.lines().any(|l| l == entry),
        "/etc/fstab mounts the disk by UUID with nofail ({entry}):\n{fstab}"
    );

    // The user's work, written in the container as a notebook would: bytes of every value,
    // line ends of both kinds, a NUL.
    let work: Vec<u8> = (0..=255u8)
        .cycle()
        .take(100_000)
        .chain(*b"\r\n\0last line\n")
        .collect();
    container_sh(&e, "cat > /kaggle/working/keep.bin", &work);
    assert_eq!(
        std::fs::read(root.join("working/keep.bin")).expect("the file on the data root"),
        work,
        "the container's /kaggle/working is the disk's working/"
    );

    let down = e.run(&["down", "--yes"]);
    down.expect_ok("kgenv down (keeps the data disk)");
    assert!(
        fake.instances().is_empty(),
        "down deleted the instance: {:?}",
        fake.instances()
    );
    assert!(
        fake.disk(PROJECT, ZONE, &disk_name).is_some(),
        "down kept the data disk: {:?}",
        fake.disks()
    );
    assert_eq!(
        recorded_disk(&e).map(|d| d.name),
        Some(disk_name.clone()),
        "the state still records the kept disk"
    );
    assert!(
        !LoopDisk::link().exists(),
        "the device link went with the VM"
    );

    // A new VM: its boot disk has no mount, no fstab entry and no data root of the old one.
    e2e_support::unmount_and_unlist(&root).expect("unmount the old VM's data root");
    std::fs::remove_dir_all(&root).expect("remove the old boot disk's data root");

    let again = e.run(&["up"]);
    again.expect_ok("kgenv up on a new VM with the kept disk");
    let second = again.messages("disk-mount");
    assert!(
        second
            .iter()
            .any(|m| m.contains("holds a ext4 file system: mounting it as it is")),
        "the second up mounts the existing ext4 file system: {second:?}"
    );
    assert!(
        !second.iter().any(|m| m.contains("formatting")),
        "the second up does not format: {second:?}"
    );
    assert_eq!(
        disk.uuid(),
        uuid,
        "the file system is the first up's (no mkfs)"
    );
    assert_eq!(disk.mounted_source(), disk.device.display().to_string());
    assert_eq!(
        container_sh(&e, "cat /kaggle/working/keep.bin", b""),
        work,
        "the work survived down + up byte for byte"
    );
    e2e_support::login_and_list(&e, "working", "keep.bin");
    fake.assert_conforms();

    // Deleted only when named.
    let gone = e.run(&["down", "--yes", "--delete-disk", &disk_name]);
    gone.expect_ok("kgenv down --delete-disk");
    assert!(
        fake.disk(PROJECT, ZONE, &disk_name).is_none(),
        "down --delete-disk deleted the disk: {:?}",
        fake.disks()
    );
    assert_eq!(
        recorded_disk(&e),
        None,
        "the state no longer records the deleted disk"
    );
    fake.assert_conforms();
}

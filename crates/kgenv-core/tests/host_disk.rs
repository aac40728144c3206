//! The disk-mount host script run for real (issue 12): a loop device on a sparse file stands
//! in for the GCE data disk, behind a symlink named as GCE names it
//! (`…/by-id/google-kgenv-data`) in a temp dir, mounted into a temp data root with a temp
//! fstab. Real `blkid`, `mkfs.ext4`, `mount`; `mkfs.*` go through a PATH wrapper that records
//! every call, so "did not format" is observed, not inferred.
//!
//! Needs root and `/dev/loop-control` (the test machine has both; a missing one fails with
//! what to do, never a silent skip). Loop devices and mounts are released on drop, also
//! when a test panics.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use kgenv_core::steps::disk_mount::{
    device_path, gcsfuse_cache_dir, DiskMountScript, DiskState, DATA_DEVICE_NAME, FS_LABEL,
};

/// Runs `program args`, panicking with its stderr when it fails; returns trimmed stdout.
fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} does not run: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Decodes the octal escapes `/proc/self/mounts` writes for spaces and the like.
fn unescape_mount_point(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let n = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(n);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mount points at or under `dir`, deepest first.
fn mounts_under(dir: &Path) -> Vec<String> {
    let table = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let prefix = dir.display().to_string();
    let mut found: Vec<String> = table
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(unescape_mount_point)
        .filter(|mp| mp == &prefix || mp.starts_with(&format!("{prefix}/")))
        .collect();
    found.sort_by_key(|m| std::cmp::Reverse(m.len()));
    found
}

/// A temp dir holding the disk images, the device link, the data root, the fstab and a
/// recording `mkfs` wrapper; loop devices and mounts under it go on drop.
struct Sandbox {
    dir: tempfile::TempDir,
    loops: Vec<String>,
}

impl Sandbox {
    fn new() -> Self {
        assert!(
            Path::new("/dev/loop-control").exists(),
            "this test needs loop devices (/dev/loop-control) and root: run it on the test machine (scripts/test.sh)"
        );
        let uid = run("id", &["-u"]);
        assert_eq!(uid, "0", "this test mounts file systems: run it as root");
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Self {
            dir,
            loops: Vec::new(),
        };
        std::fs::create_dir_all(s.bin()).expect("bin");
        for tool in ["mkfs.ext4", "mkfs.ext2", "mkfs", "mke2fs"] {
            let real = run(
                "sh",
                &[
                    "-c",
                    &format!("PATH=/usr/sbin:/sbin:$PATH command -v {tool}"),
                ],
            );
            let wrapper = s.bin().join(tool);
            std::fs::write(
                &wrapper,
                format!(
                    "#!/bin/sh\nprintf '%s %s\\n' {tool} \"$*\" >> '{log}'\nexec '{real}' \"$@\"\n",
                    log = s.mkfs_log().display()
                ),
            )
            .expect("wrapper");
            std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))
                .expect("chmod");
        }
        std::fs::create_dir_all(s.path().join("etc")).expect("etc");
        s
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn bin(&self) -> PathBuf {
        self.path().join("bin")
    }

    fn mkfs_log(&self) -> PathBuf {
        self.path().join("mkfs-calls.log")
    }

    /// The recorded `mkfs*` calls.
    fn mkfs_calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.mkfs_log())
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// A loop device on a new sparse file of `mib` MiB.
    fn loop_device(&mut self, name: &str, mib: u64) -> String {
        let img = self.path().join(format!("{name}.img"));
        std::fs::File::create(&img)
            .and_then(|f| f.set_len(mib << 20))
            .expect("sparse image");
        let dev = run("losetup", &["-f", "--show", &img.display().to_string()]);
        assert!(dev.starts_with("/dev/loop"), "losetup gave {dev}");
        self.loops.push(dev.clone());
        dev
    }

    /// The device dir with `google-kgenv-data` linked to `dev`, as GCE's udev rules make it.
    fn link_device(&self, dev: &str) -> String {
        let dir = self.path().join("dev/disk/by-id");
        std::fs::create_dir_all(&dir).expect("by-id");
        let link = device_path(&dir.display().to_string());
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(dev, &link).expect("symlink");
        link
    }

    /// The script for this sandbox: a data root with a space and a quote in its path.
    fn script(&self) -> DiskMountScript {
        DiskMountScript {
            device: device_path(&self.path().join("dev/disk/by-id").display().to_string()),
            data_root: self
                .path()
                .join("var lib/kgenv/env's one")
                .display()
                .to_string(),
            fstab: self.path().join("etc/fstab").display().to_string(),
            label: FS_LABEL.into(),
            wait_secs: 0,
        }
    }

    /// Runs the script's `action` as the login user `nobody` would through sudo.
    fn run_script(&self, s: &DiskMountScript, action: &str) -> Output {
        let mut child = Command::new("sh")
            .args(["-s", "--", action])
            .env(
                "PATH",
                format!(
                    "{}:/usr/sbin:/sbin:{}",
                    self.bin().display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .env("SUDO_USER", "nobody")
            .env("TMPDIR", self.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sh");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(s.render().text.as_bytes())
            .expect("script to stdin");
        child.wait_with_output().expect("sh runs")
    }

    /// `apply`, which must succeed; returns its stdout.
    fn apply_ok(&self, s: &DiskMountScript) -> String {
        let out = self.run_script(s, "apply");
        assert!(
            out.status.success(),
            "apply failed:\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `check`'s state line, parsed, and whether it exited 0.
    fn check(&self, s: &DiskMountScript) -> (DiskState, bool) {
        let out = self.run_script(s, "check");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout.lines().last().unwrap_or_default();
        let state = DiskState::parse(line).unwrap_or_else(|| {
            panic!(
                "check printed no state: {stdout}\nstderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (state, out.status.success())
    }

    fn umount(&self, mp: &str) {
        run("umount", &[mp]);
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        for mp in mounts_under(self.path()) {
            let ok = Command::new("umount")
                .arg(&mp)
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                let _ = Command::new("umount").args(["-l", &mp]).status();
            }
        }
        for dev in &self.loops {
            let _ = Command::new("losetup").args(["-d", dev]).status();
        }
    }
}

fn blkid(dev: &str, tag: &str) -> String {
    let out = Command::new("blkid")
        .args(["-p", "-s", tag, "-o", "value", dev])
        .output()
        .expect("blkid");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn is_mount_point(p: &str) -> bool {
    Command::new("mountpoint")
        .args(["-q", p])
        .status()
        .is_ok_and(|s| s.success())
}

/// Bytes no one would produce by accident, for the survive-byte-for-byte check.
fn work_bytes() -> Vec<u8> {
    (0..300_000u32)
        .flat_map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes())
        .collect()
}

const OLD_FSTAB: &str = "# /etc/fstab: static file system information.\nproc /proc proc defaults 0 0\n\nUUID=1111-2222 /boot/efi vfat umask=0077 0 1\n";

#[test]
fn first_run_formats_then_the_disk_is_only_ever_mounted() {
    let mut sb = Sandbox::new();
    let dev = sb.loop_device("data", 64);
    let s = sb.script();
    sb.link_device(&dev);
    // An old entry for the data root (e.g. from an earlier disk) is replaced; the rest kept.
    let stale = format!(
        "UUID=0000-dead {} ext4 defaults 0 2",
        kgenv_core::steps::bucket_mount::fstab_escape(&s.data_root)
    );
    std::fs::write(&s.fstab, format!("{OLD_FSTAB}{stale}\n")).expect("fstab");
    std::fs::set_permissions(&s.fstab, std::fs::Permissions::from_mode(0o644)).expect("chmod");

    assert_eq!(sb.check(&s), (DiskState::Unformatted, false));
    let out = sb.apply_ok(&s);
    assert_eq!(
        sb.mkfs_calls().len(),
        1,
        "formatted once: {:?}",
        sb.mkfs_calls()
    );
    assert!(
        sb.mkfs_calls()[0].starts_with("mkfs.ext4 -q -L kgenv-data -m 0"),
        "{:?}",
        sb.mkfs_calls()
    );
    assert_eq!(blkid(&dev, "TYPE"), "ext4");
    assert_eq!(blkid(&dev, "LABEL"), FS_LABEL);
    let uuid = blkid(&dev, "UUID");
    assert!(!uuid.is_empty());
    assert!(
        out.trim_end().ends_with(&format!("mounted ext4 {uuid}")),
        "{out}"
    );
    assert!(is_mount_point(&s.data_root), "mounted at the data root");
    assert_eq!(
        run(
            "findmnt",
            &["-n", "-o", "SOURCE", "--mountpoint", &s.data_root]
        ),
        dev,
        "the loop device is what is mounted there"
    );
    let options = run(
        "findmnt",
        &["-n", "-o", "OPTIONS", "--mountpoint", &s.data_root],
    );
    assert!(options.contains("discard"), "{options}");

    // The fstab: the old lines in order, the stale data-root entry gone, ours once.
    let fstab = std::fs::read_to_string(&s.fstab).expect("fstab");
    let ours = format!(
        "UUID={uuid} {} ext4 discard,defaults,nofail 0 2",
        kgenv_core::steps::bucket_mount::fstab_escape(&s.data_root)
    );
    assert_eq!(fstab, format!("{OLD_FSTAB}{ours}\n"));
    assert!(
        ours.contains("\\040"),
        "the space in the data root is escaped: {ours}"
    );
    assert_eq!(
        std::fs::metadata(&s.fstab)
            .expect("stat")
            .permissions()
            .mode()
            & 0o777,
        0o644,
        "the rewritten fstab keeps its mode"
    );
    // util-linux itself parses the entry: the data root's source is our UUID.
    assert_eq!(
        run(
            "findmnt",
            &[
                "-n",
                "-F",
                &s.fstab,
                "-o",
                "SOURCE",
                "--target",
                &s.data_root
            ]
        ),
        format!("UUID={uuid}")
    );

    let [input, working, cache] = s.dirs();
    assert_eq!(cache, gcsfuse_cache_dir(&s.data_root));
    for d in [&input, &working, &cache] {
        assert!(Path::new(d).is_dir(), "{d} made on the disk");
    }
    let nobody = run("id", &["-u", "nobody"]).parse::<u32>().expect("uid");
    let meta = std::fs::metadata(&working).expect("working");
    assert_eq!(meta.uid(), nobody, "working/ belongs to the login user");
    assert_eq!(meta.permissions().mode() & 0o777, 0o775);
    match sb.check(&s) {
        (DiskState::Ok { fs_type, uuid: u }, true) => {
            assert_eq!((fs_type.as_str(), u.as_str()), ("ext4", uuid.as_str()))
        }
        other => panic!("converged after apply, got {other:?}"),
    }

    // A converged apply changes nothing, not even the fstab's inode.
    let inode = std::fs::metadata(&s.fstab).expect("stat").ino();
    sb.apply_ok(&s);
    assert_eq!(std::fs::metadata(&s.fstab).expect("stat").ino(), inode);
    assert_eq!(sb.mkfs_calls().len(), 1);

    // The user's work, then the VM goes (unmount): the next run mounts it back unformatted.
    let work = work_bytes();
    std::fs::write(format!("{working}/model.bin"), &work).expect("write work");
    sb.umount(&s.data_root);
    assert!(!Path::new(&format!("{working}/model.bin")).exists());
    assert_eq!(
        sb.check(&s),
        (
            DiskState::Unmounted {
                fs_type: "ext4".into(),
                uuid: uuid.clone()
            },
            false
        )
    );
    sb.apply_ok(&s);
    assert_eq!(
        sb.mkfs_calls().len(),
        1,
        "the second run did not format: {:?}",
        sb.mkfs_calls()
    );
    assert_eq!(blkid(&dev, "UUID"), uuid, "same file system");
    assert_eq!(
        std::fs::read(format!("{working}/model.bin")).expect("work is back"),
        work,
        "byte for byte"
    );

    // A fresh VM: its fstab has no entry for the disk yet.
    sb.umount(&s.data_root);
    std::fs::write(&s.fstab, OLD_FSTAB).expect("fresh fstab");
    sb.apply_ok(&s);
    assert_eq!(sb.mkfs_calls().len(), 1);
    assert_eq!(
        std::fs::read_to_string(&s.fstab).expect("fstab"),
        format!("{OLD_FSTAB}{ours}\n")
    );
    assert_eq!(
        std::fs::read(format!("{working}/model.bin")).expect("work"),
        work
    );
}

#[test]
fn a_disk_with_another_file_system_is_mounted_never_formatted() {
    let mut sb = Sandbox::new();
    let dev = sb.loop_device("ext2", 32);
    run("mkfs.ext2", &["-q", "-L", "users-own", &dev]);
    let uuid = blkid(&dev, "UUID");
    // Something of the user's on it.
    let stage = sb.path().join("stage");
    std::fs::create_dir_all(&stage).expect("stage");
    run("mount", &[&dev, &stage.display().to_string()]);
    std::fs::write(stage.join("notes.txt"), "mine\n").expect("notes");
    sb.umount(&stage.display().to_string());

    let s = sb.script();
    sb.link_device(&dev);
    std::fs::write(&s.fstab, OLD_FSTAB).expect("fstab");
    assert_eq!(
        sb.check(&s),
        (
            DiskState::Unmounted {
                fs_type: "ext2".into(),
                uuid: uuid.clone()
            },
            false
        )
    );
    let out = sb.apply_ok(&s);
    assert!(
        out.contains("holds a ext2 file system: mounting it as it is"),
        "{out}"
    );
    assert!(
        sb.mkfs_calls().is_empty(),
        "never formatted: {:?}",
        sb.mkfs_calls()
    );
    assert_eq!(blkid(&dev, "TYPE"), "ext2");
    assert_eq!(blkid(&dev, "UUID"), uuid);
    assert_eq!(blkid(&dev, "LABEL"), "users-own");
    assert_eq!(
        std::fs::read_to_string(format!("{}/notes.txt", s.data_root)).expect("notes"),
        "mine\n"
    );
    let fstab = std::fs::read_to_string(&s.fstab).expect("fstab");
    assert!(
        fstab.ends_with(&format!(
            "UUID={uuid} {} ext2 defaults,nofail 0 2\n",
            kgenv_core::steps::bucket_mount::fstab_escape(&s.data_root)
        )),
        "ext2 has no discard option: {fstab}"
    );
    assert!(matches!(sb.check(&s), (DiskState::Ok { .. }, true)));
}

#[test]
fn a_partition_table_is_refused_and_left_alone() {
    let mut sb = Sandbox::new();
    let img_dev = sb.loop_device("parted", 16);
    // A DOS partition table by hand (one Linux partition), no file system.
    {
        let img = sb.path().join("parted.img");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&img)
            .expect("img");
        use std::io::{Seek, SeekFrom};
        let mut entry = vec![0u8, 0, 2, 0, 0x83, 0, 0, 0];
        entry.extend_from_slice(&2048u32.to_le_bytes());
        entry.extend_from_slice(&8192u32.to_le_bytes());
        f.seek(SeekFrom::Start(446)).expect("seek");
        f.write_all(&entry).expect("entry");
        f.seek(SeekFrom::Start(510)).expect("seek");
        f.write_all(&[0x55, 0xAA]).expect("signature");
    }
    run("blockdev", &["--flushbufs", &img_dev]);
    let s = sb.script();
    sb.link_device(&img_dev);
    std::fs::write(&s.fstab, OLD_FSTAB).expect("fstab");
    assert_eq!(sb.check(&s), (DiskState::Partitioned("dos".into()), false));
    let before = std::fs::read(sb.path().join("parted.img")).expect("img");
    let out = sb.run_script(&s, "apply");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("partition table (dos)") && err.contains("never formats"),
        "{err}"
    );
    assert!(sb.mkfs_calls().is_empty());
    assert_eq!(
        std::fs::read(sb.path().join("parted.img")).expect("img"),
        before
    );
    assert_eq!(std::fs::read_to_string(&s.fstab).expect("fstab"), OLD_FSTAB);
}

#[test]
fn a_full_file_system_under_the_fstab_leaves_it_intact() {
    let mut sb = Sandbox::new();
    let dev = sb.loop_device("data", 32);
    let s = sb.script();
    sb.link_device(&dev);
    // /etc on a four-page tmpfs, filled up after the fstab is written.
    let etc = sb.path().join("etc");
    run(
        "mount",
        &[
            "-t",
            "tmpfs",
            "-o",
            "size=16k",
            "tmpfs",
            &etc.display().to_string(),
        ],
    );
    std::fs::write(&s.fstab, OLD_FSTAB).expect("fstab");
    let mut filler = std::fs::File::create(etc.join("filler")).expect("filler");
    let chunk = vec![b'x'; 512];
    while filler
        .write_all(&chunk)
        .and_then(|_| filler.sync_all())
        .is_ok()
    {}
    drop(filler);

    let out = sb.run_script(&s, "apply");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "apply must fail on a full /etc");
    assert!(
        err.contains(&format!("{} is unchanged", s.fstab)),
        "the error says the fstab was kept: {err}"
    );
    assert_eq!(
        std::fs::read_to_string(&s.fstab).expect("fstab"),
        OLD_FSTAB,
        "the old fstab is intact"
    );
    let leftovers: Vec<_> = std::fs::read_dir(&etc)
        .expect("etc")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".fstab.kgenv"))
        .collect();
    assert!(leftovers.is_empty(), "no temp file left: {leftovers:?}");
    assert!(
        !is_mount_point(&s.data_root),
        "not mounted without its fstab entry"
    );

    // Room again: the next run finishes, without formatting a second time.
    std::fs::remove_file(etc.join("filler")).expect("free");
    sb.apply_ok(&s);
    assert_eq!(sb.mkfs_calls().len(), 1, "{:?}", sb.mkfs_calls());
    assert!(std::fs::read_to_string(&s.fstab)
        .expect("fstab")
        .starts_with(OLD_FSTAB));
    assert!(matches!(sb.check(&s), (DiskState::Ok { .. }, true)));
}

#[test]
fn a_data_root_from_before_the_disk_is_copied_onto_it() {
    let mut sb = Sandbox::new();
    let dev = sb.loop_device("data", 64);
    let s = sb.script();
    sb.link_device(&dev);
    std::fs::write(&s.fstab, OLD_FSTAB).expect("fstab");
    // A VM from before the data disk: the user's work on the boot disk, under the root.
    let working = format!("{}/working", s.data_root);
    std::fs::create_dir_all(format!("{working}/sub dir")).expect("working");
    let work = work_bytes();
    std::fs::write(format!("{working}/sub dir/nb.ipynb"), &work).expect("work");
    std::fs::set_permissions(&working, std::fs::Permissions::from_mode(0o750)).expect("chmod");

    let out = sb.apply_ok(&s);
    assert!(out.contains("copying the files already in"), "{out}");
    assert_eq!(sb.mkfs_calls().len(), 1);
    assert!(is_mount_point(&s.data_root));
    assert_eq!(
        std::fs::read(format!("{working}/sub dir/nb.ipynb")).expect("on the disk"),
        work
    );
    assert!(!Path::new(&format!("{}/.kgenv-copying", s.data_root)).exists());
    // The boot disk's copy is still there under the mount, untouched.
    sb.umount(&s.data_root);
    assert_eq!(
        std::fs::read(format!("{working}/sub dir/nb.ipynb")).expect("original kept"),
        work
    );
    // Mounted back (a disk with the user's files on it now): nothing is copied again.
    std::fs::write(format!("{working}/sub dir/nb.ipynb"), b"older").expect("edit original");
    let out = sb.apply_ok(&s);
    assert!(!out.contains("copying"), "{out}");
    assert_eq!(
        std::fs::read(format!("{working}/sub dir/nb.ipynb")).expect("disk's copy"),
        work
    );
}

#[test]
fn another_mount_at_the_data_root_or_no_device_is_an_error() {
    let mut sb = Sandbox::new();
    let s = sb.script();
    std::fs::write(&s.fstab, OLD_FSTAB).expect("fstab");

    // No device (not attached): check says so; apply gives up after wait_secs (0 here).
    assert_eq!(sb.check(&s), (DiskState::NoDevice, false));
    let out = sb.run_script(&s, "apply");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("did not appear") && err.contains(DATA_DEVICE_NAME),
        "{err}"
    );

    let dev = sb.loop_device("data", 32);
    sb.link_device(&dev);
    run("mkfs.ext4", &["-q", &dev]);
    std::fs::create_dir_all(&s.data_root).expect("root");
    run("mount", &["-t", "tmpfs", "tmpfs", &s.data_root]);
    assert!(matches!(sb.check(&s), (DiskState::Other(ref w), false) if w.contains("tmpfs")));
    let out = sb.run_script(&s, "apply");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("already has another file system mounted"),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&s.fstab).expect("fstab"), OLD_FSTAB);
}

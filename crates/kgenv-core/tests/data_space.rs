//! Free space before a pull (issue 12, item 6): a pull into a file system too small for it
//! fails with `InsufficientSpace` before any request for file content reaches the Kaggle
//! fake — here (a tmpfs this test mounts) and on a host through the data agent over a real
//! OpenSSH `sshd` (the same tmpfs, seen from the host).
//!
//! The machine runs the tests as root, so each test mounts its own small tmpfs; a failed
//! mount is a failure, not a skip.

#[path = "support/data_agent.rs"]
mod data_agent;
#[path = "support/kaggle_fake.rs"]
mod kaggle_fake;
#[path = "support/sshd.rs"]
#[allow(dead_code)]
mod sshd;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use kaggle_fake::{generate, FakeAuth, FakeKaggle};
use kgenv_core::backends::Kaggle;
use kgenv_core::download::DownloadOptions;
use kgenv_core::kaggle::credentials::Secret;
use kgenv_core::kaggle::{Credentials, KaggleClient, KaggleData, KaggleEndpoint, RemoteKaggle};
use kgenv_core::runner::data::{pull, PullOptions};
use kgenv_core::ssh::SshConnector;
use kgenv_core::Error;

const TOKEN: &str = "space-token-31";

#[test]
#[ignore = "helper: the data agent the remote test runs on the host"]
fn agent_child() {
    data_agent::run_if_requested();
}

/// A tmpfs of `size` bytes mounted on a fresh temp dir, unmounted on drop.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    fn mount(size: u64) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mounting a {size}-byte tmpfs failed (these tests run as root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { dir }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
    fn dest(&self) -> String {
        self.path().join("comp").display().to_string()
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

fn client(fake: &FakeKaggle) -> KaggleClient {
    KaggleClient::new(
        KaggleEndpoint::custom(&fake.endpoint()).expect("endpoint"),
        Credentials::Token {
            token: Secret::new(TOKEN),
            source: "test".into(),
        },
    )
    .expect("client")
}

/// Requests that ask for file content: signed URLs issued, storage GETs, bytes served.
fn content_requests(fake: &FakeKaggle) -> (u64, u64, u64) {
    let s = &fake.state;
    (
        s.signed_urls.load(Ordering::SeqCst),
        s.storage_requests.load(Ordering::SeqCst),
        s.bytes_served.load(Ordering::SeqCst),
    )
}

/// A zip holding one `size`-byte file of random bytes (stored as is: it does not compress).
fn random_zip(path: &Path, size: u64) {
    let raw = path.with_extension("raw");
    generate(&raw, size, 9);
    let mut z = zip::ZipWriter::new(std::fs::File::create(path).expect("zip"));
    z.start_file(
        "inner.bin",
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored),
    )
    .expect("entry");
    z.write_all(&std::fs::read(&raw).expect("raw"))
        .expect("write");
    z.finish().expect("finish");
}

/// The competitions the tests pull: `big` (3 MB, more than the 1 MiB tmpfs), `small`
/// (100 kB) and `zipped` (a listed 600 kB `.zip`: fits as served, not with its contents).
async fn fake_with_data(src: &Path) -> FakeKaggle {
    let fake = FakeKaggle::start(FakeAuth::Token(TOKEN.into())).await;
    generate(&src.join("big"), 3_000_000, 1);
    fake.add_file("big", "train.bin", &src.join("big"));
    generate(&src.join("small"), 100_000, 2);
    fake.add_file("small", "s.bin", &src.join("small"));
    random_zip(&src.join("z.zip"), 600_000);
    fake.add_file("zipped", "images.zip", &src.join("z.zip"));
    fake
}

fn shortfall(err: &Error) -> kgenv_core::error::SpaceShortfall {
    err.backend()
        .and_then(|b| b.insufficient_space())
        .cloned()
        .unwrap_or_else(|| panic!("not an insufficient-space error: {err:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_pull_that_cannot_fit_stops_before_any_byte_is_fetched() {
    let src = tempfile::tempdir().expect("tempdir");
    let fake = fake_with_data(src.path()).await;
    let fs = SmallFs::mount(1 << 20);
    let kaggle = KaggleData::new(client(&fake), DownloadOptions::default()).expect("backend");

    let err = pull(&kaggle, "big", &PullOptions::new(fs.dest()), |_| {})
        .await
        .expect_err("3 MB into 1 MiB");
    let s = shortfall(&err);
    assert_eq!(s.needed, 3_000_000);
    assert!(s.free <= 1 << 20, "{s:?}");
    assert!(
        s.location.contains(&fs.path().display().to_string()),
        "{s:?}"
    );
    assert_eq!(s.estimate, None, "listed sizes are exact");
    let msg = err.to_string();
    for part in [
        "needs 2.9 MiB",
        "is free",
        "nothing was downloaded",
        "--dest",
    ] {
        assert!(msg.contains(part), "`{part}` missing from: {msg}");
    }
    assert_eq!(
        content_requests(&fake),
        (0, 0, 0),
        "no file content was asked for"
    );
    assert!(
        !Path::new(&fs.dest()).exists(),
        "nothing made at the destination"
    );

    // Extracting a zip needs room for its contents too; the estimate is said.
    let err = pull(
        &kaggle,
        "zipped",
        &PullOptions::new(fs.dest()).extract(true),
        |_| {},
    )
    .await
    .expect_err("600 kB zip + its contents into 1 MiB");
    let s = shortfall(&err);
    let zip_len = std::fs::metadata(src.path().join("z.zip"))
        .expect("zip")
        .len();
    assert_eq!(
        s.needed,
        2 * zip_len,
        "the zip, and its contents at the zip's size"
    );
    assert!(
        s.estimate
            .as_deref()
            .is_some_and(|e| e.contains("least they unpack to")),
        "{s:?}"
    );
    assert_eq!(content_requests(&fake), (0, 0, 0));

    // What fits is pulled: the zip as served, and a small file.
    pull(&kaggle, "zipped", &PullOptions::new(fs.dest()), |_| {})
        .await
        .expect("the zip alone fits");
    pull(&kaggle, "small", &PullOptions::new(fs.dest()), |_| {})
        .await
        .expect("100 kB fits");
    assert_eq!(
        std::fs::metadata(Path::new(&fs.dest()).join("s.bin"))
            .expect("pulled")
            .len(),
        100_000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_resumes_into_the_room_its_partial_file_already_holds() {
    let src = tempfile::tempdir().expect("tempdir");
    let fake = fake_with_data(src.path()).await;
    // 3.5 MB, of which an interrupted download of the 3 MB file already holds 2.5 MB.
    let fs = SmallFs::mount(3_500_000);
    let dest = PathBuf::from(fs.dest());
    std::fs::create_dir_all(&dest).expect("dest");
    let partial = std::fs::File::create(dest.join("train.bin.kgenv-partial")).expect("partial");
    partial.set_len(3_000_000).expect("sparse length");
    std::os::unix::fs::FileExt::write_all_at(&partial, &vec![1u8; 2_500_000], 0)
        .expect("partial bytes");
    let kaggle = KaggleData::new(client(&fake), DownloadOptions::default()).expect("backend");
    let space = kaggle
        .space(&fs.dest(), &["train.bin".to_string()])
        .await
        .expect("space")
        .expect("a directory is measured");
    assert!(
        (2_400_000..=3_000_000).contains(&space.held),
        "the partial's written blocks count: {space:?}"
    );
    assert!(space.free < 3_000_000, "{space:?}");
    // Needs 3 MB − what the partial holds: it goes ahead, although 3 MB is not free (the
    // partial has no resume record, so the downloader rewrites it in the room it holds).
    let events = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = events.clone();
    let report = pull(&kaggle, "big", &PullOptions::new(fs.dest()), move |e| {
        sink.lock().expect("lock").push(e.to_string())
    })
    .await
    .expect("the partial's room counts");
    assert_eq!(report.bytes, 3_000_000);
    assert!(
        events
            .lock()
            .expect("lock")
            .iter()
            .any(|l| l.contains("needs") && l.contains("free")),
        "the pull says what it needs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_on_a_host_measures_there_and_stops_before_any_byte_is_fetched() {
    let src = tempfile::tempdir().expect("tempdir");
    let fake = fake_with_data(src.path()).await;
    let fs = SmallFs::mount(1 << 20);
    let sshd = sshd::Sshd::start_new();
    let session = SshConnector::new()
        .open(&sshd.addr(), std::time::Duration::from_secs(20))
        .await
        .expect("ssh");
    let work = tempfile::tempdir().expect("tempdir");
    let rk = RemoteKaggle::new(
        session,
        &client(&fake),
        data_agent::write_wrapper(&work.path().join("agent.sh"), ""),
    );

    let space = rk
        .space(&fs.dest(), &["train.bin".into()])
        .await
        .expect("space on the host")
        .expect("measured");
    assert!(space.free <= 1 << 20, "{space:?}");
    assert!(
        space
            .path
            .starts_with(&format!("{}@127.0.0.1:{}:", sshd.user, sshd.port)),
        "the host is named: {space:?}"
    );

    let err = pull(&rk, "big", &PullOptions::new(fs.dest()), |_| {})
        .await
        .expect_err("3 MB into 1 MiB on the host");
    let s = shortfall(&err);
    assert_eq!(s.needed, 3_000_000);
    assert!(s.location.contains("127.0.0.1"), "{s:?}");
    assert_eq!(
        content_requests(&fake),
        (0, 0, 0),
        "no file content was asked for"
    );

    pull(&rk, "small", &PullOptions::new(fs.dest()), |_| {})
        .await
        .expect("100 kB fits on the host");
    assert_eq!(
        std::fs::metadata(Path::new(&fs.dest()).join("s.bin"))
            .expect("pulled on the host")
            .len(),
        100_000
    );
}

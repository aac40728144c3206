//! The Kaggle client and downloader against a local fake of Kaggle's endpoints that
//! redirects to a local range-capable storage server on another origin
//! (`support/kaggle_fake.rs`); the pulls here also check that no Kaggle credential reached
//! the storage. The fake's harsher answers (rate limits, JSON redirects, files that change)
//! are exercised in `kaggle_api.rs`.

#[path = "support/data_child.rs"]
mod data_child;
#[path = "support/kaggle_fake.rs"]
mod kaggle_fake;

use std::io::{BufRead, BufReader};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kaggle_fake::{generate, sha256_file, FakeAuth, FakeKaggle};
use kgenv_core::backends::Kaggle;
use kgenv_core::download::DownloadOptions;
use kgenv_core::kaggle::credentials::Secret;
use kgenv_core::kaggle::{Credentials, KaggleClient, KaggleData, KaggleEndpoint};
use kgenv_core::runner::data::{pull, PullOptions};
use kgenv_core::runner::Event;
use kgenv_core::BackendError;

const TOKEN: &str = "test-token-0123";

#[test]
#[ignore = "helper: run by the tests in a child process"]
fn pull_child() {
    data_child::run_if_requested();
}

fn client(fake: &FakeKaggle, token: &str) -> KaggleClient {
    KaggleClient::new(
        KaggleEndpoint::custom(&fake.endpoint()).expect("endpoint"),
        Credentials::Token {
            token: Secret::new(token),
            source: "test".into(),
        },
    )
    .expect("client")
}

fn opts() -> DownloadOptions {
    DownloadOptions::default().retry_min_delay(Duration::from_millis(20))
}

fn backend(fake: &FakeKaggle, dl: DownloadOptions) -> KaggleData {
    KaggleData::new(client(fake, TOKEN), dl).expect("backend")
}

/// The events of a pull, kept for the assertions.
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<Event>>>);
impl Events {
    fn new() -> Self {
        Self::default()
    }
    fn sink(&self) -> impl Fn(Event) + Send + Sync + 'static {
        let events = self.0.clone();
        move |e| events.lock().expect("lock").push(e)
    }
    fn all(&self) -> Vec<Event> {
        self.0.lock().expect("lock").clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lists_every_page_and_rejects_bad_credentials() {
    let fake = FakeKaggle::start(FakeAuth::Token(TOKEN.into())).await;
    let dir = tempfile::tempdir().expect("tempdir");
    for i in 0..45 {
        let p = dir.path().join(format!("f{i}.bin"));
        generate(&p, 100 + i, i);
        fake.add_file("pages", &format!("dir{}/f{i}.bin", i % 3), &p);
    }
    let files = client(&fake, TOKEN)
        .list_files("pages")
        .await
        .expect("list");
    assert_eq!(
        files.len(),
        45,
        "three pages of at most 20 must all be read"
    );
    assert_eq!(files[44].name, "dir2/f44.bin");
    assert_eq!(files[44].size, 144);

    let err = client(&fake, "wrong")
        .list_files("pages")
        .await
        .expect_err("bad token");
    assert!(
        matches!(err, BackendError::Unauthenticated { .. }),
        "{err:?}"
    );
    assert!(
        !err.to_string().contains("wrong"),
        "the token must not appear in errors: {err}"
    );
    let err = client(&fake, TOKEN)
        .list_files("nope")
        .await
        .expect_err("unknown competition");
    assert!(err.is_not_found(), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downloads_verified_files_and_skips_what_is_there() {
    let fake = FakeKaggle::start(FakeAuth::Token(TOKEN.into())).await;
    let src = tempfile::tempdir().expect("tempdir");
    let mut want = Vec::new();
    for (name, size) in [
        ("train.csv", 5_000_000u64),
        ("images/a b.png", 1_234_567),
        ("empty.txt", 0),
        ("test.csv", 300_000),
    ] {
        let p = src.path().join(format!("s{}", want.len()));
        let h = generate(&p, size, size);
        fake.add_file("comp", name, &p);
        want.push((name, h));
    }
    let dest = tempfile::tempdir().expect("tempdir");
    let data = backend(&fake, opts().chunk_size(512 * 1024).concurrency(4));
    let events = Events::new();
    let o = PullOptions::new(dest.path().to_str().expect("utf8"))
        .files("*.csv")
        .files("images/*");
    let report = pull(&data, "comp", &o, events.sink()).await.expect("pull");
    assert_eq!(
        (report.selected, report.fetched.len(), report.skipped.len()),
        (3, 3, 0),
        "{report:?}"
    );
    for (name, h) in &want {
        let p = dest.path().join(name);
        if name.ends_with(".txt") {
            assert!(!p.exists(), "{name} was not selected");
            continue;
        }
        assert_eq!(&sha256_file(&p), h, "{name}");
        assert!(!dest.path().join(format!("{name}.kgenv-partial")).exists());
    }
    let evs = events.all();
    assert!(evs.iter().any(|e| matches!(e, Event::Progress { item, done, total: Some(t), .. } if item == "total" && done == t)), "a final total progress event");
    assert!(evs
        .iter()
        .any(|e| matches!(e, Event::Progress { item, .. } if item == "train.csv")));

    // Everything is there now: a second pull fetches nothing.
    let served = fake.served();
    let events = Events::new();
    let report = pull(&data, "comp", &o, events.sink())
        .await
        .expect("pull again");
    assert_eq!((report.fetched.len(), report.skipped.len()), (0, 3));
    assert_eq!(fake.served(), served, "nothing downloaded again");
    fake.assert_no_credentials_reached_storage();
    assert_eq!(
        data.present(dest.path().to_str().expect("utf8"), "train.csv")
            .await
            .expect("present"),
        Some(5_000_000)
    );
    assert_eq!(
        data.present(dest.path().to_str().expect("utf8"), "empty.txt")
            .await
            .expect("present"),
        None
    );

    // The empty file on its own.
    pull(
        &data,
        "comp",
        &PullOptions::new(dest.path().to_str().expect("utf8")).files("empty.txt"),
        |_| {},
    )
    .await
    .expect("empty file");
    assert_eq!(
        std::fs::metadata(dest.path().join("empty.txt"))
            .expect("empty.txt")
            .len(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_after_the_process_is_killed_mid_file() {
    let fake = FakeKaggle::start(FakeAuth::Token(TOKEN.into())).await;
    let src = tempfile::tempdir().expect("tempdir");
    let size = 24 << 20;
    let chunk = 1 << 20;
    let streams = 4;
    let h = generate(&src.path().join("big"), size, 7);
    fake.add_file("kill", "big.bin", &src.path().join("big"));
    fake.state.throttle_bps.store(1 << 20, Ordering::SeqCst); // 4 MiB/s over 4 streams
    let dest = tempfile::tempdir().expect("tempdir");
    let home = tempfile::tempdir().expect("tempdir");
    let cfg = data_child::ChildPull {
        endpoint: fake.endpoint(),
        token: TOKEN.into(),
        competition: "kill".into(),
        dest: dest.path().to_str().expect("utf8").into(),
        concurrency: streams,
        chunk_size: chunk,
        gcs_host: None,
    };
    let mut child = data_child::spawn(&cfg, home.path());
    let deadline = Instant::now() + Duration::from_secs(60);
    // Mid-chunk: a third of the file plus part of the next round of chunks.
    while fake.served() < size / 3 + 640 * 1024 {
        assert!(
            Instant::now() < deadline,
            "the child never got a third of the file"
        );
        assert!(
            child.try_wait().expect("wait").is_none(),
            "the child ended before it was killed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The point reached, with the child still there to be killed; it must die of the kill.
    let reached = fake.served();
    assert!(
        child.try_wait().expect("wait").is_none(),
        "the child ended before the kill, after {reached} bytes served"
    );
    child.kill().expect("SIGKILL the child");
    let status = child.wait().expect("wait");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "the child died of the SIGKILL ({status})"
    );
    let first = fake.served();
    assert!(
        reached >= size / 3 + 640 * 1024 && first < size,
        "killed mid-file, past a third of it ({reached} bytes served at the kill, {first} in all, of {size})"
    );
    assert!(
        dest.path().join("big.bin.kgenv-partial").exists(),
        "the partial file stays"
    );
    assert!(!dest.path().join("big.bin").exists());

    // A new process resumes (full speed now).
    fake.state.throttle_bps.store(0, Ordering::SeqCst);
    let mut child = data_child::spawn(&cfg, home.path());
    let out = BufReader::new(child.stdout.take().expect("stdout"))
        .lines()
        .map_while(Result::ok)
        .collect::<Vec<_>>();
    assert!(child.wait().expect("wait").success());
    assert!(
        out.iter().any(|l| l == "DONE"),
        "second run failed: {out:?}"
    );
    assert_eq!(sha256_file(&dest.path().join("big.bin")), h);
    let refetched = fake.served() - size;
    eprintln!("killed after {first} bytes; refetched {refetched} bytes");
    // Bytes fetched twice: at most the chunk each stream had in flight (+ the 1-byte probes).
    assert!(
        refetched <= streams as u64 * chunk + 2,
        "refetched {refetched} bytes; allowed {}",
        streams as u64 * chunk
    );
    assert!(
        !dest.path().join("big.bin.kgenv-partial.json").exists(),
        "the sidecar is gone"
    );
    fake.assert_no_credentials_reached_storage();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_url_that_expires_mid_download_is_refreshed() {
    let fake = FakeKaggle::start(FakeAuth::Token(TOKEN.into())).await;
    let src = tempfile::tempdir().expect("tempdir");
    let size = 6 << 20;
    let h = generate(&src.path().join("f"), size, 3);
    fake.add_file("exp", "f.bin", &src.path().join("f"));
    fake.state.url_ttl_ms.store(400, Ordering::SeqCst);
    fake.state.throttle_bps.store(2 << 20, Ordering::SeqCst); // ~1.5 s in all
    let dest = tempfile::tempdir().expect("tempdir");
    let data = backend(&fake, opts().chunk_size(256 * 1024).concurrency(2));
    pull(
        &data,
        "exp",
        &PullOptions::new(dest.path().to_str().expect("utf8")),
        |_| {},
    )
    .await
    .expect("pull");
    assert_eq!(sha256_file(&dest.path().join("f.bin")), h);
    assert!(
        fake.state.expired_hits.load(Ordering::SeqCst) >= 1,
        "the URL did expire during the download"
    );
    assert!(
        fake.state.signed_urls.load(Ordering::SeqCst) >= 2,
        "a fresh URL was fetched"
    );
    assert!(
        fake.served() <= size + 2,
        "nothing fetched twice: {} of {size}",
        fake.served()
    );
    fake.assert_no_credentials_reached_storage();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storage_error_quoting_the_signed_url_does_not_reach_the_message() {
    let fake = FakeKaggle::start(FakeAuth::Token(TOKEN.into())).await;
    let src = tempfile::tempdir().expect("tempdir");
    generate(&src.path().join("f"), 1000, 4);
    fake.add_file("sig", "f.csv", &src.path().join("f"));
    fake.state.refuse_signatures.store(true, Ordering::SeqCst);
    let dest = tempfile::tempdir().expect("tempdir");
    let e = pull(
        &backend(&fake, opts()),
        "sig",
        &PullOptions::new(dest.path().to_str().expect("utf8")),
        |_| {},
    )
    .await
    .expect_err("every URL is refused");
    let chain = kgenv_core::error::error_chain(&e);
    assert!(
        fake.state.storage_requests.load(Ordering::SeqCst) >= 2,
        "storage was asked, and refused: {chain}"
    );
    assert!(
        chain.contains("SignatureDoesNotMatch"),
        "the storage's code is kept: {chain}"
    );
    let signature = regex::Regex::new(r"sig=[0-9a-f]").expect("pattern");
    assert!(
        !signature.is_match(&chain),
        "no signature in the error: {chain}"
    );
    assert!(
        chain.contains("?<redacted>"),
        "the URL is shown without its query: {chain}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unaccepted_rules_say_where_to_accept_them() {
    let fake = FakeKaggle::start(FakeAuth::ApiKey("ann".into(), "key-9".into())).await;
    let src = tempfile::tempdir().expect("tempdir");
    generate(&src.path().join("f"), 10, 1);
    fake.add_file("ruled", "f.csv", &src.path().join("f"));
    fake.require_rules("ruled");
    let c = KaggleClient::new(
        KaggleEndpoint::custom(&fake.endpoint()).expect("endpoint"),
        Credentials::ApiKey {
            username: "ann".into(),
            key: Secret::new("key-9"),
            source: "test".into(),
        },
    )
    .expect("client");
    assert_eq!(
        c.list_files("ruled")
            .await
            .expect("listing works with an API key")
            .len(),
        1
    );
    let data = KaggleData::new(c, opts()).expect("backend");
    let dest = tempfile::tempdir().expect("tempdir");
    let err = pull(
        &data,
        "ruled",
        &PullOptions::new(dest.path().to_str().expect("utf8")),
        |_| {},
    )
    .await
    .expect_err("403");
    assert!(
        matches!(err.backend(), Some(BackendError::PermissionDenied { .. })),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("{}/competitions/ruled/rules", fake.endpoint())),
        "{msg}"
    );
    assert!(msg.contains("accept"), "{msg}");
    assert!(!msg.contains("key-9"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_ranges_gets_one_stream() {
    let fake = FakeKaggle::start(FakeAuth::Token(TOKEN.into())).await;
    let src = tempfile::tempdir().expect("tempdir");
    let size = 3_000_001;
    let h = generate(&src.path().join("f"), size, 11);
    fake.add_file("norange", "f.bin", &src.path().join("f"));
    fake.state.ranges.store(false, Ordering::SeqCst);
    let dest = tempfile::tempdir().expect("tempdir");
    let data = backend(&fake, opts().chunk_size(256 * 1024).concurrency(8));
    pull(
        &data,
        "norange",
        &PullOptions::new(dest.path().to_str().expect("utf8")),
        |_| {},
    )
    .await
    .expect("pull");
    assert_eq!(sha256_file(&dest.path().join("f.bin")), h);
    assert_eq!(fake.served(), size, "exactly one stream of the whole file");
    assert_eq!(fake.state.storage_requests.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checksum_mismatch_is_detected_and_the_file_fetched_again() {
    let fake = FakeKaggle::start(FakeAuth::Token(TOKEN.into())).await;
    let src = tempfile::tempdir().expect("tempdir");
    let size = 2_500_000;
    let h = generate(&src.path().join("f"), size, 5);
    fake.add_file("crc", "f.bin", &src.path().join("f"));
    fake.state.corrupt.store(1, Ordering::SeqCst);
    let dest = tempfile::tempdir().expect("tempdir");
    let data = backend(&fake, opts().chunk_size(256 * 1024).concurrency(3));
    let events = Events::new();
    pull(
        &data,
        "crc",
        &PullOptions::new(dest.path().to_str().expect("utf8")),
        events.sink(),
    )
    .await
    .expect("pull");
    assert_eq!(
        sha256_file(&dest.path().join("f.bin")),
        h,
        "the final file is the good one"
    );
    assert!(
        fake.served() >= 2 * size,
        "fetched twice: {}",
        fake.served()
    );
    assert!(
        events
            .all()
            .iter()
            .any(|e| matches!(e, Event::Log { line, .. } if line.contains("checksum mismatch"))),
        "the mismatch is reported: {:?}",
        events.all()
    );

    // A server that keeps corrupting makes the pull fail instead of landing bad bytes.
    fake.state.corrupt.store(100, Ordering::SeqCst);
    let dest = tempfile::tempdir().expect("tempdir");
    let err = pull(
        &data,
        "crc",
        &PullOptions::new(dest.path().to_str().expect("utf8")),
        |_| {},
    )
    .await
    .expect_err("always corrupt");
    assert!(err.to_string().contains("checksum mismatch"), "{err}");
    assert!(!dest.path().join("f.bin").exists());
}

/// Serves competition `z` with `data/train.csv` (700 000 bytes) wrapped in a zip, as Kaggle
/// wraps large files; returns the archive's path and the unpacked file's sha256.
fn serve_zipped(fake: &FakeKaggle, src: &std::path::Path) -> (std::path::PathBuf, String) {
    use std::io::Write;
    let raw = src.join("train.csv");
    let h = generate(&raw, 700_000, 9);
    let zpath = src.join("train.csv.zip");
    {
        let mut z = zip::ZipWriter::new(std::fs::File::create(&zpath).expect("zip"));
        z.start_file("train.csv", zip::write::SimpleFileOptions::default())
            .expect("entry");
        z.write_all(&std::fs::read(&raw).expect("raw"))
            .expect("write");
        z.finish().expect("finish");
    }
    fake.add_zipped("z", "data/train.csv", &zpath, 700_000);
    (zpath, h)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zipped_files_are_extracted_on_request() {
    let fake = FakeKaggle::start(FakeAuth::Token(TOKEN.into())).await;
    let src = tempfile::tempdir().expect("tempdir");
    let (zpath, h) = serve_zipped(&fake, src.path());
    let dest = tempfile::tempdir().expect("tempdir");
    let d = dest.path().to_str().expect("utf8");
    let data = backend(&fake, opts());
    pull(&data, "z", &PullOptions::new(d).extract(true), |_| {})
        .await
        .expect("pull");
    assert_eq!(sha256_file(&dest.path().join("data/train.csv")), h);
    assert!(
        !dest.path().join("data/train.csv.zip").exists(),
        "the archive is removed after extraction"
    );
    assert_eq!(
        data.present(d, "data/train.csv").await.expect("present"),
        Some(700_000)
    );
    let served = fake.served();
    let r = pull(&data, "z", &PullOptions::new(d).extract(true), |_| {})
        .await
        .expect("again");
    assert_eq!((r.fetched.len(), r.skipped.len()), (0, 1));
    assert_eq!(fake.served(), served);

    // Without extraction the zip lands under the name the signed URL gives.
    let dest2 = tempfile::tempdir().expect("tempdir");
    pull(
        &backend(&fake, opts()),
        "z",
        &PullOptions::new(dest2.path().to_str().expect("utf8")),
        |_| {},
    )
    .await
    .expect("pull zip");
    assert_eq!(
        sha256_file(&dest2.path().join("data/train.csv.zip")),
        sha256_file(&zpath)
    );
}

/// `[[data]] extract` reaches the real backend: the data step (on the local target, the
/// rest of the world mocked) unpacks the zip when the spec says so, and leaves it when not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_step_honours_extract_with_the_real_backend() {
    use kgenv_core::mock::MockWorld;
    use kgenv_core::runner::{RunOptions, Runner};
    use kgenv_core::spec::{Data, Env, Target};

    let fake = FakeKaggle::start(FakeAuth::Token(TOKEN.into())).await;
    let src = tempfile::tempdir().expect("tempdir");
    let (zpath, h) = serve_zipped(&fake, src.path());
    for extract in [true, false] {
        let dest = tempfile::tempdir().expect("tempdir");
        let state = tempfile::tempdir().expect("tempdir");
        let env = Env::builder("unzip")
            .target(Target::Local)
            .data(
                Data::builder("z")
                    .dest(dest.path().to_str().expect("utf8"))
                    .extract(extract),
            )
            .build()
            .expect("valid env");
        let mut backends = MockWorld::new().backends();
        backends.kaggle = std::sync::Arc::new(backend(&fake, opts()));
        Runner::new(env, backends)
            .state_dir(state.path())
            .up(RunOptions::default(), |_| {})
            .await
            .expect("up");
        let (csv, zip) = (
            dest.path().join("data/train.csv"),
            dest.path().join("data/train.csv.zip"),
        );
        if extract {
            assert_eq!(sha256_file(&csv), h, "extract = true unpacks the zip");
            assert!(!zip.exists(), "the archive is removed after extraction");
        } else {
            assert_eq!(sha256_file(&zip), sha256_file(&zpath), "the zip as served");
            assert!(!csv.exists(), "extract = false unpacks nothing");
        }
    }
}

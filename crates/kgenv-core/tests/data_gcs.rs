//! The GCS client and the `gs://` destination against the real fake-gcs-server binary.

#[path = "support/data_child.rs"]
mod data_child;
#[path = "support/fake_gcs.rs"]
mod fake_gcs;
#[path = "support/kaggle_fake.rs"]
mod kaggle_fake;

use std::io::{BufRead, BufReader};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fake_gcs::FakeGcs;
use kaggle_fake::{generate, FakeAuth, FakeKaggle};
use kgenv_core::backends::{Kaggle, Storage};
use kgenv_core::download::DownloadOptions;
use kgenv_core::gcs::{GcsClient, SavedUpload};
use kgenv_core::kaggle::credentials::Secret;
use kgenv_core::kaggle::{Credentials, KaggleClient, KaggleData, KaggleEndpoint};
use sha2::Digest;

const TOKEN: &str = "gcs-test-token";

#[test]
#[ignore = "helper: run by the tests in a child process"]
fn pull_child() {
    data_child::run_if_requested();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buckets_are_created_read_and_deleted() {
    let gcs_server = FakeGcs::start();
    let gcs = GcsClient::emulator(&gcs_server.host).expect("client");
    assert_eq!(gcs.get_bucket("kg-data").await.expect("get"), None);
    let b = gcs
        .create_bucket("proj", "kg-data", "us-central1")
        .await
        .expect("create");
    assert_eq!(b.name, "kg-data");
    assert!(!b.location.is_empty());
    assert_eq!(
        gcs.get_bucket("kg-data")
            .await
            .expect("get")
            .map(|b| b.name),
        Some("kg-data".to_string())
    );
    let again = gcs
        .create_bucket("proj", "kg-data", "us-central1")
        .await
        .expect_err("exists");
    assert!(
        matches!(again, kgenv_core::BackendError::AlreadyExists { .. }),
        "{again:?}"
    );
    gcs.delete_bucket("kg-data").await.expect("delete");
    assert_eq!(gcs.get_bucket("kg-data").await.expect("get"), None);
    assert!(gcs
        .delete_bucket("kg-data")
        .await
        .expect_err("gone")
        .is_not_found());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buckets_usage_counts_every_object_over_pages() {
    let gcs_server = FakeGcs::start();
    let gcs = GcsClient::emulator(&gcs_server.host).expect("client");
    gcs.create_bucket("proj", "kept", "us-central1")
        .await
        .expect("bucket");
    let empty = gcs.bucket_usage("kept").await.expect("usage");
    assert_eq!((empty.bytes, empty.objects), (0, 0));
    // Five objects, nested names among them: 1 + 10 + 100 + 1000 + 70000 bytes.
    let sizes = [1usize, 10, 100, 1000, 70_000];
    for (i, n) in sizes.iter().enumerate() {
        let mut up = gcs
            .start_upload(
                "kept",
                &format!("working/run-{i}/out.bin"),
                Some(*n as u64),
                &Default::default(),
            )
            .await
            .expect("start");
        up.put_chunk(0, Bytes::from(vec![7u8; *n]), true)
            .await
            .expect("upload");
    }
    // Two to a page: three pages, each asked with the last page's token.
    let paged = gcs.bucket_usage_paged("kept", 2).await.expect("usage");
    assert_eq!((paged.bytes, paged.objects), (71_111, 5));
    assert_eq!(gcs.bucket_usage("kept").await.expect("usage"), paged);
    assert!(gcs
        .bucket_usage("no-such-bucket")
        .await
        .expect_err("missing")
        .is_not_found());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumable_upload_goes_in_256k_chunks_and_continues_a_saved_session() {
    let gcs_server = FakeGcs::start();
    let gcs = GcsClient::emulator(&gcs_server.host).expect("client");
    gcs.create_bucket("proj", "up", "us-central1")
        .await
        .expect("bucket");
    let data: Vec<u8> = (0..(3 * 256 * 1024 + 1000))
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let data = Bytes::from(data);
    let k = 256 * 1024;
    let mut up = gcs
        .start_upload(
            "up",
            "dir/obj.bin",
            Some(data.len() as u64),
            &Default::default(),
        )
        .await
        .expect("start");
    up.put_chunk(0, data.slice(..k), false)
        .await
        .expect("chunk 1");
    assert_eq!(up.persisted(), k as u64);
    // Another process continues from the saved session and offset.
    // Record before sending chunks 2-3, as kgenv does; the server takes them, then the
    // process "dies" before it learns so.
    let saved = SavedUpload {
        session: up.session_uri().to_string(),
        persisted: up.persisted(),
        crc: up.crc32c(),
        next: Some((2 * k as u64, crc32c::crc32c(&data[..3 * k]))),
    };
    up.put_chunk(k as u64, data.slice(k..3 * k), false)
        .await
        .expect("chunks 2-3");
    drop(up);
    // A record that matches neither what the server holds is refused.
    let wrong = SavedUpload {
        next: None,
        ..saved.clone()
    };
    assert!(
        gcs.resume_upload("up", "dir/obj.bin", &wrong)
            .await
            .is_err(),
        "a stale record is not trusted"
    );
    // The real record: the server is found to hold the in-flight chunk too.
    let mut up = gcs
        .resume_upload("up", "dir/obj.bin", &saved)
        .await
        .expect("resume");
    assert_eq!(up.persisted(), 3 * k as u64);
    up.put_chunk(3 * k as u64, data.slice(3 * k..), true)
        .await
        .expect("last");
    let obj = up.object().expect("finalized").clone();
    assert_eq!(obj.size, data.len() as u64);
    assert_eq!(obj.crc32c(), Some(crc32c::crc32c(&data)));
    assert_eq!(up.crc32c(), crc32c::crc32c(&data));
    let mut got = Vec::new();
    gcs.read_object("up", "dir/obj.bin", &mut |b| got.extend_from_slice(b))
        .await
        .expect("read");
    assert_eq!(got, data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulls_straight_into_a_bucket_and_resumes_after_a_kill() {
    let gcs_server = FakeGcs::start();
    let gcs = GcsClient::emulator(&gcs_server.host).expect("client");
    gcs.create_bucket("proj", "comp-data", "us-central1")
        .await
        .expect("bucket");
    let fake = FakeKaggle::start(FakeAuth::Token(TOKEN.into())).await;
    let src = tempfile::tempdir().expect("tempdir");
    let size: u64 = 300 << 20;
    let (chunk, streams) = (16u64 << 20, 4usize);
    let want = generate(&src.path().join("big"), size, 42);
    let f = fake.add_file("gsc", "train/big.bin", &src.path().join("big"));
    fake.state.throttle_bps.store(12 << 20, Ordering::SeqCst);
    let home = tempfile::tempdir().expect("tempdir");
    let cfg = data_child::ChildPull {
        endpoint: fake.endpoint(),
        token: TOKEN.into(),
        competition: "gsc".into(),
        dest: "gs://comp-data/kaggle/gsc".into(),
        concurrency: streams,
        chunk_size: chunk,
        gcs_host: Some(gcs_server.host.clone()),
    };
    let mut child = data_child::spawn(&cfg, home.path());
    let deadline = Instant::now() + Duration::from_secs(120);
    while fake.served() < size * 2 / 5 {
        assert!(
            Instant::now() < deadline,
            "the child never got 40% of the file"
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
        reached >= size * 2 / 5 && first < size,
        "killed mid-file, past 40% of it ({reached} bytes served at the kill, {first} in all, of {size})"
    );
    assert!(
        gcs.get_object("comp-data", "kaggle/gsc/train/big.bin")
            .await
            .expect("get")
            .is_none(),
        "not finalized yet"
    );

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
    let resumed_at: u64 = out
        .iter()
        .find_map(|l| {
            l.split("resuming upload at byte ")
                .nth(1)
                .and_then(|r| r.trim_end_matches(['"', '}']).parse().ok())
        })
        .unwrap_or_else(|| panic!("the second run resumed the upload: {out:?}"));
    assert!(
        resumed_at > 0 && resumed_at.is_multiple_of(256 * 1024),
        "resumed at {resumed_at}"
    );
    let refetched = fake.served() - size;
    eprintln!(
        "killed after {first} bytes fetched; upload resumed at {resumed_at}; refetched {refetched}"
    );
    // Fetched again: what was in memory at the kill, at most `streams + 1` chunks (a chunk
    // the server took just before the kill is found by asking it), plus 1-byte probes.
    let allowed = (streams as u64 + 1) * chunk + 16;
    assert!(
        refetched <= allowed,
        "refetched {refetched} bytes (killed after {first}, resumed at {resumed_at}); allowed {allowed}"
    );

    let obj = gcs
        .get_object("comp-data", "kaggle/gsc/train/big.bin")
        .await
        .expect("get")
        .expect("object exists");
    assert_eq!(obj.size, size);
    assert_eq!(obj.crc32c(), Some(f.crc32c));
    assert_eq!(
        obj.metadata.get("kgenv-source-file").map(String::as_str),
        Some("train/big.bin")
    );
    let mut h = sha2::Sha256::new();
    let n = gcs
        .read_object("comp-data", "kaggle/gsc/train/big.bin", &mut |b| {
            h.update(b)
        })
        .await
        .expect("read back");
    assert_eq!(n, size);
    assert_eq!(
        hex::encode(h.finalize()),
        want,
        "content hash equals the source"
    );

    let data = KaggleData::new(
        KaggleClient::new(
            KaggleEndpoint::custom(&fake.endpoint()).expect("endpoint"),
            Credentials::Token {
                token: Secret::new(TOKEN),
                source: "t".into(),
            },
        )
        .expect("client"),
        DownloadOptions::default(),
    )
    .expect("backend")
    .with_gcs(gcs.clone());
    assert_eq!(
        data.present("gs://comp-data/kaggle/gsc", "train/big.bin")
            .await
            .expect("present"),
        Some(size)
    );
    assert_eq!(
        data.present("gs://comp-data/kaggle/gsc", "train/other.bin")
            .await
            .expect("present"),
        None
    );
    assert!(
        !home
            .path()
            .join("state/uploads")
            .read_dir()
            .map(|mut d| d.next().is_some())
            .unwrap_or(false),
        "the resume record is gone"
    );
}

//! The Kaggle client and downloader against the fake at its harshest
//! (`support/kaggle_fake.rs`): the storage on its own origin refusing any `Authorization`,
//! signed URLs in both shapes the API uses (302 `Location` and a JSON `HttpRedirect` body),
//! `429`/`5xx` answers with `Retry-After` on the API and on the storage, and files whose
//! bytes and validators change between runs or mid-transfer.
//!
//! Waits are checked from the fake's request log (arrival times), never against a wall
//! clock bound: a client that honours `Retry-After: 1` cannot send its retry sooner than a
//! second after the refused request arrived, whatever the machine's load.

#[path = "support/kaggle_fake.rs"]
mod kaggle_fake;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kaggle_fake::{
    generate, sha256_file, FakeAuth, FakeKaggle, Fault, Logged, RedirectShape, Side,
};
use kgenv_core::download::DownloadOptions;
use kgenv_core::kaggle::credentials::Secret;
use kgenv_core::kaggle::{Credentials, KaggleClient, KaggleData, KaggleEndpoint};
use kgenv_core::runner::data::{pull, PullOptions};
use kgenv_core::runner::Event;
use kgenv_core::BackendError;

const TOKEN: &str = "test-token-4567";

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

fn opts() -> DownloadOptions {
    DownloadOptions::default().retry_min_delay(Duration::from_millis(20))
}

fn backend(fake: &FakeKaggle, dl: DownloadOptions) -> KaggleData {
    KaggleData::new(client(fake), dl).expect("backend")
}

/// The events of a pull, kept for the assertions.
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<Event>>>);
impl Events {
    fn sink(&self) -> impl Fn(Event) + Send + Sync + 'static {
        let events = self.0.clone();
        move |e| events.lock().expect("lock").push(e)
    }
    fn logs(&self) -> Vec<String> {
        self.0
            .lock()
            .expect("lock")
            .iter()
            .filter_map(|e| match e {
                Event::Log { line, .. } => Some(line.clone()),
                _ => None,
            })
            .collect()
    }
}

fn on(log: &[Logged], side: Side) -> Vec<Logged> {
    log.iter().filter(|l| l.side == side).cloned().collect()
}

/// The gap between the arrivals of entries `i` and `i + 1`.
fn gap(log: &[Logged], i: usize) -> Duration {
    log[i + 1].at - log[i].at
}

fn origin(url: &str) -> String {
    let u = reqwest::Url::parse(url).expect("url");
    format!(
        "{}://{}:{}",
        u.scheme(),
        u.host_str().unwrap_or_default(),
        u.port_or_known_default().unwrap_or_default()
    )
}

/// The storage trap works (a request with a bearer is refused and counted), and kgenv's
/// pulls never spring it, whichever shape the signed URL comes in: a 302 `Location` or a
/// 200 JSON body; both are read to the storage's own origin and land the same bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_urls_in_either_shape_reach_storage_without_credentials() {
    let fake = FakeKaggle::start(FakeAuth::Token(TOKEN.into())).await;
    let src = tempfile::tempdir().expect("tempdir");
    let h = generate(&src.path().join("f"), 1_500_000, 21);
    fake.add_file("shapes", "train.csv", &src.path().join("f"));
    let c = client(&fake);

    // The trap itself: the signed URL fetched with the Kaggle token attached is refused.
    let url = c
        .data_file_url("shapes", "train.csv")
        .await
        .expect("signed URL");
    assert_ne!(origin(url.as_str()), origin(&fake.endpoint()));
    assert_eq!(origin(url.as_str()), origin(&fake.storage_base()));
    let leaked = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
        .get(url.clone())
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("storage answers");
    assert_eq!(leaked.status().as_u16(), 401);
    assert!(leaked
        .text()
        .await
        .expect("body")
        .contains("AuthenticationRequired"));
    assert_eq!(fake.state.storage_auth_seen.load(Ordering::SeqCst), 1);
    fake.state.storage_auth_seen.store(0, Ordering::SeqCst);
    fake.clear_log();

    for shape in [RedirectShape::Location, RedirectShape::JsonBody] {
        fake.redirect_with(shape);
        let url = c
            .data_file_url("shapes", "train.csv")
            .await
            .expect("signed URL");
        assert_eq!(
            origin(url.as_str()),
            origin(&fake.storage_base()),
            "{shape:?}"
        );
        let dest = tempfile::tempdir().expect("tempdir");
        pull(
            &backend(&fake, opts().chunk_size(256 * 1024).concurrency(3)),
            "shapes",
            &PullOptions::new(dest.path().to_str().expect("utf8")),
            |_| {},
        )
        .await
        .unwrap_or_else(|e| panic!("{shape:?}: {e}"));
        assert_eq!(sha256_file(&dest.path().join("train.csv")), h, "{shape:?}");
        let api = on(&fake.log(), Side::Api);
        let answered: Vec<u16> = api
            .iter()
            .filter(|l| l.what == "DownloadDataFile")
            .map(|l| l.status)
            .collect();
        let want = match shape {
            RedirectShape::Location => 302,
            RedirectShape::JsonBody => 200,
        };
        assert!(
            !answered.is_empty() && answered.iter().all(|s| *s == want),
            "{shape:?}: {answered:?}"
        );
        assert!(api.iter().all(|l| l.authorization), "the API got the token");
        fake.assert_no_credentials_reached_storage();
        fake.clear_log();
    }
}

/// The API's `429` with `Retry-After` is waited for and a `503` retried; a `Retry-After`
/// longer than kgenv waits fails at once as a rate limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_rate_limits_and_server_errors_are_retried_after_the_wait_asked() {
    let fake = FakeKaggle::start(FakeAuth::Token(TOKEN.into())).await;
    let src = tempfile::tempdir().expect("tempdir");
    generate(&src.path().join("f"), 10, 1);
    fake.add_file("busy", "f.csv", &src.path().join("f"));
    fake.fail_api([Fault::too_many(1), Fault::server(503)]);
    let files = client(&fake).list_files("busy").await.expect("listed");
    assert_eq!(files.len(), 1);
    let api = on(&fake.log(), Side::Api);
    assert_eq!(
        api.iter().map(|l| l.status).collect::<Vec<_>>(),
        [429, 503, 200]
    );
    assert!(
        gap(&api, 0) >= Duration::from_secs(1),
        "retried {:?} after Retry-After: 1",
        gap(&api, 0)
    );

    fake.fail_api([Fault::too_many(3600)]);
    let calls = fake.state.api_calls.load(Ordering::SeqCst);
    let e = client(&fake)
        .list_files("busy")
        .await
        .expect_err("an hour is not waited for");
    assert!(
        matches!(e, BackendError::RateLimited { retry_after: Some(d), .. } if d.as_secs() == 3600),
        "{e:?}"
    );
    assert_eq!(fake.state.api_calls.load(Ordering::SeqCst), calls + 1);
}

/// The storage's `429` with `Retry-After` and its `503` are retried, the former after the
/// wait it asked; the file lands whole. A storage asking for an hour fails the pull as a
/// rate limit without hammering it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_rate_limits_and_server_errors_are_retried_after_the_wait_asked() {
    let fake = FakeKaggle::start(FakeAuth::Token(TOKEN.into())).await;
    let src = tempfile::tempdir().expect("tempdir");
    let h = generate(&src.path().join("f"), 1_000_000, 2);
    fake.add_file("slow", "f.bin", &src.path().join("f"));
    fake.fail_storage([Fault::too_many(1), Fault::server(503)]);
    let dest = tempfile::tempdir().expect("tempdir");
    let data = backend(&fake, opts().chunk_size(256 * 1024).concurrency(2));
    pull(
        &data,
        "slow",
        &PullOptions::new(dest.path().to_str().expect("utf8")),
        |_| {},
    )
    .await
    .expect("pull");
    assert_eq!(sha256_file(&dest.path().join("f.bin")), h);
    let storage = on(&fake.log(), Side::Storage);
    assert_eq!(
        storage.iter().take(3).map(|l| l.status).collect::<Vec<_>>(),
        [429, 503, 206],
        "the probe refused twice, then answered"
    );
    assert!(
        gap(&storage, 0) >= Duration::from_secs(1),
        "retried {:?} after Retry-After: 1",
        gap(&storage, 0)
    );
    fake.assert_no_credentials_reached_storage();

    fake.fail_storage([Fault::too_many(3600)]);
    let before = fake.state.storage_requests.load(Ordering::SeqCst);
    let dest = tempfile::tempdir().expect("tempdir");
    let e = pull(
        &data,
        "slow",
        &PullOptions::new(dest.path().to_str().expect("utf8")),
        |_| {},
    )
    .await
    .expect_err("an hour is not waited for");
    assert!(
        matches!(e.backend(), Some(BackendError::RateLimited { .. })),
        "{e:?}"
    );
    assert_eq!(
        fake.state.storage_requests.load(Ordering::SeqCst),
        before + 1,
        "one request, no retries"
    );
}

/// Two versions of a 3 MB file: `v1` registered, `v2` (other bytes, other size) ready.
fn two_versions(fake: &FakeKaggle, dir: &std::path::Path, comp: &str) -> (String, String) {
    let (v1, v2) = (dir.join("v1"), dir.join("v2"));
    let h1 = generate(&v1, 3 << 20, 31);
    let h2 = generate(&v2, (3 << 20) + 12_345, 32);
    fake.add_file(comp, "f.bin", &v1);
    (h1, h2)
}

/// The file changes on the server after the probe and two chunks: the next ranged GETs
/// carry the old ETag in `If-Range`, get the whole new file (200), and kgenv starts over
/// and lands the new bytes, not a splice of both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_that_changes_mid_transfer_lands_as_the_new_version() {
    let fake = FakeKaggle::start(FakeAuth::Token(TOKEN.into())).await;
    let src = tempfile::tempdir().expect("tempdir");
    let (_, h2) = two_versions(&fake, src.path(), "mid");
    let old = fake.file("mid", "f.bin");
    fake.change_file_after("mid", "f.bin", &src.path().join("v2"), 3);
    let dest = tempfile::tempdir().expect("tempdir");
    let events = Events::default();
    pull(
        &backend(&fake, opts().chunk_size(256 * 1024).concurrency(2)),
        "mid",
        &PullOptions::new(dest.path().to_str().expect("utf8")),
        events.sink(),
    )
    .await
    .expect("pull");
    assert_eq!(sha256_file(&dest.path().join("f.bin")), h2);
    let storage = on(&fake.log(), Side::Storage);
    assert!(
        storage
            .iter()
            .any(|l| l.if_range.as_deref() == Some(old.etag().as_str()) && l.status == 200),
        "a stale If-Range got the whole new file: {storage:?}"
    );
    assert!(
        events
            .logs()
            .iter()
            .any(|l| l.contains("changed on the server")),
        "{:?}",
        events.logs()
    );
}

/// The same change behind a server that ignores `If-Range` and announces no checksum (so
/// nothing at the end would catch a splice): the `206` of the new version carries the new
/// ETag, and kgenv must notice it and start over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_206_of_another_version_is_not_spliced_in() {
    let fake = FakeKaggle::start(FakeAuth::Token(TOKEN.into())).await;
    fake.state.ignore_if_range.store(true, Ordering::SeqCst);
    fake.state.announce_crc.store(false, Ordering::SeqCst);
    let src = tempfile::tempdir().expect("tempdir");
    let (_, h2) = two_versions(&fake, src.path(), "splice");
    let old = fake.file("splice", "f.bin");
    fake.change_file_after("splice", "f.bin", &src.path().join("v2"), 3);
    let dest = tempfile::tempdir().expect("tempdir");
    pull(
        &backend(&fake, opts().chunk_size(256 * 1024).concurrency(2)),
        "splice",
        &PullOptions::new(dest.path().to_str().expect("utf8")),
        |_| {},
    )
    .await
    .expect("pull");
    let storage = on(&fake.log(), Side::Storage);
    assert!(
        storage.iter().any(|l| l.status == 206
            && l.if_range.as_deref() == Some(old.etag().as_str())
            && l.etag.as_deref() != Some(old.etag().as_str())),
        "the server did answer an old-version range with the new version: {storage:?}"
    );
    assert_eq!(sha256_file(&dest.path().join("f.bin")), h2, "no splice");
}

/// Between runs. A pull fails mid-file (the storage goes down), leaving the partial file
/// and its record; then:
/// - the file changes right after the next run's probe, so that run resumes with the old
///   validator: its ranged GETs from past the done chunks get the whole new file (200, not
///   206) and the file lands as the new version;
/// - in another destination, the file changes before the next run: its probe sees the new
///   validator, nothing of the old version is asked for, and the new version lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_download_with_a_stale_validator_gets_the_whole_new_file() {
    let chunk = 256 * 1024;
    // One stream: which chunks are done when the storage goes down is then fixed.
    let dl = || opts().chunk_size(chunk).concurrency(1).max_retries(1);
    for change_before_probe in [false, true] {
        let fake = FakeKaggle::start(FakeAuth::Token(TOKEN.into())).await;
        let src = tempfile::tempdir().expect("tempdir");
        let (_, h2) = two_versions(&fake, src.path(), "runs");
        let old = fake.file("runs", "f.bin");
        let dest = tempfile::tempdir().expect("tempdir");
        let o = PullOptions::new(dest.path().to_str().expect("utf8"));

        // Run 1: the probe and three chunks (0, 1, 2), then the storage is down.
        *fake.state.storage_up_for.lock().expect("lock") = Some(4);
        pull(&backend(&fake, dl()), "runs", &o, |_| {})
            .await
            .expect_err("the storage went down");
        assert!(dest.path().join("f.bin.kgenv-partial").exists());
        assert!(dest.path().join("f.bin.kgenv-partial.json").exists());
        *fake.state.storage_up_for.lock().expect("lock") = None;

        if change_before_probe {
            fake.change_file("runs", "f.bin", &src.path().join("v2"));
        } else {
            fake.change_file_after("runs", "f.bin", &src.path().join("v2"), 1);
        }
        let run2_from = fake.log().len();
        pull(&backend(&fake, dl()), "runs", &o, |_| {})
            .await
            .expect("run 2");
        assert_eq!(
            sha256_file(&dest.path().join("f.bin")),
            h2,
            "change before probe: {change_before_probe}"
        );
        let run2: Vec<Logged> = on(&fake.log()[run2_from..], Side::Storage);
        let stale: Vec<&Logged> = run2
            .iter()
            .filter(|l| l.if_range.as_deref() == Some(old.etag().as_str()))
            .collect();
        if change_before_probe {
            assert!(stale.is_empty(), "the old version was asked for: {stale:?}");
        } else {
            assert!(
                stale.first().is_some_and(|l| l.status == 200
                    && l.range.as_deref().is_some_and(|r| r.starts_with(&format!("bytes={}-", 3 * chunk)))),
                "the run resumed at chunk 3 with the old validator and got the whole new file: {run2:?}"
            );
            assert!(
                stale.iter().all(|l| l.status != 206),
                "no old-version range served after the change: {stale:?}"
            );
        }
        assert!(!dest.path().join("f.bin.kgenv-partial").exists());
        fake.assert_no_credentials_reached_storage();
    }
}

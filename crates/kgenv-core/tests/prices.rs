//! Prices in `plan` and `status`, from a fake Cloud Billing Catalog serving Compute
//! Engine's SKUs in the API's documented shape (pages, tiered rates, `units` + `nanos`,
//! regional SKUs), checked against sums computed by hand; the offline case says unknown;
//! the cache on disk is reused, then refreshed when stale; and a running VM's cost so far
//! counts from its `lastStartTimestamp`.

#[path = "support/billing_fake.rs"]
mod billing_fake;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};
use std::time::Duration;

use billing_fake::{sku, FakeBilling};
use kgenv_core::backends::billing::Sku;
use kgenv_core::backends::Billing;
use kgenv_core::billing::BillingClient;
use kgenv_core::http::RetryPolicy;
use kgenv_core::mock::MockWorld;
use kgenv_core::pricing::{self, Catalog, Estimate, Prices, Usd};
use kgenv_core::runner::{RunOptions, Runner};
use serde_json::Value;

const TOKEN: &str = "test-token";

fn home() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let dir = std::env::temp_dir().join(format!("kgenv-prices-{}", std::process::id()));
        std::env::set_var("KGENV_HOME", dir);
        std::env::set_var("KGENV_JUPYTER_PASSWORD", "prices-test-password");
    });
}

fn usd(s: &str) -> Usd {
    Usd::parse(s).expect("dollars")
}

const US: &[&str] = &["us-central1", "us-east1", "us-west1"];
const EU: &[&str] = &["europe-west4"];

/// Compute Engine's SKUs for the tests: on-demand and spot N1, A2, T4 and A100 in the
/// Americas; N1 and T4 on demand (no spot) and pd-balanced in the Netherlands; disks with a
/// volume tier; and SKUs that must not match (a commitment, a virtual workstation GPU).
fn catalog(t4_nanos: i32) -> Vec<Value> {
    vec![
        sku(
            "N1C-US",
            "N1 Predefined Instance Core running in Americas",
            "Compute",
            "N1Standard",
            "OnDemand",
            US,
            "h",
            &[(0, "0", 31_611_000)],
        ),
        sku(
            "N1R-US",
            "N1 Predefined Instance Ram running in Americas",
            "Compute",
            "N1Standard",
            "OnDemand",
            US,
            "GiBy.h",
            &[(0, "0", 4_237_000)],
        ),
        sku(
            "N1CS-US",
            "Spot Preemptible N1 Predefined Instance Core running in Americas",
            "Compute",
            "N1Standard",
            "Preemptible",
            US,
            "h",
            &[(0, "0", 6_655_000)],
        ),
        sku(
            "N1RS-US",
            "Spot Preemptible N1 Predefined Instance Ram running in Americas",
            "Compute",
            "N1Standard",
            "Preemptible",
            US,
            "GiBy.h",
            &[(0, "0", 892_000)],
        ),
        sku(
            "COMMIT",
            "Commitment v1: N1 Predefined Instance Core in Americas for 1 Year",
            "Compute",
            "N1Standard",
            "Commit1Yr",
            US,
            "h",
            &[(0, "0", 19_915_000)],
        ),
        sku(
            "T4-US",
            "Nvidia Tesla T4 GPU running in Americas",
            "Compute",
            "GPU",
            "OnDemand",
            US,
            "h",
            &[(0, "0", t4_nanos)],
        ),
        sku(
            "T4S-US",
            "Nvidia Tesla T4 GPU attached to Spot Preemptible VMs running in Americas",
            "Compute",
            "GPU",
            "Preemptible",
            US,
            "h",
            &[(0, "0", 140_000_000)],
        ),
        sku(
            "T4VWS",
            "Nvidia Tesla T4 Virtual Workstation GPU running in Americas",
            "Compute",
            "GPU",
            "OnDemand",
            US,
            "h",
            &[(0, "0", 550_000_000)],
        ),
        sku(
            "A2C-US",
            "A2 Instance Core running in Americas",
            "Compute",
            "CPU",
            "OnDemand",
            US,
            "h",
            &[(0, "0", 33_174_000)],
        ),
        sku(
            "A2R-US",
            "A2 Instance Ram running in Americas",
            "Compute",
            "RAM",
            "OnDemand",
            US,
            "GiBy.h",
            &[(0, "0", 4_446_000)],
        ),
        sku(
            "A100-US",
            "Nvidia Tesla A100 GPU running in Americas",
            "Compute",
            "GPU",
            "OnDemand",
            US,
            "h",
            &[(0, "2", 933_908_000)],
        ),
        sku(
            "PDB-US",
            "Balanced PD Capacity",
            "Storage",
            "SSD",
            "OnDemand",
            US,
            "GiBy.mo",
            &[(0, "0", 100_000_000)],
        ),
        // A volume tier past 100 TiB-months: not what one environment's disk is charged.
        sku(
            "PDS-US",
            "SSD backed PD Capacity",
            "Storage",
            "SSD",
            "OnDemand",
            US,
            "GiBy.mo",
            &[(0, "0", 170_000_000), (102_400, "0", 150_000_000)],
        ),
        sku(
            "N1C-EU",
            "N1 Predefined Instance Core running in Netherlands",
            "Compute",
            "N1Standard",
            "OnDemand",
            EU,
            "h",
            &[(0, "0", 34_773_000)],
        ),
        sku(
            "N1R-EU",
            "N1 Predefined Instance Ram running in Netherlands",
            "Compute",
            "N1Standard",
            "OnDemand",
            EU,
            "GiBy.h",
            &[(0, "0", 4_661_000)],
        ),
        sku(
            "T4-EU",
            "Nvidia Tesla T4 GPU running in Netherlands",
            "Compute",
            "GPU",
            "OnDemand",
            EU,
            "h",
            &[(0, "0", 385_000_000)],
        ),
        sku(
            "PDB-EU",
            "Balanced PD Capacity in Netherlands",
            "Storage",
            "SSD",
            "OnDemand",
            EU,
            "GiBy.mo",
            &[(0, "0", 110_000_000)],
        ),
    ]
}

const T4: i32 = 350_000_000;

/// An n1-standard-8 with one T4, a 200 GB pd-balanced boot disk and a 500 GB pd-ssd data
/// disk, in `zone`.
fn env(zone: &str, spot: bool) -> kgenv_core::spec::Env {
    let toml = format!(
        r#"name = "kg"
target = "gce"
[instance]
project = "my-project"
zones = ["{zone}"]
machine_type = "n1-standard-8"
gpu_type = "nvidia-tesla-t4"
gpu_count = 1
disk_size_gb = 200
disk_type = "pd-balanced"
spot = {spot}
[instance.data_disk]
size_gb = 500
type = "pd-ssd"
"#
    );
    kgenv_core::config::parse_str(
        &toml,
        "kgenv.toml".as_ref(),
        &kgenv_core::config::Overrides::default(),
    )
    .expect("env")
}

fn client(fake: &FakeBilling) -> BillingClient {
    BillingClient::builder()
        .base_url(fake.endpoint())
        .static_token(TOKEN)
        .page_size(2)
        .retry_policy(RetryPolicy::new(
            Duration::from_millis(1),
            Duration::from_millis(2),
            1,
        ))
        .build()
        .expect("client")
}

struct Rig {
    world: MockWorld,
    dir: tempfile::TempDir,
}

impl Rig {
    fn new() -> Self {
        home();
        Self {
            world: MockWorld::new(),
            dir: tempfile::tempdir().expect("temp"),
        }
    }

    fn cache_dir(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    /// The cache file of the catalog at `endpoint`.
    fn cache(&self, endpoint: &str) -> PathBuf {
        pricing::cache::file_for(&self.cache_dir(), endpoint)
    }

    /// The cache files there are.
    fn cached_files(&self) -> usize {
        std::fs::read_dir(self.cache_dir()).map_or(0, |d| d.count())
    }

    fn runner(&self, env: kgenv_core::spec::Env, billing: Option<Arc<dyn Billing>>) -> Runner {
        let mut backends = self.world.backends();
        if let Some(b) = billing {
            backends.billing = b;
        }
        Runner::new(env, backends)
            .state_dir(self.dir.path().join("state"))
            .price_cache(self.cache_dir())
    }

    async fn plan_prices(
        &self,
        env: kgenv_core::spec::Env,
        billing: Option<Arc<dyn Billing>>,
    ) -> Prices {
        self.runner(env, billing)
            .plan(RunOptions::default(), |_| {})
            .await
            .expect("plan")
            .prices
            .map(|p| *p)
            .expect("a gce environment has prices")
    }
}

fn known(e: &Estimate) -> Usd {
    match e {
        Estimate::Known(p) => p.total,
        Estimate::Unknown(why) => panic!("unknown: {why}"),
    }
}

#[tokio::test]
async fn plan_prices_match_sums_computed_by_hand() {
    let rig = Rig::new();
    let fake = FakeBilling::start(TOKEN, catalog(T4), 3).await;
    let billing: Arc<dyn Billing> = Arc::new(client(&fake));
    let p = rig
        .plan_prices(env("us-central1-a", false), Some(billing.clone()))
        .await;

    let vm = p.vm.as_ref().expect("a VM");
    assert_eq!(vm.region, "us-central1");
    // 8 vCPU × $0.031611 = 0.252888; 30 GiB × $0.004237 = 0.12711; 1 T4 × $0.35
    // → 0.252888 + 0.12711 + 0.35 = 0.729998
    assert_eq!(known(&vm.on_demand), usd("0.729998"));
    // Spot: 8 × 0.006655 = 0.05324; 30 × 0.000892 = 0.02676; T4 0.14 → 0.22
    assert_eq!(known(&vm.spot), usd("0.22"));
    let Estimate::Known(parts) = &vm.on_demand else {
        unreachable!()
    };
    let ids: Vec<&str> = parts.parts.iter().map(|p| p.sku_id.as_str()).collect();
    assert_eq!(
        ids,
        ["N1C-US", "N1R-US", "T4-US"],
        "the commitment and the workstation GPU do not match"
    );

    let boot = &p.disks[0];
    let data = &p.disks[1];
    assert_eq!((boot.role.as_str(), data.role.as_str()), ("boot", "data"));
    // Boot: 200 GiB × $0.10 = $20.00 a month; data: 500 GiB × $0.17 (the tier from 0,
    // not the volume tier) = $85.00 a month.
    assert_eq!(known(&boot.per_month), usd("20"));
    assert_eq!(known(&data.per_month), usd("85"));
    // Per hour over 730 h: 20 / 730 = 0.027397260273972… → 0.027397260274;
    // 85 / 730 = 0.116438356164383… → 0.116438356164 (rounded to the pico-dollar).
    assert_eq!(known(&boot.per_hour), usd("0.027397260274"));
    assert_eq!(known(&data.per_hour), usd("0.116438356164"));
    // 0.729998 + 0.027397260274 + 0.116438356164 = 0.873833616438
    assert_eq!(known(&p.total_on_demand), usd("0.873833616438"));
    // 0.22 + 0.027397260274 + 0.116438356164 = 0.363835616438
    assert_eq!(known(&p.total_spot), usd("0.363835616438"));
    assert_eq!(p.total(), &p.total_on_demand, "the spec is on demand");
    assert_eq!(known(&p.total_on_demand).display(4), "$0.8738");
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    assert_eq!(p.source.date.as_deref(), Some(today.as_str()));
    assert!(
        !p.source.cached && p.source.note.is_none(),
        "{:?}",
        p.source
    );
    assert_eq!(p.source.describe(), format!("prices of {today}"));

    // Every page was asked for as documented: Compute's service, USD, the token, page
    // tokens as the server gave them. 17 SKUs, 2 a page → 9 pages.
    let reqs = fake.requests();
    assert_eq!(reqs.len(), 9, "{reqs:?}");
    for (i, r) in reqs.iter().enumerate() {
        assert_eq!(r.path, "/v1/services/6F81-5844-456A/skus");
        assert_eq!(r.query.get("currencyCode").map(String::as_str), Some("USD"));
        assert_eq!(r.query.get("pageSize").map(String::as_str), Some("2"));
        assert_eq!(r.authorization.as_deref(), Some("Bearer test-token"));
        let want = (i > 0).then(|| format!("fake-page-{}", 2 * i));
        assert_eq!(r.query.get("pageToken"), want.as_ref(), "page {i}");
    }

    // Another region: its own SKUs. 8 × 0.034773 = 0.278184; 30 × 0.004661 = 0.13983;
    // T4 0.385 → 0.803014. No spot SKU there, and no pd-ssd: those are unknown, and so
    // is every total that needs them — never a number made up from the Americas' prices.
    let p = rig
        .plan_prices(env("europe-west4-a", true), Some(billing))
        .await;
    let vm = p.vm.as_ref().expect("a VM");
    assert_eq!(known(&vm.on_demand), usd("0.803014"));
    // 200 GiB × $0.11 = $22 a month.
    assert_eq!(known(&p.disks[0].per_month), usd("22"));
    match (
        &vm.spot,
        &p.disks[1].per_month,
        &p.total_on_demand,
        p.total(),
    ) {
        (
            Estimate::Unknown(a),
            Estimate::Unknown(b),
            Estimate::Unknown(c),
            Estimate::Unknown(_),
        ) => {
            assert!(
                a.contains("N1 Predefined Instance Core")
                    && a.contains("Preemptible")
                    && a.contains("europe-west4"),
                "{a}"
            );
            assert!(b.contains("SSD backed PD Capacity"), "{b}");
            assert_eq!(c, b, "the total says which part is missing");
        }
        other => panic!("expected unknowns: {other:?}"),
    }
    assert_eq!(fake.requests().len(), 9, "the second plan used the cache");
}

#[tokio::test]
async fn units_and_nanos_and_bundled_gpus_price_exactly() {
    let fake = FakeBilling::start(TOKEN, catalog(T4), 5).await;
    let skus: Vec<Sku> = client(&fake).compute_skus().await.expect("skus");
    assert_eq!(skus.len(), catalog(T4).len(), "every page was read");
    let catalog = Catalog {
        fetched_at: "2026-12-04T10:00:00Z".into(),
        skus,
    };
    // a2-highgpu-1g: 12 vCPU × 0.033174 = 0.398088; 85 GiB × 0.004446 = 0.37791; its A100
    // at units "2" + 933908000 nanos = 2.933908 → 3.709906
    let p = pricing::hourly(&catalog, "a2-highgpu-1g", None, "us-central1", false).expect("priced");
    assert_eq!(p.total, usd("3.709906"));
    assert_eq!(p.parts[2].what, "1 × nvidia-tesla-a100");
    // Custom N1 is billed by the custom SKUs, which this catalog lacks: unknown.
    let why = pricing::vm_hourly(
        &catalog.skus,
        "n1-custom-8-30720",
        None,
        "us-central1",
        false,
    )
    .expect_err("no custom SKUs");
    assert!(why.contains("Custom Instance Core"), "{why}");
    // A GPU that conflicts with the machine type's own is not priced.
    assert!(pricing::hourly(
        &catalog,
        "a2-highgpu-1g",
        Some(("nvidia-tesla-t4", 1)),
        "us-central1",
        false
    )
    .is_none());
    assert_eq!(catalog.date(), "2026-12-04");
}

#[tokio::test]
async fn the_fake_serves_the_documented_shape() {
    let fake = FakeBilling::start(TOKEN, catalog(T4), 3).await;
    let http = reqwest::Client::builder().no_proxy().build().expect("http");
    let page: Value = http
        .get(format!(
            "{}v1/services/6F81-5844-456A/skus?currencyCode=USD",
            fake.endpoint()
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("page")
        .json()
        .await
        .expect("json");
    let doc_path = std::env::var("KGENV_COMPUTE_DISCOVERY")
        .map(|p| Path::new(&p).with_file_name("cloudbilling.v1.json"))
        .expect("KGENV_COMPUTE_DISCOVERY (scripts/setup/30-gce.sh sets it; cloudbilling.v1.json lies beside it)");
    let doc: Value =
        serde_json::from_slice(&std::fs::read(&doc_path).expect("cloudbilling.v1.json"))
            .expect("discovery document");
    let method = &doc["resources"]["services"]["resources"]["skus"]["methods"]["list"];
    assert_eq!(method["path"], "v1/{+parent}/skus");
    assert_eq!(method["response"]["$ref"], "ListSkusResponse");
    check(&doc, &page, "ListSkusResponse", "response");
    assert_eq!(page["skus"].as_array().map(Vec::len), Some(3));
    assert_eq!(page["nextPageToken"], "fake-page-3");
    // Google's error shape for a request without credentials.
    let r = http
        .get(format!(
            "{}v1/services/6F81-5844-456A/skus?currencyCode=USD",
            fake.endpoint()
        ))
        .send()
        .await
        .expect("answer");
    assert_eq!(r.status(), 401);
    let e: Value = r.json().await.expect("json");
    assert_eq!(e["error"]["status"], "UNAUTHENTICATED");
}

/// Checks `v` against the discovery document's schema `name`: every field is one the
/// schema declares, with its JSON type.
fn check(doc: &Value, v: &Value, name: &str, at: &str) {
    let props = doc["schemas"][name]["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("no schema {name}"));
    for (k, field) in v
        .as_object()
        .unwrap_or_else(|| panic!("{at} is not an object"))
    {
        let spec = props
            .get(k)
            .unwrap_or_else(|| panic!("{at}.{k} is not a field of {name}"));
        check_value(doc, field, spec, &format!("{at}.{k}"));
    }
}

fn check_value(doc: &Value, v: &Value, spec: &Value, at: &str) {
    if let Some(r) = spec["$ref"].as_str() {
        return check(doc, v, r, at);
    }
    let ok = match (spec["type"].as_str(), spec["format"].as_str()) {
        (Some("string"), _) => v.is_string(),
        (Some("integer"), _) => v.is_i64() || v.is_u64(),
        (Some("number"), _) => v.is_number(),
        (Some("boolean"), _) => v.is_boolean(),
        (Some("array"), _) => {
            for (i, item) in v
                .as_array()
                .unwrap_or_else(|| panic!("{at} is not an array"))
                .iter()
                .enumerate()
            {
                check_value(doc, item, &spec["items"], &format!("{at}[{i}]"));
            }
            true
        }
        (Some("object"), _) => v.is_object(),
        other => panic!("{at}: schema type {other:?} not handled"),
    };
    assert!(ok, "{at} = {v} is not a {}", spec["type"]);
}

#[tokio::test]
async fn offline_or_without_credentials_the_price_is_unknown() {
    let rig = Rig::new();
    // A port nothing listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let refused: Arc<dyn Billing> = Arc::new(
        BillingClient::builder()
            .base_url(format!("http://{closed}/"))
            .static_token(TOKEN)
            .retry_policy(RetryPolicy::new(
                Duration::from_millis(1),
                Duration::from_millis(2),
                1,
            ))
            .build()
            .expect("client"),
    );
    let fake = FakeBilling::start(TOKEN, catalog(T4), 3).await;
    fake.refuse(true);
    let api_off: Arc<dyn Billing> = Arc::new(client(&fake));
    let no_credentials: Arc<dyn Billing> =
        kgenv_core::backends::unavailable::Unavailable::arc("billing", "no credentials");
    // The mock world's catalog is unavailable until a test gives it SKUs.
    for (name, billing, says) in [
        (
            "refused",
            Some(refused),
            "could not connect to the Cloud Billing Catalog API",
        ),
        ("API off", Some(api_off), "Cloud Billing API"),
        ("no credentials", Some(no_credentials), "no credentials"),
        ("mock", None, "no price catalog"),
    ] {
        let p = rig.plan_prices(env("us-central1-a", false), billing).await;
        let vm = p.vm.as_ref().expect("a VM");
        let all = [&vm.on_demand, &vm.spot, &p.total_on_demand, &p.total_spot]
            .into_iter()
            .chain(p.disks.iter().flat_map(|d| [&d.per_hour, &d.per_month]));
        for e in all {
            match e {
                Estimate::Unknown(why) => assert!(why.contains(says), "{name}: {why}"),
                Estimate::Known(p) => panic!("{name}: a number without a catalog: {p:?}"),
            }
        }
        assert_eq!(p.source.date, None, "{name}");
        assert!(
            p.source.describe().starts_with("prices unknown"),
            "{name}: {}",
            p.source.describe()
        );
        assert_eq!(p.total_on_demand.display(4), "unknown");
        assert_eq!(rig.cached_files(), 0, "{name}: nothing to cache");
    }
    assert_eq!(fake.requests().len(), 1, "a 403 is not retried");

    // Without credentials but with Google's prices cached by an earlier run, even stale
    // ones: those, with their date.
    let old = Catalog {
        fetched_at: "2026-11-01T09:00:00Z".into(),
        skus: serde_json::from_value(Value::Array(catalog(T4))).expect("skus"),
    };
    let file = rig.cache(&kgenv_core::backends::billing::configured_endpoint());
    std::fs::create_dir_all(rig.cache_dir()).expect("dir");
    std::fs::write(&file, serde_json::to_vec(&old).expect("json")).expect("write");
    let no_credentials: Arc<dyn Billing> =
        kgenv_core::backends::unavailable::Unavailable::arc("billing", "no credentials");
    let p = rig
        .plan_prices(env("us-central1-a", false), Some(no_credentials))
        .await;
    assert_eq!(
        known(&p.vm.as_ref().expect("vm").on_demand),
        usd("0.729998")
    );
    assert_eq!(p.source.date.as_deref(), Some("2026-11-01"));
    let note = p.source.note.expect("a note");
    assert!(note.starts_with("prices of 2026-11-01 (could not refresh them: billing backend unavailable: no credentials"), "{note}");
}

/// Rewrites the cache's fetch time to `days` ago.
fn age_cache(path: &Path, days: i64) -> String {
    let mut c: Catalog =
        serde_json::from_slice(&std::fs::read(path).expect("cache")).expect("catalog");
    let then = chrono::Utc::now() - chrono::Duration::days(days);
    c.fetched_at = then.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    std::fs::write(path, serde_json::to_vec(&c).expect("json")).expect("write cache");
    then.format("%Y-%m-%d").to_string()
}

#[tokio::test]
async fn the_cache_is_reused_for_a_week_then_refreshed() {
    let rig = Rig::new();
    let fake = FakeBilling::start(TOKEN, catalog(T4), 3).await;
    let billing: Arc<dyn Billing> = Arc::new(client(&fake));
    let first = rig
        .plan_prices(env("us-central1-a", false), Some(billing.clone()))
        .await;
    let pages = fake.requests().len();
    assert_eq!(pages, 9);
    let cache = rig.cache(&fake.endpoint());
    assert!(cache.is_file(), "the SKUs are cached");
    assert_eq!(rig.cached_files(), 1);
    let cached: Catalog =
        serde_json::from_slice(&std::fs::read(&cache).expect("read")).expect("catalog");
    assert_eq!(
        cached.skus.len(),
        catalog(T4).len() - 1,
        "all but the commitment, which kgenv never prices"
    );

    // A second run (a new runner, as a new process would be) does not call the catalog.
    let second = rig
        .plan_prices(env("us-central1-a", false), Some(billing.clone()))
        .await;
    assert_eq!(fake.requests().len(), pages, "served from the cache");
    assert!(second.source.cached);
    assert_eq!(second.total_on_demand, first.total_on_demand);

    // Six days old: still used, even though the price changed meanwhile.
    fake.set_skus(catalog(400_000_000));
    age_cache(&cache, 6);
    let p = rig
        .plan_prices(env("us-central1-a", false), Some(billing.clone()))
        .await;
    assert_eq!(fake.requests().len(), pages);
    assert_eq!(
        known(&p.vm.as_ref().expect("vm").on_demand),
        usd("0.729998")
    );

    // Eight days old: refreshed, with the new T4 price: 0.252888 + 0.12711 + 0.40 = 0.779998.
    age_cache(&cache, 8);
    let p = rig
        .plan_prices(env("us-central1-a", false), Some(billing.clone()))
        .await;
    assert_eq!(
        fake.requests().len(),
        2 * pages,
        "a stale cache is fetched again"
    );
    assert!(!p.source.cached);
    assert_eq!(
        known(&p.vm.as_ref().expect("vm").on_demand),
        usd("0.779998")
    );

    // Stale and the catalog unreachable: the old prices, with their date and why.
    let old_day = age_cache(&cache, 9);
    fake.refuse(true);
    let p = rig
        .plan_prices(env("us-central1-a", false), Some(billing))
        .await;
    assert_eq!(
        known(&p.vm.as_ref().expect("vm").on_demand),
        usd("0.779998")
    );
    assert_eq!(p.source.date.as_deref(), Some(old_day.as_str()));
    let note = p.source.note.clone().expect("a note");
    assert!(
        note.starts_with(&format!("prices of {old_day} (could not refresh them")),
        "{note}"
    );

    // A damaged cache file is fetched again, not an error.
    fake.refuse(false);
    std::fs::write(&cache, b"{not json").expect("write");
    let before = fake.requests().len();
    let p = rig
        .plan_prices(env("us-central1-a", false), Some(Arc::new(client(&fake))))
        .await;
    assert!(fake.requests().len() > before);
    assert_eq!(
        known(&p.vm.as_ref().expect("vm").on_demand),
        usd("0.779998")
    );
}

#[tokio::test]
async fn status_counts_the_running_vms_cost_from_its_last_start() {
    let rig = Rig::new();
    let skus: Vec<Sku> = serde_json::from_value(Value::Array(catalog(T4))).expect("skus");
    rig.world.edit(|s| s.billing_skus = Some(skus));
    let runner = rig.runner(env("us-central1-a", false), None);
    runner
        .up(RunOptions::default().until("instance"), |_| {})
        .await
        .expect("up");
    // It started two hours ago, as GCE writes the time (Pacific offset, milliseconds).
    let pacific = chrono::FixedOffset::west_opt(8 * 3600).expect("offset");
    let started = (chrono::Utc::now() - chrono::Duration::hours(2))
        .with_timezone(&pacific)
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, false);
    rig.world.edit(|s| {
        for i in s.instances.values_mut() {
            i.last_start = Some(started.clone());
        }
    });
    let status = runner.status(|_| {}).await.expect("status");
    let running = status.running.expect("the VM runs");
    assert_eq!(running.since, started);
    // At least the two hours; the run itself takes seconds, an hour is a generous bound.
    assert!(
        (7200..7200 + 3600).contains(&running.seconds),
        "{}",
        running.seconds
    );
    assert_eq!(known(&running.per_hour), usd("0.729998"));
    // $0.729998 × seconds / 3600, exactly as counted.
    assert_eq!(
        running.so_far.total(),
        Some(usd("0.729998").over_seconds(running.seconds))
    );
    assert!(
        known(&running.so_far) >= usd("1.459996"),
        "two hours at least: 2 × 0.729998"
    );
    // What `down` keeps: the data disk, $85.00 a month.
    let prices = status.prices.expect("prices");
    let data = prices
        .disks
        .iter()
        .find(|d| d.role == "data")
        .expect("data disk");
    assert_eq!(known(&data.per_month), usd("85"));

    // Stopped: no running cost.
    runner.stop(|_| {}).await.expect("stop");
    let status = runner.status(|_| {}).await.expect("status");
    assert!(status.running.is_none());
    assert!(status.prices.is_some());
    assert_eq!(
        rig.cached_files(),
        0,
        "the mock's made-up prices are never cached where they could pass for real ones"
    );
    assert_eq!(
        rig.world
            .calls()
            .iter()
            .filter(|c| c.op == "billing.compute_skus")
            .count(),
        2,
        "so each status asked the mock again"
    );
}

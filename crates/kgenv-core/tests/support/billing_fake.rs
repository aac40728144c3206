//! A local fake of the Cloud Billing Catalog API's `services.skus.list` for Compute
//! Engine, on 127.0.0.1, serving SKUs in the documented shape (the `cloudbilling.v1`
//! discovery document's `ListSkusResponse`: every `Sku` field, `pricingInfo` with
//! `pricingExpression`, `tieredRates` and `Money` as `units` string + `nanos`).
//!
//! - `GET /v1/services/6F81-5844-456A/skus?currencyCode=USD[&pageSize=N][&pageToken=T]`:
//!   pages of at most `page_cap` SKUs (small, so clients must follow `nextPageToken`); the
//!   last page carries `"nextPageToken": ""`, as the real API does;
//! - without `Authorization: Bearer <token>` → 401 `UNAUTHENTICATED`; a currency other than
//!   USD → 400 (the fake has no conversion); an unknown page token → 400
//!   `INVALID_ARGUMENT`; another service → 404; all in Google's JSON error shape;
//! - [`FakeBilling::refuse`]: every request answered 403 `PERMISSION_DENIED` (API off);
//! - every request is logged ([`FakeBilling::requests`]) with its path, query and whether
//!   the token was right, so tests count calls and check what was sent.
//!
//! Use it from a test file with `#[path = "support/billing_fake.rs"] mod billing_fake;`.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

/// Compute Engine's service id.
pub const COMPUTE: &str = "6F81-5844-456A";

/// One logged request.
#[derive(Debug, Clone)]
pub struct Logged {
    /// The path.
    pub path: String,
    /// The query parameters.
    pub query: BTreeMap<String, String>,
    /// The `Authorization` header, as sent.
    pub authorization: Option<String>,
}

struct Inner {
    token: String,
    skus: Vec<Value>,
    page_cap: usize,
    refuse: bool,
    log: Vec<Logged>,
}

/// The fake; dropped, it stops serving.
pub struct FakeBilling {
    addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeBilling {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One tier: from `start` units, `units` whole dollars plus `nanos`.
pub type Tier = (u32, &'static str, i32);

/// A SKU in the API's shape.
///
/// `usage_type` is `OnDemand` or `Preemptible`; `unit` is `h`, `GiBy.h` or `GiBy.mo`.
#[allow(clippy::too_many_arguments)]
pub fn sku(
    id: &str,
    description: &str,
    family: &str,
    group: &str,
    usage_type: &str,
    regions: &[&str],
    unit: &str,
    tiers: &[Tier],
) -> Value {
    let (unit_desc, base, base_desc, factor) = match unit {
        "h" => ("hour", "s", "second", 3600.0),
        "GiBy.h" => ("gibibyte hour", "By.s", "byte second", 3_865_470_566_400.0),
        "GiBy.mo" => (
            "gibibyte month",
            "By.s",
            "byte second",
            2_821_793_513_472_000.0,
        ),
        other => (other, other, other, 1.0),
    };
    json!({
        "name": format!("services/{COMPUTE}/skus/{id}"),
        "skuId": id,
        "description": description,
        "category": {
            "serviceDisplayName": "Compute Engine",
            "resourceFamily": family,
            "resourceGroup": group,
            "usageType": usage_type,
        },
        "serviceRegions": regions,
        "pricingInfo": [{
            "summary": "",
            "pricingExpression": {
                "usageUnit": unit,
                "displayQuantity": 1,
                "tieredRates": tiers.iter().map(|(start, units, nanos)| {
                    // Google leaves `nanos` out when it is 0.
                    let mut price = json!({"currencyCode": "USD", "units": units});
                    if *nanos != 0 {
                        price["nanos"] = json!(nanos);
                    }
                    json!({"startUsageAmount": start, "unitPrice": price})
                }).collect::<Vec<_>>(),
                "usageUnitDescription": unit_desc,
                "baseUnit": base,
                "baseUnitDescription": base_desc,
                "baseUnitConversionFactor": factor,
            },
            "currencyConversionRate": 1,
            "effectiveTime": "2026-12-04T08:37:51.463Z",
        }],
        "serviceProviderName": "Google",
        "geoTaxonomy": {"type": "REGIONAL", "regions": regions},
    })
}

fn google_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"code": status.as_u16(), "message": message, "status": code}})),
    )
        .into_response()
}

async fn list(
    State(inner): State<Arc<Mutex<Inner>>>,
    Path(service): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let mut g = inner.lock().expect("fake billing");
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    g.log.push(Logged {
        path: format!("/v1/services/{service}/skus"),
        query: query.clone(),
        authorization: authorization.clone(),
    });
    if authorization.as_deref() != Some(&format!("Bearer {}", g.token)) {
        return google_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid authentication credential.",
        );
    }
    if g.refuse {
        return google_error(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            "Cloud Billing API has not been used in project 123 before or it is disabled.",
        );
    }
    if service != COMPUTE {
        return google_error(StatusCode::NOT_FOUND, "NOT_FOUND", "Service not found.");
    }
    if query.get("currencyCode").map(String::as_str) != Some("USD") {
        return google_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            "the fake serves USD only; ask with currencyCode=USD",
        );
    }
    let start = match query.get("pageToken").map(String::as_str) {
        None | Some("") => 0,
        Some(t) => match t
            .strip_prefix("fake-page-")
            .and_then(|n| n.parse::<usize>().ok())
        {
            Some(n) if n < g.skus.len() => n,
            _ => {
                return google_error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_ARGUMENT",
                    "Invalid page token.",
                )
            }
        },
    };
    let size = query
        .get("pageSize")
        .and_then(|s| s.parse::<usize>().ok())
        .unwrap_or(5000)
        .clamp(1, g.page_cap);
    let end = (start + size).min(g.skus.len());
    let next = if end < g.skus.len() {
        format!("fake-page-{end}")
    } else {
        String::new()
    };
    Json(json!({"skus": g.skus[start..end], "nextPageToken": next})).into_response()
}

impl FakeBilling {
    /// Serves `skus` to callers with `token`, `page_cap` a page.
    pub async fn start(token: &str, skus: Vec<Value>, page_cap: usize) -> Self {
        let inner = Arc::new(Mutex::new(Inner {
            token: token.into(),
            skus,
            page_cap: page_cap.max(1),
            refuse: false,
            log: Vec::new(),
        }));
        let app = Router::new()
            .route("/v1/services/{service}/skus", get(list))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake Billing Catalog");
        let addr = listener.local_addr().expect("local addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, inner, task }
    }

    /// The service root, `http://127.0.0.1:PORT/` (what
    /// `CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDBILLING` would hold).
    pub fn endpoint(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Replaces the SKUs (a price change).
    pub fn set_skus(&self, skus: Vec<Value>) {
        self.inner.lock().expect("fake billing").skus = skus;
    }

    /// Answers every request 403 (the API is off) when `on`.
    pub fn refuse(&self, on: bool) {
        self.inner.lock().expect("fake billing").refuse = on;
    }

    /// The requests so far.
    pub fn requests(&self) -> Vec<Logged> {
        self.inner.lock().expect("fake billing").log.clone()
    }

    /// The SKUs served.
    pub fn skus(&self) -> Vec<Value> {
        self.inner.lock().expect("fake billing").skus.clone()
    }
}

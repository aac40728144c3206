//! The Billing backend trait: Compute Engine's public SKUs and their list prices, from the
//! Cloud Billing Catalog API (`services.skus.list`), so `plan` and `status` can say what an
//! environment costs.
//!
//! The values are the API's own JSON shape (the `cloudbilling.v1` discovery document's
//! `Sku`, `Category`, `PricingInfo`, `PricingExpression`, `TierRate` and `Money`), typed:
//! they are what the real client decodes, what the mock serves and what kgenv caches on
//! disk. Fields kgenv does not use are left out; unknown fields are ignored.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::BackendResult;

/// Compute Engine's service id in the Billing Catalog (`services/6F81-5844-456A`).
pub const COMPUTE_SERVICE_ID: &str = "6F81-5844-456A";

/// One SKU: a thing Google bills for, its category, the regions it applies in and its
/// pricing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Sku {
    /// The SKU's id, e.g. `D041-B8A1-6E0B`.
    #[serde(default)]
    pub sku_id: String,
    /// Human-readable description, e.g. `Nvidia Tesla T4 GPU running in Americas`.
    #[serde(default)]
    pub description: String,
    /// The category hierarchy.
    #[serde(default)]
    pub category: Category,
    /// Regions the SKU is offered in, e.g. `us-central1`.
    #[serde(default)]
    pub service_regions: Vec<String>,
    /// The pricing timeline, oldest first (without a time range the API sends the latest).
    #[serde(default)]
    pub pricing_info: Vec<PricingInfo>,
}

/// A SKU's category.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Category {
    /// `Compute`, `Storage`, `Network`, ...
    #[serde(default)]
    pub resource_family: String,
    /// `CPU`, `RAM`, `GPU`, `N1Standard`, `SSD`, `PDStandard`, ...
    #[serde(default)]
    pub resource_group: String,
    /// `OnDemand`, `Preemptible` (spot), `Commit1Yr`, ...
    #[serde(default)]
    pub usage_type: String,
}

/// The price of a SKU from a point in time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct PricingInfo {
    /// When this pricing took effect (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_time: Option<String>,
    /// The pricing formula.
    #[serde(default)]
    pub pricing_expression: PricingExpression,
}

/// How usage is priced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct PricingExpression {
    /// The unit prices are per: `h` (hour), `GiBy.h` (GiB-hour), `GiBy.mo` (GiB-month).
    #[serde(default)]
    pub usage_unit: String,
    /// Rates by usage tier, sorted by `startUsageAmount`.
    #[serde(default)]
    pub tiered_rates: Vec<TierRate>,
}

/// One tier of a price.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct TierRate {
    /// Usage from which this rate applies, in `usageUnit`s.
    #[serde(default)]
    pub start_usage_amount: f64,
    /// The price of one `usageUnit` in this tier.
    #[serde(default)]
    pub unit_price: Money,
}

/// An amount of money as Google's `Money`: whole units (a decimal string, int64) plus
/// nano-units with the same sign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Money {
    /// ISO 4217 code, `USD`.
    #[serde(default)]
    pub currency_code: String,
    /// Whole units, as a string (the API's int64 encoding); absent means 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub units: Option<String>,
    /// Billionths of a unit; absent means 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nanos: Option<i32>,
}

impl Money {
    /// The amount in nano-units (10⁻⁹ of the currency), or `None` when `units` is not an
    /// integer or the sum overflows.
    ///
    /// ```
    /// use kgenv_core::backends::billing::Money;
    /// let m = Money { currency_code: "USD".into(), units: Some("1".into()), nanos: Some(250_000_000) };
    /// assert_eq!(m.nanos_total(), Some(1_250_000_000));
    /// ```
    pub fn nanos_total(&self) -> Option<i128> {
        let units: i128 = match self.units.as_deref().map(str::trim) {
            None | Some("") => 0,
            Some(u) => u.parse::<i64>().ok()?.into(),
        };
        units
            .checked_mul(1_000_000_000)?
            .checked_add(self.nanos.unwrap_or(0).into())
    }
}

/// The public Billing Catalog's service root.
pub const DEFAULT_ENDPOINT: &str = "https://cloudbilling.googleapis.com/";
/// gcloud's override of the service root, used by tests and emulators.
pub const ENDPOINT_ENV: &str = "CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDBILLING";

/// The catalog the real client would ask: the override when set, else Google's.
pub fn configured_endpoint() -> String {
    std::env::var(ENDPOINT_ENV)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| DEFAULT_ENDPOINT.into())
}

/// Compute Engine's public SKUs.
#[async_trait]
pub trait Billing: Send + Sync {
    /// Which catalog this is, for the price cache on disk: SKUs from one catalog are never
    /// read back for another (an emulator, a test fake). `None`: do not cache (a mock,
    /// whose made-up prices must not reach the user's cache).
    fn cache_key(&self) -> Option<String>;

    /// Every public SKU of Compute Engine with its current list price in US dollars
    /// (`services/6F81-5844-456A/skus?currencyCode=USD`, all pages).
    async fn compute_skus(&self) -> BackendResult<Vec<Sku>>;
}

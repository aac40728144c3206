//! What an environment costs: hourly prices of its VM, GPUs and disks from Compute
//! Engine's SKUs (the Cloud Billing Catalog API, through [`crate::backends::Billing`]),
//! cached on disk with their date.
//!
//! - [`machine`]: what a machine type is made of (vCPUs, memory, bundled GPUs), and the
//!   Billing Catalog's names of GPUs and disk types — one table;
//! - [`price`]: the SKU matching and the sums, pure and exact ([`Usd`]);
//! - [`cache`]: the SKUs on disk, reused for a week, kept when the catalog is unreachable.
//!
//! The reports ([`Prices`], [`RunningCost`]) are what `plan` and `status` carry: each
//! amount is an [`Estimate`] — a price with its parts, or unknown with the reason, never
//! a guessed number.
//!
//! ```
//! use kgenv_core::backends::billing::{Category, Money, PricingExpression, PricingInfo, Sku, TierRate};
//! use kgenv_core::pricing::{hourly, Catalog, Usd};
//! let sku = |id: &str, desc: &str, group: &str, unit: &str, nanos: i32| Sku {
//!     sku_id: id.into(),
//!     description: desc.into(),
//!     category: Category { resource_family: "Compute".into(), resource_group: group.into(), usage_type: "OnDemand".into() },
//!     service_regions: vec!["us-central1".into()],
//!     pricing_info: vec![PricingInfo { effective_time: None, pricing_expression: PricingExpression {
//!         usage_unit: unit.into(),
//!         tiered_rates: vec![TierRate { start_usage_amount: 0.0, unit_price: Money { currency_code: "USD".into(), units: Some("0".into()), nanos: Some(nanos) } }],
//!     } }],
//! };
//! let catalog = Catalog { fetched_at: "2026-12-04T10:00:00Z".into(), skus: vec![
//!     sku("A", "N1 Predefined Instance Core running in Americas", "N1Standard", "h", 31_611_000),
//!     sku("B", "N1 Predefined Instance Ram running in Americas", "N1Standard", "GiBy.h", 4_237_000),
//!     sku("C", "Nvidia Tesla T4 GPU running in Americas", "GPU", "h", 350_000_000),
//! ] };
//! let p = hourly(&catalog, "n1-standard-8", Some(("nvidia-tesla-t4", 1)), "us-central1", false).expect("priced");
//! // 8 × 0.031611 + 30 × 0.004237 + 0.35 = 0.252888 + 0.12711 + 0.35
//! assert_eq!(p.total, Usd::parse("0.729998").expect("usd"));
//! assert!(hourly(&catalog, "n1-standard-8", None, "europe-west4", false).is_none());
//! ```

pub mod cache;
pub mod machine;
pub mod price;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use price::{disk_monthly, hourly, vm_hourly, Part, Price, Usd, HOURS_PER_MONTH};

use crate::backends::billing::Sku;

/// Compute Engine's SKUs as fetched at one time: what the cache file holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Catalog {
    /// When they were fetched (RFC 3339, UTC).
    pub fetched_at: String,
    /// The SKUs.
    pub skus: Vec<Sku>,
}

impl Catalog {
    /// When the SKUs were fetched.
    pub fn fetched(&self) -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(&self.fetched_at)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The day they were fetched, `2026-12-04`, as prices are shown ("prices of …").
    pub fn date(&self) -> String {
        self.fetched().map_or_else(
            || self.fetched_at.clone(),
            |t| t.format("%Y-%m-%d").to_string(),
        )
    }
}

/// A price, or why it is not known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Estimate {
    /// The price and its parts.
    Known(Price),
    /// Why there is no price (no catalog, no SKU for a part).
    Unknown(String),
}

impl Estimate {
    /// From a computation's result.
    pub fn from_result(r: Result<Price, String>) -> Self {
        match r {
            Ok(p) => Self::Known(p),
            Err(e) => Self::Unknown(e),
        }
    }

    /// The total, when known.
    pub fn total(&self) -> Option<Usd> {
        match self {
            Self::Known(p) => Some(p.total),
            Self::Unknown(_) => None,
        }
    }

    /// `$0.7300` (rounded to `decimals`), or `unknown`.
    pub fn display(&self, decimals: u32) -> String {
        self.total()
            .map_or_else(|| "unknown".into(), |t| t.display(decimals))
    }

    /// The sum of estimates: unknown when any is (with the first reason).
    pub fn sum<'a>(items: impl IntoIterator<Item = &'a Estimate>) -> Self {
        let mut prices = Vec::new();
        for e in items {
            match e {
                Self::Known(p) => prices.push(p.clone()),
                Self::Unknown(r) => return Self::Unknown(r.clone()),
            }
        }
        Self::Known(Price::sum(prices))
    }
}

/// Where the prices came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// The day the prices were fetched (`2026-12-04`), when there are prices.
    pub date: Option<String>,
    /// Whether they came from the cache file rather than the API in this run.
    pub cached: bool,
    /// Why prices are unknown, or older than a week.
    pub note: Option<String>,
}

impl Source {
    /// `prices of 2026-12-04`, or the reason there are none.
    pub fn describe(&self) -> String {
        match (&self.note, &self.date) {
            (Some(n), _) => n.clone(),
            (None, Some(d)) => format!("prices of {d}"),
            (None, None) => "prices unknown".into(),
        }
    }
}

/// The price of one persistent disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskPrice {
    /// `boot` or `data`.
    pub role: String,
    /// `pd-balanced`, `pd-ssd`, `pd-standard`.
    pub disk_type: String,
    /// Size in GiB.
    pub size_gb: u64,
    /// Per month (a disk is billed whether the VM runs or not).
    pub per_month: Estimate,
    /// Per hour (the monthly price over 730 hours).
    pub per_hour: Estimate,
}

/// The hourly price of a VM (machine type and GPUs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmPrice {
    /// Machine type.
    pub machine_type: String,
    /// GPU type and count attached to it.
    pub gpu: Option<(String, u8)>,
    /// The region priced.
    pub region: String,
    /// On demand, per hour.
    pub on_demand: Estimate,
    /// As a spot VM, per hour.
    pub spot: Estimate,
}

/// What an environment costs: `plan` shows it for what it would create, `status` for
/// what exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prices {
    /// Where the prices came from ("prices of 2026-12-04").
    pub source: Source,
    /// The VM, when the environment has one (the `gce` target).
    pub vm: Option<VmPrice>,
    /// Its disks: the boot disk, and the data disk `down` keeps.
    pub disks: Vec<DiskPrice>,
    /// Whether the environment asks for a spot VM.
    pub spot: bool,
    /// Whether it asks for a flex-start VM, billed at prices kgenv does not read: then
    /// neither total is the one it pays ([`FLEX_START_UNPRICED`]).
    #[serde(default)]
    pub flex_start: bool,
    /// VM and disks per hour, on demand.
    pub total_on_demand: Estimate,
    /// VM and disks per hour, spot.
    pub total_spot: Estimate,
}

impl Prices {
    /// VM and disks per hour as the environment is provisioned (spot or on demand).
    pub fn total(&self) -> &Estimate {
        if self.spot {
            &self.total_spot
        } else {
            &self.total_on_demand
        }
    }
}

/// Why a flex-start VM has no price here.
pub const FLEX_START_UNPRICED: &str = "flex-start VMs are billed at Dynamic Workload Scheduler prices, which kgenv does not read yet; the on-demand and spot prices are shown for comparison";

/// A disk to price.
#[derive(Debug, Clone)]
pub struct DiskSpec<'a> {
    /// `boot` or `data`.
    pub role: &'a str,
    /// Disk type.
    pub disk_type: &'a str,
    /// Size in GiB.
    pub size_gb: u64,
}

/// A VM and its disks to price.
#[derive(Debug, Clone)]
pub struct VmSpec<'a> {
    /// Machine type.
    pub machine_type: &'a str,
    /// GPU type and count attached.
    pub gpu: Option<(&'a str, u8)>,
    /// Region.
    pub region: &'a str,
    /// Spot provisioning.
    pub spot: bool,
    /// Its disks.
    pub disks: Vec<DiskSpec<'a>>,
}

impl From<&cache::Loaded> for Source {
    fn from(l: &cache::Loaded) -> Self {
        Self {
            date: l.catalog.as_ref().map(Catalog::date),
            cached: l.from_cache,
            note: l.note.clone(),
        }
    }
}

/// The prices of `vm` (or of no VM: an environment on another target) from what
/// [`cache::load`] found.
pub fn prices_for(loaded: &cache::Loaded, vm: Option<&VmSpec<'_>>) -> Prices {
    let source = Source::from(loaded);
    let unknown = || {
        Estimate::Unknown(
            loaded
                .note
                .clone()
                .unwrap_or_else(|| "prices unknown".into()),
        )
    };
    let Some(vm) = vm else {
        let none = Estimate::Known(Price::sum([]));
        return Prices {
            source,
            vm: None,
            disks: Vec::new(),
            spot: false,
            flex_start: false,
            total_on_demand: none.clone(),
            total_spot: none,
        };
    };
    let estimate = |f: &dyn Fn(&[Sku]) -> Result<Price, String>| match &loaded.catalog {
        Some(c) => Estimate::from_result(f(&c.skus)),
        None => unknown(),
    };
    let vm_at =
        |spot: bool| estimate(&|skus| vm_hourly(skus, vm.machine_type, vm.gpu, vm.region, spot));
    let vm_price = VmPrice {
        machine_type: vm.machine_type.to_string(),
        gpu: vm.gpu.map(|(t, n)| (t.to_string(), n)),
        region: vm.region.to_string(),
        on_demand: vm_at(false),
        spot: vm_at(true),
    };
    let disks: Vec<DiskPrice> = vm
        .disks
        .iter()
        .map(|d| {
            let per_month = estimate(&|skus| disk_monthly(skus, d.disk_type, d.size_gb, vm.region));
            let per_hour = match &per_month {
                Estimate::Known(p) => Estimate::Known(p.monthly_to_hourly()),
                Estimate::Unknown(r) => Estimate::Unknown(r.clone()),
            };
            DiskPrice {
                role: d.role.to_string(),
                disk_type: d.disk_type.to_string(),
                size_gb: d.size_gb,
                per_month,
                per_hour,
            }
        })
        .collect();
    let total =
        |vm: &Estimate| Estimate::sum(std::iter::once(vm).chain(disks.iter().map(|d| &d.per_hour)));
    Prices {
        source,
        total_on_demand: total(&vm_price.on_demand),
        total_spot: total(&vm_price.spot),
        vm: Some(vm_price),
        disks,
        spot: vm.spot,
        flex_start: false,
    }
}

/// What a running VM has cost since it last started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningCost {
    /// When it last started (GCE's `lastStartTimestamp`).
    pub since: String,
    /// Seconds it has run since.
    pub seconds: u64,
    /// Its price per hour (spot or on demand, as provisioned).
    pub per_hour: Estimate,
    /// `per_hour` × the hours it has run.
    pub so_far: Estimate,
}

/// The cost of a VM priced `per_hour` that started at `since` (RFC 3339), at `now`; `None`
/// when `since` is not a time.
pub fn running_cost(per_hour: Estimate, since: &str, now: DateTime<Utc>) -> Option<RunningCost> {
    let started = DateTime::parse_from_rfc3339(since)
        .ok()?
        .with_timezone(&Utc);
    // A start in the future (clock skew) has cost nothing yet.
    let seconds = now
        .signed_duration_since(started)
        .to_std()
        .map_or(0, |d| d.as_secs());
    let so_far = match &per_hour {
        Estimate::Known(p) => Estimate::Known(Price {
            total: p.total.over_seconds(seconds),
            parts: p
                .parts
                .iter()
                .map(|part| Part {
                    amount: part.amount.over_seconds(seconds),
                    ..part.clone()
                })
                .collect(),
        }),
        Estimate::Unknown(r) => Estimate::Unknown(r.clone()),
    };
    Some(RunningCost {
        since: since.to_string(),
        seconds,
        per_hour,
        so_far,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_so_far_is_the_hourly_price_times_the_hours_run() {
        let per_hour = Estimate::Known(Price::sum([Price {
            total: Usd::parse("0.73").expect("usd"),
            parts: vec![Part {
                what: "vm".into(),
                sku_id: "X".into(),
                sku: "x".into(),
                unit_price: Usd::parse("0.73").expect("usd"),
                amount: Usd::parse("0.73").expect("usd"),
            }],
        }]));
        let now = DateTime::parse_from_rfc3339("2026-12-04T12:30:00Z")
            .expect("time")
            .with_timezone(&Utc);
        // Started 10:00 Pacific (-08:00) = 18:00 UTC the day before: 18.5 hours.
        let c = running_cost(per_hour, "2026-12-03T10:00:00.000-08:00", now).expect("cost");
        assert_eq!(c.seconds, 18 * 3600 + 1800);
        // 18.5 h × $0.73 = $13.505
        assert_eq!(c.so_far.total(), Usd::parse("13.505"));
        assert!(running_cost(Estimate::Unknown("x".into()), "not a time", now).is_none());
    }
}

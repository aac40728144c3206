//! Hourly and monthly prices from Compute Engine's SKUs. Pure: no I/O, no clock.
//!
//! A price is the sum of its parts — vCPUs and memory of the machine type, its GPUs,
//! each disk's capacity — and each part is one SKU matched by its resource family, its
//! usage type (`OnDemand`, or `Preemptible` for spot), its description (`N1 Predefined
//! Instance Core running in Americas` → `N1 Predefined Instance Core`), its unit and the
//! region in its `serviceRegions`. A part with no SKU, or with several that disagree,
//! makes the whole price unknown, with the reason: kgenv never shows a guessed number.
//!
//! Money is an integer of pico-dollars ([`Usd`]): the catalog's prices are exact in
//! nano-dollars (`units` + `nanos`) and quantities have at most three decimals (an
//! n1-highcpu vCPU has 0.9 GiB), so every product and sum is exact, where floating point
//! would show `$0.35000000000000003`. Only a disk's hourly share of its monthly price
//! (÷ 730 h, Google's hours in a month) is rounded, to the nearest pico-dollar.

use serde::{Deserialize, Serialize};

use super::machine::{self, Shape};
use crate::backends::billing::Sku;

/// Hours in a month as Google's pricing counts them (a GiB-month over 730 hours).
pub const HOURS_PER_MONTH: i128 = 730;

/// An amount of US dollars, exact to 10⁻¹² $.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Usd(i128);

const PICO_PER_USD: i128 = 1_000_000_000_000;

impl Usd {
    /// Zero dollars.
    pub const ZERO: Usd = Usd(0);

    /// From pico-dollars.
    pub const fn from_pico(pico: i128) -> Self {
        Self(pico)
    }

    /// From nano-dollars (the catalog's precision).
    pub const fn from_nanos(nanos: i128) -> Self {
        Self(nanos * 1000)
    }

    /// The amount in pico-dollars.
    pub const fn pico(self) -> i128 {
        self.0
    }

    /// Parses `0.35`, `12`, `0.031611` (a decimal number of dollars, at most 12 decimals).
    ///
    /// ```
    /// use kgenv_core::pricing::Usd;
    /// assert_eq!(Usd::parse("0.031611"), Some(Usd::from_nanos(31_611_000)));
    /// assert_eq!(Usd::parse("x"), None);
    /// ```
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        let (neg, s) = s.strip_prefix('-').map_or((false, s), |r| (true, r));
        let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
        if whole.is_empty() && frac.is_empty()
            || frac.len() > 12
            || !whole
                .chars()
                .chain(frac.chars())
                .all(|c| c.is_ascii_digit())
        {
            return None;
        }
        let whole: i128 = if whole.is_empty() {
            0
        } else {
            whole.parse().ok()?
        };
        let frac_pico: i128 = if frac.is_empty() {
            0
        } else {
            format!("{frac:0<12}").parse().ok()?
        };
        let v = whole.checked_mul(PICO_PER_USD)?.checked_add(frac_pico)?;
        Some(Self(if neg { -v } else { v }))
    }

    /// This amount per hour over `seconds`, rounded to the pico-dollar.
    pub fn over_seconds(self, seconds: u64) -> Self {
        Self(div_round(self.0 * i128::from(seconds), 3600))
    }

    /// Dollars rounded to `decimals` places, for people: `$0.6027`.
    pub fn display(self, decimals: u32) -> String {
        let scale = 10i128.pow(12 - decimals.min(12));
        let v = div_round(self.0, scale);
        let sign = if v < 0 { "-" } else { "" };
        let v = v.abs();
        let unit = 10i128.pow(decimals.min(12));
        if decimals == 0 {
            format!("{sign}${v}")
        } else {
            format!(
                "{sign}${}.{:0width$}",
                v / unit,
                v % unit,
                width = decimals as usize
            )
        }
    }
}

/// The exact decimal, trailing zeros trimmed: `0.60266`.
impl std::fmt::Display for Usd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let v = self.0.abs();
        let frac = format!("{:012}", v % PICO_PER_USD);
        let frac = frac.trim_end_matches('0');
        if frac.is_empty() {
            write!(f, "{sign}{}", v / PICO_PER_USD)
        } else {
            write!(f, "{sign}{}.{frac}", v / PICO_PER_USD)
        }
    }
}

/// As an exact decimal string (`"0.60266"`): JSON numbers are floats to most readers.
impl Serialize for Usd {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Usd {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Usd::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("`{s}` is not dollars")))
    }
}

impl std::ops::Add for Usd {
    type Output = Usd;
    fn add(self, o: Usd) -> Usd {
        Usd(self.0 + o.0)
    }
}

impl std::iter::Sum for Usd {
    fn sum<I: Iterator<Item = Usd>>(iter: I) -> Usd {
        iter.fold(Usd::ZERO, |a, b| a + b)
    }
}

/// `n / d` rounded half away from zero (d > 0).
fn div_round(n: i128, d: i128) -> i128 {
    if n >= 0 {
        (n + d / 2) / d
    } else {
        -((-n + d / 2) / d)
    }
}

/// One billed part of a price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    /// What it is: `8 vCPU`, `30 GiB memory`, `1 × nvidia-tesla-t4`, `100 GiB pd-balanced`.
    pub what: String,
    /// The SKU that bills it.
    pub sku_id: String,
    /// The SKU's description.
    pub sku: String,
    /// The SKU's price of one unit (per hour, or per GiB-month for disks).
    pub unit_price: Usd,
    /// What this part costs (per hour, or per month for [`disk_monthly`]).
    pub amount: Usd,
}

/// A price: its total and the parts it adds up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Price {
    /// The sum of the parts.
    pub total: Usd,
    /// The parts.
    pub parts: Vec<Part>,
}

impl Price {
    fn of(parts: Vec<Part>) -> Self {
        Self {
            total: parts.iter().map(|p| p.amount).sum(),
            parts,
        }
    }

    /// The sum of several prices (their parts together).
    pub fn sum(prices: impl IntoIterator<Item = Price>) -> Self {
        Self::of(prices.into_iter().flat_map(|p| p.parts).collect())
    }

    /// This monthly price per hour (÷ [`HOURS_PER_MONTH`], rounded to the pico-dollar).
    pub fn monthly_to_hourly(&self) -> Self {
        let per_hour = |u: Usd| Usd(div_round(u.0, HOURS_PER_MONTH));
        Self::of(
            self.parts
                .iter()
                .map(|p| Part {
                    amount: per_hour(p.amount),
                    ..p.clone()
                })
                .collect(),
        )
    }
}

/// What a part is billed as.
struct Want<'a> {
    /// `Compute` or `Storage`.
    family: &'a str,
    /// The description before `running in`/`in <place>`.
    name: &'a str,
    /// `h`, `GiBy.h` or `GiBy.mo`.
    unit: &'a str,
    /// A spot (`Preemptible`) SKU rather than `OnDemand`.
    spot: bool,
}

/// The SKU name of a description: without the spot wording (`Spot Preemptible …`, `…
/// attached to Spot Preemptible VMs …`) and without the place (`… running in Americas`,
/// `… in Frankfurt`).
fn base_name(description: &str) -> String {
    let d = description.trim();
    let d = d.strip_prefix("Spot Preemptible ").unwrap_or(d);
    let d = d
        .replace(" attached to Spot Preemptible VMs", "")
        .replace(" attached to Preemptible VMs", "");
    let cut = d
        .find(" running in ")
        .or_else(|| d.find(" in "))
        .unwrap_or(d.len());
    d[..cut].trim().to_string()
}

/// The price of one unit of `want` in `region`, from its SKU.
fn unit_price<'a>(
    skus: &'a [Sku],
    want: &Want<'_>,
    region: &str,
) -> Result<(&'a Sku, Usd), String> {
    let usage = if want.spot { "Preemptible" } else { "OnDemand" };
    let label = format!("`{}` ({usage}) in {region}", want.name);
    let found: Vec<&Sku> = skus
        .iter()
        .filter(|s| {
            s.category.resource_family == want.family
                && s.category.usage_type == usage
                && s.service_regions.iter().any(|r| r == region)
                && base_name(&s.description) == want.name
        })
        .collect();
    let mut priced: Vec<(&Sku, Usd)> = Vec::new();
    for sku in &found {
        priced.push((sku, first_tier_price(sku, want.unit)?));
    }
    match priced.as_slice() {
        [] => Err(format!("no SKU for {label} in the price catalog")),
        [(sku, p), rest @ ..] if rest.iter().all(|(_, q)| q == p) => Ok((sku, *p)),
        _ => Err(format!(
            "several SKUs with different prices match {label}: {}",
            priced
                .iter()
                .map(|(s, _)| s.sku_id.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// The rate of the tier that starts at 0, in the latest pricing.
///
/// Tiers are volume steps over a billing account's whole monthly usage of the SKU, which
/// kgenv cannot see; the first tier is what a new resource is charged from, and the
/// compute and disk SKUs kgenv prices have only that one in practice. A first tier that
/// does not start at 0 is not guessed around: the price is unknown.
fn first_tier_price(sku: &Sku, unit: &str) -> Result<Usd, String> {
    let who = format!("SKU {} ({})", sku.sku_id, sku.description);
    let info = sku
        .pricing_info
        .last()
        .ok_or_else(|| format!("{who} has no pricing"))?;
    let expr = &info.pricing_expression;
    if expr.usage_unit != unit {
        return Err(format!(
            "{who} is priced per `{}`, not per `{unit}`",
            expr.usage_unit
        ));
    }
    let tier = expr
        .tiered_rates
        .iter()
        .find(|t| t.start_usage_amount == 0.0)
        .ok_or_else(|| format!("{who} has no rate from a usage of 0"))?;
    if tier.unit_price.currency_code != "USD" {
        return Err(format!(
            "{who} is priced in `{}`, not USD",
            tier.unit_price.currency_code
        ));
    }
    tier.unit_price
        .nanos_total()
        .map(Usd::from_nanos)
        .ok_or_else(|| format!("{who} has an unreadable price"))
}

/// A part: `quantity_milli` thousandths of units of `want`.
fn part(
    skus: &[Sku],
    want: &Want<'_>,
    region: &str,
    quantity_milli: u64,
    what: String,
) -> Result<Part, String> {
    let (sku, unit) = unit_price(skus, want, region)?;
    // nano-dollars × thousandths = pico-dollars… after the ×1000 of from_nanos, ÷1000 here.
    let amount = Usd(unit.pico() * i128::from(quantity_milli) / 1000);
    Ok(Part {
        what,
        sku_id: sku.sku_id.clone(),
        sku: sku.description.clone(),
        unit_price: unit,
        amount,
    })
}

/// `30000` thousandths → `30`, `1800` → `1.8`.
fn milli_text(v: u64) -> String {
    let s = format!("{}.{:03}", v / 1000, v % 1000);
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The hourly price of a VM (machine type and GPUs, no disks) in `region`, on demand or
/// spot, or why it cannot be known.
pub fn vm_hourly(
    skus: &[Sku],
    machine_type: &str,
    gpu: Option<(&str, u8)>,
    region: &str,
    spot: bool,
) -> Result<Price, String> {
    let shape: Shape = machine::shape(machine_type)?;
    let (core, ram) = shape.series.sku_names();
    let mut parts = vec![
        part(
            skus,
            &Want {
                family: "Compute",
                name: core,
                unit: "h",
                spot,
            },
            region,
            u64::from(shape.vcpus) * 1000,
            format!("{} vCPU", shape.vcpus),
        )?,
        part(
            skus,
            &Want {
                family: "Compute",
                name: ram,
                unit: "GiBy.h",
                spot,
            },
            region,
            shape.memory_milli_gib,
            format!("{} GiB memory", milli_text(shape.memory_milli_gib)),
        )?,
    ];
    let gpus = match (shape.gpus, gpu) {
        (Some(bundled), None) => Some(bundled),
        (Some(bundled), Some(asked)) if asked == bundled => Some(bundled),
        (Some((t, n)), Some((at, an))) => {
            return Err(format!(
                "{machine_type} comes with {n} × {t}; {an} × {at} cannot be attached to it"
            ))
        }
        (None, g) => g,
    };
    if let Some((accel, n)) = gpus.filter(|(_, n)| *n > 0) {
        let name = machine::gpu_sku_name(accel)
            .ok_or_else(|| format!("kgenv has no price name for GPU type `{accel}`"))?;
        parts.push(part(
            skus,
            &Want {
                family: "Compute",
                name,
                unit: "h",
                spot,
            },
            region,
            u64::from(n) * 1000,
            format!("{n} × {accel}"),
        )?);
    }
    Ok(Price::of(parts))
}

/// The monthly price of a persistent disk of `size_gb` GiB of `disk_type` in `region`.
pub fn disk_monthly(
    skus: &[Sku],
    disk_type: &str,
    size_gb: u64,
    region: &str,
) -> Result<Price, String> {
    let name = machine::disk_sku_name(disk_type)
        .ok_or_else(|| format!("kgenv has no price name for disk type `{disk_type}`"))?;
    Ok(Price::of(vec![part(
        skus,
        &Want {
            family: "Storage",
            name,
            unit: "GiBy.mo",
            spot: false,
        },
        region,
        size_gb * 1000,
        format!("{size_gb} GiB {disk_type}"),
    )?]))
}

/// The hourly price of a VM (machine type and GPUs) from `catalog`'s SKUs, or `None`
/// when any part has no SKU; [`vm_hourly`] says why.
pub fn hourly(
    catalog: &super::Catalog,
    machine_type: &str,
    gpu: Option<(&str, u8)>,
    region: &str,
    spot: bool,
) -> Option<Price> {
    vm_hourly(&catalog.skus, machine_type, gpu, region, spot).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollars_print_exactly_and_round_for_people() {
        let p = Usd::parse("0.602660").expect("usd");
        assert_eq!(p.to_string(), "0.60266");
        assert_eq!(p.display(4), "$0.6027");
        assert_eq!(Usd::parse("12").expect("usd").display(2), "$12.00");
        assert_eq!(Usd::from_nanos(31_611_000).to_string(), "0.031611");
        assert_eq!(
            Usd::parse("1").expect("usd").over_seconds(5400).to_string(),
            "1.5"
        );
        let back: Usd = serde_json::from_str("\"0.35\"").expect("json");
        assert_eq!(serde_json::to_string(&back).expect("json"), "\"0.35\"");
    }

    #[test]
    fn descriptions_reduce_to_their_sku_name() {
        for (d, want) in [
            (
                "N1 Predefined Instance Core running in Americas",
                "N1 Predefined Instance Core",
            ),
            (
                "Spot Preemptible Nvidia Tesla T4 GPU running in Belgium",
                "Nvidia Tesla T4 GPU",
            ),
            (
                "Nvidia Tesla T4 GPU attached to Spot Preemptible VMs running in Americas",
                "Nvidia Tesla T4 GPU",
            ),
            ("Balanced PD Capacity in Frankfurt", "Balanced PD Capacity"),
            ("Storage PD Capacity", "Storage PD Capacity"),
        ] {
            assert_eq!(base_name(d), want, "{d}");
        }
    }
}

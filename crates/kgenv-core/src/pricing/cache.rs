//! Compute Engine's SKUs cached on disk as JSON with the time they were fetched, so `plan`
//! and `status` do not list a few thousand SKUs on every run: a cache younger than
//! [`MAX_AGE`] is used as is; an older one is refreshed, and kept (with its date) when the
//! catalog cannot be reached. With neither, prices are unknown.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Catalog;
use crate::backends::billing::{Billing, Sku};

/// How long fetched prices are reused: list prices change a few times a year, and a week
/// keeps a laptop that is often offline from showing "unknown".
pub const MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);

/// The directory of the cache files under kgenv's cache directory
/// ([`crate::paths::cache_dir`]).
pub fn default_dir() -> PathBuf {
    crate::paths::cache_dir().join("prices")
}

/// The cache file in `dir` of the catalog `key` ([`Billing::cache_key`], its endpoint):
/// one file per catalog, so an emulator's or a test fake's prices never pass for Google's.
pub fn file_for(dir: &Path, key: &str) -> PathBuf {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(key.as_bytes());
    dir.join(format!(
        "compute-skus-usd-{}.json",
        &hex::encode(digest)[..12]
    ))
}

/// Where a catalog came from, and whether it is the fresh one.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The SKUs, when there are any: fresh, cached, or an old cache the catalog could not
    /// refresh.
    pub catalog: Option<Catalog>,
    /// Whether they came from the cache file rather than the API in this run.
    pub from_cache: bool,
    /// Why prices are unknown, or why they are older than [`MAX_AGE`].
    pub note: Option<String>,
}

/// Whether kgenv could price anything with `sku`: Compute Engine has tens of thousands of
/// SKUs, and the commitments, licences, network and other families would only make the
/// cache file large.
pub fn priceable(sku: &Sku) -> bool {
    matches!(sku.category.resource_family.as_str(), "Compute" | "Storage")
        && matches!(sku.category.usage_type.as_str(), "OnDemand" | "Preemptible")
}

/// Reads the cache file; `None` when it is missing or not a catalog (a damaged file is
/// fetched again, not an error).
pub fn read(path: &Path) -> Option<Catalog> {
    let bytes = std::fs::read(path).ok()?;
    match serde_json::from_slice::<Catalog>(&bytes) {
        Ok(c) if c.fetched().is_some() => Some(c),
        _ => {
            tracing::warn!(path = %path.display(), "the price cache is not readable; fetching prices again");
            None
        }
    }
}

/// The catalog for a run at `now`: `billing`'s cache file in `dir` when younger than
/// `max_age`, else the SKUs from `billing` (written to that file), else the old cache with
/// a note, else none with the reason. A backend without a cache key is asked every time
/// and nothing is written.
pub async fn load(
    billing: &dyn Billing,
    dir: &Path,
    now: DateTime<Utc>,
    max_age: Duration,
) -> Loaded {
    let path = billing.cache_key().map(|k| file_for(dir, &k));
    let path = path.as_deref();
    let cached = path.and_then(read);
    if let Some(c) = &cached {
        let fresh = c.fetched().is_some_and(|t| {
            now.signed_duration_since(t)
                .to_std()
                .is_ok_and(|age| age < max_age)
        });
        if fresh {
            return Loaded {
                catalog: cached,
                from_cache: true,
                note: None,
            };
        }
    }
    match billing.compute_skus().await {
        Ok(skus) => {
            let catalog = Catalog {
                fetched_at: now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                skus: skus.into_iter().filter(priceable).collect(),
            };
            if let Some(path) = path {
                match serde_json::to_vec(&catalog) {
                    Ok(bytes) => {
                        if let Err(e) = crate::paths::write_atomic(path, &bytes, 0o644) {
                            tracing::warn!(path = %path.display(), "prices not cached: {e}");
                        }
                    }
                    Err(e) => tracing::warn!("prices not cached: {e}"),
                }
            }
            Loaded {
                catalog: Some(catalog),
                from_cache: false,
                note: None,
            }
        }
        Err(e) => match cached {
            Some(old) => Loaded {
                note: Some(format!(
                    "prices of {} (could not refresh them: {e})",
                    old.date()
                )),
                catalog: Some(old),
                from_cache: true,
            },
            None => Loaded {
                catalog: None,
                from_cache: false,
                note: Some(format!("prices unknown: {e}")),
            },
        },
    }
}

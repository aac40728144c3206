//! The VM's price for the steps that act on it: the instance step tries the cheaper of the
//! zones the user left unordered (`zones = "auto"`, a region) first, and the autostop step
//! turns a `max_cost` budget into running hours on the host.
//!
//! The SKUs are loaded once per run — the runner's `plan` and `status` price from the same
//! load — from the price cache when it is fresh, else from the Cloud Billing Catalog
//! ([`crate::pricing::cache::load`]). A price that cannot be known is `None`, never a
//! guess: the zones are then ordered by name, and a cost budget is refused.

use crate::backends::compute::Provisioning;
use crate::plan::StepCtx;
use crate::pricing::{self, cache, Catalog};

/// The catalog of this run, loaded on first use.
#[derive(Default)]
struct CatalogOnce(tokio::sync::OnceCell<cache::Loaded>);

/// The SKUs for this run, with where they came from (`catalog: None`: no cache and the
/// catalog unreachable, `note` says why).
pub(crate) async fn loaded(ctx: &StepCtx) -> cache::Loaded {
    let once = ctx.shared::<CatalogOnce>();
    once.0
        .get_or_init(|| async {
            let dir = ctx
                .price_cache()
                .map_or_else(cache::default_dir, std::path::Path::to_path_buf);
            let loaded = cache::load(
                ctx.backends.billing.as_ref(),
                &dir,
                chrono::Utc::now(),
                cache::MAX_AGE,
            )
            .await;
            if let Some(note) = &loaded.note {
                ctx.log(format!("prices: {note}"));
            }
            loaded
        })
        .await
        .clone()
}

/// The hourly price in USD of a VM of `machine_type` with `gpu` in `region`, as
/// `provisioning` bills it; `None` when unknown. Flex-start VMs are billed at Dynamic
/// Workload Scheduler prices, which kgenv does not read: unknown too.
pub(crate) fn vm_hourly_usd(
    catalog: &Catalog,
    machine_type: &str,
    gpu: Option<(&str, u8)>,
    region: &str,
    provisioning: Provisioning,
) -> Option<f64> {
    let spot = match provisioning {
        Provisioning::Standard => false,
        Provisioning::Spot => true,
        _ => return None,
    };
    let price = pricing::hourly(catalog, machine_type, gpu, region, spot)?;
    // Ordering and a budget's hours need no more than f64's 15 digits.
    Some(price.total.pico() as f64 / 1e12)
}

//! What the environment costs, for `plan` and `status`: the spec's VM, GPUs and disks
//! priced from Compute Engine's SKUs ([`crate::pricing`]), with the SKUs cached on disk;
//! and for `status`, what the running VM has cost since it last started.

use std::path::PathBuf;

use super::Runner;
use crate::backends::compute::{region_of, InstanceStatus};
use crate::pricing::{self, cache, DiskSpec, Prices, RunningCost, VmSpec};
use crate::spec::Target;
use crate::state::State;
use crate::steps::instance::recorded_instance;

impl Runner {
    /// Keeps the price cache files in `dir` (default: `prices/` under kgenv's cache
    /// directory, [`crate::paths::cache_dir`]).
    #[must_use]
    pub fn price_cache(mut self, dir: impl Into<PathBuf>) -> Self {
        self.price_cache = dir.into();
        self
    }

    /// The SKUs: cached for a week, else fetched, else an older cache, else none.
    async fn catalog(&self) -> cache::Loaded {
        cache::load(
            self.backends.billing.as_ref(),
            &self.price_cache,
            chrono::Utc::now(),
            cache::MAX_AGE,
        )
        .await
    }

    /// What this environment's VM, GPUs and disks cost per hour (on demand and spot), in
    /// the zone of the VM kgenv made, or the first zone of the spec; `None` for an
    /// environment without a GCE instance. Unknown (with the reason) when the Billing
    /// Catalog cannot be reached and nothing is cached.
    pub async fn prices(&self) -> Option<Prices> {
        if !self.priced_target() {
            return None;
        }
        // No state file yet (or an unreadable one) only means nothing is recorded.
        let state = self.state().await.unwrap_or_default();
        let catalog = self.catalog().await;
        self.prices_from(&catalog, &state)
    }

    /// Whether the environment has something kgenv can price (a GCE instance).
    fn priced_target(&self) -> bool {
        matches!(self.env.target, Target::Gce) && self.env.instance.is_some()
    }

    fn prices_from(&self, catalog: &cache::Loaded, state: &State) -> Option<Prices> {
        let inst = self
            .env
            .instance
            .as_ref()
            .filter(|_| self.priced_target())?;
        let zone = recorded_instance(state)
            .map(|at| at.zone)
            .or_else(|| inst.zones.first().cloned())?;
        let mut disks = vec![DiskSpec {
            role: "boot",
            disk_type: &inst.disk_type,
            size_gb: inst.disk_size_gb,
        }];
        if let Some(d) = &inst.data_disk {
            disks.push(DiskSpec {
                role: "data",
                disk_type: &d.disk_type,
                size_gb: d.size_gb,
            });
        }
        let vm = VmSpec {
            machine_type: &inst.machine_type,
            gpu: inst
                .gpu_type
                .as_deref()
                .map(|t| (t, inst.gpu_count))
                .filter(|(_, n)| *n > 0),
            region: region_of(&zone),
            spot: inst.spot,
            disks,
        };
        Some(pricing::prices_for(catalog, Some(&vm)))
    }

    /// The prices `status` shows: the environment's, and what its VM has cost since it
    /// last started when it is running.
    pub(super) async fn status_prices(
        &self,
        state: &State,
    ) -> (Option<Prices>, Option<RunningCost>) {
        if !self.priced_target() {
            return (None, None);
        }
        let catalog = self.catalog().await;
        let prices = self.prices_from(&catalog, state);
        let Some(at) = recorded_instance(state) else {
            return (prices, None);
        };
        // The live check has already reported a failure to look; no cost without a look.
        let Ok(Some(info)) = self.backends.compute.get_instance(&at).await else {
            return (prices, None);
        };
        let (InstanceStatus::Running, Some(since)) = (&info.status, &info.last_start) else {
            return (prices, None);
        };
        let spot = self.env.instance.as_ref().is_some_and(|i| i.spot);
        let per_hour = match &catalog.catalog {
            Some(c) => pricing::Estimate::from_result(pricing::vm_hourly(
                &c.skus,
                &info.machine_type,
                info.gpu.as_ref().map(|(t, n)| (t.as_str(), *n)),
                region_of(&at.zone),
                spot,
            )),
            None => pricing::Estimate::Unknown(
                catalog
                    .note
                    .clone()
                    .unwrap_or_else(|| "prices unknown".into()),
            ),
        };
        let running = pricing::running_cost(per_hour, since, chrono::Utc::now());
        (prices, running)
    }

    /// `plan`'s report with the prices of what it would create.
    pub(super) async fn with_prices(&self, mut report: super::Report) -> super::Report {
        report.prices = self.prices().await.map(Box::new);
        report
    }
}

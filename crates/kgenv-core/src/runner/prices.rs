//! What the environment costs, for `plan` and `status`: the spec's VM, GPUs and disks
//! priced from Compute Engine's SKUs ([`crate::pricing`]), with the SKUs cached on disk;
//! and for `status`, what the running VM has cost since it last started.

use std::path::PathBuf;

use super::Runner;
use crate::backends::compute::{region_of, InstanceStatus, Provisioning};
use crate::plan::StepCtx;
use crate::pricing::{self, cache, DiskSpec, Prices, RunningCost, VmSpec};
use crate::spec::Target;
use crate::state::State;
use crate::steps::instance::{recorded_instance, recorded_vm};
use crate::steps::prices::loaded;

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

    /// What this environment's VM, GPUs and disks cost per hour (on demand and spot): the
    /// VM kgenv made (its zone, machine type and GPUs as recorded), else the first GPU
    /// choice in the region of the first `zones` entry; `None` for an environment without a
    /// GCE instance. Unknown (with the reason) when the Billing Catalog cannot be reached
    /// and nothing is cached, or with `zones = "auto"` before a zone is chosen.
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
        // The VM kgenv made (the GPU choice it got), else the first choice.
        let recorded = recorded_vm(state, inst);
        let region = match (&recorded, inst.zones.first_region()) {
            (Some(vm), _) => region_of(&vm.zone).to_string(),
            (None, Some(r)) => r.to_string(),
            // `zones = "auto"`: the zone, and so the price, is known once `up` chose it.
            (None, None) => String::new(),
        };
        let machine_type = recorded
            .as_ref()
            .map_or(inst.machine_type.as_str(), |vm| vm.machine_type.as_str());
        let gpu = match &recorded {
            Some(vm) => vm.gpu.as_ref().map(|(t, n)| (t.as_str(), *n)),
            None => inst.gpu_type.as_deref().map(|t| (t, inst.gpu_count)),
        };
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
            machine_type,
            gpu: gpu.filter(|(_, n)| *n > 0),
            region: &region,
            spot: inst.provisioning == Provisioning::Spot,
            disks,
        };
        let auto = cache::Loaded {
            catalog: None,
            from_cache: false,
            note: Some("zones = \"auto\": the zone, and so the price, is known once `up` has chosen it (the cheaper zones are tried first)".into()),
        };
        let catalog = if region.is_empty() { &auto } else { catalog };
        let mut prices = pricing::prices_for(catalog, Some(&vm));
        prices.flex_start = matches!(inst.provisioning, Provisioning::FlexStart { .. });
        Some(prices)
    }

    /// The prices `status` shows: the environment's, and what its VM has cost since it
    /// last started when it is running.
    pub(super) async fn status_prices(
        &self,
        ctx: &StepCtx,
        state: &State,
    ) -> (Option<Prices>, Option<RunningCost>) {
        if !self.priced_target() {
            return (None, None);
        }
        let catalog = loaded(ctx).await;
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
        let provisioning = self
            .env
            .instance
            .as_ref()
            .map_or(Provisioning::Standard, |i| i.provisioning);
        let spot = provisioning == Provisioning::Spot;
        let per_hour = match &catalog.catalog {
            Some(_) if matches!(provisioning, Provisioning::FlexStart { .. }) => {
                pricing::Estimate::Unknown(pricing::FLEX_START_UNPRICED.into())
            }
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

    /// The environment's bucket, when kgenv has mounted (or made) it, with what it holds:
    /// `down` keeps it, and it stays billed by its size. A bucket that is gone is not shown;
    /// one that cannot be listed is shown with the reason.
    pub(super) async fn kept_buckets(&self, state: &State) -> Vec<super::KeptBucket> {
        let Some(b) = &self.env.bucket else {
            return Vec::new();
        };
        if state
            .step("bucket")
            .is_none_or(|r| *r == Default::default())
        {
            return Vec::new();
        }
        let (usage, note) = match self.backends.storage.bucket_usage(&b.bucket).await {
            Ok(u) => (Some(u), None),
            Err(e) if e.is_not_found() => return Vec::new(),
            Err(e) => (None, Some(e.to_string())),
        };
        vec![super::KeptBucket {
            name: b.bucket.clone(),
            usage,
            note,
        }]
    }

    /// `plan`'s report with the prices of what it would create.
    /// The catalog is the run's (the instance step may have loaded it to order zones).
    pub(super) async fn with_prices(
        &self,
        ctx: &StepCtx,
        mut report: super::Report,
    ) -> super::Report {
        if self.priced_target() {
            let state = ctx.state.snapshot().await;
            report.prices = self.prices_from(&loaded(ctx).await, &state).map(Box::new);
        }
        report
    }
}

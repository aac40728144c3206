//! The mock Billing Catalog: serves the SKUs a test put in
//! [`WorldState::billing_skus`](super::WorldState::billing_skus), or answers unavailable
//! (as without credentials) when there are none, so simulated runs show unknown prices.
//! Its prices are never cached on disk, where they could pass for real ones.

use async_trait::async_trait;

use super::MockWorld;
use crate::backends::billing::{Billing, Sku};
use crate::backends::BackendResult;
use crate::error::BackendError;

pub(super) struct MockBilling(pub(super) MockWorld);

#[async_trait]
impl Billing for MockBilling {
    fn cache_key(&self) -> Option<String> {
        None
    }

    async fn compute_skus(&self) -> BackendResult<Vec<Sku>> {
        self.0
            .call("billing.compute_skus", "compute", false, |s| {
                s.billing_skus
                    .clone()
                    .ok_or_else(|| BackendError::Unavailable {
                        backend: "billing",
                        hint: "the mock world has no price catalog (set `billing_skus`)".into(),
                    })
            })
            .await
    }
}

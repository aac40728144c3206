//! The Cloud Billing Catalog API: the real [`crate::backends::Billing`], which lists
//! Compute Engine's public SKUs with their list prices for `plan` and `status`.
//!
//! - [`api`]: the `services.skus.list` request (no I/O), the page decoder and the mapping
//!   of Google's error answers to typed [`crate::BackendError`]s;
//! - [`client`]: [`BillingClient`], the trait implementation: the service root
//!   (`CLOUDSDK_API_ENDPOINT_OVERRIDES_CLOUDBILLING`, gcloud's name), the same credentials
//!   as Compute (`GOOGLE_OAUTH_ACCESS_TOKEN`, else Application Default Credentials, looked
//!   for on first use), retries, and `nextPageToken` followed to the last page.
//!
//! ```no_run
//! # async fn demo() -> Result<(), kgenv_core::BackendError> {
//! use kgenv_core::backends::Billing;
//! let billing = kgenv_core::billing::BillingClient::from_env()?;
//! let skus = billing.compute_skus().await?;
//! println!("{} Compute Engine SKUs", skus.len());
//! # Ok(()) }
//! ```

pub mod api;
pub mod client;

pub use client::{BillingClient, BASE_URL_ENV, DEFAULT_BASE_URL, RETRY};

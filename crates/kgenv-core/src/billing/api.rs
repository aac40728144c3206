//! `services.skus.list` of the Cloud Billing Catalog API as kgenv uses it: the request
//! (`GET v1/services/6F81-5844-456A/skus?currencyCode=USD&pageToken=…`), the decoded page,
//! and Google's error answers as typed errors. No I/O here: [`super::BillingClient`]
//! sends on the shared transport.

use reqwest::{Method, Url};
use serde::Deserialize;

use crate::backends::billing::{Sku, COMPUTE_SERVICE_ID};
use crate::error::BackendError;
use crate::http::{Request, Response};

/// The service name in errors.
pub const SERVICE: &str = "billing";

/// The currency kgenv asks prices in: list prices are set in US dollars, so they come
/// without a conversion rate.
pub const CURRENCY: &str = "USD";

/// One page of `services.skus.list` (`ListSkusResponse`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SkuPage {
    /// The SKUs of this page.
    #[serde(default)]
    pub skus: Vec<Sku>,
    /// The token of the next page; absent or empty on the last one.
    #[serde(default)]
    pub next_page_token: Option<String>,
}

/// `GET {base}v1/services/6F81-5844-456A/skus?currencyCode=USD`, with `pageToken` for the
/// pages after the first and `pageSize` when given (the API's default is 5000). `base` is
/// the service root with its trailing slash.
pub fn list_skus(
    base: &str,
    page_token: Option<&str>,
    page_size: Option<u32>,
) -> Result<Request, BackendError> {
    let root = Url::parse(base).map_err(|e| BackendError::InvalidArgument {
        resource: format!("billing endpoint `{base}`"),
        message: format!("is not a URL: {e}"),
    })?;
    let mut url = root
        .join(&format!("v1/services/{COMPUTE_SERVICE_ID}/skus"))
        .map_err(|e| BackendError::other(format!("billing endpoint `{base}`: {e}")))?;
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("currencyCode", CURRENCY);
        if let Some(n) = page_size {
            q.append_pair("pageSize", &n.to_string());
        }
        if let Some(t) = page_token.filter(|t| !t.is_empty()) {
            q.append_pair("pageToken", t);
        }
    }
    let what = format!("GET services/{COMPUTE_SERVICE_ID}/skus");
    Ok(Request::new(Method::GET, url, what))
}

/// Decodes one page (200), or the typed error of any other answer.
pub fn decode_page(r: Response) -> Result<SkuPage, BackendError> {
    if !r.status.is_success() {
        return Err(status_error(&r));
    }
    r.json("Compute Engine's SKUs", "the Cloud Billing Catalog API")
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorInner,
}

#[derive(Deserialize)]
struct ErrorInner {
    #[serde(default)]
    message: String,
}

/// The typed error of a non-success answer, with Google's message kept.
pub fn status_error(r: &Response) -> BackendError {
    let what = "Compute Engine's prices (Cloud Billing Catalog API)";
    let message = serde_json::from_slice::<ErrorBody>(&r.body)
        .map(|b| b.error.message)
        .unwrap_or_else(|_| r.snippet(200));
    match r.status.as_u16() {
        401 => BackendError::Unauthenticated {
            service: SERVICE,
            message: format!("{what}: {message} ({})", crate::google_auth::HOW_TO_AUTH),
        },
        403 => BackendError::PermissionDenied {
            resource: what.into(),
            message: format!("{message} (enable the Cloud Billing API on the credentials' project: https://console.cloud.google.com/apis/library/cloudbilling.googleapis.com)"),
        },
        404 => BackendError::NotFound {
            resource: format!("{what}: {message}"),
        },
        429 => BackendError::RateLimited {
            service: SERVICE,
            retry_after: r.retry_after(),
        },
        400 => BackendError::InvalidArgument {
            resource: what.into(),
            message,
        },
        s if s == 408 || s >= 500 => {
            BackendError::transient(SERVICE, format!("{what}: HTTP {s}: {message}"))
        }
        s => BackendError::other(format!("{what}: HTTP {s}: {message}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_names_compute_and_usd_and_carries_the_page_token() {
        let r = list_skus("https://cloudbilling.googleapis.com/", None, None).expect("request");
        assert_eq!(
            r.url.as_str(),
            "https://cloudbilling.googleapis.com/v1/services/6F81-5844-456A/skus?currencyCode=USD"
        );
        let r = list_skus("http://127.0.0.1:9/", Some("a+b/c="), Some(2)).expect("request");
        assert_eq!(
            r.url.as_str(),
            "http://127.0.0.1:9/v1/services/6F81-5844-456A/skus?currencyCode=USD&pageSize=2&pageToken=a%2Bb%2Fc%3D"
        );
    }

    #[test]
    fn a_page_decodes_the_documented_shape() {
        let body = serde_json::json!({
            "skus": [{
                "name": "services/6F81-5844-456A/skus/0000-0000-0001",
                "skuId": "0000-0000-0001",
                "description": "Nvidia Tesla T4 GPU running in Americas",
                "category": {"serviceDisplayName": "Compute Engine", "resourceFamily": "Compute",
                             "resourceGroup": "GPU", "usageType": "OnDemand"},
                "serviceRegions": ["us-central1"],
                "pricingInfo": [{"summary": "", "effectiveTime": "2026-12-04T00:00:00Z",
                    "pricingExpression": {"usageUnit": "h", "displayQuantity": 1,
                        "tieredRates": [{"startUsageAmount": 0,
                            "unitPrice": {"currencyCode": "USD", "units": "0", "nanos": 350000000}}]},
                    "currencyConversionRate": 1}],
                "serviceProviderName": "Google"
            }],
            "nextPageToken": ""
        });
        let r = Response {
            status: reqwest::StatusCode::OK,
            headers: Default::default(),
            body: serde_json::to_vec(&body).expect("json").into(),
            url: "http://127.0.0.1/".parse().expect("url"),
        };
        let page = decode_page(r).expect("page");
        assert_eq!(page.skus.len(), 1);
        let sku = &page.skus[0];
        assert_eq!(sku.category.resource_group, "GPU");
        let rate = &sku.pricing_info[0].pricing_expression.tiered_rates[0];
        assert_eq!(rate.unit_price.nanos_total(), Some(350_000_000));
    }
}

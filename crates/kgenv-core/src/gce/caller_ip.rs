//! The caller's public IP address, for the default firewall rule (SSH from this address
//! only, `/32`). Asked of a plain-text "what is my IP" service — without any credentials —
//! at `https://api.ipify.org` unless `KGENV_CALLER_IP_URL` names another (tests point it at
//! 127.0.0.1). When detection fails the error says how to set `source_ranges` instead.

use std::net::IpAddr;
use std::time::Duration;

use crate::backends::BackendResult;
use crate::error::BackendError;

/// The default service: answers with the address as plain text.
pub const DEFAULT_URL: &str = "https://api.ipify.org";
/// Environment variable naming another service.
pub const URL_ENV: &str = "KGENV_CALLER_IP_URL";

fn advice(url: &str, why: &str) -> String {
    format!(
        "could not detect your public IP address from {url} ({why}); kgenv needs it to allow SSH from your address only. \
         Set `source_ranges = [\"YOUR.PUBLIC.IP.ADDRESS/32\"]` in the [[firewall]] section of kgenv.toml, \
         or point {URL_ENV} at a service that answers with your address as plain text"
    )
}

/// Asks `url` for the caller's address; a couple of quick retries, then an actionable error.
pub async fn detect(http: &reqwest::Client, url: &str) -> BackendResult<IpAddr> {
    let mut last = String::new();
    for attempt in 0..3u32 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(300 * u64::from(attempt))).await;
        }
        let resp = match http.get(url).timeout(Duration::from_secs(10)).send().await {
            Ok(r) => r,
            Err(e) => {
                last = crate::error::error_chain(&e);
                continue;
            }
        };
        let status = resp.status();
        if !status.is_success() {
            last = format!("HTTP {status}");
            if status.is_server_error() || status.as_u16() == 429 {
                continue;
            }
            break;
        }
        let text = match resp.text().await {
            Ok(t) => t,
            Err(e) => {
                last = crate::error::error_chain(&e);
                continue;
            }
        };
        return match text.trim().parse::<IpAddr>() {
            Ok(ip) if !ip.is_unspecified() && !ip.is_multicast() => Ok(ip),
            _ => Err(BackendError::Unavailable {
                backend: "compute",
                hint: advice(url, "the answer is not an IP address"),
            }),
        };
    }
    Err(BackendError::Unavailable {
        backend: "compute",
        hint: advice(url, &last),
    })
}

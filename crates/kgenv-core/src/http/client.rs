//! How kgenv's `reqwest` clients are built: rustls with the ring provider for all of them,
//! kgenv's user agent, and no proxy for loopback endpoints (emulators and test fakes).

use crate::error::BackendError;

/// Installs ring as rustls' process-wide crypto provider. reqwest is built without a
/// provider of its own, so every client shares this one; installing twice keeps the first.
pub fn ensure_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Whether `host` (as in a URL, IPv6 in brackets) is this machine.
pub fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_matches(|c| c == '[' || c == ']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether credentials may be sent to `url`: `https://` to any host, plain `http://` only to
/// a loopback one (an emulator or a test fake on this machine), never anything else. Every
/// client that sends a token, API key or signed URL checks its endpoint with this, so no
/// secret crosses a network in clear.
pub fn allows_credentials(url: &reqwest::Url) -> bool {
    let host = url.host_str().unwrap_or_default();
    match url.scheme() {
        "https" => !host.is_empty(),
        "http" => is_loopback(host),
        _ => false,
    }
}

/// A reqwest builder with kgenv's TLS provider and user agent. `base` is the endpoint the
/// client talks to: a loopback host (an emulator or a test fake) never goes through
/// `HTTP(S)_PROXY`.
pub fn client_builder(base: &str) -> reqwest::ClientBuilder {
    ensure_crypto_provider();
    let builder =
        reqwest::Client::builder().user_agent(concat!("kgenv/", env!("CARGO_PKG_VERSION")));
    let loopback = reqwest::Url::parse(base)
        .ok()
        .is_some_and(|u| u.host_str().is_some_and(is_loopback));
    if loopback {
        builder.no_proxy()
    } else {
        builder
    }
}

/// Builds the client a service configured from [`client_builder`]; a failure (the TLS
/// setup) is a [`BackendError`] naming the service.
pub fn build_client(
    service: &'static str,
    builder: reqwest::ClientBuilder,
) -> Result<reqwest::Client, BackendError> {
    builder.build().map_err(|e| BackendError::Other {
        message: format!("{service}: building the HTTP client"),
        source: Some(Box::new(e)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in ["localhost", "127.0.0.1", "[::1]", "::1", "127.1.2.3"] {
            assert!(is_loopback(h), "{h}");
        }
        for h in ["example.com", "10.0.0.1", "[2001:db8::1]", ""] {
            assert!(!is_loopback(h), "{h}");
        }
    }

    #[test]
    fn credentials_go_over_tls_or_stay_on_this_machine() {
        let url = |u: &str| reqwest::Url::parse(u).expect("url");
        for ok in [
            "https://api.kaggle.com/v1/",
            "https://10.0.0.1/",
            "http://127.0.0.1:8080/",
            "http://localhost/api/v1/",
            "http://[::1]:9000/",
        ] {
            assert!(allows_credentials(&url(ok)), "{ok}");
        }
        for bad in [
            "http://api.kaggle.com/v1/",
            "http://10.0.0.1:8080/",
            "http://[2001:db8::1]/",
            "http://localhost.example.com/",
            "ftp://127.0.0.1/",
            "file:///tmp/x",
        ] {
            assert!(!allows_credentials(&url(bad)), "{bad}");
        }
    }
}

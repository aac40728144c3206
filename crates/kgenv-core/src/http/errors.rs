//! The one mapping of transport failures (`reqwest` errors: no answer, or an answer cut
//! short) to [`BackendError`] kinds. HTTP statuses are each service's business; this is
//! what happens before there is a status to read.
//!
//! | reqwest says | kind |
//! | --- | --- |
//! | timed out, with a per-attempt limit | [`BackendError::Timeout`] (`after` = the limit) |
//! | timed out, under the client's own timeouts | [`BackendError::Transient`] |
//! | could not connect | [`BackendError::Connection`] |
//! | anything else (reset, cut body, protocol error) | [`BackendError::Transient`] |
//!
//! The URL is always stripped from the source error first: signed URLs and upload
//! sessions carry credentials in their query.

use std::time::Duration;

use crate::error::BackendError;

/// What a failed exchange was, for its error.
#[derive(Debug, Clone, Copy)]
pub struct Failure<'a> {
    /// The service (`compute`, `storage`, `github`, `kaggle`, `download`).
    pub service: &'static str,
    /// The call, for messages (`GET https://…`, `bucket b`, `Kaggle ListDataFiles`).
    pub what: &'a str,
    /// Where a connection was attempted, for [`BackendError::Connection`].
    pub endpoint: &'a str,
    /// The per-attempt time limit that applied, if any.
    pub timeout: Option<Duration>,
    /// Replaces reqwest's own words in a connection error (what to check).
    pub connect_hint: Option<&'a str>,
}

impl<'a> Failure<'a> {
    /// A failure of `what` at `service`, the endpoint being `what` too.
    pub fn new(service: &'static str, what: &'a str) -> Self {
        Self {
            service,
            what,
            endpoint: what,
            timeout: None,
            connect_hint: None,
        }
    }
}

/// Maps a reqwest error to the backend error kinds (see the module docs).
pub fn map_reqwest(e: reqwest::Error, f: &Failure<'_>) -> BackendError {
    let e = e.without_url();
    if e.is_timeout() {
        match f.timeout {
            Some(after) => BackendError::Timeout {
                what: f.what.to_string(),
                after,
                last_seen: None,
            },
            None => BackendError::Transient {
                service: f.service,
                message: format!("{}: timed out", f.what),
                source: Some(Box::new(e)),
            },
        }
    } else if e.is_connect() {
        BackendError::Connection {
            endpoint: f.endpoint.to_string(),
            message: f.connect_hint.map_or_else(|| e.to_string(), str::to_string),
            source: Some(Box::new(e)),
        }
    } else {
        BackendError::Transient {
            service: f.service,
            message: format!("{}: {e}", f.what),
            source: Some(Box::new(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn error_from(url: &str, timeout: Option<Duration>) -> reqwest::Error {
        super::super::client_builder(url)
            .timeout(timeout.unwrap_or(Duration::from_secs(5)))
            .build()
            .expect("client")
            .get(url)
            .send()
            .await
            .expect_err("fails")
    }

    #[tokio::test]
    async fn kinds_follow_what_failed() {
        // Nothing listens on a port just freed.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let url = format!("http://127.0.0.1:{port}/x?sig=secret-signature");
        let e = map_reqwest(
            error_from(&url, None).await,
            &Failure {
                connect_hint: Some("could not reach the fake"),
                ..Failure::new("test", "GET thing")
            },
        );
        assert!(
            matches!(&e, BackendError::Connection { endpoint, message, .. } if endpoint == "GET thing" && message == "could not reach the fake"),
            "{e:?}"
        );
        let chain = crate::error::error_chain(&e);
        assert!(!chain.contains("secret-signature"), "{chain}");

        // A listener that never answers: the request times out.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!(
            "http://{}/slow?sig=secret-signature",
            listener.local_addr().expect("addr")
        );
        let _hold = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        let limit = Some(Duration::from_millis(200));
        let timed_out = error_from(&url, limit).await;
        let e = map_reqwest(
            timed_out,
            &Failure {
                timeout: limit,
                ..Failure::new("test", "GET slow")
            },
        );
        assert!(
            matches!(&e, BackendError::Timeout { what, after, .. } if what == "GET slow" && Some(*after) == limit),
            "{e:?}"
        );
        let e = map_reqwest(
            error_from(&url, limit).await,
            &Failure::new("test", "GET slow"),
        );
        assert!(
            matches!(&e, BackendError::Transient { message, .. } if message == "GET slow: timed out"),
            "{e:?}"
        );
        assert!(!crate::error::error_chain(&e).contains("secret-signature"));
    }
}

//! The one wrapper for secrets (access tokens, API keys, passwords): neither `Debug` nor
//! `Display` shows the value, it is not `Serialize`, and the only way to read it is
//! [`Secret::expose`], called where the secret is sent. And [`redact`], which takes what
//! could be a credential out of text that came from a server (a signed URL in an answer's
//! body) before it reaches a message or a log.

use std::sync::LazyLock;

use regex::Regex;

/// A secret string. `Debug` prints `Secret(<redacted>)`, `Display` prints `<redacted>`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret as given.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }

    /// Wraps `s` with surrounding whitespace trimmed; `None` when nothing is left (an empty
    /// environment variable is no secret).
    pub fn non_empty(s: &str) -> Option<Self> {
        let t = s.trim();
        (!t.is_empty()).then(|| Self(t.to_string()))
    }

    /// The secret itself, for the one place that sends it (a header, a registry password,
    /// the remote agent's stdin).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// An `http(s)://` URL: up to its query in group 1, its query and fragment (if any) in
/// group 2. A URL ends at whitespace, a quote or an angle bracket (JSON, XML and prose
/// around it).
static URL: LazyLock<Regex> = LazyLock::new(|| {
    // A constant pattern, compiled by the tests.
    Regex::new(r#"(?i)(\bhttps?://[^\s"'<>?#]*)([?#][^\s"'<>]*)?"#).expect("URL pattern")
});

/// A `name=value` pair whose name says it holds a secret (`X-Goog-Signature`, `sig`,
/// `access_token`, `X-Goog-Credential`, `api_key`, `password`); the value is group 2.
static SECRET_PAIR: LazyLock<Regex> = LazyLock::new(|| {
    // A constant pattern, compiled by the tests.
    Regex::new(
        r#"(?i)([a-z0-9_.-]*(?:signature|sig|token|credential|secret|password|key)[a-z0-9_.-]*)=([^&\s"'<>]+)"#,
    )
    .expect("pair pattern")
});

/// `text` (an answer's body, an error's words) fit for a message or a log: the query and
/// fragment of every `http(s)://` URL replaced by `?<redacted>` (a signed URL's signature, an
/// upload session's id), and the value of every `name=value` pair whose name says signature,
/// token, credential, key or password replaced by `<redacted>`.
pub fn redact(text: &str) -> String {
    let text = URL.replace_all(text, |c: &regex::Captures<'_>| match c.get(2) {
        Some(_) => format!("{}?<redacted>", &c[1]),
        None => c[0].to_string(),
    });
    SECRET_PAIR.replace_all(&text, "$1=<redacted>").into_owned()
}

/// Stands in for an error whose words may quote what a server sent (serde's
/// `invalid type: string "https://…?X-Goog-Signature=…"`): the same words, [`redact`]ed.
#[derive(Debug)]
pub struct RedactedError(String);

impl RedactedError {
    /// The redacted words of `e`.
    pub fn of(e: &dyn std::error::Error) -> Self {
        Self(redact(&e.to_string()))
    }
}

impl std::fmt::Display for RedactedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RedactedError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_shown() {
        let s = Secret::new("ya29.very-secret");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert_eq!(format!("{s}"), "<redacted>");
        assert_eq!(format!("{:?}", Some(&s)), "Some(Secret(<redacted>))");
        assert_eq!(s.expose(), "ya29.very-secret");
    }

    #[test]
    fn empty_values_are_no_secret() {
        assert_eq!(Secret::non_empty("  \n"), None);
        assert_eq!(
            Secret::non_empty(" tok \n").map(|s| s.expose().to_string()),
            Some("tok".to_string())
        );
    }

    #[test]
    fn redaction_takes_signed_urls_and_secret_pairs_out() {
        let signed = "https://storage.googleapis.com/kaggle-data/c/train.csv?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Credential=sa%40p.iam&X-Goog-Signature=abc123def";
        let json = format!(r#"{{"url":"{signed}","note":"ok"}}"#);
        let out = redact(&json);
        assert_eq!(
            out,
            r#"{"url":"https://storage.googleapis.com/kaggle-data/c/train.csv?<redacted>","note":"ok"}"#
        );
        // JSON-escaped `&`, XML around the URL, a URL at the end of a sentence.
        let escaped = redact(r"see http://h/x?a=1\u0026X-Goog-Signature=s3cr3t now");
        assert_eq!(escaped, r"see http://h/x?<redacted> now");
        assert_eq!(
            redact("<Url>https://h/p?sig=zz</Url>"),
            "<Url>https://h/p?<redacted></Url>"
        );
        // A query string on its own, as in GCS's <CanonicalRequest>.
        let alone = redact(
            "GET\n/b/o\nX-Goog-Date=20260101&X-Goog-Signature=deadbeef&X-Goog-Credential=sa\n",
        );
        assert!(
            !alone.contains("deadbeef") && !alone.contains("=sa"),
            "{alone}"
        );
        assert!(alone.contains("X-Goog-Date=20260101"), "{alone}");
        // Nothing secret: unchanged.
        for plain in [
            "Permission denied",
            "https://www.kaggle.com/c/titanic/rules",
            "a=b",
        ] {
            assert_eq!(redact(plain), plain);
        }
        let e = serde_json::from_str::<u64>(&format!("\"{signed}\"")).expect_err("a string");
        assert!(
            e.to_string().contains("abc123def"),
            "serde quotes what it got"
        );
        let r = RedactedError::of(&e);
        assert!(!r.to_string().contains("abc123def"), "{r}");
        assert!(!format!("{r:?}").contains("abc123def"), "{r:?}");
    }
}

//! The one wrapper for secrets (access tokens, API keys, passwords): neither `Debug` nor
//! `Display` shows the value, it is not `Serialize`, and the only way to read it is
//! [`Secret::expose`], called where the secret is sent.

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
}

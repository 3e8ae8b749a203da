//! `Secret`: a string (password, token, client secret, private key) that never shows itself.
//!
//! Its `Debug` and `Display` print `[redacted]`, so a secret held in a config struct, an auth
//! value or an error can be logged or formatted by accident without leaking. The only way to
//! read it is [`Secret::expose`], which makes every use visible in review. It deliberately
//! implements neither `Serialize` nor `Deserialize`: callers load it from a file or an env var
//! and wrap it themselves.

use std::fmt;

/// What `Debug` and `Display` print instead of a secret's value.
pub const REDACTED: &str = "[redacted]";

/// A secret string; formatting it prints [`REDACTED`], never the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret the caller has loaded (from a file, an env var, a token endpoint).
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret's value, for the one place that must send it (a header, a form, a signer).
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is empty (a config check, which reveals nothing of the value).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(value.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_print_nothing_of_the_value() {
        let s = Secret::new("hunter2-very-secret");
        assert_eq!(format!("{s:?}"), "[redacted]");
        assert_eq!(format!("{s}"), "[redacted]");
        assert_eq!(format!("{s:#?}"), "[redacted]");
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Holder {
            password: Secret,
        }
        let h = format!(
            "{:?}",
            Holder {
                password: s.clone()
            }
        );
        assert!(!h.contains("hunter2"), "{h}");
        assert!(!h.contains("secret"), "{h}");
    }

    #[test]
    fn expose_returns_the_value() {
        let s = Secret::from("tok");
        assert_eq!(s.expose(), "tok");
        assert!(!s.is_empty());
        assert!(Secret::new(String::new()).is_empty());
    }
}

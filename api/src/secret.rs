//! A string that holds a credential: it never prints, and its bytes are wiped on drop.

use serde::{Deserialize, Deserializer};
use zeroize::Zeroizing;

/// A secret string (token, password, key). `Debug` and `Display` print `[redacted]`;
/// only [`SecretString::expose`] gives the value, at the one place that sends it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct SecretString(Zeroizing<String>);

impl SecretString {
    /// Wraps a value.
    pub fn new(value: String) -> Self {
        SecretString(Zeroizing::new(value))
    }

    /// The value, for the request or connection that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether no value is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_empty() {
            "[empty]"
        } else {
            "[redacted]"
        })
    }
}

impl std::fmt::Display for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

impl<'de> Deserialize<'de> for SecretString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(SecretString::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_its_value() {
        let secret = SecretString::new(concat!("s3cr", "et-value").to_owned());
        assert_eq!(format!("{secret:?} {secret}"), "[redacted] [redacted]");
        assert_eq!(secret.expose(), concat!("s3cr", "et-value"));
        assert_eq!(format!("{:?}", SecretString::default()), "[empty]");
    }
}

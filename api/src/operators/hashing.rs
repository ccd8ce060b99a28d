//! Argon2id hashing of operator passwords and recovery codes.
//!
//! Production parameters follow the OWASP recommendation for Argon2id: 19 MiB of
//! memory, two passes, one lane (about 20 ms per hash on one current core, fast enough
//! to sign in, slow enough that a stolen table is expensive to search). Test suites
//! use a cheap profile that configuration files cannot select.

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

/// Memory cost in KiB of the production profile.
pub const PRODUCTION_MEMORY_KIB: u32 = 19 * 1024;
/// Passes of the production profile.
pub const PRODUCTION_PASSES: u32 = 2;

/// An Argon2id hasher with fixed parameters.
#[derive(Clone)]
pub struct SecretHasher {
    argon2: Argon2<'static>,
    /// A hash of a random value, verified against when the user is unknown, so an unknown
    /// name takes as long as a wrong password.
    decoy: String,
}

impl SecretHasher {
    /// Builds the production hasher, or the cheap one when `test_cost` is set.
    ///
    /// # Errors
    /// Fails only if the parameters are invalid or no salt can be drawn.
    pub fn new(test_cost: bool) -> anyhow::Result<Self> {
        let (memory, passes) = if test_cost {
            tracing::warn!("Argon2 test cost in use: never run a deployed server like this");
            (64, 1)
        } else {
            (PRODUCTION_MEMORY_KIB, PRODUCTION_PASSES)
        };
        let params = Params::new(memory, passes, 1, None)
            .map_err(|e| anyhow::anyhow!("invalid Argon2 parameters: {e}"))?;
        let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let mut hasher = SecretHasher {
            argon2,
            decoy: String::new(),
        };
        let mut random = [0u8; 16];
        getrandom::getrandom(&mut random)?;
        hasher.decoy = hasher.hash(&hex::encode(random))?;
        Ok(hasher)
    }

    /// Hashes a secret into a PHC string (algorithm, parameters, salt and hash).
    ///
    /// # Errors
    /// Fails if no salt can be drawn.
    pub fn hash(&self, secret: &str) -> anyhow::Result<String> {
        let mut salt_bytes = [0u8; 16];
        getrandom::getrandom(&mut salt_bytes)?;
        let salt = SaltString::encode_b64(&salt_bytes)
            .map_err(|e| anyhow::anyhow!("cannot encode salt: {e}"))?;
        let hash = self
            .argon2
            .hash_password(secret.as_bytes(), &salt)
            .map_err(|e| anyhow::anyhow!("Argon2 hashing failed: {e}"))?;
        Ok(hash.to_string())
    }

    /// Checks a secret against a stored PHC string, in constant time; a malformed stored
    /// hash does not verify.
    pub fn verify(&self, secret: &str, stored: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(stored) else {
            return false;
        };
        self.argon2
            .verify_password(secret.as_bytes(), &parsed)
            .is_ok()
    }

    /// Spends the time of one verification, for an unknown user.
    pub fn verify_decoy(&self, secret: &str) {
        let _ = self.verify(secret, &self.decoy);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_verifies_and_carries_parameters() {
        let hasher = SecretHasher::new(true).unwrap();
        let stored = hasher.hash("correct horse battery").unwrap();
        assert!(
            stored.starts_with("$argon2id$v=19$m=64,t=1,p=1$"),
            "{stored}"
        );
        assert!(hasher.verify("correct horse battery", &stored));
        assert!(!hasher.verify("correct horse batterz", &stored));
        assert!(!hasher.verify("x", "not a phc string"));
    }

    #[test]
    fn production_profile_is_the_recommended_one() {
        let hasher = SecretHasher::new(false).unwrap();
        let stored = hasher.hash("correct horse battery").unwrap();
        assert!(
            stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{stored}"
        );
    }
}

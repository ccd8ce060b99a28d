//! Time-based one-time passwords (RFC 6238) over HMAC-SHA1 (RFC 4226).
//!
//! Codes are six digits over 30-second steps, the parameters every authenticator app
//! supports. A code is checked for format before any comparison and compared in constant
//! time. It is accepted for the current step and one step either side, but only for a
//! step after the last one accepted, so a code is never accepted twice.

use hmac::{Hmac, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::base32;

/// Seconds per time step.
pub const STEP_SECONDS: u64 = 30;
/// Digits per code.
pub const DIGITS: u32 = 6;
/// Steps accepted either side of the current one, for clock drift and typing time.
pub const WINDOW_STEPS: u64 = 1;
/// Smallest secret accepted, in bytes (160 bits, as RFC 4226 recommends).
pub const MIN_SECRET_BYTES: usize = 20;
/// Size of a generated secret, in bytes.
pub const GENERATED_SECRET_BYTES: usize = 20;

/// A TOTP shared secret; it never prints and is wiped from memory when dropped.
#[derive(Clone)]
pub struct TotpSecret(Zeroizing<Vec<u8>>);

impl std::fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TotpSecret(redacted)")
    }
}

/// A TOTP secret or code was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TotpError {
    /// The secret is shorter than [`MIN_SECRET_BYTES`].
    #[error("the TOTP secret has {bytes} bytes; at least {MIN_SECRET_BYTES} are required")]
    SecretTooShort {
        /// Bytes given.
        bytes: usize,
    },
    /// The code is empty.
    #[error("the one-time code is empty; enter the six digits your authenticator app shows")]
    CodeEmpty,
    /// The code does not have six characters.
    #[error("the one-time code has {chars} characters; it must have exactly {DIGITS} digits")]
    CodeWrongLength {
        /// Characters given.
        chars: usize,
    },
    /// The code has a character other than an ASCII digit.
    #[error("the one-time code must contain digits only")]
    CodeNotNumeric,
    /// The random source failed.
    #[error("the system random source failed: {0}")]
    Random(String),
}

impl TotpError {
    /// Returns the stable snake_case code of the rejection.
    pub fn code(&self) -> &'static str {
        match self {
            Self::SecretTooShort { .. } => "totp_secret_too_short",
            Self::CodeEmpty | Self::CodeWrongLength { .. } | Self::CodeNotNumeric => {
                "otp_code_malformed"
            }
            Self::Random(_) => "random_source_failed",
        }
    }
}

impl TotpSecret {
    /// Generates a new random secret of [`GENERATED_SECRET_BYTES`].
    ///
    /// # Errors
    /// [`TotpError::Random`] if the system random source fails.
    pub fn generate() -> Result<Self, TotpError> {
        let mut bytes = Zeroizing::new(vec![0u8; GENERATED_SECRET_BYTES]);
        getrandom::getrandom(&mut bytes).map_err(|e| TotpError::Random(e.to_string()))?;
        Ok(TotpSecret(bytes))
    }

    /// Wraps stored secret bytes.
    ///
    /// # Errors
    /// [`TotpError::SecretTooShort`] under [`MIN_SECRET_BYTES`].
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, TotpError> {
        let bytes = Zeroizing::new(bytes);
        if bytes.len() < MIN_SECRET_BYTES {
            return Err(TotpError::SecretTooShort { bytes: bytes.len() });
        }
        Ok(TotpSecret(bytes))
    }

    /// Returns the raw secret bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Returns the secret in base32, as authenticator apps take it.
    pub fn to_base32(&self) -> Zeroizing<String> {
        Zeroizing::new(base32::encode(&self.0))
    }

    /// Returns the code of `step` with `digits` digits (RFC 4226 dynamic truncation).
    pub fn code_at_step(&self, step: u64, digits: u32) -> Zeroizing<String> {
        assert!((6..=9).contains(&digits), "TOTP codes have 6 to 9 digits");
        let mut mac = Hmac::<Sha1>::new_from_slice(&self.0)
            // HMAC accepts keys of any length, so this cannot fail.
            .expect("HMAC takes a key of any length");
        mac.update(&step.to_be_bytes());
        let digest = mac.finalize().into_bytes();
        let offset = usize::from(digest[19] & 0x0f);
        let binary = u32::from_be_bytes([
            digest[offset] & 0x7f,
            digest[offset + 1],
            digest[offset + 2],
            digest[offset + 3],
        ]);
        let value = binary % 10u32.pow(digits);
        Zeroizing::new(format!("{value:0width$}", width = digits as usize))
    }

    /// Returns the six-digit code for a Unix time in seconds.
    pub fn code_at_time(&self, unix_seconds: u64) -> Zeroizing<String> {
        self.code_at_step(step_at(unix_seconds), DIGITS)
    }
}

/// Returns the time step of a Unix time in seconds.
pub fn step_at(unix_seconds: u64) -> u64 {
    unix_seconds / STEP_SECONDS
}

/// A code that passed the format check: exactly six ASCII digits.
pub struct CheckedCode(Zeroizing<String>);

impl std::fmt::Debug for CheckedCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CheckedCode(redacted)")
    }
}

/// Checks a code's format before it is compared with anything.
///
/// # Errors
/// [`TotpError::CodeEmpty`], [`TotpError::CodeWrongLength`] or [`TotpError::CodeNotNumeric`].
pub fn check_code_format(text: &str) -> Result<CheckedCode, TotpError> {
    if text.is_empty() {
        return Err(TotpError::CodeEmpty);
    }
    let chars = text.chars().count();
    if chars != DIGITS as usize {
        return Err(TotpError::CodeWrongLength { chars });
    }
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TotpError::CodeNotNumeric);
    }
    Ok(CheckedCode(Zeroizing::new(text.to_owned())))
}

/// Returns the step whose code matches, among the steps within [`WINDOW_STEPS`] of
/// `unix_seconds` that come after `last_accepted_step`; `None` when none does.
///
/// Every candidate is compared, in constant time, whether or not an earlier one
/// matched, so the time taken does not say which step matched. The caller must then
/// record the returned step with a compare-and-set, so two requests cannot both use it.
pub fn matching_step(
    secret: &TotpSecret,
    code: &CheckedCode,
    unix_seconds: u64,
    last_accepted_step: Option<u64>,
) -> Option<u64> {
    let now = step_at(unix_seconds);
    let first = now.saturating_sub(WINDOW_STEPS);
    let mut found = None;
    for step in first..=now + WINDOW_STEPS {
        let expected = secret.code_at_step(step, DIGITS);
        let equal: bool = expected.as_bytes().ct_eq(code.0.as_bytes()).into();
        let fresh = last_accepted_step.is_none_or(|last| step > last);
        if equal && fresh && found.is_none() {
            found = Some(step);
        }
    }
    found
}

/// Builds the `otpauth://` URI that authenticator apps read from a QR code.
pub fn otpauth_uri(secret: &TotpSecret, issuer: &str, account: &str) -> Zeroizing<String> {
    let label = format!("{}:{}", percent_encode(issuer), percent_encode(account));
    Zeroizing::new(format!(
        "otpauth://totp/{label}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECONDS}",
        secret.to_base32().as_str(),
        percent_encode(issuer)
    ))
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rfc_secret() -> TotpSecret {
        TotpSecret::from_bytes(b"12345678901234567890".to_vec()).unwrap()
    }

    /// The SHA1 rows of RFC 6238 Appendix B (eight digits).
    #[test]
    fn rfc6238_appendix_b_sha1_vectors() {
        let secret = rfc_secret();
        let vectors = [
            (59u64, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ];
        for (time, expected) in vectors {
            assert_eq!(
                secret.code_at_step(step_at(time), 8).as_str(),
                expected,
                "T = {time}"
            );
        }
    }

    #[test]
    fn short_secret_rejected() {
        let error = TotpSecret::from_bytes(vec![1; 19]).unwrap_err();
        assert_eq!(error, TotpError::SecretTooShort { bytes: 19 });
    }

    #[test]
    fn format_checked_before_comparison() {
        assert_eq!(check_code_format("").unwrap_err(), TotpError::CodeEmpty);
        assert_eq!(
            check_code_format("12345").unwrap_err(),
            TotpError::CodeWrongLength { chars: 5 }
        );
        assert_eq!(
            check_code_format("1234567").unwrap_err(),
            TotpError::CodeWrongLength { chars: 7 }
        );
        assert_eq!(
            check_code_format("12a456").unwrap_err(),
            TotpError::CodeNotNumeric
        );
        assert_eq!(
            check_code_format("١٢٣٤٥٦").unwrap_err(),
            TotpError::CodeNotNumeric,
            "non-ASCII digits are not digits here"
        );
        assert!(check_code_format("012345").is_ok());
    }

    #[test]
    fn window_is_one_step_either_side() {
        let secret = rfc_secret();
        let now = 1_234_567_890;
        let step = step_at(now);
        for (offset, accepted) in [(-2i64, false), (-1, true), (0, true), (1, true), (2, false)] {
            let target = step.checked_add_signed(offset).unwrap();
            let code = check_code_format(&secret.code_at_step(target, DIGITS)).unwrap();
            let found = matching_step(&secret, &code, now, None);
            assert_eq!(found.is_some(), accepted, "offset {offset}");
            if accepted {
                assert_eq!(found, Some(target));
            }
        }
    }

    #[test]
    fn accepted_step_is_never_accepted_again() {
        let secret = rfc_secret();
        let now = 1_234_567_890;
        let code = check_code_format(&secret.code_at_time(now)).unwrap();
        let step = matching_step(&secret, &code, now, None).unwrap();
        assert_eq!(matching_step(&secret, &code, now, Some(step)), None);
        assert_eq!(
            matching_step(&secret, &code, now, Some(step - 1)),
            Some(step)
        );
    }

    #[test]
    fn uri_carries_parameters_and_encodes_label() {
        let uri = otpauth_uri(&rfc_secret(), "Folio", "alice@acme pay");
        assert_eq!(
            uri.as_str(),
            "otpauth://totp/Folio:alice%40acme%20pay?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\
             &issuer=Folio&algorithm=SHA1&digits=6&period=30"
        );
    }

    #[test]
    fn secret_does_not_print() {
        let secret = rfc_secret();
        assert_eq!(format!("{secret:?}"), "TotpSecret(redacted)");
    }
}

//! Second-factor rules for operators, with no I/O: TOTP codes (RFC 6238), recovery
//! codes, password rules and the limits on failed attempts.
//!
//! Storage, hashing with Argon2id and encryption of secrets at rest live in the API
//! crate. Everything here is a pure function of its inputs and the system random source.

pub mod base32;
pub mod limits;
pub mod password;
pub mod recovery;
pub mod totp;

pub use limits::{gate, AttemptGate};
pub use password::{check_password, PasswordError};
pub use recovery::{RecoveryCode, RecoveryCodeError};
pub use totp::{check_code_format, matching_step, otpauth_uri, CheckedCode, TotpError, TotpSecret};

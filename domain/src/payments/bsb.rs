//! Australian bank-state-branch numbers and the account numbers behind them.

use std::fmt;

/// A six-digit bank-state-branch number; leading zeros are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Bsb([u8; 6]);

/// A BSB or account number was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BsbError {
    /// The BSB is not `nnn-nnn` or `nnnnnn`.
    #[error("invalid BSB {found:?}: expected six digits written as \"123-456\" or \"123456\"")]
    InvalidBsb {
        /// The BSB as given.
        found: String,
    },
    /// The account number is not 1 to 9 digits.
    #[error("invalid account number {found:?}: expected 1 to 9 digits with no spaces or hyphens")]
    InvalidAccount {
        /// The account number as given.
        found: String,
    },
    /// The account number is all zeros, which no bank issues.
    #[error("invalid account number {found:?}: an account number cannot be all zeros")]
    ZeroAccount {
        /// The account number as given.
        found: String,
    },
}

impl Bsb {
    /// Parses `"123-456"` or `"123456"`; both give the same value.
    ///
    /// # Errors
    /// [`BsbError::InvalidBsb`] for any other shape, including spaces.
    pub fn parse(text: &str) -> Result<Self, BsbError> {
        let invalid = || BsbError::InvalidBsb {
            found: text.to_owned(),
        };
        let bytes = text.as_bytes();
        let digits: Vec<u8> = match bytes.len() {
            6 => bytes.to_vec(),
            7 if bytes[3] == b'-' => [&bytes[..3], &bytes[4..]].concat(),
            _ => return Err(invalid()),
        };
        let digits: [u8; 6] = digits.try_into().map_err(|_| invalid())?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return Err(invalid());
        }
        Ok(Self(digits))
    }

    /// Returns the six digits with no separator, as stored in `PayeeAccount::Bsb`.
    pub fn digits(&self) -> &str {
        // The constructor accepts only ASCII digits.
        std::str::from_utf8(&self.0).expect("BSB is ASCII digits")
    }
}

impl fmt::Display for Bsb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.digits();
        write!(f, "{}-{}", &digits[..3], &digits[3..])
    }
}

/// A domestic account number: 1 to 9 digits, leading zeros kept, not all zeros.
///
/// The limit of nine comes from the account field of an ABA detail record. Banks
/// print some account numbers with hyphens, but the digits alone identify the
/// account, so hyphens are rejected rather than silently dropped.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountNumber(String);

impl AccountNumber {
    /// Maximum number of digits.
    pub const MAX_DIGITS: usize = 9;

    /// Parses an account number.
    ///
    /// # Errors
    /// [`BsbError::InvalidAccount`] unless `text` is 1 to 9 ASCII digits,
    /// [`BsbError::ZeroAccount`] if all of them are zero.
    pub fn parse(text: &str) -> Result<Self, BsbError> {
        let well_formed = (1..=Self::MAX_DIGITS).contains(&text.len())
            && text.bytes().all(|b| b.is_ascii_digit());
        if !well_formed {
            return Err(BsbError::InvalidAccount {
                found: text.to_owned(),
            });
        }
        if text.bytes().all(|b| b == b'0') {
            return Err(BsbError::ZeroAccount {
                found: text.to_owned(),
            });
        }
        Ok(Self(text.to_owned()))
    }

    /// Returns the digits exactly as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AccountNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bsb_both_forms_equal() {
        let dashed = Bsb::parse("123-456").unwrap();
        let plain = Bsb::parse("123456").unwrap();
        assert_eq!(dashed, plain);
        assert_eq!(dashed.digits(), "123456");
        assert_eq!(dashed.to_string(), "123-456");
    }

    #[test]
    fn bsb_keeps_leading_zeros() {
        let bsb = Bsb::parse("012-003").unwrap();
        assert_eq!(bsb.digits(), "012003");
        assert_eq!(bsb.to_string(), "012-003");
        assert_eq!(Bsb::parse("000000").unwrap().to_string(), "000-000");
    }

    #[test]
    fn bsb_rejects_other_shapes() {
        let bad = [
            "",
            "12345",
            "1234567",
            "12-3456",
            "1234-56",
            "123 456",
            "123_456",
            "12a-456",
            "123-45b",
            " 123456",
            "123456 ",
            "１２３４５６",
            "123--456",
            "-123456",
        ];
        for text in bad {
            let err = Bsb::parse(text).unwrap_err();
            assert_eq!(
                err,
                BsbError::InvalidBsb {
                    found: text.to_owned()
                },
                "{text:?}"
            );
        }
    }

    #[test]
    fn bsb_error_names_value_and_fix() {
        let message = Bsb::parse("12-3456").unwrap_err().to_string();
        assert!(message.contains("\"12-3456\""), "{message}");
        assert!(message.contains("123-456"), "{message}");
    }

    #[test]
    fn account_keeps_leading_zeros() {
        assert_eq!(AccountNumber::parse("000123").unwrap().as_str(), "000123");
        assert_eq!(AccountNumber::parse("1").unwrap().as_str(), "1");
        assert_eq!(
            AccountNumber::parse("123456789").unwrap().as_str(),
            "123456789"
        );
    }

    #[test]
    fn account_rejects_bad_shapes() {
        for text in ["", "1234567890", "12-345", "12 345", "abc", "١٢٣", "+123"] {
            let err = AccountNumber::parse(text).unwrap_err();
            assert_eq!(
                err,
                BsbError::InvalidAccount {
                    found: text.to_owned()
                },
                "{text:?}"
            );
        }
    }

    #[test]
    fn account_rejects_all_zeros() {
        for text in ["0", "000000000"] {
            let err = AccountNumber::parse(text).unwrap_err();
            assert_eq!(
                err,
                BsbError::ZeroAccount {
                    found: text.to_owned()
                }
            );
        }
    }
}

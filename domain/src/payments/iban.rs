//! International Bank Account Numbers (ISO 13616).

use std::fmt;

/// IBAN length by country for the countries Folio pays into.
///
/// Every length matches the IBAN registry shipped in the Python package schwifty
/// 2026.10.1. Australia has no IBAN, so Australian accounts are paid by BSB.
const IBAN_LENGTHS: [(&str, usize); 37] = [
    ("AD", 24),
    ("AT", 20),
    ("BE", 16),
    ("BG", 22),
    ("CH", 21),
    ("CY", 28),
    ("CZ", 24),
    ("DE", 22),
    ("DK", 18),
    ("EE", 20),
    ("ES", 24),
    ("FI", 18),
    ("FR", 27),
    ("GB", 22),
    ("GI", 23),
    ("GR", 27),
    ("HR", 21),
    ("HU", 28),
    ("IE", 22),
    ("IS", 26),
    ("IT", 27),
    ("LI", 21),
    ("LT", 20),
    ("LU", 20),
    ("LV", 21),
    ("MC", 27),
    ("MT", 31),
    ("NL", 18),
    ("NO", 15),
    ("PL", 28),
    ("PT", 25),
    ("RO", 24),
    ("SE", 24),
    ("SI", 19),
    ("SK", 24),
    ("SM", 27),
    ("VA", 22),
];

/// An IBAN that passed the length and mod-97 checks, stored in electronic format.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Iban(String);

/// An IBAN was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IbanError {
    /// A character other than an ASCII letter, digit or space.
    #[error("invalid IBAN {found:?}: only letters, digits and spaces are allowed")]
    InvalidCharacter {
        /// The IBAN as given.
        found: String,
    },
    /// The country code is not one Folio has a length for.
    #[error("unsupported IBAN country {country:?} in {found:?}: expected one of {supported}")]
    UnsupportedCountry {
        /// The first two characters.
        country: String,
        /// The IBAN as given.
        found: String,
        /// Supported country codes, comma separated.
        supported: String,
    },
    /// The length does not match the country's IBAN length.
    #[error("invalid IBAN {found:?}: {country} IBANs have {expected} characters, got {actual}")]
    WrongLength {
        /// Country code.
        country: String,
        /// The IBAN as given.
        found: String,
        /// Length for the country.
        expected: usize,
        /// Length without spaces.
        actual: usize,
    },
    /// Check digits are not two digits in 02..=98.
    #[error("invalid IBAN {found:?}: check digits must be two digits from 02 to 98")]
    InvalidCheckDigits {
        /// The IBAN as given.
        found: String,
    },
    /// The mod-97 check failed: a typo or a made-up number.
    #[error("invalid IBAN {found:?}: check digits do not match; check the number for typos")]
    ChecksumMismatch {
        /// The IBAN as given.
        found: String,
    },
}

impl Iban {
    /// Parses an IBAN, allowing spaces anywhere and lower-case letters.
    ///
    /// # Errors
    /// An [`IbanError`] naming the input for bad characters, an unsupported
    /// country, a wrong length, check digits outside 02..=98 or a failed mod-97
    /// check.
    pub fn parse(text: &str) -> Result<Self, IbanError> {
        let found = || text.to_owned();
        if !text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b' ') {
            return Err(IbanError::InvalidCharacter { found: found() });
        }
        let electronic: String = text
            .chars()
            .filter(|c| *c != ' ')
            .map(|c| c.to_ascii_uppercase())
            .collect();

        let country = electronic.get(..2).unwrap_or(&electronic).to_owned();
        let Some(expected) = country_length(&country) else {
            return Err(IbanError::UnsupportedCountry {
                country,
                found: found(),
                supported: supported_countries(),
            });
        };
        if electronic.len() != expected {
            let actual = electronic.len();
            return Err(IbanError::WrongLength {
                country,
                found: found(),
                expected,
                actual,
            });
        }

        check_digits_in_range(&electronic)
            .ok_or_else(|| IbanError::InvalidCheckDigits { found: found() })?;
        if mod97(&electronic) != 1 {
            return Err(IbanError::ChecksumMismatch { found: found() });
        }
        Ok(Self(electronic))
    }

    /// Returns the electronic format: upper case, no spaces.
    pub fn electronic(&self) -> &str {
        &self.0
    }

    /// Returns the two-letter country code.
    pub fn country(&self) -> &str {
        &self.0[..2]
    }
}

/// Prints the paper format: groups of four characters separated by spaces.
impl fmt::Display for Iban {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, chunk) in self.0.as_bytes().chunks(4).enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            // The constructor accepts only ASCII, so every chunk is valid UTF-8.
            f.write_str(std::str::from_utf8(chunk).map_err(|_| fmt::Error)?)?;
        }
        Ok(())
    }
}

fn country_length(country: &str) -> Option<usize> {
    IBAN_LENGTHS
        .iter()
        .find(|(code, _)| *code == country)
        .map(|(_, len)| *len)
}

fn supported_countries() -> String {
    IBAN_LENGTHS
        .iter()
        .map(|(code, _)| *code)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks that characters 3 and 4 are digits from 02 to 98, the only values the
/// ISO 7064 mod 97-10 scheme produces.
fn check_digits_in_range(electronic: &str) -> Option<()> {
    let digits = electronic.get(2..4)?;
    let value: u8 = digits
        .parse()
        .ok()
        .filter(|_| digits.bytes().all(|b| b.is_ascii_digit()))?;
    (2..=98).contains(&value).then_some(())
}

/// Computes the ISO 7064 mod 97-10 remainder of an IBAN in electronic format.
///
/// The first four characters move to the end and letters become 10..=35; the
/// remainder is folded digit by digit so no big integer is needed.
fn mod97(electronic: &str) -> u32 {
    let rearranged = electronic[4..].bytes().chain(electronic[..4].bytes());
    rearranged.fold(0u32, |remainder, byte| {
        let value = match byte {
            b'0'..=b'9' => u32::from(byte - b'0'),
            _ => u32::from(byte - b'A') + 10,
        };
        let shift = if value >= 10 { 100 } else { 10 };
        (remainder * shift + value) % 97
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Widely published example IBANs, each valid under the mod-97 check.
    const DE: &str = "DE89370400440532013000";
    const GB: &str = "GB29NWBK60161331926819";
    const NO: &str = "NO9386011117947";
    const MT: &str = "MT84MALT011000012345MTLCAST001S";

    #[test]
    fn accepts_registry_examples() {
        for text in [
            DE,
            GB,
            NO,
            MT,
            "BE68539007547034",
            "FR1420041010050500013M02606",
        ] {
            assert_eq!(
                Iban::parse(text).map(|i| i.electronic().to_owned()),
                Ok(text.into())
            );
        }
    }

    #[test]
    fn accepts_spaces_and_lower_case() {
        let iban = Iban::parse("gb29 nwbk 6016 1331 9268 19").unwrap();
        assert_eq!(iban.electronic(), GB);
        assert_eq!(iban.country(), "GB");
    }

    #[test]
    fn display_groups_of_four() {
        assert_eq!(
            Iban::parse(DE).unwrap().to_string(),
            "DE89 3704 0044 0532 0130 00"
        );
        assert_eq!(Iban::parse(NO).unwrap().to_string(), "NO93 8601 1117 947");
    }

    #[test]
    fn rejects_single_typo() {
        let err = Iban::parse("DE89370400440532013001").unwrap_err();
        assert!(matches!(err, IbanError::ChecksumMismatch { .. }), "{err:?}");
    }

    #[test]
    fn rejects_swapped_digits() {
        let err = Iban::parse("DE89370400440532031000").unwrap_err();
        assert!(matches!(err, IbanError::ChecksumMismatch { .. }), "{err:?}");
    }

    #[test]
    fn rejects_wrong_length() {
        let err = Iban::parse("DE8937040044053201300").unwrap_err();
        let expected = IbanError::WrongLength {
            country: "DE".into(),
            found: "DE8937040044053201300".into(),
            expected: 22,
            actual: 21,
        };
        assert_eq!(err, expected);
    }

    #[test]
    fn rejects_unsupported_country() {
        for text in ["AU12345678901234", "US64SVBKUS6S3300958879", "", "D"] {
            let err = Iban::parse(text).unwrap_err();
            assert!(
                matches!(err, IbanError::UnsupportedCountry { .. }),
                "{text}: {err:?}"
            );
        }
    }

    #[test]
    fn rejects_bad_characters() {
        for text in [
            "DE89-3704-0044-0532-0130-00",
            "DE89\t370400440532013000",
            "DÉ89370400440532013000",
        ] {
            let err = Iban::parse(text).unwrap_err();
            assert!(
                matches!(err, IbanError::InvalidCharacter { .. }),
                "{text}: {err:?}"
            );
        }
    }

    #[test]
    fn rejects_check_digits_out_of_range() {
        // 97 is congruent to 00 modulo 97, so "00" passes mod-97 wherever "97" does.
        let err = Iban::parse("GB00NWBK60161331926819").unwrap_err();
        assert!(
            matches!(err, IbanError::InvalidCheckDigits { .. }),
            "{err:?}"
        );
        let err = Iban::parse("GBX9NWBK60161331926819").unwrap_err();
        assert!(
            matches!(err, IbanError::InvalidCheckDigits { .. }),
            "{err:?}"
        );
    }

    #[test]
    fn mod97_matches_definition() {
        // DE89 3704 0044 0532 0130 00 rearranged is 370400440532013000131489.
        let big: u128 = 370400440532013000131489;
        assert_eq!((big % 97) as u32, mod97(DE));
    }
}

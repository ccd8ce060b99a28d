//! Amounts in integer minor units and ISO 4217 currency codes.

use std::fmt;

use serde_json::Value;

/// An amount of money in minor units (cents), always greater than zero.
///
/// Every constructor rejects zero. [`AmountMinor::new`] and
/// [`AmountMinor::from_json`] also apply a per-payment limit, but a sum from
/// [`AmountMinor::checked_add`] may exceed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AmountMinor(u64);

/// An amount was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AmountError {
    /// The JSON value is not a number (a string, null, object, ...).
    #[error("amount_minor must be a JSON integer number of cents, got {found}")]
    NotANumber {
        /// The JSON value as text.
        found: String,
    },
    /// The JSON number has a fraction or an exponent, such as `10.5` or `1e3`.
    #[error(
        "amount_minor must be a whole number of cents written as a JSON integer, got {found}; \
         send 1050 for $10.50"
    )]
    NotInteger {
        /// The JSON number as text.
        found: String,
    },
    /// The amount is negative.
    #[error(
        "amount_minor must be greater than zero, got {found}; send the amount as a positive \
             integer of cents"
    )]
    Negative {
        /// The JSON number as text.
        found: String,
    },
    /// The amount is zero.
    #[error("amount_minor must be greater than zero, got 0")]
    Zero,
    /// The amount is larger than an unsigned 64-bit integer.
    #[error("amount_minor {found} is too large; the maximum is {max} cents", max = u64::MAX)]
    OutOfRange {
        /// The JSON number as text.
        found: String,
    },
    /// The amount is above the configured per-payment limit.
    #[error(
        "amount_minor {value} is over the per-payment limit of {limit} cents; split the \
             payment or ask an operator to raise the limit"
    )]
    OverLimit {
        /// The amount in cents.
        value: u64,
        /// The limit in cents.
        limit: u64,
    },
    /// A sum of amounts does not fit in 64 bits.
    #[error("sum of amounts overflows: {left} + {right} cents does not fit in 64 bits")]
    Overflow {
        /// Running total before the failed addition.
        left: u64,
        /// Amount that could not be added.
        right: u64,
    },
}

impl AmountMinor {
    /// Checks an amount of cents against zero and the per-payment `limit`.
    ///
    /// # Errors
    /// [`AmountError::Zero`] for 0 and [`AmountError::OverLimit`] above `limit`.
    pub fn new(cents: u64, limit: u64) -> Result<Self, AmountError> {
        if cents == 0 {
            return Err(AmountError::Zero);
        }
        if cents > limit {
            return Err(AmountError::OverLimit {
                value: cents,
                limit,
            });
        }
        Ok(Self(cents))
    }

    /// Parses the `amount_minor` field of a JSON request body.
    ///
    /// Only JSON integers are accepted: `1050` is $10.50, while `10.5`, `1050.0`,
    /// `1.05e3` and `"1050"` are rejected, because a client sending any of them has
    /// probably mixed up dollars and cents.
    ///
    /// # Errors
    /// An [`AmountError`] naming the value for anything but an integer in `1..=limit`.
    pub fn from_json(value: &Value, limit: u64) -> Result<Self, AmountError> {
        let Value::Number(number) = value else {
            return Err(AmountError::NotANumber {
                found: value.to_string(),
            });
        };
        if let Some(cents) = number.as_u64() {
            return Self::new(cents, limit);
        }
        if number.is_i64() {
            return Err(AmountError::Negative {
                found: number.to_string(),
            });
        }
        Err(classify_float(number))
    }

    /// Returns the amount in cents.
    pub fn get(self) -> u64 {
        self.0
    }

    /// Adds two amounts.
    ///
    /// # Errors
    /// [`AmountError::Overflow`] if the sum does not fit in 64 bits.
    pub fn checked_add(self, other: Self) -> Result<Self, AmountError> {
        let sum = checked_sum_minor(self.0, other.0)?;
        Ok(Self(sum))
    }
}

impl fmt::Display for AmountMinor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} cents", self.0)
    }
}

/// Adds two amounts in cents without wrapping.
///
/// # Errors
/// [`AmountError::Overflow`] if the sum does not fit in 64 bits.
pub fn checked_sum_minor(left: u64, right: u64) -> Result<u64, AmountError> {
    left.checked_add(right)
        .ok_or(AmountError::Overflow { left, right })
}

/// Sums amounts in cents without wrapping; the sum of nothing is 0.
///
/// # Errors
/// [`AmountError::Overflow`] at the first addition that does not fit in 64 bits.
pub fn sum_minor<I: IntoIterator<Item = u64>>(amounts: I) -> Result<u64, AmountError> {
    amounts.into_iter().try_fold(0, checked_sum_minor)
}

/// Sorts a JSON number that is neither a u64 nor an i64 into the matching error.
fn classify_float(number: &serde_json::Number) -> AmountError {
    let found = number.to_string();
    match number.as_f64() {
        Some(x) if x.fract() != 0.0 => AmountError::NotInteger { found },
        Some(x) if x < 0.0 => AmountError::Negative { found },
        // Integers beyond u64 reach this point as floats.
        Some(x) if x >= u64::MAX as f64 => AmountError::OutOfRange { found },
        // Integral floats such as `1050.0` or `1e3` are still rejected, because the
        // body must carry an integer token.
        _ => AmountError::NotInteger { found },
    }
}

/// ISO 4217 currency codes that Folio accepts.
///
/// This list is a policy, not the ISO table: it names the currencies Folio's
/// clients pay in. A [`crate::payments::PaymentPolicy`] narrows it further per
/// tenant.
pub const SUPPORTED_CURRENCIES: [&str; 7] = ["AUD", "NZD", "USD", "EUR", "GBP", "SGD", "JPY"];

/// A currency code from [`SUPPORTED_CURRENCIES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency([u8; 3]);

/// A currency code was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CurrencyError {
    /// Not three upper-case ASCII letters.
    #[error("invalid currency code {found:?}: expected three upper-case letters such as \"AUD\"")]
    Invalid {
        /// The code as given.
        found: String,
    },
    /// Well formed but not in [`SUPPORTED_CURRENCIES`].
    #[error("currency {found} is not supported; use one of {supported}")]
    Unsupported {
        /// The code as given.
        found: String,
        /// The supported codes, comma separated.
        supported: String,
    },
}

impl Currency {
    /// Australian dollars.
    pub const AUD: Currency = Currency(*b"AUD");

    /// Parses an ISO 4217 alphabetic code such as `AUD`.
    ///
    /// Lower-case input is rejected rather than upper-cased, so the code stored in
    /// an event is the code the client sent.
    ///
    /// # Errors
    /// [`CurrencyError::Invalid`] if `code` is not three upper-case ASCII letters,
    /// [`CurrencyError::Unsupported`] if it is not in [`SUPPORTED_CURRENCIES`].
    pub fn parse(code: &str) -> Result<Self, CurrencyError> {
        let bytes: [u8; 3] = code
            .as_bytes()
            .try_into()
            .map_err(|_| CurrencyError::Invalid {
                found: code.to_owned(),
            })?;
        if !bytes.iter().all(u8::is_ascii_uppercase) {
            return Err(CurrencyError::Invalid {
                found: code.to_owned(),
            });
        }
        if !SUPPORTED_CURRENCIES.contains(&code) {
            let supported = SUPPORTED_CURRENCIES.join(", ");
            return Err(CurrencyError::Unsupported {
                found: code.to_owned(),
                supported,
            });
        }
        Ok(Self(bytes))
    }

    /// Returns the three-letter code.
    pub fn as_str(&self) -> &str {
        // The constructor accepts only ASCII upper-case letters.
        std::str::from_utf8(&self.0).expect("currency code is ASCII")
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LIMIT: u64 = 1_000_000;

    fn parse(text: &str) -> Result<AmountMinor, AmountError> {
        let value: Value = serde_json::from_str(text).expect("test input is JSON");
        AmountMinor::from_json(&value, LIMIT)
    }

    #[test]
    fn json_integer_accepted() {
        assert_eq!(parse("1050").map(AmountMinor::get), Ok(1050));
        assert_eq!(parse("1").map(AmountMinor::get), Ok(1));
        assert_eq!(parse("1000000").map(AmountMinor::get), Ok(LIMIT));
    }

    #[test]
    fn json_fraction_rejected() {
        assert_eq!(
            parse("10.5"),
            Err(AmountError::NotInteger {
                found: "10.5".into()
            })
        );
        assert_eq!(
            parse("0.01"),
            Err(AmountError::NotInteger {
                found: "0.01".into()
            })
        );
    }

    #[test]
    fn json_integral_float_rejected() {
        assert!(matches!(
            parse("1050.0"),
            Err(AmountError::NotInteger { .. })
        ));
        assert!(matches!(parse("1e3"), Err(AmountError::NotInteger { .. })));
    }

    #[test]
    fn json_zero_and_negative_rejected() {
        assert_eq!(parse("0"), Err(AmountError::Zero));
        assert_eq!(
            parse("-5"),
            Err(AmountError::Negative { found: "-5".into() })
        );
        assert!(matches!(parse("-5.5"), Err(AmountError::NotInteger { .. })));
        assert!(matches!(parse("-1.0"), Err(AmountError::Negative { .. })));
    }

    #[test]
    fn json_non_numbers_rejected() {
        for text in ["\"1050\"", "null", "true", "[1050]", "{\"cents\":1}"] {
            assert!(
                matches!(parse(text), Err(AmountError::NotANumber { .. })),
                "{text}"
            );
        }
    }

    #[test]
    fn json_over_limit_rejected() {
        let err = parse("1000001").unwrap_err();
        assert_eq!(
            err,
            AmountError::OverLimit {
                value: 1_000_001,
                limit: LIMIT
            }
        );
        assert!(err.to_string().contains("1000001"));
        assert!(err.to_string().contains("1000000"));
    }

    #[test]
    fn json_beyond_u64_rejected() {
        let err = parse("18446744073709551616").unwrap_err();
        assert!(matches!(err, AmountError::OutOfRange { .. }), "{err:?}");
    }

    #[test]
    fn error_messages_name_value() {
        let err = AmountMinor::from_json(&json!(10.5), LIMIT).unwrap_err();
        assert!(err.to_string().contains("10.5"), "{err}");
        let err = AmountMinor::from_json(&json!("ten"), LIMIT).unwrap_err();
        assert!(err.to_string().contains("\"ten\""), "{err}");
    }

    #[test]
    fn checked_add_overflow_is_error() {
        let max = AmountMinor::new(u64::MAX, u64::MAX).unwrap();
        let one = AmountMinor::new(1, u64::MAX).unwrap();
        assert_eq!(
            max.checked_add(one),
            Err(AmountError::Overflow {
                left: u64::MAX,
                right: 1
            })
        );
        assert_eq!(one.checked_add(one).map(AmountMinor::get), Ok(2));
    }

    #[test]
    fn sum_minor_detects_overflow() {
        assert_eq!(sum_minor([]), Ok(0));
        assert_eq!(sum_minor([1, 2, 3]), Ok(6));
        assert!(matches!(
            sum_minor([u64::MAX - 1, 1, 1]),
            Err(AmountError::Overflow { .. })
        ));
    }

    #[test]
    fn currency_accepts_policy_list() {
        for code in SUPPORTED_CURRENCIES {
            assert_eq!(
                Currency::parse(code).map(|c| c.to_string()),
                Ok(code.to_owned())
            );
        }
        assert_eq!(Currency::parse("AUD"), Ok(Currency::AUD));
    }

    #[test]
    fn currency_rejects_malformed() {
        for code in ["aud", "AU", "AUDD", "", "A1D", "ÄUD", " AUD"] {
            assert!(
                matches!(Currency::parse(code), Err(CurrencyError::Invalid { .. })),
                "{code}"
            );
        }
    }

    #[test]
    fn currency_rejects_unsupported() {
        let err = Currency::parse("XAU").unwrap_err();
        assert!(matches!(err, CurrencyError::Unsupported { .. }));
        assert!(err.to_string().contains("XAU"));
        assert!(err.to_string().contains("AUD"));
    }
}

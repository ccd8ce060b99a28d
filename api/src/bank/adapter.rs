//! The bank port: the payment request sent to the bank, its receipt, the failure classes
//! and the [`BankAdapter`] trait that the HTTPS adapter implements.

use std::fmt;

use async_trait::async_trait;
use domain::events::PayeeAccount;
use serde::{Deserialize, Serialize};

/// A payment instruction for the bank, as sent by `POST /v1/payments`.
///
/// The JSON body is every field except `idempotency_key`, which travels in the
/// `Idempotency-Key` header. `Debug` hides the account, because the request reaches logs
/// through error chains.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BankPaymentRequest {
    /// Key the bank deduplicates on; the same on every attempt for one payment.
    #[serde(skip)]
    pub idempotency_key: String,
    /// Amount in minor units (cents), greater than zero.
    pub amount_minor: u64,
    /// ISO 4217 currency code; the bank takes `AUD` only.
    pub currency: String,
    /// Account credited, sent as `{"bsb": "123456", "account": "00012345"}` or
    /// `{"iban": "..."}`.
    #[serde(with = "wire_account")]
    pub account: PayeeAccount,
    /// Payee name shown by the bank.
    pub payee_name: String,
    /// Reference text shown to the payee.
    pub reference: String,
}

impl fmt::Debug for BankPaymentRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let account = match self.account {
            PayeeAccount::Bsb { .. } => "Bsb(<redacted>)",
            PayeeAccount::Iban { .. } => "Iban(<redacted>)",
            PayeeAccount::Unavailable { .. } => "Unavailable",
        };
        f.debug_struct("BankPaymentRequest")
            .field("idempotency_key", &self.idempotency_key)
            .field("amount_minor", &self.amount_minor)
            .field("currency", &self.currency)
            .field("account", &account)
            .field("payee_name", &self.payee_name)
            .field("reference", &self.reference)
            .finish()
    }
}

/// The bank's JSON shape of an account, which differs from the domain's serde shape.
mod wire_account {
    use domain::events::PayeeAccount;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged, deny_unknown_fields)]
    enum WireAccount {
        Bsb { bsb: String, account: String },
        Iban { iban: String },
    }

    pub(super) fn serialize<S: Serializer>(
        account: &PayeeAccount,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        let wire = match account.clone() {
            PayeeAccount::Bsb { bsb, account } => WireAccount::Bsb { bsb, account },
            PayeeAccount::Iban { iban } => WireAccount::Iban { iban },
            // The allow-list never pays a payee whose account is erased or sealed.
            PayeeAccount::Unavailable { why, .. } => {
                return Err(serde::ser::Error::custom(format!("payee account is {why}")))
            }
        };
        wire.serialize(serializer)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<PayeeAccount, D::Error> {
        Ok(match WireAccount::deserialize(deserializer)? {
            WireAccount::Bsb { bsb, account } => PayeeAccount::Bsb { bsb, account },
            WireAccount::Iban { iban } => PayeeAccount::Iban { iban },
        })
    }
}

/// The bank's acceptance of a payment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BankReceipt {
    /// Bank's reference for the payment; the same for every repeat of one idempotency key.
    pub bank_reference: String,
    /// HTTP status: 201 for the first acceptance, 200 for a repeat.
    pub status: u16,
    /// Response body exactly as received, so its hash can be recorded.
    pub raw_body: Vec<u8>,
}

/// A bank call failed. [`BankError::kind`] is the stable failure class stored in events.
///
/// Details carry no account numbers, request bodies or key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BankError {
    /// No complete response before the request timeout.
    #[error("bank request timed out after {elapsed_ms} ms")]
    Timeout {
        /// Time spent before giving up, in milliseconds.
        elapsed_ms: u64,
    },
    /// The TCP connection could not be made.
    #[error("cannot connect to the bank: {detail}")]
    Connect {
        /// Transport error text.
        detail: String,
    },
    /// The TLS handshake failed or the bank closed the session with a TLS alert.
    #[error("tls failure with the bank: {detail}")]
    Tls {
        /// rustls error text.
        detail: String,
    },
    /// The bank returned a 5xx status.
    #[error("bank returned http {status}: {detail}")]
    Http5xx {
        /// HTTP status.
        status: u16,
        /// Problem title from the body, if any.
        detail: String,
    },
    /// The bank returned a 4xx status.
    #[error("bank rejected the request with http {status}: {detail}")]
    Http4xx {
        /// HTTP status.
        status: u16,
        /// Problem title from the body, if any.
        detail: String,
    },
    /// The bank responded with a status or body outside the protocol.
    #[error("invalid response from the bank: {detail}")]
    InvalidResponse {
        /// What was wrong.
        detail: String,
    },
    /// The circuit breaker is open, so the bank was not called.
    #[error("circuit breaker is open; bank not called, next probe in {retry_after_ms} ms")]
    BreakerOpen {
        /// Time until the breaker admits a probe, in milliseconds.
        retry_after_ms: u64,
    },
    /// The payment cannot be put on the wire (its payee's account was erased, or is sealed
    /// and could not be opened), so the bank was not called and another attempt cannot help.
    #[error("payment not sent: {detail}")]
    Unsendable {
        /// Why, with no account number in it.
        detail: String,
    },
}

impl BankError {
    /// Returns the failure class: `timeout`, `connect`, `tls`, `http_5xx`, `http_4xx`,
    /// `invalid_response`, `breaker_open` or `unsendable`.
    pub fn kind(&self) -> &'static str {
        match self {
            BankError::Timeout { .. } => "timeout",
            BankError::Connect { .. } => "connect",
            BankError::Tls { .. } => "tls",
            BankError::Http5xx { .. } => "http_5xx",
            BankError::Http4xx { .. } => "http_4xx",
            BankError::InvalidResponse { .. } => "invalid_response",
            BankError::BreakerOpen { .. } => "breaker_open",
            BankError::Unsendable { .. } => "unsendable",
        }
    }

    /// Returns whether another attempt with the same idempotency key may succeed.
    ///
    /// A 4xx other than 408 (request timeout) and 429 (too many requests) means the bank
    /// read the request and rejected it, so repeating it cannot help.
    pub fn is_retryable(&self) -> bool {
        match self {
            BankError::Http4xx { status, .. } => matches!(status, 408 | 429),
            BankError::Unsendable { .. } => false,
            _ => true,
        }
    }

    /// Returns whether this failure says the bank link is unhealthy.
    ///
    /// A final 4xx proves the bank is up and reading requests, so it does not count.
    pub(crate) fn counts_against_breaker(&self) -> bool {
        !matches!(self, BankError::BreakerOpen { .. }) && self.is_retryable()
    }
}

/// A way to send payments to the bank.
#[async_trait]
pub trait BankAdapter: Send + Sync {
    /// Submits one payment instruction.
    ///
    /// Implementations send `request.idempotency_key` unchanged, so a repeat after a lost
    /// response returns the first receipt instead of paying again.
    ///
    /// # Errors
    /// Returns a [`BankError`] classified by failure kind.
    async fn submit(&self, request: &BankPaymentRequest) -> Result<BankReceipt, BankError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BankPaymentRequest {
        BankPaymentRequest {
            idempotency_key: "key-1".into(),
            amount_minor: 12_345,
            currency: "AUD".into(),
            account: PayeeAccount::Bsb {
                bsb: "123456".into(),
                account: "00012345".into(),
            },
            payee_name: "Acme Pty Ltd".into(),
            reference: "INV 42".into(),
        }
    }

    #[test]
    fn request_json_shape() {
        let json = serde_json::to_value(sample()).unwrap();
        let expected = serde_json::json!({
            "amount_minor": 12345,
            "currency": "AUD",
            "account": {"bsb": "123456", "account": "00012345"},
            "payee_name": "Acme Pty Ltd",
            "reference": "INV 42",
        });
        assert_eq!(json, expected);
    }

    #[test]
    fn account_json_variants() {
        let parse = |account: &str| {
            let fields = r#""amount_minor":1,"currency":"AUD","payee_name":"P","reference":"""#;
            let body = format!(r#"{{{fields},"account":{account}}}"#);
            serde_json::from_str::<BankPaymentRequest>(&body).map(|request| request.account)
        };
        let iban = parse(r#"{"iban":"GB82WEST12345698765432"}"#).unwrap();
        assert_eq!(
            iban,
            PayeeAccount::Iban {
                iban: "GB82WEST12345698765432".into()
            }
        );
        let bsb = parse(r#"{"bsb":"123456","account":"1"}"#).unwrap();
        assert_eq!(
            bsb,
            PayeeAccount::Bsb {
                bsb: "123456".into(),
                account: "1".into()
            }
        );
        assert!(
            parse(r#"{"bsb":"123456","account":"1","iban":"GB82WEST12345698765432"}"#).is_err()
        );
        assert!(parse(r#"{"Bsb":{"bsb":"123456","account":"1"}}"#).is_err());
    }

    #[test]
    fn debug_hides_account() {
        let text = format!("{:?}", sample());
        assert!(!text.contains("00012345"), "{text}");
        assert!(!text.contains("123456\""), "{text}");
    }

    #[test]
    fn error_kinds_and_retry() {
        let cases = [
            (BankError::Timeout { elapsed_ms: 1 }, "timeout", true),
            (
                BankError::Connect {
                    detail: String::new(),
                },
                "connect",
                true,
            ),
            (
                BankError::Tls {
                    detail: String::new(),
                },
                "tls",
                true,
            ),
            (
                BankError::Http5xx {
                    status: 503,
                    detail: String::new(),
                },
                "http_5xx",
                true,
            ),
            (
                BankError::Http4xx {
                    status: 400,
                    detail: String::new(),
                },
                "http_4xx",
                false,
            ),
            (
                BankError::Http4xx {
                    status: 409,
                    detail: String::new(),
                },
                "http_4xx",
                false,
            ),
            (
                BankError::Http4xx {
                    status: 408,
                    detail: String::new(),
                },
                "http_4xx",
                true,
            ),
            (
                BankError::Http4xx {
                    status: 429,
                    detail: String::new(),
                },
                "http_4xx",
                true,
            ),
            (
                BankError::InvalidResponse {
                    detail: String::new(),
                },
                "invalid_response",
                true,
            ),
            (
                BankError::BreakerOpen { retry_after_ms: 5 },
                "breaker_open",
                true,
            ),
        ];
        for (error, kind, retryable) in cases {
            assert_eq!(error.kind(), kind, "{error}");
            assert_eq!(error.is_retryable(), retryable, "{error}");
        }
    }

    #[test]
    fn breaker_counts_only_link_failures() {
        assert!(BankError::Timeout { elapsed_ms: 1 }.counts_against_breaker());
        assert!(!BankError::Http4xx {
            status: 400,
            detail: String::new()
        }
        .counts_against_breaker());
        assert!(!BankError::BreakerOpen { retry_after_ms: 1 }.counts_against_breaker());
    }
}

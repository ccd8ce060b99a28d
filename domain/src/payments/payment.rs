//! The decision to accept a payment request, and the key sent to the bank.

use uuid::Uuid;

use super::allow_list::AllowList;
use super::money::{AmountError, AmountMinor, Currency, CurrencyError};
use crate::events::{PayeeAccount, PaymentSource, PaymentSubmitted};

/// Maximum reference length in characters.
///
/// The reference travels to the bank as the lodgement reference of an ABA detail
/// record, a field of 18 characters, so a longer one would be cut short there.
pub const MAX_REFERENCE_CHARS: usize = 18;

/// Context string of the blake3 key derivation for bank idempotency keys.
const IDEMPOTENCY_CONTEXT: &str = "folio bank idempotency key v1";

/// Per-tenant limits on payments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentPolicy {
    /// Largest amount of one payment, in cents.
    pub max_amount_minor: u64,
    /// Currencies the tenant may pay in.
    pub allowed_currencies: Vec<Currency>,
    /// Time of the decision, microseconds since the Unix epoch; a payee still in its
    /// cooling-off period at this time is not paid.
    pub decided_at_micros: i64,
}

/// A request to pay an allow-listed payee, as received by the API or read from
/// an ABA detail record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRequest {
    /// Id allocated to this payment by the caller.
    pub payment_id: Uuid,
    /// Payee to pay.
    pub payee_id: Uuid,
    /// Amount in cents.
    pub amount_minor: u64,
    /// ISO 4217 currency code.
    pub currency: String,
    /// Reference shown to the payee.
    pub reference: String,
    /// Origin of the request.
    pub source: PaymentSource,
}

/// A payment request broke a business rule.
///
/// Each variant has a stable [`code`](PaymentRejection::code) that the API returns
/// and the `payment.rejected` event stores. Codes are part of the API contract, so
/// rename or reuse none of them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PaymentRejection {
    /// The payee is not on the allow-list (never added, or removed).
    #[error("payee {payee_id} is not on the allow-list; add the payee first")]
    PayeeNotAllowListed {
        /// The payee id.
        payee_id: Uuid,
    },
    /// The payee was approved but its cooling-off period has not ended.
    #[error(
        "payee {payee_id} was approved recently and cannot be paid until its cooling-off \
         period ends at {payable_from_micros} microseconds since the Unix epoch; retry then"
    )]
    PayeeCoolingOff {
        /// The payee id.
        payee_id: Uuid,
        /// End of the cooling-off period.
        payable_from_micros: i64,
    },
    /// No active payee has the account of an ABA detail record.
    #[error("account {account} is not on the allow-list; add its payee first")]
    AccountNotAllowListed {
        /// The account, as `BSB account` with the BSB written `nnn-nnn`.
        account: String,
    },
    /// The amount is zero.
    #[error("amount_minor must be greater than zero, got {amount_minor}")]
    AmountNotPositive {
        /// The amount in cents.
        amount_minor: u64,
    },
    /// The amount is above the per-payment limit.
    #[error(
        "amount_minor {amount_minor} is over the per-payment limit of {limit} cents; split \
             the payment or ask an operator to raise the limit"
    )]
    AmountOverLimit {
        /// The amount in cents.
        amount_minor: u64,
        /// The limit in cents.
        limit: u64,
    },
    /// The currency code is malformed or not one Folio supports.
    #[error("{0}")]
    CurrencyInvalid(CurrencyError),
    /// The currency is supported but not allowed for this tenant.
    #[error("currency {currency} is not allowed for this ledger; use one of {allowed}")]
    CurrencyNotAllowed {
        /// The currency code.
        currency: String,
        /// Allowed codes, comma separated.
        allowed: String,
    },
    /// The currency cannot be paid into the payee's kind of account.
    #[error("currency {currency} cannot be paid to a BSB account; BSB accounts take AUD only")]
    CurrencyAccountMismatch {
        /// The currency code.
        currency: String,
    },
    /// The reference is too long or contains characters an ABA file cannot carry.
    #[error("invalid reference {reference:?}: {reason}")]
    ReferenceInvalid {
        /// The reference as given.
        reference: String,
        /// The problem and the expected form.
        reason: String,
    },
}

impl PaymentRejection {
    /// Returns the stable snake_case code of the rejection.
    pub fn code(&self) -> &'static str {
        match self {
            Self::PayeeNotAllowListed { .. } => "payee_not_allow_listed",
            Self::AccountNotAllowListed { .. } => "account_not_allow_listed",
            Self::PayeeCoolingOff { .. } => "payee_cooling_off",
            Self::AmountNotPositive { .. } => "amount_not_positive",
            Self::AmountOverLimit { .. } => "amount_over_limit",
            Self::CurrencyInvalid(_) => "currency_invalid",
            Self::CurrencyNotAllowed { .. } => "currency_not_allowed",
            Self::CurrencyAccountMismatch { .. } => "currency_account_mismatch",
            Self::ReferenceInvalid { .. } => "reference_invalid",
        }
    }
}

impl AmountError {
    /// Returns a stable snake_case code, in the same family as
    /// [`PaymentRejection::code`].
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotANumber { .. } | Self::NotInteger { .. } => "amount_not_integer",
            Self::Negative { .. } | Self::Zero => "amount_not_positive",
            Self::OutOfRange { .. } | Self::OverLimit { .. } => "amount_over_limit",
            Self::Overflow { .. } => "amount_overflow",
        }
    }
}

/// Decides whether a payment request is accepted, and builds its event.
///
/// The checks run in a fixed order (amount, currency, reference, payee, currency
/// against account kind), so a request that breaks several rules always gets the
/// same rejection.
///
/// # Errors
/// The first [`PaymentRejection`] that applies.
pub fn decide_submission(
    policy: &PaymentPolicy,
    allow_list: &AllowList,
    request: PaymentRequest,
    ledger_id: Uuid,
) -> Result<PaymentSubmitted, PaymentRejection> {
    let amount = check_amount(policy, request.amount_minor)?;
    let currency = check_currency(policy, &request.currency)?;
    check_reference(&request.reference)?;
    let payee = allow_list
        .get(request.payee_id)
        .ok_or(PaymentRejection::PayeeNotAllowListed {
            payee_id: request.payee_id,
        })?;
    if let Some(payable_from_micros) = payee.payable_from_micros {
        if policy.decided_at_micros < payable_from_micros {
            return Err(PaymentRejection::PayeeCoolingOff {
                payee_id: payee.payee_id,
                payable_from_micros,
            });
        }
    }
    if matches!(payee.account, PayeeAccount::Bsb { .. }) && currency != Currency::AUD {
        return Err(PaymentRejection::CurrencyAccountMismatch {
            currency: currency.to_string(),
        });
    }

    assert!(amount.get() > 0, "accepted amount is zero");
    assert!(
        amount.get() <= policy.max_amount_minor,
        "accepted amount is over the limit"
    );
    Ok(PaymentSubmitted {
        payment_id: request.payment_id,
        payee_id: payee.payee_id,
        amount_minor: amount.get(),
        currency: currency.to_string(),
        account: payee.account.clone(),
        payee_name: payee.name.clone(),
        reference: request.reference,
        bank_idempotency_key: bank_idempotency_key(ledger_id, request.payment_id),
        source: request.source,
    })
}

/// Derives the idempotency key sent to the bank for a payment.
///
/// The key is the first 16 bytes, as 32 lower-case hex characters, of blake3 in
/// key-derivation mode with the context "folio bank idempotency key v1" over the
/// ledger id bytes followed by the payment id bytes. It depends on nothing else,
/// so every retry of a payment, from any process, sends the same key.
pub fn bank_idempotency_key(ledger_id: Uuid, payment_id: Uuid) -> String {
    let mut material = [0u8; 32];
    material[..16].copy_from_slice(ledger_id.as_bytes());
    material[16..].copy_from_slice(payment_id.as_bytes());
    let derived = blake3::derive_key(IDEMPOTENCY_CONTEXT, &material);
    hex::encode(&derived[..16])
}

fn check_amount(
    policy: &PaymentPolicy,
    amount_minor: u64,
) -> Result<AmountMinor, PaymentRejection> {
    AmountMinor::new(amount_minor, policy.max_amount_minor).map_err(|err| match err {
        AmountError::OverLimit { value, limit } => PaymentRejection::AmountOverLimit {
            amount_minor: value,
            limit,
        },
        _ => PaymentRejection::AmountNotPositive { amount_minor },
    })
}

fn check_currency(policy: &PaymentPolicy, code: &str) -> Result<Currency, PaymentRejection> {
    let currency = Currency::parse(code).map_err(PaymentRejection::CurrencyInvalid)?;
    if !policy.allowed_currencies.contains(&currency) {
        let allowed: Vec<String> = policy
            .allowed_currencies
            .iter()
            .map(|c| c.to_string())
            .collect();
        let allowed = allowed.join(", ");
        return Err(PaymentRejection::CurrencyNotAllowed {
            currency: code.to_owned(),
            allowed,
        });
    }
    Ok(currency)
}

/// Checks that a reference fits the ABA lodgement reference field unchanged.
///
/// # Errors
/// [`PaymentRejection::ReferenceInvalid`] for more than 18 characters, anything
/// outside printable ASCII (which includes control characters), or leading or
/// trailing spaces, which the blank-filled ABA field would not keep.
pub fn check_reference(reference: &str) -> Result<(), PaymentRejection> {
    let invalid = |reason: String| PaymentRejection::ReferenceInvalid {
        reference: reference.to_owned(),
        reason,
    };
    let chars = reference.chars().count();
    if chars > MAX_REFERENCE_CHARS {
        let max = MAX_REFERENCE_CHARS;
        return Err(invalid(format!("{chars} characters, the maximum is {max}")));
    }
    if let Some(c) = reference.chars().find(|c| !(' '..='~').contains(c)) {
        return Err(invalid(format!(
            "character {c:?} is not printable ASCII; use letters, digits, spaces and punctuation"
        )));
    }
    if reference.starts_with(' ') || reference.ends_with(' ') {
        return Err(invalid(
            "leading or trailing spaces are not kept; remove them".to_owned(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{DomainEvent, PayeeAccount};

    const LEDGER: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001);
    const PAYEE: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0002);
    const PAYMENT: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0003);
    const IBAN_PAYEE: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0004);

    fn policy() -> PaymentPolicy {
        let allowed = vec![Currency::AUD, Currency::parse("EUR").unwrap()];
        PaymentPolicy {
            max_amount_minor: 500_000,
            allowed_currencies: allowed,
            decided_at_micros: 1_000,
        }
    }

    fn allow_list() -> AllowList {
        let mut list = AllowList::new();
        let bsb = PayeeAccount::Bsb {
            bsb: "012-003".into(),
            account: "000123".into(),
        };
        let iban = PayeeAccount::Iban {
            iban: "DE89370400440532013000".into(),
        };
        for (id, name, account) in [(PAYEE, "Acme Pty Ltd", bsb), (IBAN_PAYEE, "Müller", iban)] {
            let added = list.propose_add(id, name, &account).unwrap();
            list.apply(&DomainEvent::PayeeAdded(added)).unwrap();
        }
        list
    }

    fn request() -> PaymentRequest {
        PaymentRequest {
            payment_id: PAYMENT,
            payee_id: PAYEE,
            amount_minor: 12_345,
            currency: "AUD".into(),
            reference: "INV-2026-0042".into(),
            source: PaymentSource::Api,
        }
    }

    fn decide(request: PaymentRequest) -> Result<PaymentSubmitted, PaymentRejection> {
        decide_submission(&policy(), &allow_list(), request, LEDGER)
    }

    #[test]
    fn accepted_payment_event() {
        let event = decide(request()).unwrap();
        assert_eq!(event.payment_id, PAYMENT);
        assert_eq!(event.payee_id, PAYEE);
        assert_eq!(event.amount_minor, 12_345);
        assert_eq!(event.currency, "AUD");
        assert_eq!(
            event.account,
            PayeeAccount::Bsb {
                bsb: "012003".into(),
                account: "000123".into()
            }
        );
        assert_eq!(event.payee_name, "Acme Pty Ltd");
        assert_eq!(event.reference, "INV-2026-0042");
        assert_eq!(
            event.bank_idempotency_key,
            bank_idempotency_key(LEDGER, PAYMENT)
        );
        assert_eq!(event.source, PaymentSource::Api);
    }

    #[test]
    fn payee_in_cooling_off_rejected_until_it_ends() {
        let mut list = allow_list();
        let approved = crate::operator_events::ChangeApproved {
            proposal_id: Uuid::from_u128(1),
            revision: 1,
            content_hash: [0; 32],
            payee_id: Some(PAYEE),
            payable_from_micros: 5_000,
            auth: crate::operator_events::AuthContext {
                operator_id: Uuid::from_u128(2),
                session_id: Uuid::from_u128(3),
                factor: "totp".into(),
                factor_verified_at_micros: 900,
            },
        };
        list.apply(&DomainEvent::ChangeApproved(approved)).unwrap();

        let early = decide_submission(&policy(), &list, request(), LEDGER).unwrap_err();
        assert_eq!(early.code(), "payee_cooling_off");
        let later = PaymentPolicy {
            decided_at_micros: 5_000,
            ..policy()
        };
        assert!(decide_submission(&later, &list, request(), LEDGER).is_ok());
    }

    #[test]
    fn unknown_payee_rejected() {
        let other = Uuid::from_u128(99);
        let err = decide(PaymentRequest {
            payee_id: other,
            ..request()
        })
        .unwrap_err();
        assert_eq!(
            err,
            PaymentRejection::PayeeNotAllowListed { payee_id: other }
        );
        assert_eq!(err.code(), "payee_not_allow_listed");
    }

    #[test]
    fn removed_payee_rejected() {
        let mut list = allow_list();
        let removed = list.remove(PAYEE, "closed").unwrap();
        list.apply(&DomainEvent::PayeeRemoved(removed)).unwrap();
        let err = decide_submission(&policy(), &list, request(), LEDGER).unwrap_err();
        assert_eq!(err.code(), "payee_not_allow_listed");
    }

    #[test]
    fn amount_limits() {
        let err = decide(PaymentRequest {
            amount_minor: 0,
            ..request()
        })
        .unwrap_err();
        assert_eq!(err.code(), "amount_not_positive");
        let err = decide(PaymentRequest {
            amount_minor: 500_001,
            ..request()
        })
        .unwrap_err();
        assert_eq!(
            err,
            PaymentRejection::AmountOverLimit {
                amount_minor: 500_001,
                limit: 500_000
            }
        );
        assert_eq!(err.code(), "amount_over_limit");
        assert!(err.to_string().contains("500001"), "{err}");
        assert!(decide(PaymentRequest {
            amount_minor: 500_000,
            ..request()
        })
        .is_ok());
        assert!(decide(PaymentRequest {
            amount_minor: 1,
            ..request()
        })
        .is_ok());
    }

    #[test]
    fn currency_rules() {
        let err = decide(PaymentRequest {
            currency: "aud".into(),
            ..request()
        })
        .unwrap_err();
        assert_eq!(err.code(), "currency_invalid");
        let err = decide(PaymentRequest {
            currency: "USD".into(),
            ..request()
        })
        .unwrap_err();
        assert_eq!(err.code(), "currency_not_allowed");
        assert!(err.to_string().contains("AUD, EUR"), "{err}");
        let err = decide(PaymentRequest {
            currency: "EUR".into(),
            ..request()
        })
        .unwrap_err();
        assert_eq!(err.code(), "currency_account_mismatch");
        let to_iban = PaymentRequest {
            currency: "EUR".into(),
            payee_id: IBAN_PAYEE,
            ..request()
        };
        assert_eq!(decide(to_iban).map(|e| e.currency), Ok("EUR".to_owned()));
    }

    #[test]
    fn reference_rules() {
        let cases = [
            ("123456789012345678", true),
            ("", true),
            ("Inv #42/a-b", true),
            ("1234567890123456789", false),
            ("tab\there", false),
            ("line\nbreak", false),
            ("café", false),
            ("\u{202E}evil", false),
            (" padded", false),
            ("padded ", false),
        ];
        for (reference, ok) in cases {
            let result = decide(PaymentRequest {
                reference: reference.into(),
                ..request()
            });
            assert_eq!(result.is_ok(), ok, "{reference:?}: {result:?}");
            if let Err(err) = result {
                assert_eq!(err.code(), "reference_invalid");
            }
        }
    }

    #[test]
    fn rejection_order_is_fixed() {
        // Breaks the amount, currency, reference and payee rules at once.
        let bad = PaymentRequest {
            payee_id: Uuid::from_u128(99),
            amount_minor: 0,
            currency: "XXX".into(),
            reference: "\n".into(),
            ..request()
        };
        assert_eq!(decide(bad).unwrap_err().code(), "amount_not_positive");
    }

    #[test]
    fn idempotency_key_is_stable() {
        let key = bank_idempotency_key(LEDGER, PAYMENT);
        assert_eq!(key.len(), 32);
        assert!(key
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(key, bank_idempotency_key(LEDGER, PAYMENT));
        assert_ne!(key, bank_idempotency_key(PAYMENT, LEDGER));
        assert_ne!(key, bank_idempotency_key(LEDGER, PAYEE));

        // Recomputed here from the documented definition.
        let mut material = LEDGER.as_bytes().to_vec();
        material.extend_from_slice(PAYMENT.as_bytes());
        let full = blake3::derive_key("folio bank idempotency key v1", &material);
        assert_eq!(key, hex::encode(&full[..16]));
    }

    #[test]
    fn amount_error_codes() {
        assert_eq!(AmountError::Zero.code(), "amount_not_positive");
        assert_eq!(
            AmountError::OverLimit { value: 2, limit: 1 }.code(),
            "amount_over_limit"
        );
        assert_eq!(
            AmountError::NotInteger {
                found: "1.5".into()
            }
            .code(),
            "amount_not_integer"
        );
    }
}

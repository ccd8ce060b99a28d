//! Payments rules: amounts and currencies, BSB and IBAN account numbers, payee
//! names, the payee allow-list, and the decision to accept a payment.
//!
//! Everything here is a pure function of its inputs. Ids come from the caller,
//! so the same inputs always produce the same events.

mod allow_list;
mod bsb;
mod iban;
mod money;
mod names;
mod payment;

pub use allow_list::{
    canonical_account, AllowList, AllowListError, Payee, ReplayError, MAX_NAME_CHARS,
    MAX_REASON_CHARS,
};
pub use bsb::{AccountNumber, Bsb, BsbError};
pub use iban::{Iban, IbanError};
pub use money::{
    checked_sum_minor, sum_minor, AmountError, AmountMinor, Currency, CurrencyError,
    SUPPORTED_CURRENCIES,
};
pub use names::{lookalike_key, normalize_name};
pub use payment::{
    bank_idempotency_key, check_reference, decide_submission, PaymentPolicy, PaymentRejection,
    PaymentRequest, MAX_REFERENCE_CHARS,
};

//! Personal fields sealed in events, and their erasure.
//!
//! From schema version 2, `payee.added` carries the payee's name, normalised name and
//! account as [`SealedField`]s under a data key of the payee (the subject
//! `payee:<payee id>`). The hash chain and signatures cover the sealed bytes, so the
//! verifier needs no key. A reader with the KMS opens them into the plain
//! [`PayeeAdded`]; a reader without it, or after the subject's keys were destroyed
//! (`subject.erased`), sees [`PayeeAccount::Unavailable`] and a marker name.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::envelope::{FieldContext, SealedField};
use crate::events::{EventPayload, PayeeAccount, PayeeAdded, PaymentSource, PaymentSubmitted};
use crate::operator_events::{AuthContext, ChangeProposed};
use crate::operators::AllowListChange;

/// Field names in the associated data of a sealed payee.
pub const FIELD_NAME: &str = "name";
/// See [`FIELD_NAME`].
pub const FIELD_NORMALIZED_NAME: &str = "normalized_name";
/// See [`FIELD_NAME`].
pub const FIELD_ACCOUNT: &str = "account";

/// Name shown for a payee whose fields were erased.
pub const ERASED: &str = "[erased]";
/// Name shown for a payee whose fields cannot be opened here (no KMS access).
pub const SEALED: &str = "[encrypted]";

/// Returns the subject of a payee's personal fields.
pub fn payee_subject(payee_id: Uuid) -> String {
    format!("payee:{payee_id}")
}

/// `payee.added` schema version 2: the personal fields sealed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayeeAddedSealed {
    /// Payee id.
    pub payee_id: Uuid,
    /// UTF-8 name as given.
    pub name: SealedField,
    /// UTF-8 normalised name.
    pub normalized_name: SealedField,
    /// The account, postcard-encoded [`PayeeAccount`].
    pub account: SealedField,
    /// Existing payees whose names look like this one.
    pub lookalike_of: Vec<Uuid>,
}

impl EventPayload for PayeeAddedSealed {
    const EVENT_TYPE: &'static str = "payee.added";
    const SCHEMA_VERSION: u16 = 2;
}

/// The reason a sealed payee reads without its fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unreadable {
    /// The subject's keys were destroyed.
    Erased,
    /// This reader has no access to the keys (an auditor's offline tools).
    Sealed,
}

impl PayeeAddedSealed {
    /// Returns the place of one of its fields, for the associated data.
    pub fn context<'a>(
        ledger_id: Uuid,
        stream: &'a str,
        event_id: Uuid,
        field: &'a str,
    ) -> FieldContext<'a> {
        FieldContext {
            ledger_id,
            stream,
            event_id,
            field,
        }
    }

    /// Rebuilds the plain event from the opened fields.
    ///
    /// # Errors
    /// A name that is not UTF-8 or an account that does not decode.
    pub fn opened(
        &self,
        name: &[u8],
        normalized_name: &[u8],
        account: &[u8],
    ) -> Result<PayeeAdded, String> {
        let text = |bytes: &[u8], field: &str| {
            String::from_utf8(bytes.to_vec()).map_err(|_| format!("sealed {field} is not UTF-8"))
        };
        let account: PayeeAccount = postcard::from_bytes(account)
            .map_err(|error| format!("sealed account does not decode: {error}"))?;
        Ok(PayeeAdded {
            payee_id: self.payee_id,
            name: text(name, FIELD_NAME)?,
            normalized_name: text(normalized_name, FIELD_NORMALIZED_NAME)?,
            account,
            lookalike_of: self.lookalike_of.clone(),
        })
    }

    /// Builds the event as a reader without the fields gets it.
    pub fn unreadable(&self, why: Unreadable) -> PayeeAdded {
        let marker = match why {
            Unreadable::Erased => ERASED,
            Unreadable::Sealed => SEALED,
        };
        PayeeAdded {
            payee_id: self.payee_id,
            name: marker.to_owned(),
            normalized_name: marker.to_owned(),
            account: PayeeAccount::Unavailable {
                why: marker.to_owned(),
                payee_id: self.payee_id,
            },
            lookalike_of: self.lookalike_of.clone(),
        }
    }
}

/// Field name of a sealed proposal's change.
pub const FIELD_CHANGE: &str = "change";

/// `allowlist.change_proposed` schema version 2: a change that adds a payee, with the
/// change (name and account) sealed under the data key of the payee it adds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeProposedSealed {
    /// Proposal id.
    pub proposal_id: Uuid,
    /// Revision, from 1.
    pub revision: u32,
    /// Payee changed or added (`Add`: the new payee; `Change`: the replaced one).
    pub payee_id: Uuid,
    /// The replacement's id for a `Change`, `None` for an `Add`.
    pub new_payee_id: Option<Uuid>,
    /// The postcard-encoded [`AllowListChange`].
    pub change: SealedField,
    /// Hash an approval must name (see `operators::content_hash`).
    pub content_hash: [u8; 32],
    /// When the proposal expires, microseconds since the Unix epoch.
    pub expires_at_micros: i64,
    /// Proposer, with step-up.
    pub auth: AuthContext,
}

impl EventPayload for ChangeProposedSealed {
    const EVENT_TYPE: &'static str = "allowlist.change_proposed";
    const SCHEMA_VERSION: u16 = 2;
}

impl ChangeProposedSealed {
    /// Returns the payee whose data key seals the change: the one the change adds.
    pub fn subject_payee(&self) -> Uuid {
        self.new_payee_id.unwrap_or(self.payee_id)
    }

    /// Rebuilds the plain event from the opened change.
    ///
    /// # Errors
    /// A change that does not decode.
    pub fn opened(&self, change: &[u8]) -> Result<ChangeProposed, String> {
        let change: AllowListChange = postcard::from_bytes(change)
            .map_err(|error| format!("sealed change does not decode: {error}"))?;
        Ok(self.with_change(change))
    }

    /// Builds the event as a reader without the change's personal fields gets it.
    pub fn unreadable(&self, why: Unreadable) -> ChangeProposed {
        let marker = match why {
            Unreadable::Erased => ERASED,
            Unreadable::Sealed => SEALED,
        };
        let account = PayeeAccount::Unavailable {
            why: marker.to_owned(),
            payee_id: self.subject_payee(),
        };
        let change = match self.new_payee_id {
            Some(new_payee_id) => AllowListChange::Change {
                payee_id: self.payee_id,
                new_payee_id,
                name: marker.to_owned(),
                account,
            },
            None => AllowListChange::Add {
                payee_id: self.payee_id,
                name: marker.to_owned(),
                account,
            },
        };
        self.with_change(change)
    }

    fn with_change(&self, change: AllowListChange) -> ChangeProposed {
        ChangeProposed {
            proposal_id: self.proposal_id,
            revision: self.revision,
            change,
            content_hash: self.content_hash,
            expires_at_micros: self.expires_at_micros,
            auth: self.auth.clone(),
        }
    }
}

/// Field name of a sealed payment's payee name.
pub const FIELD_PAYEE_NAME: &str = "payee_name";

/// `payment.submitted` schema version 2: the payee's account and name sealed under the
/// payee's data key, so erasing the payee reaches its payments too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentSubmittedSealed {
    /// Payment id.
    pub payment_id: Uuid,
    /// Allow-listed payee paid.
    pub payee_id: Uuid,
    /// Amount in minor units (cents), greater than zero.
    pub amount_minor: u64,
    /// ISO 4217 currency code.
    pub currency: String,
    /// The postcard-encoded [`PayeeAccount`] at submission time.
    pub account: SealedField,
    /// UTF-8 payee name sent to the bank.
    pub payee_name: SealedField,
    /// Reference text shown to the payee.
    pub reference: String,
    /// Key sent to the bank, derived from the ledger and payment ids.
    pub bank_idempotency_key: String,
    /// Origin.
    pub source: PaymentSource,
}

impl EventPayload for PaymentSubmittedSealed {
    const EVENT_TYPE: &'static str = "payment.submitted";
    const SCHEMA_VERSION: u16 = 2;
}

impl PaymentSubmittedSealed {
    /// Builds the sealed payload from the plain one and its two sealed fields.
    pub fn from_plain(
        plain: &PaymentSubmitted,
        account: SealedField,
        payee_name: SealedField,
    ) -> Self {
        PaymentSubmittedSealed {
            payment_id: plain.payment_id,
            payee_id: plain.payee_id,
            amount_minor: plain.amount_minor,
            currency: plain.currency.clone(),
            account,
            payee_name,
            reference: plain.reference.clone(),
            bank_idempotency_key: plain.bank_idempotency_key.clone(),
            source: plain.source.clone(),
        }
    }

    /// Rebuilds the plain payload from the opened account and name.
    ///
    /// # Errors
    /// An account that does not decode or a name that is not UTF-8.
    pub fn opened(&self, account: &[u8], payee_name: &[u8]) -> Result<PaymentSubmitted, String> {
        let account: PayeeAccount = postcard::from_bytes(account)
            .map_err(|error| format!("sealed account does not decode: {error}"))?;
        let payee_name = String::from_utf8(payee_name.to_vec())
            .map_err(|_| "sealed payee name is not UTF-8".to_owned())?;
        Ok(self.with_fields(account, payee_name))
    }

    /// Builds the plain payload as a reader without the fields sees it.
    pub fn unreadable(&self, why: Unreadable) -> PaymentSubmitted {
        let marker = match why {
            Unreadable::Erased => ERASED,
            Unreadable::Sealed => SEALED,
        };
        let account = PayeeAccount::Unavailable {
            why: marker.to_owned(),
            payee_id: self.payee_id,
        };
        self.with_fields(account, marker.to_owned())
    }

    fn with_fields(&self, account: PayeeAccount, payee_name: String) -> PaymentSubmitted {
        PaymentSubmitted {
            payment_id: self.payment_id,
            payee_id: self.payee_id,
            amount_minor: self.amount_minor,
            currency: self.currency.clone(),
            account,
            payee_name,
            reference: self.reference.clone(),
            bank_idempotency_key: self.bank_idempotency_key.clone(),
            source: self.source.clone(),
        }
    }
}

/// Encodes an account as a sealed field's plaintext (postcard).
pub fn account_plaintext(account: &PayeeAccount) -> Vec<u8> {
    postcard::to_allocvec(account).expect("postcard encoding of an account")
}

/// Encodes a change as a sealed field's plaintext (postcard).
pub fn change_plaintext(change: &AllowListChange) -> Vec<u8> {
    postcard::to_allocvec(change).expect("postcard encoding of a change")
}

/// Returns the ids a sealed proposal keeps in the clear, or `None` for a change without personal
/// fields (a removal), which is not sealed.
pub fn sealed_change_ids(change: &AllowListChange) -> Option<(Uuid, Option<Uuid>)> {
    match change {
        AllowListChange::Add { payee_id, .. } => Some((*payee_id, None)),
        AllowListChange::Change {
            payee_id,
            new_payee_id,
            ..
        } => Some((*payee_id, Some(*new_payee_id))),
        AllowListChange::Remove { .. } | AllowListChange::Erase { .. } => None,
    }
}

/// Returns the plaintext bytes of a payee's sealed fields, in field order.
pub fn payee_plaintexts(added: &PayeeAdded) -> [(&'static str, Vec<u8>); 3] {
    [
        (FIELD_NAME, added.name.as_bytes().to_vec()),
        (
            FIELD_NORMALIZED_NAME,
            added.normalized_name.as_bytes().to_vec(),
        ),
        (
            FIELD_ACCOUNT,
            postcard::to_allocvec(&added.account).expect("postcard encoding of an account"),
        ),
    ]
}

/// A subject's data keys were destroyed: its sealed fields read as erased from here on.
/// The sealed bytes stay in the chain, so verification is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectErased {
    /// The subject, such as `payee:<id>`.
    pub subject: String,
    /// Data keys destroyed.
    pub data_key_ids: Vec<Uuid>,
    /// Why: `retention:<rule>` for a retention rule, or the approved proposal's reason.
    pub policy: String,
    /// The operator who approved, with step-up; `None` when a retention rule applied.
    pub auth: Option<AuthContext>,
}

impl EventPayload for SubjectErased {
    const EVENT_TYPE: &'static str = "subject.erased";
    const SCHEMA_VERSION: u16 = 1;
}

/// A retention rule was applied; the `subject.erased` events it caused precede it in the
/// same append. Recorded even when nothing was due, so each run leaves a trace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionApplied {
    /// The rule, as configured (`erase_removed_payees_after_days = 2555`).
    pub rule: String,
    /// Payees removed before this time were due, microseconds since the Unix epoch.
    pub cutoff_micros: i64,
    /// Subjects erased by this run.
    pub erased_subjects: Vec<String>,
}

impl EventPayload for RetentionApplied {
    const EVENT_TYPE: &'static str = "retention.applied";
    const SCHEMA_VERSION: u16 = 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealed() -> PayeeAddedSealed {
        let field = SealedField {
            alg: 1,
            data_key_id: Uuid::from_u128(3),
            nonce: [0; 12],
            ciphertext: vec![0; 16],
        };
        PayeeAddedSealed {
            payee_id: Uuid::from_u128(9),
            name: field.clone(),
            normalized_name: field.clone(),
            account: field,
            lookalike_of: vec![Uuid::from_u128(4)],
        }
    }

    #[test]
    fn opened_fields_rebuild_the_plain_event() {
        let plain = PayeeAdded {
            payee_id: Uuid::from_u128(9),
            name: "Jane Citizen".into(),
            normalized_name: "jane citizen".into(),
            account: PayeeAccount::Bsb {
                bsb: "062000".into(),
                account: "12345678".into(),
            },
            lookalike_of: vec![Uuid::from_u128(4)],
        };
        let [(_, name), (_, normalized), (_, account)] = payee_plaintexts(&plain);
        assert_eq!(
            sealed().opened(&name, &normalized, &account).unwrap(),
            plain
        );
        assert!(sealed().opened(&[0xff], &normalized, &account).is_err());
    }

    #[test]
    fn erased_and_sealed_markers() {
        let erased = sealed().unreadable(Unreadable::Erased);
        assert_eq!(erased.name, ERASED);
        assert_eq!(
            erased.account,
            PayeeAccount::Unavailable {
                why: ERASED.to_owned(),
                payee_id: Uuid::from_u128(9),
            }
        );
        assert_eq!(sealed().unreadable(Unreadable::Sealed).name, SEALED);
    }

    #[test]
    fn version_two_round_trips_beside_version_one() {
        let bytes = sealed().encode();
        assert_eq!(PayeeAddedSealed::decode(&bytes).unwrap(), sealed());
        let decoded = crate::events::DomainEvent::decode("payee.added", 2, &bytes).unwrap();
        assert_eq!(
            decoded,
            crate::events::DomainEvent::PayeeAddedSealed(sealed())
        );
        assert!(crate::events::DomainEvent::decode("payee.added", 1, &bytes).is_err());
    }
}

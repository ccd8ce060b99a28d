//! Personal fields of payees: sealed into new `payee.added` events (schema version 2)
//! under a data key of the payee, opened for the allow-list, read models and API, and
//! erased by destroying the payee's keys.
//!
//! Stored idempotent responses are sealed the same way by [`crate::sealed_replies`].

use std::sync::Arc;

use std::collections::BTreeMap;

use domain::events::{DomainEvent, EventPayload, PayeeAdded, PaymentSubmitted};
use domain::operator_events::ChangeProposed;
use domain::personal::{
    account_plaintext, payee_plaintexts, payee_subject, sealed_change_ids, ChangeProposedSealed,
    PayeeAddedSealed, PaymentSubmittedSealed, Unreadable, FIELD_ACCOUNT, FIELD_CHANGE,
    FIELD_PAYEE_NAME,
};
use domain::record::{Actor, EventDraft, SealedEvent};
use eventstore_adapter::StreamWrite;

use uuid::Uuid;

use crate::kms::data_keys::{DataKeyError, DataKeys, Opened};

/// Seals and opens payee fields through the data keys.
pub struct PersonalFields {
    keys: Arc<DataKeys>,
    seal_new: bool,
}

impl PersonalFields {
    /// `seal_new` chooses whether new payee events are sealed (`[kms] seal_payee_fields`).
    pub fn new(keys: Arc<DataKeys>, seal_new: bool) -> Self {
        PersonalFields { keys, seal_new }
    }

    /// Returns whether new payee fields are sealed (`[kms] seal_payee_fields`).
    pub fn seals_new(&self) -> bool {
        self.seal_new
    }

    /// The data keys.
    pub fn keys(&self) -> &Arc<DataKeys> {
        &self.keys
    }

    /// The draft of a payee event on `stream`: a sealed `payee.added` (version 2) for an
    /// added payee when sealing is on, else the plain payload.
    ///
    /// # Errors
    /// KMS or key-store failures.
    pub async fn draft(
        &self,
        ledger_id: Uuid,
        stream: &str,
        event: &DomainEvent,
        actor: &Actor,
        now_micros: i64,
    ) -> Result<EventDraft, DataKeyError> {
        let (event_type, schema_version, payload, event_id) = match event {
            DomainEvent::PayeeAdded(added) if self.seal_new => {
                let event_id = Uuid::now_v7();
                let sealed = self
                    .seal(ledger_id, stream, event_id, added, now_micros)
                    .await?;
                let (t, v, p) = DomainEvent::encode(&sealed);
                (t, v, p, event_id)
            }
            DomainEvent::PayeeAdded(added) => with_id(DomainEvent::encode(added)),
            DomainEvent::PayeeRemoved(removed) => with_id(DomainEvent::encode(removed)),
            // Callers pass payee events only.
            other => unreachable!("not a payee event: {other:?}"),
        };
        Ok(EventDraft {
            event_id,
            event_type: event_type.to_owned(),
            schema_version,
            actor: actor.clone(),
            correlation_id: Uuid::now_v7(),
            causation_id: None,
            payload,
        })
    }

    /// The draft of a proposal on `stream`: sealed (version 2) when sealing is on and the
    /// change carries personal fields (an add or a change), else plain.
    ///
    /// # Errors
    /// KMS or key-store failures.
    pub async fn proposal_draft(
        &self,
        ledger_id: Uuid,
        stream: &str,
        proposed: &ChangeProposed,
        actor: &Actor,
        now_micros: i64,
    ) -> Result<EventDraft, DataKeyError> {
        let event_id = Uuid::now_v7();
        let ids = sealed_change_ids(&proposed.change).filter(|_| self.seal_new);
        let (event_type, schema_version, payload) = match ids {
            Some((payee_id, new_payee_id)) => {
                let subject = payee_subject(new_payee_id.unwrap_or(payee_id));
                let context = PayeeAddedSealed::context(ledger_id, stream, event_id, FIELD_CHANGE);
                let plaintext = domain::personal::change_plaintext(&proposed.change);
                let change = self
                    .keys
                    .seal_field(&subject, &context, &plaintext, now_micros)
                    .await?;
                DomainEvent::encode(&ChangeProposedSealed {
                    proposal_id: proposed.proposal_id,
                    revision: proposed.revision,
                    payee_id,
                    new_payee_id,
                    change,
                    content_hash: proposed.content_hash,
                    expires_at_micros: proposed.expires_at_micros,
                    auth: proposed.auth.clone(),
                })
            }
            None => DomainEvent::encode(proposed),
        };
        Ok(EventDraft {
            event_id,
            event_type: event_type.to_owned(),
            schema_version,
            actor: actor.clone(),
            correlation_id: Uuid::now_v7(),
            causation_id: None,
            payload,
        })
    }

    /// Seals the account and payee name of every `payment.submitted` draft in `writes`
    /// (schema 1 to schema 2) under the payee's data key, when sealing is on. The messages
    /// of one payee's payments are reserved on a key together.
    ///
    /// # Errors
    /// KMS or key-store failures, or a draft that does not decode.
    pub async fn seal_payments(
        &self,
        ledger_id: Uuid,
        writes: &mut [StreamWrite],
        now_micros: i64,
    ) -> Result<(), DataKeyError> {
        if !self.seal_new {
            return Ok(());
        }
        let mut by_payee: BTreeMap<Uuid, Vec<(usize, usize, PaymentSubmitted)>> = BTreeMap::new();
        for (w, write) in writes.iter().enumerate() {
            for (e, draft) in write.events.iter().enumerate() {
                let is_plain_payment = draft.event_type == PaymentSubmitted::EVENT_TYPE
                    && draft.schema_version == PaymentSubmitted::SCHEMA_VERSION;
                if is_plain_payment {
                    let plain = PaymentSubmitted::decode(&draft.payload).map_err(|error| {
                        DataKeyError::Corrupt(draft.event_id, error.to_string())
                    })?;
                    by_payee
                        .entry(plain.payee_id)
                        .or_default()
                        .push((w, e, plain));
                }
            }
        }
        for (payee_id, payments) in by_payee {
            let sealed =
                self.seal_payee_payments(ledger_id, payee_id, writes, &payments, now_micros);
            let mut sealed = sealed.await?.into_iter();
            for (w, e, plain) in payments {
                // seal_payee_payments returns two fields per payment, in order.
                let account = sealed.next().expect("a sealed account per payment");
                let name = sealed.next().expect("a sealed name per payment");
                let payload = PaymentSubmittedSealed::from_plain(&plain, account, name);
                let draft = &mut writes[w].events[e];
                draft.schema_version = PaymentSubmittedSealed::SCHEMA_VERSION;
                draft.payload = payload.encode();
            }
        }
        Ok(())
    }

    async fn seal_payee_payments(
        &self,
        ledger_id: Uuid,
        payee_id: Uuid,
        writes: &[StreamWrite],
        payments: &[(usize, usize, PaymentSubmitted)],
        now_micros: i64,
    ) -> Result<Vec<domain::envelope::SealedField>, DataKeyError> {
        let plaintexts: Vec<(Vec<u8>, Vec<u8>)> = payments
            .iter()
            .map(|(_, _, plain)| {
                (
                    account_plaintext(&plain.account),
                    plain.payee_name.clone().into_bytes(),
                )
            })
            .collect();
        let mut fields = Vec::with_capacity(payments.len() * 2);
        for ((w, e, _), (account, name)) in payments.iter().zip(&plaintexts) {
            let stream = writes[*w].stream_id.as_str();
            let event_id = writes[*w].events[*e].event_id;
            let place = |field| PayeeAddedSealed::context(ledger_id, stream, event_id, field);
            fields.push((place(FIELD_ACCOUNT), account.as_slice()));
            fields.push((place(FIELD_PAYEE_NAME), name.as_slice()));
        }
        let subject = payee_subject(payee_id);
        self.keys.seal_fields(&subject, &fields, now_micros).await
    }

    async fn seal(
        &self,
        ledger_id: Uuid,
        stream: &str,
        event_id: Uuid,
        added: &PayeeAdded,
        now_micros: i64,
    ) -> Result<PayeeAddedSealed, DataKeyError> {
        let subject = payee_subject(added.payee_id);
        let mut sealed = Vec::with_capacity(3);
        for (field, plaintext) in payee_plaintexts(added) {
            let context = PayeeAddedSealed::context(ledger_id, stream, event_id, field);
            sealed.push(
                self.keys
                    .seal_field(&subject, &context, &plaintext, now_micros)
                    .await?,
            );
        }
        let [name, normalized_name, account] =
            <[_; 3]>::try_from(sealed).unwrap_or_else(|_| unreachable!("three payee fields"));
        Ok(PayeeAddedSealed {
            payee_id: added.payee_id,
            name,
            normalized_name,
            account,
            lookalike_of: added.lookalike_of.clone(),
        })
    }

    /// The event with sealed fields opened; `[erased]` fields when the payee's keys were
    /// destroyed. Other events pass unchanged.
    ///
    /// # Errors
    /// KMS or key-store failures, or a field that fails authentication.
    pub async fn open(
        &self,
        ledger_id: Uuid,
        stream: &str,
        event_id: Uuid,
        decoded: DomainEvent,
    ) -> Result<DomainEvent, DataKeyError> {
        let sealed = match decoded {
            DomainEvent::PayeeAddedSealed(sealed) => sealed,
            DomainEvent::PaymentSubmittedSealed(sealed) => {
                return self
                    .open_payment(ledger_id, stream, event_id, &sealed)
                    .await;
            }
            DomainEvent::ChangeProposedSealed(sealed) => {
                let context = PayeeAddedSealed::context(ledger_id, stream, event_id, FIELD_CHANGE);
                return Ok(DomainEvent::ChangeProposed(
                    match self.keys.open_field(&context, &sealed.change).await? {
                        Opened::Plain(bytes) => sealed
                            .opened(&bytes)
                            .map_err(|reason| DataKeyError::Corrupt(sealed.proposal_id, reason))?,
                        Opened::Erased => sealed.unreadable(Unreadable::Erased),
                    },
                ));
            }
            other => return Ok(other),
        };
        let fields = [
            (domain::personal::FIELD_NAME, &sealed.name),
            (
                domain::personal::FIELD_NORMALIZED_NAME,
                &sealed.normalized_name,
            ),
            (domain::personal::FIELD_ACCOUNT, &sealed.account),
        ];
        let mut plain = Vec::with_capacity(3);
        for (field, value) in fields {
            let context = PayeeAddedSealed::context(ledger_id, stream, event_id, field);
            match self.keys.open_field(&context, value).await? {
                Opened::Plain(bytes) => plain.push(bytes),
                Opened::Erased => {
                    let erased = sealed.unreadable(Unreadable::Erased);
                    return Ok(DomainEvent::PayeeAdded(erased));
                }
            }
        }
        let added = sealed
            .opened(&plain[0], &plain[1], &plain[2])
            .map_err(|reason| DataKeyError::Corrupt(sealed.payee_id, reason))?;
        Ok(DomainEvent::PayeeAdded(added))
    }
}

impl PersonalFields {
    async fn open_payment(
        &self,
        ledger_id: Uuid,
        stream: &str,
        event_id: Uuid,
        sealed: &PaymentSubmittedSealed,
    ) -> Result<DomainEvent, DataKeyError> {
        let place = |field| PayeeAddedSealed::context(ledger_id, stream, event_id, field);
        let account = self
            .keys
            .open_field(&place(FIELD_ACCOUNT), &sealed.account)
            .await?;
        let name = self
            .keys
            .open_field(&place(FIELD_PAYEE_NAME), &sealed.payee_name)
            .await?;
        let plain = match (account, name) {
            (Opened::Plain(account), Opened::Plain(name)) => sealed
                .opened(&account, &name)
                .map_err(|reason| DataKeyError::Corrupt(sealed.payment_id, reason))?,
            _ => sealed.unreadable(Unreadable::Erased),
        };
        Ok(DomainEvent::PaymentSubmitted(plain))
    }
}

fn with_id((t, v, p): (&'static str, u16, Vec<u8>)) -> (&'static str, u16, Vec<u8>, Uuid) {
    (t, v, p, Uuid::now_v7())
}

#[async_trait::async_trait]
impl projections::EventOpener for PersonalFields {
    async fn open(
        &self,
        ledger_id: Uuid,
        event: &SealedEvent,
        decoded: DomainEvent,
    ) -> Result<DomainEvent, String> {
        PersonalFields::open(self, ledger_id, &event.stream_id, event.event_id, decoded)
            .await
            .map_err(|error| error.to_string())
    }
}

/// Whether a stored event has sealed personal fields.
pub fn is_sealed_payee(event: &SealedEvent) -> bool {
    (event.event_type == PayeeAddedSealed::EVENT_TYPE
        && event.schema_version == PayeeAddedSealed::SCHEMA_VERSION)
        || (event.event_type == ChangeProposedSealed::EVENT_TYPE
            && event.schema_version == ChangeProposedSealed::SCHEMA_VERSION)
        || (event.event_type == PaymentSubmittedSealed::EVENT_TYPE
            && event.schema_version == PaymentSubmittedSealed::SCHEMA_VERSION)
}

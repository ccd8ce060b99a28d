//! Personal fields of payees: sealed into new `payee.added` events (schema version 2)
//! under a data key of the payee, opened for the allow-list, read models and API, and
//! erased by destroying the payee's keys.

use std::sync::Arc;

use domain::events::{DomainEvent, EventPayload, PayeeAdded};
use domain::operator_events::ChangeProposed;
use domain::personal::{
    payee_plaintexts, payee_subject, sealed_change_ids, ChangeProposedSealed, PayeeAddedSealed,
    Unreadable, FIELD_CHANGE,
};
use domain::record::{Actor, EventDraft, SealedEvent};

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
}

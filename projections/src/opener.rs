//! Opening sealed personal fields before the read models see them.

use std::sync::Arc;

use domain::events::DomainEvent;
use domain::personal::Unreadable;
use domain::record::SealedEvent;
use uuid::Uuid;

/// Turns a decoded event with sealed fields (a `payee.added` of schema version 2) into
/// its plain form, through the KMS. The API implements it; without one, sealed fields
/// read as `[encrypted]`.
#[async_trait::async_trait]
pub trait EventOpener: Send + Sync {
    /// The plain event, or the event with `[erased]` fields when the subject's keys were
    /// destroyed.
    ///
    /// # Errors
    /// A KMS or key-store failure, or a field that fails authentication; the runner
    /// stops the ledger and retries, as for any other failure.
    async fn open(
        &self,
        ledger_id: Uuid,
        event: &SealedEvent,
        decoded: DomainEvent,
    ) -> Result<DomainEvent, String>;
}

/// The opener of a [`crate::ReadModels`], printable for its `Debug`.
#[derive(Clone)]
pub(crate) struct Opener(pub(crate) Option<Arc<dyn EventOpener>>);

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Opener(kms)"
        } else {
            "Opener(none)"
        })
    }
}

impl Opener {
    /// Opens `decoded` if it has sealed fields; other events pass unchanged.
    pub(crate) async fn open(
        &self,
        ledger_id: Uuid,
        event: &SealedEvent,
        decoded: DomainEvent,
    ) -> Result<DomainEvent, String> {
        match (&self.0, decoded) {
            (
                Some(opener),
                decoded @ (DomainEvent::PayeeAddedSealed(_)
                | DomainEvent::ChangeProposedSealed(_)
                | DomainEvent::PaymentSubmittedSealed(_)),
            ) => opener.open(ledger_id, event, decoded).await,
            (None, DomainEvent::PayeeAddedSealed(sealed)) => Ok(DomainEvent::PayeeAdded(
                sealed.unreadable(Unreadable::Sealed),
            )),
            (None, DomainEvent::PaymentSubmittedSealed(sealed)) => Ok(
                DomainEvent::PaymentSubmitted(sealed.unreadable(Unreadable::Sealed)),
            ),
            (None, DomainEvent::ChangeProposedSealed(sealed)) => Ok(DomainEvent::ChangeProposed(
                sealed.unreadable(Unreadable::Sealed),
            )),
            (_, decoded) => Ok(decoded),
        }
    }
}

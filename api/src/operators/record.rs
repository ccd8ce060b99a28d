//! Appending operator events to the ledger of the operator's tenant.

use domain::events::EventPayload;
use domain::operator_events::AuthContext;
use domain::record::{Actor, ActorKind};
use eventstore_adapter::{AppendRequest, ExpectedVersion, StreamWrite};
use uuid::Uuid;

use crate::commands::draft;
use crate::problem::ApiError;
use crate::state::AppState;

/// Returns the stream of an operator's own events.
pub fn operator_stream(operator_id: Uuid) -> String {
    format!("operator-{operator_id}")
}

/// Returns the actor of an operator's events: the operator and, as credential, the
/// session (empty before a session exists).
pub fn operator_actor(operator_id: Uuid, session_id: Option<Uuid>) -> Actor {
    Actor {
        kind: ActorKind::Operator,
        id: operator_id.to_string(),
        credential: session_id.map(|id| id.to_string()).unwrap_or_default(),
    }
}

/// Returns the actor for an authenticated decision.
pub fn auth_actor(auth: &AuthContext) -> Actor {
    operator_actor(auth.operator_id, Some(auth.session_id))
}

/// A batch of event drafts for one operator's stream.
pub struct OperatorEvents {
    ledger_id: Uuid,
    operator_id: Uuid,
    actor: Actor,
    correlation_id: Uuid,
    drafts: Vec<domain::record::EventDraft>,
}

impl OperatorEvents {
    /// Starts a batch for `operator_id` on `ledger_id`, caused by `actor`.
    pub fn new(ledger_id: Uuid, operator_id: Uuid, actor: Actor) -> Self {
        OperatorEvents {
            ledger_id,
            operator_id,
            actor,
            correlation_id: Uuid::now_v7(),
            drafts: Vec::new(),
        }
    }

    /// Adds an event.
    pub fn push<P: EventPayload>(mut self, payload: &P) -> Self {
        self.drafts
            .push(draft(payload, &self.actor, self.correlation_id));
        self
    }

    /// Appends the batch atomically to the operator's stream.
    ///
    /// # Errors
    /// Store failures, such as an unknown ledger.
    pub async fn append(self, state: &AppState) -> Result<(), ApiError> {
        if self.drafts.is_empty() {
            return Ok(());
        }
        let write = StreamWrite {
            stream_id: operator_stream(self.operator_id),
            expected: ExpectedVersion::Any,
            events: self.drafts,
        };
        let request = AppendRequest {
            writes: vec![write],
            idempotency: None,
        };
        state.store.append(self.ledger_id, request).await?;
        state.notify_appended(self.ledger_id);
        Ok(())
    }
}

//! Catch-up-then-live subscriptions to a ledger.
//!
//! A subscription always reads events from the backend. The sequencer's head notifications
//! only wake it up, so a late or lost notification delays an event but never skips one, and a
//! timer wakes it as well to pick up events written by another process.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use domain::record::{SealedEvent, GENESIS_PREV_HASH, HASH_LEN};
use tokio::sync::watch;
use uuid::Uuid;

use crate::{Backend, BackendError, StoreError};

/// Number of events read from the backend at a time.
const PAGE_SIZE: u32 = 512;

/// How often a subscription at the head reads the backend without a notification.
const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// A ledger's events in position order, from a start position onwards, without end.
///
/// Each event is checked against the one before it: its position must be the previous
/// position plus one and its `prev_hash` the previous event's hash. On a mismatch the
/// subscription yields the error once and then ends.
pub struct Subscription {
    backend: Arc<dyn Backend>,
    ledger_id: Uuid,
    next_position: u64,
    /// Hash of the event at `next_position - 1`, once known.
    prev_hash: Option<[u8; HASH_LEN]>,
    buffer: VecDeque<SealedEvent>,
    committed: Option<watch::Receiver<Option<u64>>>,
    ended: bool,
}

impl Subscription {
    pub(crate) fn new(
        backend: Arc<dyn Backend>,
        ledger_id: Uuid,
        from_position: u64,
        committed: watch::Receiver<Option<u64>>,
    ) -> Self {
        let prev_hash = (from_position == 0).then_some(GENESIS_PREV_HASH);
        Subscription {
            backend,
            ledger_id,
            next_position: from_position,
            prev_hash,
            buffer: VecDeque::new(),
            committed: Some(committed),
            ended: false,
        }
    }

    /// Returns the position of the next event this subscription yields.
    pub fn position(&self) -> u64 {
        self.next_position
    }

    /// Waits for the next event. Returns `None` only after an error has been yielded.
    ///
    /// Cancel-safe: dropping the future before it completes loses no event, so it can be
    /// used in `tokio::select!`.
    pub async fn next(&mut self) -> Option<Result<SealedEvent, StoreError>> {
        if self.ended {
            return None;
        }
        let result = self.next_checked().await;
        if result.is_err() {
            self.ended = true;
        }
        Some(result)
    }

    async fn next_checked(&mut self) -> Result<SealedEvent, StoreError> {
        loop {
            if let Some(event) = self.buffer.pop_front() {
                self.check_link(&event)?;
                self.next_position += 1;
                self.prev_hash = Some(event.hash);
                return Ok(event);
            }
            if self.prev_hash.is_none() {
                self.prev_hash = Some(self.anchor_hash().await?);
            }
            let page = self
                .backend
                .read_ledger(self.ledger_id, self.next_position, PAGE_SIZE)
                .await?;
            if page.is_empty() {
                self.wait_for_commit().await;
            }
            self.buffer.extend(page);
        }
    }

    /// Reads the hash of the event before the start position, so the first event yielded is
    /// checked like every other. Waits until that event exists.
    async fn anchor_hash(&mut self) -> Result<[u8; HASH_LEN], StoreError> {
        let anchor = self.next_position - 1;
        loop {
            let events = self.backend.read_ledger(self.ledger_id, anchor, 1).await?;
            if let Some(event) = events.into_iter().next() {
                self.check_position(&event, anchor)?;
                return Ok(event.hash);
            }
            self.wait_for_commit().await;
        }
    }

    fn check_link(&self, event: &SealedEvent) -> Result<(), StoreError> {
        self.check_position(event, self.next_position)?;
        // `next_checked` sets the anchor hash before filling the buffer.
        let expected = self.prev_hash.expect("anchor hash is known");
        if event.prev_hash != expected {
            return Err(self.broken(
                event.position,
                "prev_hash does not match the previous event",
            ));
        }
        Ok(())
    }

    fn check_position(&self, event: &SealedEvent, expected: u64) -> Result<(), StoreError> {
        if event.ledger_id != self.ledger_id {
            return Err(self.broken(expected, "event belongs to another ledger"));
        }
        if event.position != expected {
            return Err(self.broken(expected, "event position is not the next position"));
        }
        Ok(())
    }

    fn broken(&self, position: u64, reason: &str) -> StoreError {
        let ledger_id = self.ledger_id;
        BackendError::Corrupt {
            ledger_id,
            position,
            reason: reason.to_owned(),
        }
        .into()
    }

    /// Waits for a head notification past our position, or the poll interval.
    async fn wait_for_commit(&mut self) {
        let Some(committed) = &mut self.committed else {
            tokio::time::sleep(POLL_INTERVAL).await;
            return;
        };
        let next = self.next_position;
        // An unknown head (`None`) never satisfies the wait, so the timer paces the reads.
        let notified = committed.wait_for(|head| head.is_some_and(|head| head >= next));
        // A notification or the timeout: either way, the caller reads the backend again.
        let closed = matches!(
            tokio::time::timeout(POLL_INTERVAL, notified).await,
            Ok(Err(_))
        );
        if closed {
            // The store that published heads is gone; keep polling.
            self.committed = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use domain::clock::SteppingClock;
    use domain::crypto::LedgerKey;
    use domain::record::{Actor, ActorKind, EventDraft};
    use domain::seal::{Sealer, Unsealed};

    use super::*;
    use crate::memory::MemoryBackend;
    use crate::{ChainHead, CommitBatch, SignedHead};

    fn unsealed(version: u64) -> Unsealed {
        let draft = EventDraft {
            event_id: Uuid::now_v7(),
            event_type: "test.noted".into(),
            schema_version: 1,
            actor: Actor {
                kind: ActorKind::ApiClient,
                id: "c".into(),
                credential: "t".into(),
            },
            correlation_id: Uuid::now_v7(),
            causation_id: None,
            payload: Vec::new(),
        };
        Unsealed {
            stream_id: "s".into(),
            stream_version: version,
            draft,
        }
    }

    fn batch(
        sealer: &Sealer,
        expected: Option<ChainHead>,
        events: Vec<SealedEvent>,
    ) -> CommitBatch {
        let last = events.last().expect("events");
        let head = ChainHead {
            ledger_id: last.ledger_id,
            position: last.position,
            hash: last.hash,
        };
        let record = sealer.sign_head(head.ledger_id, head.position, head.hash);
        CommitBatch {
            ledger_id: head.ledger_id,
            expected_head: expected,
            events,
            idempotency: Vec::new(),
            signed_head: SignedHead { head, record },
        }
    }

    /// A backend that does not check hash links stores a chain broken at position 2; the
    /// subscription must stop there instead of skipping or passing the event on.
    #[tokio::test]
    async fn broken_link_ends_subscription() {
        let backend = Arc::new(MemoryBackend::new());
        let sealer = Sealer::new(
            Arc::new(LedgerKey::generate()),
            Arc::new(SteppingClock::new(1_700_000_000_000_000, 1)),
        );
        let ledger_id = Uuid::now_v7();
        let (genesis, mut tip) = sealer.genesis(ledger_id, "t", Actor::system("t"), Uuid::nil());
        let genesis_head = ChainHead {
            ledger_id,
            position: 0,
            hash: genesis.hash,
        };
        backend
            .commit(batch(&sealer, None, vec![genesis]))
            .await
            .unwrap();
        let first = sealer.seal_batch(&mut tip, vec![unsealed(0)]);
        let first_head = ChainHead {
            ledger_id,
            position: 1,
            hash: first[0].hash,
        };
        backend
            .commit(batch(&sealer, Some(genesis_head), first))
            .await
            .unwrap();
        tip.prev_hash = [9; HASH_LEN];
        let forged = sealer.seal_batch(&mut tip, vec![unsealed(1)]);
        backend
            .commit(batch(&sealer, Some(first_head), forged))
            .await
            .unwrap();

        let (_sender, committed) = watch::channel(Some(2));
        let mut subscription = Subscription::new(backend, ledger_id, 1, committed);
        assert_eq!(subscription.next().await.unwrap().unwrap().position, 1);
        let error = subscription.next().await.unwrap();
        assert!(
            matches!(
                error,
                Err(StoreError::Backend(BackendError::Corrupt {
                    position: 2,
                    ..
                }))
            ),
            "{error:?}"
        );
        assert!(
            subscription.next().await.is_none(),
            "the subscription ends after an error"
        );
    }
}

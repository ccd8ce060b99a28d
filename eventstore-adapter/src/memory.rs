//! An in-memory [`Backend`] for unit tests, with the same rules as the SQLite backend: a commit
//! checks the expected head and every uniqueness rule before it changes anything.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use async_trait::async_trait;
use domain::events::{EventPayload, LedgerCreated};
use domain::record::SealedEvent;
use uuid::Uuid;

use crate::{
    Backend, BackendError, ChainHead, CommitBatch, IdempotencyRecord, LedgerInfo, SignedHead,
};

/// Events, streams and idempotency keys of one ledger.
#[derive(Debug)]
struct MemoryLedger {
    tenant: String,
    events: Vec<SealedEvent>,
    /// Positions of each stream's events, indexed by stream version.
    streams: HashMap<String, Vec<u64>>,
    idempotency: HashMap<String, IdempotencyRecord>,
    signed_head: SignedHead,
}

/// Every ledger, plus the event ids, which are unique across ledgers.
#[derive(Debug, Default)]
struct MemoryState {
    ledgers: HashMap<Uuid, MemoryLedger>,
    event_ids: HashSet<Uuid>,
}

/// A backend that keeps everything in a mutex-guarded map; nothing survives the process.
#[derive(Debug, Default)]
pub struct MemoryBackend {
    state: Mutex<MemoryState>,
}

impl MemoryBackend {
    /// Creates an empty backend.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        // A panic while holding the lock happens only between checks and writes of a commit,
        // and commit checks everything before it writes, so the state is still whole.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn head_of(ledger_id: Uuid, ledger: &MemoryLedger) -> Option<ChainHead> {
    ledger.events.last().map(|e| ChainHead {
        ledger_id,
        position: e.position,
        hash: e.hash,
    })
}

fn violation(ledger_id: Uuid, reason: String) -> BackendError {
    BackendError::ConstraintViolation { ledger_id, reason }
}

/// Checks the batch against the stored head and uniqueness rules without changing anything.
fn check_batch(state: &MemoryState, batch: &CommitBatch) -> Result<(), BackendError> {
    let id = batch.ledger_id;
    let stored = state.ledgers.get(&id);
    let stored_head = stored.and_then(|l| head_of(id, l));
    if stored.is_some() != batch.expected_head.is_some() || stored_head != batch.expected_head {
        return Err(BackendError::HeadMoved {
            ledger_id: id,
            expected: batch.expected_head.map(|h| h.position),
        });
    }

    let first_position = stored_head.map_or(0, |h| h.position + 1);
    let mut batch_ids = HashSet::new();
    let mut batch_versions = HashSet::new();
    for (next_position, event) in (first_position..).zip(&batch.events) {
        if event.ledger_id != id || event.position != next_position {
            return Err(violation(
                id,
                format!("event at position {} out of order", event.position),
            ));
        }
        if state.event_ids.contains(&event.event_id) || !batch_ids.insert(event.event_id) {
            return Err(violation(
                id,
                format!("duplicate event id {}", event.event_id),
            ));
        }
        let taken = stored
            .and_then(|l| l.streams.get(&event.stream_id))
            .is_some_and(|v| event.stream_version < v.len() as u64);
        if taken || !batch_versions.insert((event.stream_id.as_str(), event.stream_version)) {
            return Err(violation(
                id,
                format!(
                    "duplicate version {} of stream {}",
                    event.stream_version, event.stream_id
                ),
            ));
        }
    }

    let mut batch_keys = HashSet::new();
    for record in &batch.idempotency {
        let key = record.claim.key.as_str();
        let stored_key = stored.is_some_and(|l| l.idempotency.contains_key(key));
        if stored_key || !batch_keys.insert(key) {
            return Err(violation(id, format!("duplicate idempotency key {key:?}")));
        }
    }
    Ok(())
}

/// Reads the tenant from the genesis event that starts a new ledger.
fn genesis_tenant(batch: &CommitBatch) -> Result<String, BackendError> {
    let corrupt = |reason: String| BackendError::Corrupt {
        ledger_id: batch.ledger_id,
        position: 0,
        reason,
    };
    let genesis = batch
        .events
        .first()
        .ok_or_else(|| corrupt("new ledger without events".into()))?;
    if genesis.event_type != LedgerCreated::EVENT_TYPE {
        return Err(corrupt(format!(
            "first event has type {}",
            genesis.event_type
        )));
    }
    let created = LedgerCreated::decode(&genesis.payload).map_err(|e| corrupt(e.to_string()))?;
    Ok(created.tenant)
}

fn apply_batch(state: &mut MemoryState, batch: CommitBatch, tenant: Option<String>) {
    let ledger = state
        .ledgers
        .entry(batch.ledger_id)
        .or_insert_with(|| MemoryLedger {
            // The tenant is `Some` exactly when the ledger is new (see `commit`).
            tenant: tenant.unwrap_or_default(),
            events: Vec::new(),
            streams: HashMap::new(),
            idempotency: HashMap::new(),
            signed_head: batch.signed_head.clone(),
        });
    for event in batch.events {
        let versions = ledger.streams.entry(event.stream_id.clone()).or_default();
        assert_eq!(
            versions.len() as u64,
            event.stream_version,
            "stream versions are gapless"
        );
        versions.push(event.position);
        state.event_ids.insert(event.event_id);
        ledger.events.push(event);
    }
    for record in batch.idempotency {
        ledger.idempotency.insert(record.claim.key.clone(), record);
    }
    ledger.signed_head = batch.signed_head;
}

#[async_trait]
impl Backend for MemoryBackend {
    async fn commit(&self, batch: CommitBatch) -> Result<(), BackendError> {
        let tenant = match batch.expected_head {
            None => Some(genesis_tenant(&batch)?),
            Some(_) => None,
        };
        let mut state = self.lock();
        check_batch(&state, &batch)?;
        apply_batch(&mut state, batch, tenant);
        Ok(())
    }

    async fn head(&self, ledger_id: Uuid) -> Result<Option<ChainHead>, BackendError> {
        Ok(self
            .lock()
            .ledgers
            .get(&ledger_id)
            .and_then(|l| head_of(ledger_id, l)))
    }

    async fn signed_head(&self, ledger_id: Uuid) -> Result<Option<SignedHead>, BackendError> {
        Ok(self
            .lock()
            .ledgers
            .get(&ledger_id)
            .map(|l| l.signed_head.clone()))
    }

    async fn stream_version(
        &self,
        ledger_id: Uuid,
        stream_id: &str,
    ) -> Result<Option<u64>, BackendError> {
        let state = self.lock();
        let versions = state
            .ledgers
            .get(&ledger_id)
            .and_then(|l| l.streams.get(stream_id));
        Ok(versions.and_then(|v| (v.len() as u64).checked_sub(1)))
    }

    async fn idempotency(
        &self,
        ledger_id: Uuid,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, BackendError> {
        let state = self.lock();
        Ok(state
            .ledgers
            .get(&ledger_id)
            .and_then(|l| l.idempotency.get(key).cloned()))
    }

    async fn idempotency_range(
        &self,
        ledger_id: Uuid,
        from_position: u64,
        to_position: u64,
    ) -> Result<Vec<IdempotencyRecord>, BackendError> {
        let state = self.lock();
        let mut records: Vec<IdempotencyRecord> = (state.ledgers.get(&ledger_id))
            .map(|l| l.idempotency.values().cloned().collect())
            .unwrap_or_default();
        records.retain(|r| (from_position..=to_position).contains(&r.last_position));
        records.sort_by_key(|r| r.last_position);
        Ok(records)
    }

    async fn stream_versions(
        &self,
        ledger_id: Uuid,
        stream_ids: &[&str],
    ) -> Result<HashMap<String, u64>, BackendError> {
        let state = self.lock();
        let Some(ledger) = state.ledgers.get(&ledger_id) else {
            return Ok(HashMap::new());
        };
        let last_version = |&stream_id: &&str| {
            let versions = ledger.streams.get(stream_id)?;
            let last = (versions.len() as u64).checked_sub(1)?;
            Some((stream_id.to_owned(), last))
        };
        Ok(stream_ids.iter().filter_map(last_version).collect())
    }

    async fn idempotency_records(
        &self,
        ledger_id: Uuid,
        keys: &[&str],
    ) -> Result<HashMap<String, IdempotencyRecord>, BackendError> {
        let state = self.lock();
        let Some(ledger) = state.ledgers.get(&ledger_id) else {
            return Ok(HashMap::new());
        };
        let stored = |&key: &&str| {
            let record = ledger.idempotency.get(key)?;
            Some((key.to_owned(), record.clone()))
        };
        Ok(keys.iter().filter_map(stored).collect())
    }

    async fn read_ledger(
        &self,
        ledger_id: Uuid,
        from_position: u64,
        limit: u32,
    ) -> Result<Vec<SealedEvent>, BackendError> {
        let state = self.lock();
        let Some(ledger) = state.ledgers.get(&ledger_id) else {
            return Ok(Vec::new());
        };
        let start = usize::try_from(from_position)
            .unwrap_or(usize::MAX)
            .min(ledger.events.len());
        Ok(ledger.events[start..]
            .iter()
            .take(limit as usize)
            .cloned()
            .collect())
    }

    async fn read_stream(
        &self,
        ledger_id: Uuid,
        stream_id: &str,
        from_version: u64,
        limit: u32,
    ) -> Result<Vec<SealedEvent>, BackendError> {
        let state = self.lock();
        let Some(ledger) = state.ledgers.get(&ledger_id) else {
            return Ok(Vec::new());
        };
        let Some(positions) = ledger.streams.get(stream_id) else {
            return Ok(Vec::new());
        };
        let start = usize::try_from(from_version)
            .unwrap_or(usize::MAX)
            .min(positions.len());
        let events = positions[start..].iter().take(limit as usize);
        // Positions are indexes into `events` because positions start at 0 without gaps.
        Ok(events.map(|&p| ledger.events[p as usize].clone()).collect())
    }

    async fn ledgers(&self) -> Result<Vec<LedgerInfo>, BackendError> {
        let state = self.lock();
        let mut infos: Vec<LedgerInfo> = state
            .ledgers
            .iter()
            .filter_map(|(&id, l)| {
                let head = head_of(id, l)?;
                Some(LedgerInfo {
                    ledger_id: id,
                    tenant: l.tenant.clone(),
                    head,
                })
            })
            .collect();
        infos.sort_by_key(|info| info.ledger_id);
        Ok(infos)
    }
}

//! Checkpoints in the sealing path: when one is due, the sequencer seals a `ledger.checkpoint`
//! event right after a group's events, on the reserved stream `$checkpoints`.
//!
//! The sequencer keeps a Merkle frontier (one hash per set bit of the tree size) of the sealed
//! tip, rebuilt at start from the stored event hashes, so a checkpoint costs one root fold and
//! one signature. A checkpoint is only ever the last event of a group, so the positions that
//! callers were promised before sealing never move.

use std::time::{Duration, Instant};

use domain::checkpoint::{checkpoint_of, seal_checkpoint, SignedCheckpoint, CHECKPOINT_STREAM};
use domain::merkle::{Frontier, Hash};
use domain::record::SealedEvent;
use domain::seal::{ChainTip, Sealer};
use uuid::Uuid;

use crate::{Backend, BackendError};

/// Events read per page when the frontier is rebuilt or hashes are collected for proofs.
const PAGE: u32 = 1024;

/// When the sequencer records checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointPolicy {
    /// Record one at the end of the first group that brings the events since the last
    /// checkpoint to at least this many. Zero turns the count rule off.
    pub every_events: u64,
    /// Record one at the end of the first group sealed at least this long after the last
    /// checkpoint, if events came since. Zero turns the time rule off.
    pub every_seconds: u64,
}

/// The checkpoint state of one ledger's sealed tip.
#[derive(Debug, Clone)]
pub(crate) struct Checkpointer {
    policy: CheckpointPolicy,
    /// Merkle frontier over every sealed event, the tip's included.
    frontier: Frontier,
    /// Last version of the `$checkpoints` stream, `None` before the first checkpoint.
    stream_version: Option<u64>,
    /// Tree size of the last checkpoint.
    last_size: u64,
    last_at: Instant,
}

impl Checkpointer {
    /// Rebuilds the frontier from every stored event up to and including `head_position`.
    ///
    /// # Errors
    /// A backend error, or `Corrupt` when the stored events skip a position.
    pub(crate) async fn load(
        backend: &dyn Backend,
        ledger_id: Uuid,
        head_position: u64,
        policy: CheckpointPolicy,
    ) -> Result<Self, BackendError> {
        let mut checkpointer = Checkpointer {
            policy,
            frontier: Frontier::new(),
            stream_version: None,
            last_size: 0,
            last_at: Instant::now(),
        };
        checkpointer
            .catch_up(backend, ledger_id, head_position)
            .await?;
        Ok(checkpointer)
    }

    /// Extends the frontier with the stored events after those it covers, up to and
    /// including `head_position`, as after another writer moved the head. The frontier must
    /// cover only stored events.
    ///
    /// # Errors
    /// A backend error, or `Corrupt` when the stored events skip a position.
    pub(crate) async fn catch_up(
        &mut self,
        backend: &dyn Backend,
        ledger_id: Uuid,
        head_position: u64,
    ) -> Result<(), BackendError> {
        let from = self.frontier.size();
        assert!(
            from <= head_position + 1,
            "a stored head only moves forward"
        );
        let Checkpointer {
            frontier,
            stream_version,
            last_size,
            last_at,
            ..
        } = self;
        let mut scan = |event: &SealedEvent| {
            if event.stream_id == CHECKPOINT_STREAM {
                *stream_version = Some(event.stream_version);
                *last_size = event.position;
                *last_at = Instant::now();
            }
            frontier.push(&event.hash);
        };
        for_each_event(backend, ledger_id, from, head_position + 1, &mut scan).await?;
        assert_eq!(
            self.frontier.size(),
            head_position + 1,
            "the frontier covers the stored chain"
        );
        Ok(())
    }

    /// Adds freshly sealed `events` to the tree and, when a checkpoint is due, seals one after
    /// them and appends it to `events`.
    pub(crate) fn after_seal(
        &mut self,
        sealer: &Sealer,
        tip: &mut ChainTip,
        events: &mut Vec<SealedEvent>,
    ) {
        for event in events.iter() {
            self.frontier.push(&event.hash);
        }
        if !self.is_due() {
            return;
        }
        let version = self.stream_version.map_or(0, |v| v + 1);
        let checkpoint = seal_checkpoint(sealer, tip, &self.frontier, version);
        self.frontier.push(&checkpoint.hash);
        self.stream_version = Some(version);
        self.last_size = checkpoint.position;
        self.last_at = Instant::now();
        events.push(checkpoint);
    }

    /// Adds events sealed without a checkpoint (a key rotation) to the tree.
    pub(crate) fn extend(&mut self, events: &[SealedEvent]) {
        for event in events {
            self.frontier.push(&event.hash);
        }
    }

    // NOTE: the time rule is only checked when a group is sealed, so a ledger that goes
    // quiet gets the checkpoint for its last events with its next append, not on a timer.
    fn is_due(&self) -> bool {
        let since = self.frontier.size() - self.last_size;
        // The checkpoint before the tip is itself a leaf, so "nothing new" is a size of one.
        if since <= 1 && self.last_size > 0 {
            return false;
        }
        let by_count = self.policy.every_events > 0 && since >= self.policy.every_events;
        let period = Duration::from_secs(self.policy.every_seconds);
        let by_time = self.policy.every_seconds > 0 && self.last_at.elapsed() >= period;
        by_count || by_time
    }

    /// Returns the policy this state follows.
    pub(crate) fn policy(&self) -> CheckpointPolicy {
        self.policy
    }

    /// Number of events the frontier covers.
    pub(crate) fn size(&self) -> u64 {
        self.frontier.size()
    }
}

/// Calls `visit` on every stored event at positions `from..count`, in order, one page at a
/// time.
async fn for_each_event(
    backend: &dyn Backend,
    ledger_id: Uuid,
    from: u64,
    count: u64,
    visit: &mut (dyn FnMut(&SealedEvent) + Send),
) -> Result<(), BackendError> {
    let mut next = from;
    while next < count {
        let limit = u32::try_from((count - next).min(u64::from(PAGE))).unwrap_or(PAGE);
        let page = backend.read_ledger(ledger_id, next, limit).await?;
        if page.is_empty() {
            break;
        }
        for event in &page {
            if event.position != next {
                return Err(BackendError::Corrupt {
                    ledger_id,
                    position: next,
                    reason: format!("found position {} while reading in order", event.position),
                });
            }
            visit(event);
            next += 1;
        }
    }
    if next < count {
        return Err(BackendError::Corrupt {
            ledger_id,
            position: next,
            reason: format!("the ledger ends before position {}", count - 1),
        });
    }
    Ok(())
}

/// Reads the hashes of the events at positions `0..count`, for building proofs.
///
/// # Errors
/// A backend error, or `Corrupt` when an event is missing.
pub async fn event_hashes(
    backend: &dyn Backend,
    ledger_id: Uuid,
    count: u64,
) -> Result<Vec<Hash>, BackendError> {
    let mut hashes = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    for_each_event(backend, ledger_id, 0, count, &mut |event| {
        hashes.push(event.hash)
    })
    .await?;
    Ok(hashes)
}

/// Reads every checkpoint recorded in a ledger, in ledger order, with its event's position.
///
/// # Errors
/// A backend error, or `Corrupt` when a checkpoint event does not decode.
pub async fn checkpoints(
    backend: &dyn Backend,
    ledger_id: Uuid,
) -> Result<Vec<SignedCheckpoint>, BackendError> {
    let mut found = Vec::new();
    let mut from_version = 0;
    loop {
        let page = backend
            .read_stream(ledger_id, CHECKPOINT_STREAM, from_version, PAGE)
            .await?;
        for event in &page {
            let checkpoint = checkpoint_of(event).map_err(|reason| BackendError::Corrupt {
                ledger_id,
                position: event.position,
                reason,
            })?;
            found.push(checkpoint);
        }
        match page.last() {
            Some(last) if page.len() == PAGE as usize => from_version = last.stream_version + 1,
            _ => return Ok(found),
        }
    }
}

//! The per-ledger sequencer: one task that owns the ledger's [`Sealer`] and chain tip, and
//! turns queued append requests into group commits.
//!
//! A group is the first queued request plus whatever else is already waiting, up to
//! [`MAX_GROUP_REQUESTS`] requests or about [`MAX_GROUP_EVENTS`] events. Each request is
//! checked in order against stream versions and idempotency keys, both the stored ones and
//! those of earlier requests in the same group. The stored ones are read before the checks, with
//! one batched backend lookup for all the group's streams and one for all its keys, because a
//! lookup per request capped the rate of many concurrent single-event callers. A request that
//! fails a check is rejected alone.
//! The others are sealed in one `seal_batch` call and committed in one backend transaction.
//! Callers get their result only after the commit returns, so `Committed` always means durable.
//!
//! While a group commits, in a task of its own, the next group is already checked and sealed on
//! top of it if it has at least [`MIN_PIPELINED_EVENTS`] events. The in-flight group's writes
//! count as earlier requests of the next group, so a result that depends on them is sent after
//! both commits. If the commit fails, the tip is reloaded and every request of the next group fails
//! with [`StoreError::CommitFailed`], because its events extend a head that was never stored.
//! A smaller group waits for the commit instead, and is checked against the tip that follows
//! it. Commits run one at a time, in ledger order, and the group cap keeps more than one group
//! queued when callers send large batches.
//!
//! When several nodes write one ledger (the PostgreSQL backend), another node's commit moves
//! the head under a sealed group, and the backend reports [`BackendError::HeadMoved`]. That is
//! a lost race, not a fault. The tip is reloaded, and the requests that waited for the commit
//! are checked again against the stored versions and keys, which now include the other node's
//! writes, and sealed on top of it. After [`MAX_HEAD_MOVED_RETRIES`] lost races in a row
//! they fail with [`StoreError::CommitFailed`].

use std::collections::HashMap;
use std::sync::Arc;

use domain::crypto::LedgerKey;
use domain::record::{Actor, SealedEvent, HASH_LEN};
use domain::seal::{ChainTip, Sealer, Unsealed, LEDGER_STREAM};
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use crate::checkpoints::Checkpointer;
use crate::{
    AppendOutcome, AppendRequest, AppendResult, Backend, BackendError, ChainHead, CommitBatch,
    ExpectedVersion, IdempotencyRecord, SignedHead, StoreError,
};

/// Capacity of each sequencer's request queue. Senders wait when it is full.
pub(crate) const CHANNEL_CAPACITY: usize = 1024;

/// Maximum number of requests in one group commit.
pub(crate) const MAX_GROUP_REQUESTS: usize = 512;

/// Number of events after which a group stops taking more requests. The request that crosses
/// the mark stays in the group, so a group can hold up to this plus one request's events.
pub(crate) const MAX_GROUP_EVENTS: usize = 1024;

/// Number of events below which a group is not sealed during a commit. A smaller group waits
/// for the commit and takes the requests of the callers that the commit replies to, because
/// sealing a few events saves less time than the extra commit that a separate group costs.
pub(crate) const MIN_PIPELINED_EVENTS: usize = 256;

/// Number of commits in a row that may lose the race for the head to another writer before the
/// requests they carried fail. Two busy nodes each win about half the races, so a bound this
/// high fails a request only when another writer keeps the ledger to itself.
// TODO: two nodes appending to one ledger as fast as they can can starve one of them: it
// loses 50 races in a row and its callers get `CommitFailed` (seen once in `folio bench
// --backend postgres`, 2 nodes, 64 single-event callers). A jittered backoff between retries
// was tried and made it worse, because the winner kept appending while the loser waited.
// Sealing under the head row lock, or sending writes to the lease holder, would let both
// make progress.
pub(crate) const MAX_HEAD_MOVED_RETRIES: u32 = 50;

/// Reply channel of an append.
pub(crate) type AppendReply = oneshot::Sender<Result<AppendOutcome, StoreError>>;

/// A request whose result waits for a commit: its plan, its reply and the request itself,
/// kept so that it can be checked and sealed again if another writer moved the head.
type Waiting = (Plan, AppendReply, AppendRequest);

/// A message to a sequencer.
pub(crate) enum Command {
    /// Appends a request.
    Append {
        request: AppendRequest,
        reply: AppendReply,
    },
    /// Appends a `ledger.key_rotated` event sealed by the current key, then switches keys.
    Rotate {
        new_key: Arc<LedgerKey>,
        actor: Actor,
        reason: String,
        reply: oneshot::Sender<Result<AppendResult, StoreError>>,
    },
}

/// The result a request gets once its group is committed. Every plan turns into
/// [`StoreError::CommitFailed`] if the commit fails, because each depends on the group.
enum Plan {
    /// Its events were assigned positions `first..=last`.
    Append {
        first: u64,
        last: u64,
        stream_versions: Vec<(String, u64)>,
    },
    /// It repeats an earlier request of the same group with the same idempotency key.
    Duplicate(IdempotencyRecord),
    /// It conflicts with an earlier request of the same group (stream version or key).
    Conflict(StoreError),
}

/// The outcome of validating one request against the group so far.
enum Decision {
    Reject(StoreError),
    AnswerNow(AppendOutcome),
    Defer(Plan),
}

/// The writes of the requests accepted so far in a group.
struct Group {
    base_position: u64,
    next_position: u64,
    /// Last version of every stream touched so far, after this group's events.
    versions: HashMap<String, Option<u64>>,
    keys: HashMap<String, IdempotencyRecord>,
    unsealed: Vec<Unsealed>,
    records: Vec<IdempotencyRecord>,
    deferred: Vec<Waiting>,
}

/// A validated group: its sealed batch, if it has events, and the replies that wait for it.
struct Prepared {
    base: u64,
    batch: Option<CommitBatch>,
    /// Checkpoint state once the batch is committed.
    checkpoints: Option<Checkpointer>,
    deferred: Vec<Waiting>,
    /// Last version the group assigned to each stream it writes.
    versions: HashMap<String, Option<u64>>,
    /// Idempotency records the group claims.
    keys: HashMap<String, IdempotencyRecord>,
}

/// A sealed group whose commit runs as its own task while the next group is prepared.
struct InFlight {
    task: tokio::task::JoinHandle<Result<(), BackendError>>,
    group: Committing,
}

/// A sealed group whose commit has started, and the replies that wait for it.
struct Committing {
    started: std::time::Instant,
    base: u64,
    hashes: Vec<[u8; HASH_LEN]>,
    new_head: ChainHead,
    /// Checkpoint state once the group is committed.
    checkpoints: Option<Checkpointer>,
    deferred: Vec<Waiting>,
    /// Last version the group assigned to each stream it writes.
    versions: HashMap<String, Option<u64>>,
    /// Idempotency records the group claims.
    keys: HashMap<String, IdempotencyRecord>,
}

/// Stored state of the streams and idempotency keys that a group's requests name.
struct Stored {
    /// Last stored version of each named stream that has events.
    versions: HashMap<String, u64>,
    /// Stored record of each named key that is claimed.
    keys: HashMap<String, IdempotencyRecord>,
}

/// State owned by a ledger's sequencer task.
pub(crate) struct Sequencer {
    ledger_id: Uuid,
    backend: Arc<dyn Backend>,
    sealer: Arc<Sealer>,
    tip: ChainTip,
    head: ChainHead,
    /// Committed head position, published after every commit and tip reload.
    committed: watch::Sender<Option<u64>>,
    /// Set when the tip could not be reloaded after a failed commit, which stops the task.
    broken: bool,
    /// Requests of commits that lost the head to another writer, in queue order, to be
    /// checked and sealed again before anything queued after them.
    retry: Vec<(AppendRequest, AppendReply)>,
    /// Commits in a row that failed with [`BackendError::HeadMoved`].
    head_moves: u32,
    /// Merkle frontier and checkpoint schedule of the sealed tip, when checkpoints are on.
    checkpoints: Option<Checkpointer>,
    /// The same for the committed head, which a lost race falls back to before it reads
    /// the other writer's events.
    committed_checkpoints: Option<Checkpointer>,
}

/// Reads the stored head and the last event, and builds the tip the next event extends.
///
/// # Errors
/// [`StoreError::LedgerNotFound`], or a backend error, or `Corrupt` if the head row and the
/// last event disagree.
pub(crate) async fn load_tip(
    backend: &dyn Backend,
    ledger_id: Uuid,
) -> Result<(ChainHead, ChainTip), StoreError> {
    let head = backend
        .head(ledger_id)
        .await?
        .ok_or(StoreError::LedgerNotFound(ledger_id))?;
    let last = backend.read_ledger(ledger_id, head.position, 1).await?;
    let Some(last) = last.into_iter().next().filter(|e| e.hash == head.hash) else {
        return Err(BackendError::Corrupt {
            ledger_id,
            position: head.position,
            reason: "the head row does not match the last stored event".into(),
        }
        .into());
    };
    let tip = ChainTip {
        ledger_id,
        next_position: head.position + 1,
        prev_hash: head.hash,
        last_recorded_at_micros: last.recorded_at_micros,
    };
    Ok((head, tip))
}

/// Asserts that `events` extend `head` without a gap and link hash to hash.
fn assert_extends(head: &ChainHead, events: &[SealedEvent]) {
    let mut position = head.position;
    let mut prev_hash = head.hash;
    for event in events {
        assert_eq!(
            event.ledger_id, head.ledger_id,
            "sealed event of another ledger"
        );
        assert_eq!(event.position, position + 1, "positions are gapless");
        assert_eq!(
            event.prev_hash, prev_hash,
            "prev_hash equals the stored head"
        );
        position = event.position;
        prev_hash = event.hash;
    }
}

fn check_expected(
    stream_id: &str,
    expected: ExpectedVersion,
    actual: Option<u64>,
) -> Result<(), StoreError> {
    let matches = match expected {
        ExpectedVersion::NoStream => actual.is_none(),
        ExpectedVersion::Any => true,
        ExpectedVersion::Exact(version) => actual == Some(version),
    };
    if matches {
        return Ok(());
    }
    Err(StoreError::WrongExpectedVersion {
        stream_id: stream_id.to_owned(),
        expected,
        actual,
    })
}

fn group_events(group: &[(AppendRequest, AppendReply)]) -> usize {
    group.iter().map(|(request, _)| event_count(request)).sum()
}

fn event_count(request: &AppendRequest) -> usize {
    request.writes.iter().map(|w| w.events.len()).sum()
}

/// Takes what is already queued behind `first`, up to the group caps. A rotation ends the
/// group and is returned separately so it runs alone, after the group.
fn drain_group(
    commands: &mut mpsc::Receiver<Command>,
    first: (AppendRequest, AppendReply),
) -> (Vec<(AppendRequest, AppendReply)>, Option<Command>) {
    let mut group = vec![first];
    let rotate = drain_more(commands, &mut group);
    (group, rotate)
}

/// Adds what is already queued to `group`, up to the group caps, and returns a rotation that
/// ended the group.
fn drain_more(
    commands: &mut mpsc::Receiver<Command>,
    group: &mut Vec<(AppendRequest, AppendReply)>,
) -> Option<Command> {
    let mut events = group_events(group);
    while group.len() < MAX_GROUP_REQUESTS && events < MAX_GROUP_EVENTS {
        match commands.try_recv() {
            Ok(Command::Append { request, reply }) => {
                events += event_count(&request);
                group.push((request, reply));
            }
            Ok(rotate) => return Some(rotate),
            Err(_) => break,
        }
    }
    None
}

impl Sequencer {
    /// Creates a sequencer for a ledger whose stored head is `head`.
    pub(crate) fn new(
        backend: Arc<dyn Backend>,
        sealer: Sealer,
        head: ChainHead,
        tip: ChainTip,
        committed: watch::Sender<Option<u64>>,
    ) -> Self {
        assert_eq!(tip.next_position, head.position + 1, "tip follows the head");
        assert_eq!(tip.prev_hash, head.hash, "tip links to the head");
        Sequencer {
            ledger_id: head.ledger_id,
            backend,
            sealer: Arc::new(sealer),
            tip,
            head,
            committed,
            broken: false,
            retry: Vec::new(),
            head_moves: 0,
            checkpoints: None,
            committed_checkpoints: None,
        }
    }

    /// Turns on checkpoints, with a frontier that covers the stored head.
    pub(crate) fn with_checkpoints(mut self, checkpoints: Option<Checkpointer>) -> Self {
        if let Some(checkpointer) = &checkpoints {
            assert_eq!(
                checkpointer.size(),
                self.tip.next_position,
                "frontier covers the tip"
            );
        }
        self.committed_checkpoints.clone_from(&checkpoints);
        self.checkpoints = checkpoints;
        self
    }

    /// Runs until every sender is dropped and the queue is empty, or the tip is lost.
    ///
    /// A group of at least [`MIN_PIPELINED_EVENTS`] events commits in a task of its own, and
    /// the next group of that size is validated and sealed on top of it meanwhile. Commits
    /// still run one at a time, in ledger order.
    pub(crate) async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut next: Option<Command> = None;
        let mut in_flight: Option<InFlight> = None;
        while !self.broken {
            if !self.retry.is_empty() {
                // Requests whose commit lost the head go first, in their original order.
                let group = std::mem::take(&mut self.retry);
                let prepared = self.prepare_group(group, in_flight.as_ref()).await;
                in_flight = self.advance(in_flight, prepared).await;
                continue;
            }
            let command = match next.take() {
                Some(command) => command,
                None => match self.next_command(&mut commands, &mut in_flight).await {
                    Some(command) => command,
                    None if self.retry.is_empty() => break,
                    None => continue,
                },
            };
            match command {
                Command::Append { request, reply } => {
                    if in_flight.is_none() {
                        // The first sender's wake-up usually runs this task before the other
                        // callers answered by the last commit have queued again. Yielding once
                        // lets them join this group, at the cost of one scheduler pass.
                        tokio::task::yield_now().await;
                    }
                    let (mut group, mut rotate) = drain_group(&mut commands, (request, reply));
                    if rotate.is_none() && group_events(&group) < MIN_PIPELINED_EVENTS {
                        if let Some(previous) = in_flight.take() {
                            rotate = self.join_commit(previous, &mut commands, &mut group).await;
                        }
                    }
                    if self.broken {
                        // The tip is unknown after a failed commit, so nothing can be sealed.
                        for (_, reply) in group {
                            let _ = reply.send(Err(StoreError::SequencerStopped(self.ledger_id)));
                        }
                        break;
                    }
                    if !self.retry.is_empty() {
                        // The joined commit lost the head, and its requests are older than these.
                        let mut retried = std::mem::take(&mut self.retry);
                        retried.append(&mut group);
                        group = retried;
                    }
                    let prepared = self.prepare_group(group, in_flight.as_ref()).await;
                    in_flight = self.advance(in_flight, prepared).await;
                    next = rotate;
                }
                Command::Rotate {
                    new_key,
                    actor,
                    reason,
                    reply,
                } => {
                    // A rotation is sealed alone, on a committed head.
                    if let Some(previous) = in_flight.take() {
                        let _ = self.finish(previous).await;
                    }
                    if self.broken {
                        let _ = reply.send(Err(StoreError::SequencerStopped(self.ledger_id)));
                        break;
                    }
                    let result = self.rotate(new_key, actor, &reason).await;
                    // The caller may have gone away, but the rotation is committed either way.
                    let _ = reply.send(result);
                }
            }
        }
        if let Some(previous) = in_flight.take() {
            let _ = self.finish(previous).await;
        }
        for (_, reply) in self.retry.drain(..) {
            let _ = reply.send(Err(StoreError::SequencerStopped(self.ledger_id)));
        }
        tracing::debug!(ledger = %self.ledger_id, broken = self.broken, "sequencer stopped");
    }

    /// Receives the next command, or `None` once the queue is closed or the tip is lost.
    /// While a commit is in flight, whichever comes first is handled: a request, which is then
    /// checked and sealed during the commit, or the commit, whose callers then get their results.
    async fn next_command(
        &mut self,
        commands: &mut mpsc::Receiver<Command>,
        in_flight: &mut Option<InFlight>,
    ) -> Option<Command> {
        loop {
            let Some(mut previous) = in_flight.take() else {
                return commands.recv().await;
            };
            // `biased` polls the queue first, so a request already queued is sealed during the
            // commit instead of after it.
            tokio::select! {
                biased;
                command = commands.recv() => match command {
                    Some(command) => {
                        *in_flight = Some(previous);
                        return Some(command);
                    }
                    None => {
                        let _ = self.finish(previous).await;
                        return None;
                    }
                },
                joined = &mut previous.task => {
                    let _ = self.settle(previous.group, commit_result(joined)).await;
                }
            }
            // Requests to retry come before anything still queued.
            if self.broken || !self.retry.is_empty() {
                return None;
            }
        }
    }

    /// Waits for the in-flight commit, so that a small group joins the callers it answers
    /// instead of being sealed alone on top of it, then adds what they queued to `group`.
    /// Returns a rotation that ended the group.
    async fn join_commit(
        &mut self,
        in_flight: InFlight,
        commands: &mut mpsc::Receiver<Command>,
        group: &mut Vec<(AppendRequest, AppendReply)>,
    ) -> Option<Command> {
        // A failed commit reloads the tip, and this group is not sealed yet, so it is checked
        // against the reloaded tip like any other.
        let _ = self.finish(in_flight).await;
        tokio::task::yield_now().await;
        drain_more(commands, group)
    }

    /// Validates a group against stored state, the writes of the in-flight group and its own
    /// earlier requests, then seals its accepted events on top of the sealed tip.
    /// Returns `None` when nothing is left to commit or answer.
    async fn prepare_group(
        &mut self,
        requests: Vec<(AppendRequest, AppendReply)>,
        in_flight: Option<&InFlight>,
    ) -> Option<Prepared> {
        // The in-flight group's writes count as earlier requests of this group, so a result
        // that depends on them waits until they are committed.
        let mut group = Group {
            base_position: self.tip.next_position,
            next_position: self.tip.next_position,
            versions: in_flight
                .map(|f| f.group.versions.clone())
                .unwrap_or_default(),
            keys: in_flight.map(|f| f.group.keys.clone()).unwrap_or_default(),
            unsealed: Vec::new(),
            records: Vec::new(),
            deferred: Vec::new(),
        };
        let stored = match self.load_stored(&requests).await {
            Ok(stored) => stored,
            Err(error) => {
                reject_all(requests, &error);
                return None;
            }
        };
        for (request, reply) in requests {
            let kept = request.clone();
            match validate(&mut group, &stored, request) {
                Decision::Reject(error) => drop(reply.send(Err(error))),
                Decision::AnswerNow(outcome) => drop(reply.send(Ok(outcome))),
                Decision::Defer(plan) => group.deferred.push((plan, reply, kept)),
            }
        }
        if group.unsealed.is_empty() && group.deferred.is_empty() {
            return None;
        }

        // Only this group's own writes carry over to the next one, so the maps stay bounded.
        let versions = group
            .unsealed
            .iter()
            .map(|item| (item.stream_id.clone(), Some(item.stream_version)))
            .collect();
        let keys = group
            .records
            .iter()
            .map(|record| (record.claim.key.clone(), record.clone()))
            .collect();
        let batch = match group.unsealed.is_empty() {
            true => None,
            false => Some(self.seal_group(group.unsealed, group.records).await),
        };
        Some(Prepared {
            base: group.base_position,
            batch,
            checkpoints: self.checkpoints.clone(),
            deferred: group.deferred,
            versions,
            keys,
        })
    }

    /// Seals `items` on top of the sealed tip, advances the tip, and returns the batch to
    /// commit.
    async fn seal_group(
        &mut self,
        items: Vec<Unsealed>,
        records: Vec<IdempotencyRecord>,
    ) -> CommitBatch {
        // Genesis is at position 0, so a sealed tip is always past it.
        let expected_head = ChainHead {
            ledger_id: self.ledger_id,
            position: self.tip.next_position - 1,
            hash: self.tip.prev_hash,
        };
        let (events, tip, signed_head, checkpoints) = self.seal(items, true, None).await;
        assert_extends(&expected_head, &events);
        self.tip = tip;
        self.checkpoints = checkpoints;
        CommitBatch {
            ledger_id: self.ledger_id,
            expected_head: Some(expected_head),
            events,
            idempotency: records,
            signed_head,
        }
    }

    /// Waits for the in-flight commit, then starts the prepared group's commit. A prepared
    /// group without events is answered instead, and one sealed on a failed commit is failed.
    async fn advance(
        &mut self,
        in_flight: Option<InFlight>,
        prepared: Option<Prepared>,
    ) -> Option<InFlight> {
        if let Some(previous) = in_flight {
            if let Err(error) = self.finish(previous).await {
                // The prepared group extends a head that was never stored.
                if let Some(prepared) = prepared {
                    // When the head moved, the commit it rests on was retried, so this group
                    // is retried after it.
                    let retry = matches!(*error, BackendError::HeadMoved { .. });
                    self.retry_or_fail(prepared.deferred, &error, retry);
                }
                return None;
            }
        }
        let prepared = prepared?;
        let Some(batch) = prepared.batch else {
            // Without events, every answer is a duplicate or a conflict of a committed group.
            answer_committed(prepared.base, &[], prepared.deferred);
            return None;
        };
        let group = Committing {
            started: std::time::Instant::now(),
            base: prepared.base,
            hashes: batch.events.iter().map(|event| event.hash).collect(),
            new_head: batch.signed_head.head,
            checkpoints: prepared.checkpoints,
            deferred: prepared.deferred,
            versions: prepared.versions,
            keys: prepared.keys,
        };

        // A small group is committed here, because no group is sealed on top of it and a
        // separate task costs an extra wake-up on every commit.
        if group.hashes.len() < MIN_PIPELINED_EVENTS {
            let result = self.backend.commit(batch).await;
            let _ = self.settle(group, result).await;
            return None;
        }
        let backend = Arc::clone(&self.backend);
        let task = tokio::spawn(async move { backend.commit(batch).await });
        Some(InFlight { task, group })
    }

    /// Waits for an in-flight commit and answers its callers. On failure every caller gets
    /// [`StoreError::CommitFailed`] and the tip is reloaded, which drops any group sealed on
    /// top of this one.
    async fn finish(&mut self, in_flight: InFlight) -> Result<(), Arc<BackendError>> {
        let result = commit_result(in_flight.task.await);
        self.settle(in_flight.group, result).await
    }

    /// Answers the callers of a commit that ended with `result`, as `finish` does.
    async fn settle(
        &mut self,
        in_flight: Committing,
        result: Result<(), BackendError>,
    ) -> Result<(), Arc<BackendError>> {
        if let Err(error) = result {
            let error = Arc::new(error);
            let retry = self.count_head_move(&error);
            if !retry {
                // A lost race that is retried is routine with several nodes, so only a failure
                // that reaches the callers is a warning.
                tracing::warn!(ledger = %self.ledger_id, %error, "group commit failed");
            }
            self.retry_or_fail(in_flight.deferred, &error, retry);
            self.reload_tip().await;
            return Err(error);
        }
        self.head_moves = 0;
        tracing::debug!(
            ledger = %self.ledger_id,
            events = in_flight.hashes.len(),
            elapsed_us = in_flight.started.elapsed().as_micros() as u64,
            "group committed"
        );

        let count = in_flight.hashes.len() as u64;
        assert_eq!(
            in_flight.new_head.position,
            self.head.position + count,
            "a commit extends the committed head"
        );
        self.head = in_flight.new_head;
        self.committed_checkpoints = in_flight.checkpoints;
        self.committed.send_replace(Some(self.head.position));
        answer_committed(in_flight.base, &in_flight.hashes, in_flight.deferred);
        Ok(())
    }

    /// Reads the stored versions of every stream and the records of every key that the
    /// group's requests name, with one lookup of each kind, run concurrently.
    async fn load_stored(
        &self,
        requests: &[(AppendRequest, AppendReply)],
    ) -> Result<Stored, BackendError> {
        let mut streams: Vec<&str> = requests
            .iter()
            .flat_map(|(request, _)| request.writes.iter().map(|w| w.stream_id.as_str()))
            .collect();
        streams.sort_unstable();
        streams.dedup();
        let mut keys: Vec<&str> = requests
            .iter()
            .filter_map(|(request, _)| request.idempotency.as_ref().map(|c| c.key.as_str()))
            .collect();
        keys.sort_unstable();
        keys.dedup();

        let stored_keys = async {
            if keys.is_empty() {
                return Ok(HashMap::new());
            }
            self.backend
                .idempotency_records(self.ledger_id, &keys)
                .await
        };
        let stored_versions = self.backend.stream_versions(self.ledger_id, &streams);
        let (versions, keys) = tokio::join!(stored_versions, stored_keys);
        Ok(Stored {
            versions: versions?,
            keys: keys?,
        })
    }

    /// Seals `items` after the current tip, commits them with `records`, and advances the tip.
    /// Returns the hashes of the committed events, in position order from the old tip.
    /// On failure nothing of `items` stays in the chain and the tip is reloaded from the backend.
    async fn seal_and_commit(
        &mut self,
        items: Vec<Unsealed>,
        records: Vec<IdempotencyRecord>,
        head_sealer: Option<Arc<Sealer>>,
    ) -> Result<Vec<[u8; HASH_LEN]>, BackendError> {
        let (events, tip, signed_head, checkpoints) = self.seal(items, false, head_sealer).await;
        assert_extends(&self.head, &events);
        let batch = CommitBatch {
            ledger_id: self.ledger_id,
            expected_head: Some(self.head),
            events,
            idempotency: records,
            signed_head,
        };

        // Only rotations take this serial path, because they run alone. Append groups are
        // pipelined in `run`.
        let started = std::time::Instant::now();
        let hashes: Vec<[u8; HASH_LEN]> = batch.events.iter().map(|e| e.hash).collect();
        let last_position = batch.signed_head.head.position;
        if let Err(error) = self.backend.commit(batch).await {
            tracing::warn!(ledger = %self.ledger_id, %error, "group commit failed");
            self.reload_tip().await;
            return Err(error);
        }
        tracing::debug!(
            ledger = %self.ledger_id,
            events = hashes.len(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "group committed"
        );

        // `seal` returned at least one event for a non-empty `items`.
        let last_hash = *hashes.last().expect("a sealed group is not empty");
        self.head = ChainHead {
            ledger_id: self.ledger_id,
            position: last_position,
            hash: last_hash,
        };
        assert_eq!(
            tip.next_position,
            last_position + 1,
            "tip follows the committed head"
        );
        self.tip = tip;
        self.committed_checkpoints.clone_from(&checkpoints);
        self.checkpoints = checkpoints;
        self.committed.send_replace(Some(self.head.position));
        Ok(hashes)
    }

    /// Seals on a blocking thread, because signing a group takes milliseconds of CPU.
    /// With checkpoints on, a due checkpoint follows the events when `may_checkpoint` is set,
    /// and the returned checkpoint state covers the sealed tip.
    /// Seals `items` with the current key. The signed head is signed by `head_sealer`
    /// when given: after a rotation event the head must be signed by the new key.
    async fn seal(
        &self,
        items: Vec<Unsealed>,
        may_checkpoint: bool,
        head_sealer: Option<Arc<Sealer>>,
    ) -> Sealed {
        assert!(!items.is_empty(), "a group to seal has events");
        let sealer = Arc::clone(&self.sealer);
        let head_sealer = head_sealer.unwrap_or_else(|| Arc::clone(&sealer));
        let mut tip = self.tip.clone();
        let mut checkpoints = self.checkpoints.clone();
        let count = items.len();
        let sealed = tokio::task::spawn_blocking(move || {
            let mut events = sealer.seal_batch(&mut tip, items);
            match checkpoints.as_mut() {
                Some(c) if may_checkpoint => c.after_seal(&sealer, &mut tip, &mut events),
                Some(c) => c.extend(&events),
                None => {}
            }
            // `seal_batch` returns one event per item, and `items` is not empty.
            let last = events.last().expect("seal_batch returns every item");
            let record = head_sealer.sign_head(tip.ledger_id, last.position, last.hash);
            let head = ChainHead {
                ledger_id: tip.ledger_id,
                position: last.position,
                hash: last.hash,
            };
            (events, tip, SignedHead { head, record }, checkpoints)
        })
        .await;
        let (events, tip, signed, checkpoints) = match sealed {
            Ok(sealed) => sealed,
            Err(error) => std::panic::resume_unwind(error.into_panic()),
        };
        let extra = usize::from(events.len() > count);
        assert_eq!(events.len(), count + extra, "seal_batch seals every item");
        (events, tip, signed, checkpoints)
    }

    /// Counts a failed commit and returns whether its requests are to be retried: only when
    /// another writer moved the head, and at most [`MAX_HEAD_MOVED_RETRIES`] times in a row.
    fn count_head_move(&mut self, error: &BackendError) -> bool {
        let moved = matches!(error, BackendError::HeadMoved { .. });
        if !moved || self.head_moves >= MAX_HEAD_MOVED_RETRIES {
            self.head_moves = 0;
            return false;
        }
        self.head_moves += 1;
        true
    }

    /// Queues the waiting requests of a failed commit for another try, or fails them with
    /// [`StoreError::CommitFailed`].
    fn retry_or_fail(&mut self, deferred: Vec<Waiting>, error: &Arc<BackendError>, retry: bool) {
        if !retry {
            fail_deferred(deferred, error);
            return;
        }
        tracing::debug!(
            ledger = %self.ledger_id,
            requests = deferred.len(),
            attempt = self.head_moves,
            "another writer moved the head; checking and sealing again"
        );
        let requests = deferred
            .into_iter()
            .map(|(_, reply, request)| (request, reply));
        self.retry.extend(requests);
    }

    async fn reload_tip(&mut self) {
        match load_tip(self.backend.as_ref(), self.ledger_id).await {
            Ok((head, tip)) => {
                self.head = head;
                self.tip = tip;
                self.committed.send_replace(Some(head.position));
                self.reload_checkpoints().await;
            }
            Err(error) => {
                tracing::error!(ledger = %self.ledger_id, %error, "tip reload failed; stopping");
                self.broken = true;
            }
        }
    }

    async fn rotate(
        &mut self,
        new_key: Arc<LedgerKey>,
        actor: Actor,
        reason: &str,
    ) -> Result<AppendResult, StoreError> {
        let (draft, next_sealer) =
            self.sealer
                .rotation_draft(new_key, actor, Uuid::now_v7(), reason);
        let current = self
            .backend
            .stream_version(self.ledger_id, LEDGER_STREAM)
            .await?;
        let version = current.map_or(0, |v| v + 1);
        let item = Unsealed {
            stream_id: LEDGER_STREAM.to_owned(),
            stream_version: version,
            draft,
        };

        // The rotation event is signed by the old key and the head after it by the new one,
        // as the verifier requires of every head after a rotation.
        let position = self.tip.next_position;
        let next_sealer = Arc::new(next_sealer);
        let hashes = self
            .seal_and_commit(vec![item], Vec::new(), Some(Arc::clone(&next_sealer)))
            .await
            .map_err(|e| StoreError::CommitFailed(Arc::new(e)))?;
        self.sealer = next_sealer;
        let key_id = self.sealer.key_id();
        tracing::info!(ledger = %self.ledger_id, %key_id, position, "signing key rotated");

        // One item in, one event out (asserted in `seal`).
        Ok(AppendResult {
            first_position: position,
            last_position: position,
            last_hash: hashes[0],
            stream_versions: vec![(LEDGER_STREAM.to_owned(), version)],
        })
    }
}

impl Sequencer {
    /// Rebuilds the checkpoint frontier after the tip was reloaded, because the sealed events
    /// it counted were never stored. The frontier of the last committed head covers only
    /// stored events, so it is extended with the events stored after it. Only when there
    /// is none is the whole ledger read. Without a frontier the task cannot checkpoint, so
    /// a failed rebuild stops it like a failed tip reload.
    async fn reload_checkpoints(&mut self) {
        let Some(old) = self.checkpoints.take() else {
            return;
        };
        let head = self.head.position;
        let rebuilt = match self.committed_checkpoints.take() {
            Some(mut committed) if committed.size() <= head + 1 => committed
                .catch_up(self.backend.as_ref(), self.ledger_id, head)
                .await
                .map(|()| committed),
            _ => {
                Checkpointer::load(self.backend.as_ref(), self.ledger_id, head, old.policy()).await
            }
        };
        match rebuilt {
            Ok(checkpointer) => {
                self.committed_checkpoints = Some(checkpointer.clone());
                self.checkpoints = Some(checkpointer);
            }
            Err(error) => {
                tracing::error!(ledger = %self.ledger_id, %error, "checkpoint frontier reload failed; stopping");
                self.broken = true;
            }
        }
    }
}

/// The result of sealing: events, the tip after them, the signed head and checkpoint state.
type Sealed = (Vec<SealedEvent>, ChainTip, SignedHead, Option<Checkpointer>);

/// Checks one request against stored state and the group so far, and on success adds its
/// events to the group.
fn validate(group: &mut Group, stored: &Stored, request: AppendRequest) -> Decision {
    if let Some(claim) = &request.idempotency {
        if let Some(earlier) = group.keys.get(&claim.key) {
            return match repeat_of(earlier.clone(), claim.request_hash) {
                Ok(record) => Decision::Defer(Plan::Duplicate(record)),
                Err(error) => Decision::Defer(Plan::Conflict(error)),
            };
        }
        if let Some(record) = stored.keys.get(&claim.key) {
            return match repeat_of(record.clone(), claim.request_hash) {
                Ok(record) => Decision::AnswerNow(AppendOutcome::Duplicate(record)),
                Err(error) => Decision::Reject(error),
            };
        }
    }

    let mut currents = Vec::with_capacity(request.writes.len());
    for write in &request.writes {
        let in_group = group.versions.get(&write.stream_id).copied();
        let current = match in_group {
            Some(version) => version,
            None => stored.versions.get(&write.stream_id).copied(),
        };
        if let Err(error) = check_expected(&write.stream_id, write.expected, current) {
            // A conflict with a version assigned in this group holds only if it commits.
            return match in_group {
                Some(_) => Decision::Defer(Plan::Conflict(error)),
                None => Decision::Reject(error),
            };
        }
        currents.push(current);
    }
    Decision::Defer(assign(group, request, currents))
}

/// Returns the result of a commit task, and resumes its panic if it panicked.
fn commit_result(
    joined: Result<Result<(), BackendError>, tokio::task::JoinError>,
) -> Result<(), BackendError> {
    match joined {
        Ok(result) => result,
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(error) => Err(BackendError::Unavailable(format!(
            "commit task stopped: {error}"
        ))),
    }
}

/// Fails every answer that waited for a commit that failed.
fn fail_deferred(deferred: Vec<Waiting>, error: &Arc<BackendError>) {
    for (_, reply, _) in deferred {
        let _ = reply.send(Err(StoreError::CommitFailed(Arc::clone(error))));
    }
}

/// Answers every request of a group whose stored-state lookup failed. Nothing was sealed, so
/// each caller may retry.
fn reject_all(requests: Vec<(AppendRequest, AppendReply)>, error: &BackendError) {
    tracing::warn!(%error, requests = requests.len(), "group lookup failed");
    for (_, reply) in requests {
        // `BackendError` is not `Clone`, so each caller gets the failure as text.
        let reason = format!("stream version and idempotency key lookup failed: {error}");
        let _ = reply.send(Err(StoreError::Backend(BackendError::Unavailable(reason))));
    }
}

/// Returns the stored record if a request that reuses a claimed key is a repeat of it, or
/// [`StoreError::IdempotencyKeyReused`] if its request hash differs.
fn repeat_of(
    stored: IdempotencyRecord,
    request_hash: [u8; HASH_LEN],
) -> Result<IdempotencyRecord, StoreError> {
    if stored.claim.request_hash == request_hash {
        return Ok(stored);
    }
    Err(StoreError::IdempotencyKeyReused {
        key: stored.claim.key.clone(),
        stored: Box::new(stored),
    })
}

/// Assigns positions and stream versions to a validated request and adds it to the group.
fn assign(group: &mut Group, request: AppendRequest, currents: Vec<Option<u64>>) -> Plan {
    let first = group.next_position;
    let mut stream_versions = Vec::with_capacity(request.writes.len());
    for (write, current) in request.writes.into_iter().zip(currents) {
        if write.events.is_empty() {
            // A check-only write: `validate` has checked its version, and nothing changes.
            continue;
        }
        let mut version = current;
        for draft in write.events {
            let next = version.map_or(0, |v| v + 1);
            group.unsealed.push(Unsealed {
                stream_id: write.stream_id.clone(),
                stream_version: next,
                draft,
            });
            version = Some(next);
        }
        // The write has events (checked above), so a version was assigned.
        let last = version.expect("a stream write has events");
        group.versions.insert(write.stream_id.clone(), Some(last));
        stream_versions.push((write.stream_id, last));
    }
    let count = group.unsealed.len() as u64 - (first - group.base_position);
    assert!(count > 0, "an accepted request has events");
    group.next_position = first + count;
    let last = group.next_position - 1;

    if let Some(claim) = request.idempotency {
        let record = IdempotencyRecord {
            claim,
            first_position: first,
            last_position: last,
        };
        group.keys.insert(record.claim.key.clone(), record.clone());
        group.records.push(record);
    }
    Plan::Append {
        first,
        last,
        stream_versions,
    }
}

/// Sends the outcome to every deferred request of a committed group.
fn answer_committed(base: u64, hashes: &[[u8; HASH_LEN]], deferred: Vec<Waiting>) {
    for (plan, reply, _) in deferred {
        let outcome = match plan {
            Plan::Duplicate(record) => Ok(AppendOutcome::Duplicate(record)),
            Plan::Conflict(error) => Err(error),
            Plan::Append {
                first,
                last,
                stream_versions,
            } => {
                // Positions `base..` map to indexes `0..` of `hashes` (asserted gapless).
                let index = usize::try_from(last - base).expect("group index fits in usize");
                Ok(AppendOutcome::Committed(AppendResult {
                    first_position: first,
                    last_position: last,
                    last_hash: hashes[index],
                    stream_versions,
                }))
            }
        };
        // A caller that stopped waiting still had its append committed.
        let _ = reply.send(outcome);
    }
}

#[cfg(test)]
mod tests {
    use domain::clock::SteppingClock;
    use domain::record::ActorKind;
    use domain::record::EventDraft;

    use super::*;
    use crate::memory::MemoryBackend;
    use crate::{IdempotencyClaim, StreamWrite};

    fn draft() -> EventDraft {
        EventDraft {
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
            payload: vec![0xAB],
        }
    }

    fn request(stream: &str, expected: ExpectedVersion, key: Option<(&str, u8)>) -> AppendRequest {
        let write = StreamWrite {
            stream_id: stream.into(),
            expected,
            events: vec![draft(), draft()],
        };
        let idempotency = key.map(|(key, hash)| IdempotencyClaim {
            key: key.into(),
            request_hash: [hash; 32],
            request: Vec::new(),
            response_status: 201,
            response_body: Vec::new(),
        });
        AppendRequest {
            writes: vec![write],
            idempotency,
        }
    }

    /// Creates a ledger in a memory backend and a sequencer for it, not yet running.
    async fn sequencer_over_memory() -> (Sequencer, Arc<MemoryBackend>, Uuid) {
        let backend = Arc::new(MemoryBackend::new());
        let key = Arc::new(LedgerKey::generate());
        let sealer = Sealer::new(key, Arc::new(SteppingClock::new(1_700_000_000_000_000, 1)));
        let ledger_id = Uuid::now_v7();
        let (genesis, tip) = sealer.genesis(ledger_id, "t", Actor::system("test"), Uuid::now_v7());
        let head = ChainHead {
            ledger_id,
            position: 0,
            hash: genesis.hash,
        };
        let record = sealer.sign_head(ledger_id, 0, genesis.hash);
        let batch = CommitBatch {
            ledger_id,
            expected_head: None,
            events: vec![genesis],
            idempotency: Vec::new(),
            signed_head: SignedHead { head, record },
        };
        backend.commit(batch).await.unwrap();
        let sequencer =
            Sequencer::new(backend.clone(), sealer, head, tip, watch::Sender::new(None));
        (sequencer, backend, ledger_id)
    }

    #[tokio::test]
    async fn group_resolves_conflicts_in_queue_order() {
        let (sequencer, backend, ledger_id) = sequencer_over_memory().await;
        let requests = [
            request("a", ExpectedVersion::NoStream, Some(("k", 1))),
            // Same key and hash as the first: a duplicate of it, inside the same group.
            request("b", ExpectedVersion::NoStream, Some(("k", 1))),
            // Same key, different hash.
            request("c", ExpectedVersion::NoStream, Some(("k", 2))),
            // Conflicts with the version the first request assigned to stream `a`.
            request("a", ExpectedVersion::NoStream, None),
            // Follows the version the first request assigned to stream `a`.
            request("a", ExpectedVersion::Exact(1), None),
        ];
        let results = run_queued(sequencer, requests).await;
        let Ok(AppendOutcome::Committed(first)) = &results[0] else {
            panic!("{:?}", results[0])
        };
        assert_eq!((first.first_position, first.last_position), (1, 2));
        let Ok(AppendOutcome::Duplicate(duplicate)) = &results[1] else {
            panic!("{:?}", results[1])
        };
        assert_eq!((duplicate.first_position, duplicate.last_position), (1, 2));
        assert!(matches!(
            results[2],
            Err(StoreError::IdempotencyKeyReused { .. })
        ));
        assert!(matches!(
            results[3],
            Err(StoreError::WrongExpectedVersion {
                actual: Some(1),
                ..
            })
        ));
        let Ok(AppendOutcome::Committed(last)) = &results[4] else {
            panic!("{:?}", results[4])
        };
        assert_eq!((last.first_position, last.last_position), (3, 4));
        assert_eq!(last.stream_versions, vec![("a".to_string(), 3)]);

        let head = backend.head(ledger_id).await.unwrap().unwrap();
        assert_eq!(head.position, 4);
        assert!(backend
            .read_stream(ledger_id, "b", 0, 10)
            .await
            .unwrap()
            .is_empty());
        assert!(backend
            .read_stream(ledger_id, "c", 0, 10)
            .await
            .unwrap()
            .is_empty());
    }

    /// Commits one event to stream `other` on top of the stored head, as another node would,
    /// sealed by `intruder`. Returns the new head.
    async fn intrude(backend: &MemoryBackend, ledger_id: Uuid, intruder: &Sealer) -> ChainHead {
        let (head, mut tip) = load_tip(backend, ledger_id).await.unwrap();
        let version = backend.stream_version(ledger_id, "other").await.unwrap();
        let item = Unsealed {
            stream_id: "other".into(),
            stream_version: version.map_or(0, |v| v + 1),
            draft: draft(),
        };
        let events = intruder.seal_batch(&mut tip, vec![item]);
        let new_head = ChainHead {
            ledger_id,
            position: events[0].position,
            hash: events[0].hash,
        };
        let record = intruder.sign_head(ledger_id, new_head.position, new_head.hash);
        let batch = CommitBatch {
            ledger_id,
            expected_head: Some(head),
            events,
            idempotency: Vec::new(),
            signed_head: SignedHead {
                head: new_head,
                record,
            },
        };
        backend.commit(batch).await.unwrap();
        new_head
    }

    fn intruder() -> Sealer {
        Sealer::new(
            Arc::new(LedgerKey::generate()),
            Arc::new(SteppingClock::new(1_800_000_000_000_000, 1)),
        )
    }

    #[tokio::test]
    async fn head_moved_group_is_resealed() {
        let (sequencer, backend, ledger_id) = sequencer_over_memory().await;
        // Another writer moves the head, so the sequencer's first commit gets `HeadMoved`.
        let moved = intrude(&backend, ledger_id, &intruder()).await;
        assert_eq!(moved.position, 1);

        let requests = [
            request("a", ExpectedVersion::NoStream, Some(("k", 1))),
            request("b", ExpectedVersion::NoStream, Some(("k", 1))),
            request("a", ExpectedVersion::NoStream, None),
            request("other", ExpectedVersion::NoStream, None),
        ];
        let results = run_queued(sequencer, requests).await;
        // The group is checked again on the moved head and committed after it.
        let Ok(AppendOutcome::Committed(first)) = &results[0] else {
            panic!("{:?}", results[0])
        };
        assert_eq!((first.first_position, first.last_position), (2, 3));
        let Ok(AppendOutcome::Duplicate(duplicate)) = &results[1] else {
            panic!("{:?}", results[1])
        };
        assert_eq!((duplicate.first_position, duplicate.last_position), (2, 3));
        assert!(matches!(
            results[2],
            Err(StoreError::WrongExpectedVersion {
                actual: Some(1),
                ..
            })
        ));
        // This conflict is with the other writer's stored version.
        assert!(matches!(
            results[3],
            Err(StoreError::WrongExpectedVersion {
                actual: Some(0),
                ..
            })
        ));
        let head = backend.head(ledger_id).await.unwrap().unwrap();
        assert_eq!((head.position, head.hash), (3, first.last_hash));
        let stored = backend.read_ledger(ledger_id, 0, 10).await.unwrap();
        assert_eq!(stored.len(), 4);
        assert_eq!(stored[1].hash, moved.hash);
        assert_eq!(stored[2].prev_hash, moved.hash);
        let claimed = backend.idempotency(ledger_id, "k").await.unwrap().unwrap();
        assert_eq!((claimed.first_position, claimed.last_position), (2, 3));
    }

    #[tokio::test]
    async fn retry_sees_other_writers_key() {
        let (sequencer, backend, ledger_id) = sequencer_over_memory().await;
        // The other writer's commit claims key `k` and moves the head.
        let head = backend.head(ledger_id).await.unwrap().unwrap();
        let (_, mut tip) = load_tip(backend.as_ref(), ledger_id).await.unwrap();
        let intruder = intruder();
        let item = Unsealed {
            stream_id: "x".into(),
            stream_version: 0,
            draft: draft(),
        };
        let events = intruder.seal_batch(&mut tip, vec![item]);
        let new_head = ChainHead {
            ledger_id,
            position: 1,
            hash: events[0].hash,
        };
        let claim = request("x", ExpectedVersion::Any, Some(("k", 1)))
            .idempotency
            .unwrap();
        let batch = CommitBatch {
            ledger_id,
            expected_head: Some(head),
            events,
            idempotency: vec![IdempotencyRecord {
                claim,
                first_position: 1,
                last_position: 1,
            }],
            signed_head: SignedHead {
                head: new_head,
                record: intruder.sign_head(ledger_id, 1, new_head.hash),
            },
        };
        // The other writer commits between the sequencer's lookup and its commit, so the
        // stored key shows up only when the group is checked again.
        let pending = std::sync::Mutex::new(Some(batch));
        let mut sequencer = sequencer;
        sequencer.backend = Arc::new(Racing::new(&backend, OtherWriter::Once(pending)));
        let results = run_queued(
            sequencer,
            [request("a", ExpectedVersion::NoStream, Some(("k", 1)))],
        )
        .await;
        let Ok(AppendOutcome::Duplicate(record)) = &results[0] else {
            panic!("{:?}", results[0])
        };
        assert_eq!((record.first_position, record.last_position), (1, 1));
        assert_eq!(backend.head(ledger_id).await.unwrap().unwrap(), new_head);
        assert!(backend
            .read_stream(ledger_id, "a", 0, 10)
            .await
            .unwrap()
            .is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn head_moved_retries_pipelined_group() {
        let (sequencer, backend, ledger_id) = sequencer_over_memory().await;
        let moved = intrude(&backend, ledger_id, &intruder()).await;
        // The first group's commit gets `HeadMoved`, and the second was sealed on top of it.
        let results = run_two_groups(sequencer, backend.clone(), MIN_PIPELINED_EVENTS).await;
        let events = MAX_GROUP_EVENTS as u64;
        let Ok(AppendOutcome::Committed(first)) = &results[0] else {
            panic!("{:?}", results[0])
        };
        assert_eq!((first.first_position, first.last_position), (2, events + 1));
        let Ok(AppendOutcome::Committed(follow)) = &results[1] else {
            panic!("{:?}", results[1])
        };
        assert_eq!(follow.first_position, events + 2);
        assert!(matches!(results[2], Ok(AppendOutcome::Committed(_))));
        let Ok(AppendOutcome::Duplicate(duplicate)) = &results[3] else {
            panic!("{:?}", results[3])
        };
        assert_eq!(duplicate.last_position, events + 1);
        assert!(matches!(
            results[4],
            Err(StoreError::WrongExpectedVersion { .. })
        ));
        let stored = backend.read_ledger(ledger_id, 1, 2).await.unwrap();
        assert_eq!(stored[0].hash, moved.hash);
        assert_eq!(stored[1].prev_hash, moved.hash);
    }

    #[tokio::test]
    async fn head_moved_retries_are_bounded() {
        let (mut sequencer, backend, ledger_id) = sequencer_over_memory().await;
        // Another writer wins the race before every commit of this sequencer.
        let racing = Arc::new(Racing::new(&backend, OtherWriter::Always(intruder())));
        sequencer.backend = racing.clone();
        let requests = [
            request("a", ExpectedVersion::NoStream, Some(("k", 1))),
            request("b", ExpectedVersion::Any, None),
        ];
        for result in run_queued(sequencer, requests).await {
            let Err(StoreError::CommitFailed(error)) = &result else {
                panic!("{result:?}")
            };
            assert!(
                matches!(**error, BackendError::HeadMoved { .. }),
                "{error:?}"
            );
        }
        let attempts = racing.commits.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(attempts, MAX_HEAD_MOVED_RETRIES + 1);
        // Only the other writer's events are stored.
        let head = backend.head(ledger_id).await.unwrap().unwrap();
        assert_eq!(head.position, u64::from(attempts));
        assert!(backend.idempotency(ledger_id, "k").await.unwrap().is_none());
        assert!(backend
            .read_stream(ledger_id, "a", 0, 10)
            .await
            .unwrap()
            .is_empty());
    }

    /// What another writer does just before each commit of the sequencer under test.
    enum OtherWriter {
        /// Commits this batch before the first commit only.
        Once(std::sync::Mutex<Option<CommitBatch>>),
        /// Commits one event of its own, sealed by this sealer, before every commit.
        Always(Sealer),
    }

    /// Forwards to a memory backend, letting another writer commit first.
    struct Racing {
        inner: Arc<MemoryBackend>,
        other: OtherWriter,
        commits: std::sync::atomic::AtomicU32,
    }

    impl Racing {
        fn new(inner: &Arc<MemoryBackend>, other: OtherWriter) -> Self {
            Racing {
                inner: Arc::clone(inner),
                other,
                commits: std::sync::atomic::AtomicU32::new(0),
            }
        }
    }

    #[async_trait::async_trait]
    impl Backend for Racing {
        async fn commit(&self, batch: CommitBatch) -> Result<(), BackendError> {
            self.commits
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            match &self.other {
                OtherWriter::Once(pending) => {
                    let pending = pending
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .take();
                    if let Some(other) = pending {
                        self.inner.commit(other).await?;
                    }
                }
                OtherWriter::Always(sealer) => {
                    intrude(&self.inner, batch.ledger_id, sealer).await;
                }
            }
            self.inner.commit(batch).await
        }
        async fn head(&self, id: Uuid) -> Result<Option<ChainHead>, BackendError> {
            self.inner.head(id).await
        }
        async fn signed_head(&self, id: Uuid) -> Result<Option<SignedHead>, BackendError> {
            self.inner.signed_head(id).await
        }
        async fn stream_version(
            &self,
            id: Uuid,
            stream: &str,
        ) -> Result<Option<u64>, BackendError> {
            self.inner.stream_version(id, stream).await
        }
        async fn idempotency(
            &self,
            id: Uuid,
            key: &str,
        ) -> Result<Option<IdempotencyRecord>, BackendError> {
            self.inner.idempotency(id, key).await
        }
        async fn read_ledger(
            &self,
            id: Uuid,
            from: u64,
            limit: u32,
        ) -> Result<Vec<SealedEvent>, BackendError> {
            self.inner.read_ledger(id, from, limit).await
        }
        async fn read_stream(
            &self,
            id: Uuid,
            stream: &str,
            from: u64,
            limit: u32,
        ) -> Result<Vec<SealedEvent>, BackendError> {
            self.inner.read_stream(id, stream, from, limit).await
        }
        async fn ledgers(&self) -> Result<Vec<crate::LedgerInfo>, BackendError> {
            self.inner.ledgers().await
        }
    }

    /// A memory backend that can fail every batched stream-version lookup, or the next commit.
    struct Faults {
        inner: Arc<MemoryBackend>,
        fail_lookups: bool,
        fail_next_commit: std::sync::atomic::AtomicBool,
    }

    impl Faults {
        fn new(inner: Arc<MemoryBackend>, fail_lookups: bool, fail_next_commit: bool) -> Self {
            let fail_next_commit = std::sync::atomic::AtomicBool::new(fail_next_commit);
            Faults {
                inner,
                fail_lookups,
                fail_next_commit,
            }
        }
    }

    #[async_trait::async_trait]
    impl Backend for Faults {
        async fn commit(&self, batch: CommitBatch) -> Result<(), BackendError> {
            let ordering = std::sync::atomic::Ordering::SeqCst;
            if self.fail_next_commit.swap(false, ordering) {
                return Err(BackendError::Unavailable("injected commit failure".into()));
            }
            self.inner.commit(batch).await
        }
        async fn head(&self, id: Uuid) -> Result<Option<ChainHead>, BackendError> {
            self.inner.head(id).await
        }
        async fn signed_head(&self, id: Uuid) -> Result<Option<SignedHead>, BackendError> {
            self.inner.signed_head(id).await
        }
        async fn stream_version(
            &self,
            id: Uuid,
            stream: &str,
        ) -> Result<Option<u64>, BackendError> {
            self.inner.stream_version(id, stream).await
        }
        async fn idempotency(
            &self,
            id: Uuid,
            key: &str,
        ) -> Result<Option<IdempotencyRecord>, BackendError> {
            self.inner.idempotency(id, key).await
        }
        async fn stream_versions(
            &self,
            id: Uuid,
            streams: &[&str],
        ) -> Result<HashMap<String, u64>, BackendError> {
            if self.fail_lookups {
                return Err(BackendError::Unavailable("injected lookup failure".into()));
            }
            self.inner.stream_versions(id, streams).await
        }
        async fn read_ledger(
            &self,
            id: Uuid,
            from: u64,
            limit: u32,
        ) -> Result<Vec<SealedEvent>, BackendError> {
            self.inner.read_ledger(id, from, limit).await
        }
        async fn read_stream(
            &self,
            id: Uuid,
            stream: &str,
            from: u64,
            limit: u32,
        ) -> Result<Vec<SealedEvent>, BackendError> {
            self.inner.read_stream(id, stream, from, limit).await
        }
        async fn ledgers(&self) -> Result<Vec<crate::LedgerInfo>, BackendError> {
            self.inner.ledgers().await
        }
    }

    #[tokio::test]
    async fn failed_lookup_rejects_whole_group() {
        let (mut sequencer, backend, ledger_id) = sequencer_over_memory().await;
        sequencer.backend = Arc::new(Faults::new(Arc::clone(&backend), true, false));
        let requests = ["a", "b", "c"]
            .map(|stream| request(stream, ExpectedVersion::NoStream, Some((stream, 1))));

        for result in run_queued(sequencer, requests).await {
            assert!(
                matches!(
                    result,
                    Err(StoreError::Backend(BackendError::Unavailable(_)))
                ),
                "{result:?}"
            );
        }
        assert_eq!(backend.head(ledger_id).await.unwrap().unwrap().position, 0);
        assert!(backend.idempotency(ledger_id, "a").await.unwrap().is_none());
    }

    /// Queues a request of `MAX_GROUP_EVENTS` events to stream `a` with key `k`, which fills a
    /// group alone, then the requests of a second group that depend on it, the first of which
    /// has `follow_events` events. Runs the sequencer over `backend` until the queue is empty
    /// and returns the answers in queue order.
    async fn run_two_groups(
        mut sequencer: Sequencer,
        backend: Arc<dyn Backend>,
        follow_events: usize,
    ) -> Vec<Result<AppendOutcome, StoreError>> {
        sequencer.backend = backend;
        let mut first = request("a", ExpectedVersion::NoStream, Some(("k", 1)));
        first.writes[0].events = (0..MAX_GROUP_EVENTS).map(|_| draft()).collect();
        let last_version = MAX_GROUP_EVENTS as u64 - 1;
        // Follows the versions the first group assigned to stream `a`.
        let mut follow = request("a", ExpectedVersion::Exact(last_version), None);
        follow.writes[0].events = (0..follow_events).map(|_| draft()).collect();
        let requests = [
            first,
            follow,
            request("b", ExpectedVersion::NoStream, None),
            // Repeats the first group's key.
            request("c", ExpectedVersion::NoStream, Some(("k", 1))),
            // Conflicts with the first group's versions of stream `a`.
            request("a", ExpectedVersion::NoStream, None),
        ];
        run_queued(sequencer, requests).await
    }

    /// Queues every request before the sequencer starts, so grouping does not depend on
    /// timing, runs it until the queue is empty, and returns the answers in queue order.
    async fn run_queued<const N: usize>(
        sequencer: Sequencer,
        requests: [AppendRequest; N],
    ) -> Vec<Result<AppendOutcome, StoreError>> {
        let (commands, queue) = mpsc::channel(16);
        let mut answers = Vec::new();
        for request in requests {
            let (reply, answer) = oneshot::channel();
            commands
                .try_send(Command::Append { request, reply })
                .unwrap();
            answers.push(answer);
        }
        drop(commands);
        sequencer.run(queue).await;

        let mut results = Vec::new();
        for answer in answers {
            results.push(answer.await.unwrap());
        }
        results
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pipelined_group_builds_on_previous() {
        let (sequencer, backend, ledger_id) = sequencer_over_memory().await;
        // The second group is large enough to be sealed while the first one commits.
        let results = run_two_groups(sequencer, backend.clone(), MIN_PIPELINED_EVENTS).await;
        let events = MAX_GROUP_EVENTS as u64;
        let follow_last = events + MIN_PIPELINED_EVENTS as u64;

        let Ok(AppendOutcome::Committed(first)) = &results[0] else {
            panic!("{:?}", results[0])
        };
        assert_eq!((first.first_position, first.last_position), (1, events));
        let Ok(AppendOutcome::Committed(follow)) = &results[1] else {
            panic!("{:?}", results[1])
        };
        assert_eq!(
            (follow.first_position, follow.last_position),
            (events + 1, follow_last)
        );
        // Stream versions start at 0, so stream `a`'s version is one less than its position.
        assert_eq!(
            follow.stream_versions,
            vec![("a".to_string(), follow_last - 1)]
        );
        let Ok(AppendOutcome::Committed(other)) = &results[2] else {
            panic!("{:?}", results[2])
        };
        assert_eq!(
            (other.first_position, other.last_position),
            (follow_last + 1, follow_last + 2)
        );
        let Ok(AppendOutcome::Duplicate(duplicate)) = &results[3] else {
            panic!("{:?}", results[3])
        };
        assert_eq!(duplicate.last_position, events);
        assert!(matches!(
            results[4],
            Err(StoreError::WrongExpectedVersion {
                actual: Some(version),
                ..
            }) if version == follow_last - 1
        ));
        let head = backend.head(ledger_id).await.unwrap().unwrap();
        assert_eq!(head.position, follow_last + 2);
        assert_eq!(head.hash, other.last_hash);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn small_group_after_failed_commit_is_rechecked() {
        let (sequencer, backend, ledger_id) = sequencer_over_memory().await;
        let faults = Arc::new(Faults::new(Arc::clone(&backend), false, true));
        // The second group is too small to be sealed during the commit, so it waits for it.
        let results = run_two_groups(sequencer, faults, 2).await;

        let Err(StoreError::CommitFailed(error)) = &results[0] else {
            panic!("{:?}", results[0])
        };
        assert!(matches!(**error, BackendError::Unavailable(_)), "{error:?}");
        // Stream `a` has no stored events once the first group failed.
        assert!(matches!(
            results[1],
            Err(StoreError::WrongExpectedVersion { actual: None, .. })
        ));
        let mut positions = Vec::new();
        for result in &results[2..] {
            let Ok(AppendOutcome::Committed(committed)) = result else {
                panic!("{result:?}")
            };
            positions.push((committed.first_position, committed.last_position));
        }
        assert_eq!(positions, vec![(1, 2), (3, 4), (5, 6)]);
        assert_eq!(backend.head(ledger_id).await.unwrap().unwrap().position, 6);
        let claimed = backend.idempotency(ledger_id, "k").await.unwrap().unwrap();
        assert_eq!((claimed.first_position, claimed.last_position), (3, 4));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failed_commit_drops_pipelined_group() {
        let (sequencer, backend, ledger_id) = sequencer_over_memory().await;
        let faults = Arc::new(Faults::new(Arc::clone(&backend), false, true));
        let results = run_two_groups(sequencer, faults, MIN_PIPELINED_EVENTS).await;

        // The first commit fails, and the second group was sealed on top of it.
        for result in &results {
            let Err(StoreError::CommitFailed(error)) = result else {
                panic!("{result:?}")
            };
            assert!(matches!(**error, BackendError::Unavailable(_)), "{error:?}");
        }
        assert_eq!(backend.head(ledger_id).await.unwrap().unwrap().position, 0);
        assert!(backend.idempotency(ledger_id, "k").await.unwrap().is_none());
        for stream in ["a", "b", "c"] {
            let events = backend.read_stream(ledger_id, stream, 0, 10).await.unwrap();
            assert!(events.is_empty(), "stream {stream}");
        }
    }

    #[test]
    fn drain_group_stops_at_rotation() {
        let (commands, mut queue) = mpsc::channel(8);
        for _ in 0..3 {
            let (reply, _answer) = oneshot::channel();
            let request = request("s", ExpectedVersion::Any, None);
            commands
                .try_send(Command::Append { request, reply })
                .unwrap();
        }
        let (reply, _answer) = oneshot::channel();
        let rotate = Command::Rotate {
            new_key: Arc::new(LedgerKey::generate()),
            actor: Actor::system("test"),
            reason: "test".into(),
            reply,
        };
        commands.try_send(rotate).unwrap();
        let Ok(Command::Append { request, reply }) = queue.try_recv() else {
            panic!("append")
        };
        let (group, rotation) = drain_group(&mut queue, (request, reply));
        assert_eq!(group.len(), 3);
        assert!(matches!(rotation, Some(Command::Rotate { .. })));
    }
}

//! The backend trait and the public store facade.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use domain::checkpoint::{LedgerCheckpoint, CHECKPOINT_STREAM};
use domain::clock::Clock;
use domain::crypto::LedgerKey;
use domain::events::{EventPayload, LedgerCreated, LedgerKeyRotated};
use domain::record::{Actor, SealedEvent, MAX_STRING_LEN};
use domain::seal::{Sealer, LEDGER_STREAM};
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use crate::checkpoints::{CheckpointPolicy, Checkpointer};
use crate::sequencer::{self, Command, Sequencer};
use crate::{
    AppendOutcome, AppendRequest, AppendResult, BackendError, ChainHead, CommitBatch,
    IdempotencyRecord, LedgerInfo, SignedHead, StoreError, Subscription,
};

/// Durable storage for sealed events. Backends store bytes; they never seal.
///
/// Every method that writes is atomic: a failed [`Backend::commit`] leaves no
/// trace of the batch, not even in the chain head.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Commits a batch in one transaction and makes it durable before returning.
    ///
    /// # Errors
    /// [`BackendError::HeadMoved`] if the stored head is not `batch.expected_head`.
    async fn commit(&self, batch: CommitBatch) -> Result<(), BackendError>;

    /// Returns the head of a ledger, or `None` if the ledger does not exist.
    async fn head(&self, ledger_id: Uuid) -> Result<Option<ChainHead>, BackendError>;

    /// Returns the last signed head of a ledger.
    async fn signed_head(&self, ledger_id: Uuid) -> Result<Option<SignedHead>, BackendError>;

    /// Returns the last version of a stream, or `None` if it has no events.
    async fn stream_version(
        &self,
        ledger_id: Uuid,
        stream_id: &str,
    ) -> Result<Option<u64>, BackendError>;

    /// Looks up an idempotency key.
    async fn idempotency(
        &self,
        ledger_id: Uuid,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, BackendError>;

    /// Returns the last version of every stream in `stream_ids` that has events. Streams
    /// without events are absent from the map.
    ///
    /// The sequencer calls this once per group. The default makes one
    /// [`Backend::stream_version`] call per stream, so wrappers need not implement it, but a
    /// backend that stores on disk should read them with one query.
    async fn stream_versions(
        &self,
        ledger_id: Uuid,
        stream_ids: &[&str],
    ) -> Result<HashMap<String, u64>, BackendError> {
        let mut versions = HashMap::with_capacity(stream_ids.len());
        for &stream_id in stream_ids {
            if let Some(version) = self.stream_version(ledger_id, stream_id).await? {
                versions.insert(stream_id.to_owned(), version);
            }
        }
        Ok(versions)
    }

    /// Looks up every key in `keys`. Keys that are not stored are absent from the map.
    ///
    /// The sequencer calls this once per group. The default makes one
    /// [`Backend::idempotency`] call per key.
    async fn idempotency_records(
        &self,
        ledger_id: Uuid,
        keys: &[&str],
    ) -> Result<HashMap<String, IdempotencyRecord>, BackendError> {
        let mut records = HashMap::with_capacity(keys.len());
        for &key in keys {
            if let Some(record) = self.idempotency(ledger_id, key).await? {
                records.insert(key.to_owned(), record);
            }
        }
        Ok(records)
    }

    /// Reads up to `limit` events of a ledger from `from_position`, in order.
    async fn read_ledger(
        &self,
        ledger_id: Uuid,
        from_position: u64,
        limit: u32,
    ) -> Result<Vec<SealedEvent>, BackendError>;

    /// Reads up to `limit` events of a stream from `from_version`, in order.
    async fn read_stream(
        &self,
        ledger_id: Uuid,
        stream_id: &str,
        from_version: u64,
        limit: u32,
    ) -> Result<Vec<SealedEvent>, BackendError>;

    /// Lists every ledger with its tenant and head.
    async fn ledgers(&self) -> Result<Vec<LedgerInfo>, BackendError>;

    /// Returns the idempotency records of a ledger whose last position is in
    /// `from_position..=to_position`, in position order, so a ledger can be copied to another
    /// store with its keys. The default reports that the backend cannot list them.
    async fn idempotency_range(
        &self,
        ledger_id: Uuid,
        from_position: u64,
        to_position: u64,
    ) -> Result<Vec<IdempotencyRecord>, BackendError> {
        let _ = (from_position, to_position);
        Err(BackendError::Unavailable(format!(
            "this backend cannot list the idempotency keys of ledger {ledger_id}"
        )))
    }
}

/// Maximum number of events in one append request.
pub const MAX_EVENTS_PER_APPEND: usize = 10_000;

/// Maximum total size in bytes of one append request's payloads and strings (16 MiB).
pub const MAX_APPEND_BYTES: usize = 16 << 20;

/// Maximum number of events returned by one read.
pub const MAX_READ_LIMIT: u32 = 10_000;

/// Page size used to scan the `ledger` stream for the current signing key.
const KEY_SCAN_PAGE: u32 = 256;

/// The store callers use: a [`Backend`] plus one sequencer task per ledger.
///
/// Cloning is cheap and every clone shares the same sequencers. Sequencers start on a
/// ledger's first append and stop on [`EventStore::shutdown`].
#[derive(Clone)]
pub struct EventStore {
    inner: Arc<Inner>,
}

struct Inner {
    backend: Arc<dyn Backend>,
    clock: Arc<dyn Clock>,
    /// Key that signs the genesis of new ledgers.
    genesis_key: Arc<LedgerKey>,
    /// Every key the store may seal with, by public key.
    ring: std::sync::Mutex<HashMap<[u8; 32], Arc<LedgerKey>>>,
    sequencers: tokio::sync::Mutex<HashMap<Uuid, SequencerHandle>>,
    /// Committed head position of each ledger, published after every commit; `None` until
    /// this process has committed to or loaded the ledger.
    heads: std::sync::Mutex<HashMap<Uuid, watch::Sender<Option<u64>>>>,
    stopped: std::sync::atomic::AtomicBool,
    /// Ledgers whose chain failed verification, with the reason; appends to them are
    /// refused until the process restarts on a repaired store.
    quarantined: std::sync::Mutex<HashMap<Uuid, String>>,
    /// When sequencers started from now on record checkpoints; `None` records none.
    checkpoint_policy: std::sync::Mutex<Option<CheckpointPolicy>>,
    /// Runtime the store was opened on. Sequencers are spawned here even when the first
    /// append comes from another runtime (such as an HTTP worker's, which stops with its
    /// worker), so they live as long as the store.
    runtime: tokio::runtime::Handle,
}

struct SequencerHandle {
    commands: mpsc::Sender<Command>,
    task: tokio::task::JoinHandle<()>,
}

impl EventStore {
    /// Opens a store over `backend` that signs new ledgers and existing ledgers whose chain
    /// names `key` as current.
    ///
    /// Must be called inside a Tokio runtime; sequencers run on that runtime.
    pub fn open(backend: Arc<dyn Backend>, key: Arc<LedgerKey>, clock: Arc<dyn Clock>) -> Self {
        Self::open_with_ring(backend, key, Vec::new(), clock)
    }

    /// Opens a store with a key ring: `genesis_key` signs new ledgers, and an existing ledger
    /// is sealed with whichever ring key its chain names as current (see
    /// [`StoreError::KeyNotInRing`]).
    pub fn open_with_ring(
        backend: Arc<dyn Backend>,
        genesis_key: Arc<LedgerKey>,
        others: Vec<Arc<LedgerKey>>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let ring = std::iter::once(Arc::clone(&genesis_key))
            .chain(others)
            .map(|key| (key.public_key(), key))
            .collect();
        let inner = Inner {
            backend,
            clock,
            genesis_key,
            ring: std::sync::Mutex::new(ring),
            sequencers: tokio::sync::Mutex::new(HashMap::new()),
            heads: std::sync::Mutex::new(HashMap::new()),
            quarantined: std::sync::Mutex::new(HashMap::new()),
            stopped: std::sync::atomic::AtomicBool::new(false),
            checkpoint_policy: std::sync::Mutex::new(None),
            runtime: tokio::runtime::Handle::current(),
        };
        EventStore {
            inner: Arc::new(inner),
        }
    }

    /// Sets when sequencers record checkpoints. It applies to sequencers that start after the
    /// call, so call it right after opening the store.
    pub fn set_checkpoint_policy(&self, policy: Option<CheckpointPolicy>) {
        let mut current = self
            .inner
            .checkpoint_policy
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *current = policy;
    }

    /// Returns the backend, for callers that read directly (verifiers, projections).
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.inner.backend
    }

    /// Creates a ledger by committing its genesis event, signed by the genesis key.
    ///
    /// # Errors
    /// [`StoreError::LedgerExists`] if the ledger has events already,
    /// [`StoreError::InvalidAppend`] for an empty or over-long tenant,
    /// [`StoreError::SequencerStopped`] after [`EventStore::shutdown`], or a backend error.
    pub async fn create_ledger(
        &self,
        ledger_id: Uuid,
        tenant: &str,
        actor: Actor,
        correlation_id: Uuid,
    ) -> Result<ChainHead, StoreError> {
        if tenant.is_empty() || tenant.len() > MAX_STRING_LEN {
            return Err(StoreError::InvalidAppend(format!(
                "tenant must be 1 to {MAX_STRING_LEN} bytes, got {}",
                tenant.len()
            )));
        }
        if self.inner.stopped.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::SequencerStopped(ledger_id));
        }
        // The sequencer map lock also serialises ledger creation, so a genesis never races a
        // sequencer start for the same id.
        let mut sequencers = self.inner.sequencers.lock().await;
        if self.inner.backend.head(ledger_id).await?.is_some() {
            return Err(StoreError::LedgerExists(ledger_id));
        }

        let sealer = Sealer::new(
            Arc::clone(&self.inner.genesis_key),
            Arc::clone(&self.inner.clock),
        );
        let (genesis, tip) = sealer.genesis(ledger_id, tenant, actor, correlation_id);
        assert_eq!(genesis.position, 0, "genesis is at position 0");
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
        match self.inner.backend.commit(batch).await {
            Ok(()) => {}
            Err(BackendError::HeadMoved { .. }) => return Err(StoreError::LedgerExists(ledger_id)),
            Err(error) => return Err(error.into()),
        }

        let checkpoints = self.load_checkpointer(ledger_id, 0).await?;
        let handle = self.spawn_sequencer(sealer, head, tip, checkpoints);
        sequencers.insert(ledger_id, handle);
        self.publish_head(ledger_id, 0);
        tracing::info!(ledger = %ledger_id, "ledger created");
        Ok(head)
    }

    /// Appends events to one or more streams atomically.
    ///
    /// The append is queued behind earlier ones for the same ledger, and this returns after
    /// the group commit that carries it is durable. An append whose caller stops waiting may
    /// still be committed, so retry it with the same idempotency key to learn the result.
    ///
    /// # Errors
    /// [`StoreError::InvalidAppend`] for a malformed request, [`StoreError::WrongExpectedVersion`],
    /// [`StoreError::IdempotencyKeyReused`], [`StoreError::LedgerNotFound`],
    /// [`StoreError::CommitFailed`] or a backend error.
    pub async fn append(
        &self,
        ledger_id: Uuid,
        request: AppendRequest,
    ) -> Result<AppendOutcome, StoreError> {
        self.check_not_quarantined(ledger_id)?;
        check_request(&request)?;
        let (reply, answer) = oneshot::channel();
        self.send(ledger_id, Command::Append { request, reply })
            .await?;
        answer
            .await
            .map_err(|_| StoreError::SequencerStopped(ledger_id))?
    }

    /// Refuses every later append to `ledger_id`, because its stored chain failed
    /// verification. Appending to a chain that no longer verifies would bury the evidence
    /// under new events; the refusal lasts until the process restarts.
    pub fn quarantine(&self, ledger_id: Uuid, reason: String) {
        let mut quarantined = match self.inner.quarantined.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        quarantined.entry(ledger_id).or_insert(reason);
    }

    /// Returns why appends to `ledger_id` are refused, if they are.
    pub fn quarantine_reason(&self, ledger_id: Uuid) -> Option<String> {
        let quarantined = match self.inner.quarantined.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        quarantined.get(&ledger_id).cloned()
    }

    fn check_not_quarantined(&self, ledger_id: Uuid) -> Result<(), StoreError> {
        match self.quarantine_reason(ledger_id) {
            Some(reason) => Err(StoreError::LedgerQuarantined { ledger_id, reason }),
            None => Ok(()),
        }
    }

    /// Rotates a ledger's signing key: appends a `ledger.key_rotated` event signed by the
    /// current key, then seals every later event with `new_key`, which joins the key ring.
    ///
    /// # Errors
    /// [`StoreError::LedgerNotFound`], [`StoreError::CommitFailed`] or a backend error.
    pub async fn rotate_key(
        &self,
        ledger_id: Uuid,
        new_key: Arc<LedgerKey>,
        actor: Actor,
        reason: &str,
    ) -> Result<AppendResult, StoreError> {
        self.lock_ring()
            .insert(new_key.public_key(), Arc::clone(&new_key));
        let (reply, answer) = oneshot::channel();
        let command = Command::Rotate {
            new_key,
            actor,
            reason: reason.to_owned(),
            reply,
        };
        self.send(ledger_id, command).await?;
        answer
            .await
            .map_err(|_| StoreError::SequencerStopped(ledger_id))?
    }

    /// Reads up to `limit` events of a ledger from `from_position`, in position order.
    ///
    /// # Errors
    /// A backend error.
    pub async fn read_ledger(
        &self,
        ledger_id: Uuid,
        from_position: u64,
        limit: u32,
    ) -> Result<Vec<SealedEvent>, StoreError> {
        let limit = limit.min(MAX_READ_LIMIT);
        Ok(self
            .inner
            .backend
            .read_ledger(ledger_id, from_position, limit)
            .await?)
    }

    /// Reads up to `limit` events of a stream from `from_version`, in version order.
    ///
    /// # Errors
    /// A backend error.
    pub async fn read_stream(
        &self,
        ledger_id: Uuid,
        stream_id: &str,
        from_version: u64,
        limit: u32,
    ) -> Result<Vec<SealedEvent>, StoreError> {
        let limit = limit.min(MAX_READ_LIMIT);
        Ok(self
            .inner
            .backend
            .read_stream(ledger_id, stream_id, from_version, limit)
            .await?)
    }

    /// Returns a ledger's committed head.
    ///
    /// # Errors
    /// [`StoreError::LedgerNotFound`] or a backend error.
    pub async fn head(&self, ledger_id: Uuid) -> Result<ChainHead, StoreError> {
        let head = self.inner.backend.head(ledger_id).await?;
        head.ok_or(StoreError::LedgerNotFound(ledger_id))
    }

    /// Returns a ledger's last signed head.
    ///
    /// # Errors
    /// [`StoreError::LedgerNotFound`] or a backend error.
    pub async fn signed_head(&self, ledger_id: Uuid) -> Result<SignedHead, StoreError> {
        let head = self.inner.backend.signed_head(ledger_id).await?;
        head.ok_or(StoreError::LedgerNotFound(ledger_id))
    }

    /// Lists every ledger.
    ///
    /// # Errors
    /// A backend error.
    pub async fn ledgers(&self) -> Result<Vec<LedgerInfo>, StoreError> {
        Ok(self.inner.backend.ledgers().await?)
    }

    /// Looks up an idempotency key of a ledger.
    ///
    /// # Errors
    /// A backend error.
    pub async fn idempotency(
        &self,
        ledger_id: Uuid,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        Ok(self.inner.backend.idempotency(ledger_id, key).await?)
    }

    /// Subscribes to a ledger from `from_position`: stored events first, then new ones as
    /// they are committed.
    pub fn subscribe(&self, ledger_id: Uuid, from_position: u64) -> Subscription {
        let committed = self.head_sender(ledger_id).subscribe();
        Subscription::new(
            Arc::clone(&self.inner.backend),
            ledger_id,
            from_position,
            committed,
        )
    }

    /// Stops every sequencer once it has committed and replied to every queued request.
    /// Appends after this return [`StoreError::SequencerStopped`].
    pub async fn shutdown(&self) {
        self.inner
            .stopped
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let handles: Vec<SequencerHandle> = {
            let mut sequencers = self.inner.sequencers.lock().await;
            sequencers.drain().map(|(_, handle)| handle).collect()
        };
        for handle in handles {
            // Dropping the last sender lets the task drain its queue and end.
            drop(handle.commands);
            if let Err(error) = handle.task.await {
                tracing::error!(%error, "sequencer task failed");
            }
        }
    }

    /// Sends a command to the ledger's sequencer, starting it if needed.
    async fn send(&self, ledger_id: Uuid, command: Command) -> Result<(), StoreError> {
        let commands = self.sequencer(ledger_id).await?;
        if commands.send(command).await.is_ok() {
            return Ok(());
        }
        // The task ended (its tip was lost); forget it so the next call starts a fresh one.
        let mut sequencers = self.inner.sequencers.lock().await;
        if sequencers
            .get(&ledger_id)
            .is_some_and(|h| h.commands.same_channel(&commands))
        {
            sequencers.remove(&ledger_id);
        }
        Err(StoreError::SequencerStopped(ledger_id))
    }

    async fn sequencer(&self, ledger_id: Uuid) -> Result<mpsc::Sender<Command>, StoreError> {
        if self.inner.stopped.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::SequencerStopped(ledger_id));
        }
        let mut sequencers = self.inner.sequencers.lock().await;
        if let Some(handle) = sequencers.get(&ledger_id) {
            if !handle.commands.is_closed() {
                return Ok(handle.commands.clone());
            }
        }

        let (head, tip) = sequencer::load_tip(self.inner.backend.as_ref(), ledger_id).await?;
        let key = self.current_key(ledger_id).await?;
        let sealer = Sealer::new(key, Arc::clone(&self.inner.clock));
        let checkpoints = self.load_checkpointer(ledger_id, head.position).await?;
        let handle = self.spawn_sequencer(sealer, head, tip, checkpoints);
        let commands = handle.commands.clone();
        sequencers.insert(ledger_id, handle);
        tracing::debug!(ledger = %ledger_id, position = head.position, "sequencer started");
        Ok(commands)
    }

    fn spawn_sequencer(
        &self,
        sealer: Sealer,
        head: ChainHead,
        tip: domain::seal::ChainTip,
        checkpoints: Option<Checkpointer>,
    ) -> SequencerHandle {
        let (commands, queue) = mpsc::channel(sequencer::CHANNEL_CAPACITY);
        let committed = self.head_sender(head.ledger_id);
        let sequencer = Sequencer::new(
            Arc::clone(&self.inner.backend),
            sealer,
            head,
            tip,
            committed,
        )
        .with_checkpoints(checkpoints);
        let task = self.inner.runtime.spawn(sequencer.run(queue));
        SequencerHandle { commands, task }
    }

    /// Rebuilds the checkpoint frontier of a ledger when checkpoints are on.
    async fn load_checkpointer(
        &self,
        ledger_id: Uuid,
        head_position: u64,
    ) -> Result<Option<Checkpointer>, StoreError> {
        let policy = *self
            .inner
            .checkpoint_policy
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(policy) = policy else {
            return Ok(None);
        };
        let backend = self.inner.backend.as_ref();
        let checkpointer = Checkpointer::load(backend, ledger_id, head_position, policy).await?;
        Ok(Some(checkpointer))
    }

    /// Finds the key the ledger's chain names as current (the last genesis or rotation event
    /// of the `ledger` stream) in the key ring.
    async fn current_key(&self, ledger_id: Uuid) -> Result<Arc<LedgerKey>, StoreError> {
        let public_key = current_public_key(self.inner.backend.as_ref(), ledger_id).await?;
        let key = self.lock_ring().get(&public_key).cloned();
        key.ok_or_else(|| StoreError::KeyNotInRing {
            ledger_id,
            public_key_hex: hex::encode(public_key),
        })
    }

    fn head_sender(&self, ledger_id: Uuid) -> watch::Sender<Option<u64>> {
        let mut heads = self
            .inner
            .heads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        heads
            .entry(ledger_id)
            .or_insert_with(|| watch::Sender::new(None))
            .clone()
    }

    fn publish_head(&self, ledger_id: Uuid, position: u64) {
        self.head_sender(ledger_id).send_replace(Some(position));
    }

    fn lock_ring(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Arc<LedgerKey>>> {
        // The ring map stays whole if a holder panics: each insert is one call.
        self.inner
            .ring
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Scans the `ledger` stream for the public key named by its last genesis or rotation event.
async fn current_public_key(
    backend: &dyn Backend,
    ledger_id: Uuid,
) -> Result<[u8; 32], StoreError> {
    let corrupt = |position: u64, reason: String| BackendError::Corrupt {
        ledger_id,
        position,
        reason,
    };
    let mut current = None;
    let mut from_version = 0;
    loop {
        let page = backend
            .read_stream(ledger_id, LEDGER_STREAM, from_version, KEY_SCAN_PAGE)
            .await?;
        for event in &page {
            let named = match event.event_type.as_str() {
                LedgerCreated::EVENT_TYPE => {
                    LedgerCreated::decode(&event.payload).map(|p| p.public_key)
                }
                LedgerKeyRotated::EVENT_TYPE => {
                    LedgerKeyRotated::decode(&event.payload).map(|p| p.new_public_key)
                }
                _ => continue,
            };
            current = Some(named.map_err(|e| corrupt(event.position, e.to_string()))?);
        }
        match page.last() {
            Some(last) if page.len() == KEY_SCAN_PAGE as usize => {
                from_version = last.stream_version + 1
            }
            _ => break,
        }
    }
    let missing = || corrupt(0, "the ledger stream names no signing key".into());
    Ok(current.ok_or_else(missing)?)
}

/// Checks what the sequencer must never see: requests without events or oversized, repeated streams,
/// writes to the store's own `ledger` stream, and drafts over the record limits.
fn check_request(request: &AppendRequest) -> Result<(), StoreError> {
    let invalid = |reason: String| Err(StoreError::InvalidAppend(reason));
    if request.writes.is_empty() {
        return invalid("an append needs at least one stream write".into());
    }
    let mut streams = std::collections::HashSet::new();
    let mut events = 0usize;
    let mut bytes = 0usize;
    for write in &request.writes {
        check_stream_id(&write.stream_id)?;
        if !streams.insert(write.stream_id.as_str()) {
            return invalid(format!("stream {} appears twice", write.stream_id));
        }

        for draft in &write.events {
            draft
                .check_limits()
                .map_err(|e| StoreError::InvalidAppend(e.to_string()))?;
            if is_ledger_event_type(&draft.event_type) {
                return invalid(format!(
                    "event type {} is written by the store",
                    draft.event_type
                ));
            }
            bytes += draft.payload.len() + draft.event_type.len() + draft.actor.id.len();
        }
        events += write.events.len();
    }
    if events == 0 {
        // A write without events only checks its stream's version; an append must add
        // something, or it would have no position to report.
        return invalid("an append needs at least one event".into());
    }
    if events > MAX_EVENTS_PER_APPEND {
        return invalid(format!(
            "{events} events, over the limit of {MAX_EVENTS_PER_APPEND}"
        ));
    }
    if bytes > MAX_APPEND_BYTES {
        return invalid(format!(
            "{bytes} bytes, over the limit of {MAX_APPEND_BYTES}"
        ));
    }
    Ok(())
}

fn check_stream_id(stream_id: &str) -> Result<(), StoreError> {
    if stream_id.is_empty() || stream_id.len() > MAX_STRING_LEN {
        return Err(StoreError::InvalidAppend(format!(
            "stream id must be 1 to {MAX_STRING_LEN} bytes, got {}",
            stream_id.len()
        )));
    }
    if stream_id == LEDGER_STREAM || stream_id == CHECKPOINT_STREAM {
        return Err(StoreError::InvalidAppend(format!(
            "stream {stream_id} is written by the store"
        )));
    }
    Ok(())
}

fn is_ledger_event_type(event_type: &str) -> bool {
    event_type == LedgerCreated::EVENT_TYPE
        || event_type == LedgerKeyRotated::EVENT_TYPE
        || event_type == LedgerCheckpoint::EVENT_TYPE
}

//! The projection runner: one task per ledger that follows the event store and applies
//! events to the read models, and a supervisor that finds new ledgers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use domain::record::{SealedEvent, HASH_LEN};
use eventstore_adapter::{EventStore, StoreError, Subscription};
use futures::FutureExt;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::{ProjectionError, ReadModels};

/// How often the supervisor lists the store's ledgers to find new ones.
const LEDGER_POLL_INTERVAL: Duration = Duration::from_millis(250);

/// Maximum events applied in one transaction. Events already buffered by the
/// subscription are batched up to this size, which speeds up a rebuild.
const MAX_BATCH: usize = 256;

/// First pause before retrying after a database or store failure. Each retry doubles it,
/// up to [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(500);

/// Maximum pause between retries.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(30);

/// State of a ledger's projection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProjectionState {
    /// No runner in this process follows this ledger (yet), or another node runs it.
    Untracked,
    /// Applying events or waiting for new ones.
    Running,
    /// A database or store failure interrupted the projection, which retries after a pause.
    Retrying,
    /// The event history cannot be applied (gap, broken link, undecodable payload,
    /// inconsistent event). The ledger stays stopped until the runner is restarted.
    Failed,
    /// The runner was shut down.
    Stopped,
}

/// Progress and health of one ledger's projection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProjectionStatus {
    /// Ledger id.
    pub ledger_id: Uuid,
    /// Current state.
    pub state: ProjectionState,
    /// Position the read models reflect; `None` before the first event is applied.
    pub position: Option<u64>,
    /// Hash (hex) of the event at `position`.
    pub head_hash: Option<String>,
    /// Head position of the ledger in the event store; `None` if the store has no such ledger.
    pub store_position: Option<u64>,
    /// Events committed to the store but not yet applied.
    pub lag: Option<u64>,
    /// The last error, kept until the projection makes progress again.
    pub error: Option<String>,
}

/// The projection runner; see [`ProjectionRunner::spawn`].
#[derive(Debug)]
pub struct ProjectionRunner;

impl ProjectionRunner {
    /// Starts following every ledger of `store`, now and as ledgers are created, and
    /// returns the handle that reports status and shuts the runner down.
    ///
    /// Must be called inside a Tokio runtime.
    pub fn spawn(store: EventStore, models: ReadModels) -> RunnerHandle {
        Self::start(store, models, None)
    }

    /// Starts following one ledger only, as a node does for each ledger whose lease it
    /// holds. [`RunnerHandle::track`] ignores other ledgers.
    ///
    /// Must be called inside a Tokio runtime.
    pub fn spawn_for(store: EventStore, models: ReadModels, ledger_id: Uuid) -> RunnerHandle {
        Self::start(store, models, Some(ledger_id))
    }

    fn start(store: EventStore, models: ReadModels, only: Option<Uuid>) -> RunnerHandle {
        let (shutdown, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            store,
            models,
            only,
            runtime: tokio::runtime::Handle::current(),
            ledgers: Mutex::new(HashMap::new()),
            shutdown: shutdown_rx,
        });
        let supervisor = tokio::spawn(supervise(Arc::clone(&shared)));
        tracing::info!("projection runner started");
        RunnerHandle {
            shared,
            shutdown,
            supervisor: std::sync::Mutex::new(Some(supervisor)),
        }
    }

    /// Returns the status of a ledger that no runner in this process follows, such as on
    /// a standby node while another node projects into shared read models: the stored
    /// checkpoint against the store head, in state [`ProjectionState::Untracked`].
    ///
    /// # Errors
    /// [`ProjectionError::Database`] if the checkpoint cannot be read, or
    /// [`ProjectionError::Store`] if the store head cannot be read.
    pub async fn idle_status(
        store: &EventStore,
        models: &ReadModels,
        ledger_id: Uuid,
    ) -> Result<ProjectionStatus, ProjectionError> {
        let progress = LedgerProgress::untracked(models, ledger_id).await?;
        let store_position = store_position(store, ledger_id).await?;
        Ok(progress.into_status(ledger_id, store_position))
    }
}

async fn store_position(
    store: &EventStore,
    ledger_id: Uuid,
) -> Result<Option<u64>, ProjectionError> {
    match store.head(ledger_id).await {
        Ok(head) => Ok(Some(head.position)),
        Err(StoreError::LedgerNotFound(_)) => Ok(None),
        Err(error) => Err(error.into()),
    }
}

/// Handle to a running [`ProjectionRunner`].
pub struct RunnerHandle {
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    supervisor: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl RunnerHandle {
    /// Starts following a ledger now instead of at the supervisor's next poll. Does
    /// nothing if the ledger is already followed or has failed.
    pub fn track(&self, ledger_id: Uuid) {
        self.shared.ensure_started(ledger_id);
    }

    /// Returns the progress and health of a ledger's projection.
    ///
    /// # Errors
    /// [`ProjectionError::Database`] if the checkpoint of an untracked ledger cannot be
    /// read, or [`ProjectionError::Store`] if the store head cannot be read.
    pub async fn status(&self, ledger_id: Uuid) -> Result<ProjectionStatus, ProjectionError> {
        let known = self
            .shared
            .lock_ledgers()
            .get(&ledger_id)
            .map(LedgerProgress::clone);
        let progress = match known {
            Some(progress) => progress,
            None => LedgerProgress::untracked(&self.shared.models, ledger_id).await?,
        };
        let store_position = store_position(&self.shared.store, ledger_id).await?;
        Ok(progress.into_status(ledger_id, store_position))
    }

    /// Stops every ledger task after its current transaction and waits for them.
    /// Calling it again does nothing.
    pub async fn shutdown(&self) {
        self.shutdown.send_replace(true);
        let supervisor = match self.supervisor.lock() {
            Ok(mut slot) => slot.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(supervisor) = supervisor {
            log_join(supervisor.await);
        }
        let tasks: Vec<JoinHandle<()>> = self
            .shared
            .lock_ledgers()
            .values_mut()
            .filter_map(|p| p.task.take())
            .collect();
        for task in tasks {
            log_join(task.await);
        }
        tracing::info!("projection runner stopped");
    }
}

impl std::fmt::Debug for RunnerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ledgers = self.shared.lock_ledgers().len();
        f.debug_struct("RunnerHandle")
            .field("ledgers", &ledgers)
            .finish_non_exhaustive()
    }
}

impl Drop for RunnerHandle {
    fn drop(&mut self) {
        // Without an explicit shutdown, the tasks still stop at their next await.
        self.shutdown.send_replace(true);
    }
}

fn log_join(result: Result<(), tokio::task::JoinError>) {
    if let Err(error) = result {
        tracing::error!(%error, "projection task ended abnormally");
    }
}

/// State shared by the handle, the supervisor and the ledger tasks.
struct Shared {
    store: EventStore,
    models: ReadModels,
    /// The one ledger this runner follows, or `None` for every ledger of the store.
    only: Option<Uuid>,
    /// Runtime the runner was started on. Ledger tasks are spawned here even when
    /// `track` is called from another runtime (such as an HTTP worker's), so they
    /// live as long as the runner.
    runtime: tokio::runtime::Handle,
    ledgers: Mutex<HashMap<Uuid, LedgerProgress>>,
    shutdown: watch::Receiver<bool>,
}

/// The runner's record of one ledger: state, applied tip, last error and task.
#[derive(Debug)]
struct LedgerProgress {
    state: ProjectionState,
    tip: Option<(u64, [u8; HASH_LEN])>,
    error: Option<String>,
    task: Option<JoinHandle<()>>,
}

impl LedgerProgress {
    fn new(state: ProjectionState) -> Self {
        LedgerProgress {
            state,
            tip: None,
            error: None,
            task: None,
        }
    }

    async fn untracked(models: &ReadModels, ledger_id: Uuid) -> Result<Self, ProjectionError> {
        let checkpoint = models.checkpoint(ledger_id).await?;
        let mut progress = LedgerProgress::new(ProjectionState::Untracked);
        progress.tip = checkpoint.map(|c| (c.position, c.head_hash));
        Ok(progress)
    }

    fn clone(&self) -> Self {
        LedgerProgress {
            state: self.state,
            tip: self.tip,
            error: self.error.clone(),
            task: None,
        }
    }

    fn into_status(self, ledger_id: Uuid, store_position: Option<u64>) -> ProjectionStatus {
        let position = self.tip.map(|(position, _)| position);
        let lag = store_position.map(|head| match position {
            Some(position) => head.saturating_sub(position),
            None => head.saturating_add(1),
        });
        ProjectionStatus {
            ledger_id,
            state: self.state,
            position,
            head_hash: self.tip.map(|(_, hash)| hex::encode(hash)),
            store_position,
            lag,
            error: self.error,
        }
    }
}

impl Shared {
    fn lock_ledgers(&self) -> MutexGuard<'_, HashMap<Uuid, LedgerProgress>> {
        // Every critical section is a single map update, so a panic inside one leaves
        // the map consistent.
        self.ledgers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn ensure_started(self: &Arc<Self>, ledger_id: Uuid) {
        if *self.shutdown.borrow() || self.only.is_some_and(|only| only != ledger_id) {
            return;
        }
        let mut ledgers = self.lock_ledgers();
        if ledgers.contains_key(&ledger_id) {
            return;
        }
        let mut progress = LedgerProgress::new(ProjectionState::Running);
        let task = self
            .runtime
            .spawn(follow_ledger(Arc::clone(self), ledger_id));
        progress.task = Some(task);
        ledgers.insert(ledger_id, progress);
    }

    fn update(&self, ledger_id: Uuid, change: impl FnOnce(&mut LedgerProgress)) {
        if let Some(progress) = self.lock_ledgers().get_mut(&ledger_id) {
            change(progress);
        }
    }
}

/// Lists the store's ledgers every [`LEDGER_POLL_INTERVAL`] and starts a task for each new one.
async fn supervise(shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.clone();
    if let Some(only) = shared.only {
        // A runner of one ledger has nothing to discover.
        shared.ensure_started(only);
        let _ = shutdown.wait_for(|stop| *stop).await;
        return;
    }
    let mut failing = false;
    loop {
        match shared.store.ledgers().await {
            Ok(ledgers) => {
                failing = false;
                for ledger in ledgers {
                    shared.ensure_started(ledger.ledger_id);
                }
            }
            // Logged once per run of failures, because the poll repeats four times a second.
            Err(error) if !failing => {
                failing = true;
                tracing::warn!(%error, "listing ledgers failed; retrying");
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            () = tokio::time::sleep(LEDGER_POLL_INTERVAL) => {}
        }
    }
}

/// Projects one ledger until shutdown or a permanent failure, retrying the others.
async fn follow_ledger(shared: Arc<Shared>, ledger_id: Uuid) {
    let mut shutdown = shared.shutdown.clone();
    let mut delay = FIRST_RETRY_DELAY;
    tracing::info!(ledger = %ledger_id, "projection started");
    loop {
        let error = match project(&shared, ledger_id).await {
            Ok(()) => {
                shared.update(ledger_id, |p| p.state = ProjectionState::Stopped);
                tracing::info!(ledger = %ledger_id, "projection stopped");
                return;
            }
            Err(error) => error,
        };
        if error.is_permanent() {
            tracing::error!(ledger = %ledger_id, %error, "projection failed; ledger stopped");
            shared.update(ledger_id, |p| {
                p.state = ProjectionState::Failed;
                p.error = Some(error.to_string());
            });
            return;
        }

        let retry_in_ms = delay.as_millis();
        tracing::warn!(ledger = %ledger_id, %error, retry_in_ms, "projection failed; retrying");
        shared.update(ledger_id, |p| {
            p.state = ProjectionState::Retrying;
            p.error = Some(error.to_string());
        });
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => {
                shared.update(ledger_id, |p| p.state = ProjectionState::Stopped);
                return;
            }
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(MAX_RETRY_DELAY);
    }
}

/// Subscribes from the checkpoint and applies batches until shutdown (`Ok`) or an error.
async fn project(shared: &Shared, ledger_id: Uuid) -> Result<(), ProjectionError> {
    let mut shutdown = shared.shutdown.clone();
    let checkpoint = shared.models.checkpoint(ledger_id).await?;
    let tip = checkpoint.map(|c| (c.position, c.head_hash));
    // The read models responded, so an error kept from an earlier attempt (such as a
    // rejected database password, since rotated) is cleared, even when no event arrives
    // to prove progress.
    shared.update(ledger_id, |p| {
        p.tip = tip;
        if p.state == ProjectionState::Retrying {
            p.state = ProjectionState::Running;
            p.error = None;
        }
    });
    let from = match checkpoint {
        Some(c) => c
            .position
            .checked_add(1)
            .ok_or(ProjectionError::OutOfRange {
                field: "position",
                value: c.position,
            })?,
        None => 0,
    };
    let mut subscription = shared.store.subscribe(ledger_id, from);

    loop {
        // `Subscription::next` keeps its state across cancellation, so dropping it on
        // shutdown loses no event.
        let first = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return Ok(()),
            next = subscription.next() => next,
        };
        let (batch, pending_error) = collect_batch(ledger_id, first, &mut subscription)?;

        // The batch commits before the error that ended it is returned, so a retry
        // resumes right after the last good event.
        if !batch.is_empty() {
            apply(shared, ledger_id, &batch).await?;
        }
        if let Some(error) = pending_error {
            return Err(error.into());
        }
    }
}

/// Returns the first event plus every event the subscription yields without waiting,
/// up to [`MAX_BATCH`], and the store error that stopped the batch early, if any.
fn collect_batch(
    ledger_id: Uuid,
    first: Option<Result<SealedEvent, StoreError>>,
    subscription: &mut Subscription,
) -> Result<(Vec<SealedEvent>, Option<StoreError>), ProjectionError> {
    let first = match first {
        Some(result) => result?,
        None => return Err(ProjectionError::SubscriptionEnded { ledger_id }),
    };
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match subscription.next().now_or_never() {
            Some(Some(Ok(event))) => batch.push(event),
            Some(Some(Err(error))) => return Ok((batch, Some(error))),
            Some(None) | None => break,
        }
    }
    Ok((batch, None))
}

/// Applies a batch. When one of its events cannot be applied, applies the events before
/// it, so the checkpoint stops right before the failed event, and then returns the error.
async fn apply(
    shared: &Shared,
    ledger_id: Uuid,
    batch: &[SealedEvent],
) -> Result<(), ProjectionError> {
    let error = match apply_all(shared, ledger_id, batch).await {
        Ok(()) => return Ok(()),
        Err(error) => error,
    };
    let failed_at = error
        .position()
        .and_then(|p| batch.iter().position(|e| e.position == p));
    if let Some(prefix) = failed_at.filter(|&index| index > 0) {
        apply_all(shared, ledger_id, &batch[..prefix]).await?;
    }
    Err(error)
}

async fn apply_all(
    shared: &Shared,
    ledger_id: Uuid,
    batch: &[SealedEvent],
) -> Result<(), ProjectionError> {
    let checkpoint = shared.models.apply_batch(ledger_id, batch).await?;
    let tip = checkpoint.map(|c| (c.position, c.head_hash));
    let position = tip.map(|(position, _)| position);
    tracing::debug!(ledger = %ledger_id, events = batch.len(), ?position, "events applied");
    shared.update(ledger_id, |p| {
        p.tip = tip;
        p.state = ProjectionState::Running;
        p.error = None;
    });
    Ok(())
}

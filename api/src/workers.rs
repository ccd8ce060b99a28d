//! Background workers of each ledger, running only while this node holds its lease.
//!
//! [`LedgerWorkers`] runs rounds, one every check interval. A round confirms the leases the
//! node holds and stops the workers of any ledger whose lease is gone. It then lists the
//! store's ledgers and counts the live nodes, which gives this node's share: the number
//! of ledgers divided by the number of nodes, rounded up. Above its share the node stops
//! the workers of the extra ledgers and releases their leases, so a node that joins gets
//! ledgers to run. Below it the node tries the leases of ledgers that run nowhere, in an
//! order of its own so that nodes do not all try the same ledger first, and starts the
//! workers of each one it gets. When the lease store fails, the node stops every worker,
//! closes its session and tries again after one retry interval.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use eventstore_adapter::EventStore;
use projections::RunnerHandle;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::dispatcher::Dispatcher;
use crate::lease::{LeaseError, LeaseSession};

/// The workers of one ledger.
#[derive(Default)]
pub struct Workers {
    /// Projection runner of the ledger, when the read models are shared between nodes.
    pub runner: Option<RunnerHandle>,
    /// Bank dispatcher of the ledger, when a bank is configured.
    pub dispatcher: Option<Dispatcher>,
}

impl Workers {
    /// Stops the dispatcher, then the runner, letting committed work finish.
    pub async fn shutdown(&self) {
        if let Some(dispatcher) = &self.dispatcher {
            dispatcher.shutdown().await;
        }
        if let Some(runner) = &self.runner {
            runner.shutdown().await;
        }
    }
}

/// How often a node runs its rounds.
#[derive(Debug, Clone, Copy)]
pub struct LeaseTimings {
    /// Pause after a failed round, before the node opens a new lease session.
    pub retry: Duration,
    /// Pause between rounds: checks of the held leases and attempts on free ledgers.
    pub check: Duration,
}

/// Starts the workers of a ledger each time this node gains its lease.
pub type StartWorkers = Box<dyn Fn(Uuid) -> anyhow::Result<Workers> + Send + Sync>;

/// Workers by ledger, for the ledgers whose lease this node holds.
type Running = Arc<Mutex<HashMap<Uuid, Arc<Workers>>>>;

/// The ledgers that the last round found in the store.
type Known = Arc<Mutex<HashSet<Uuid>>>;

/// The workers of every ledger whose lease this node holds.
pub struct LedgerWorkers {
    running: Running,
    known: Known,
    stop: watch::Sender<bool>,
    wake: Arc<Notify>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl LedgerWorkers {
    /// Runs one round now, so the ledgers this node can take have their workers running
    /// when this returns, then keeps running rounds in a background task.
    ///
    /// Must be called inside a Tokio runtime.
    ///
    /// # Errors
    /// Returns the error of `start_workers` when it fails in the first round, so a
    /// configuration error stops the process at start-up. Later failures are logged, the
    /// lease is released, and another round tries again.
    pub async fn start(
        leases: Box<dyn LeaseSession>,
        timings: LeaseTimings,
        store: EventStore,
        start_workers: StartWorkers,
    ) -> anyhow::Result<LedgerWorkers> {
        let (stop, stop_rx) = watch::channel(false);
        let mut supervisor = Supervisor {
            leases,
            timings,
            store,
            start_workers,
            running: Running::default(),
            known: Known::default(),
            stop: stop_rx,
            wake: Arc::new(Notify::new()),
            salt: rand::random(),
            failures: 0,
        };
        tracing::info!(lease = %supervisor.leases.describe(), "ledger lease supervisor started");
        if let Err(failure) = supervisor.round().await {
            match failure {
                RoundFailure::Start(error) => {
                    supervisor.stop_all().await;
                    return Err(error);
                }
                RoundFailure::Lease(error) => supervisor.lost(&error).await,
            }
        }
        let running = Arc::clone(&supervisor.running);
        let known = Arc::clone(&supervisor.known);
        let wake = Arc::clone(&supervisor.wake);
        let task = tokio::spawn(supervisor.run());
        Ok(LedgerWorkers {
            running,
            known,
            stop,
            wake,
            task: Mutex::new(Some(task)),
        })
    }

    /// Returns the workers of a ledger, or `None` while another node runs them.
    pub fn for_ledger(&self, ledger_id: Uuid) -> Option<Arc<Workers>> {
        lock(&self.running).get(&ledger_id).cloned()
    }

    /// Returns the ledgers whose workers run on this node, in order.
    pub fn held(&self) -> Vec<Uuid> {
        let mut held: Vec<Uuid> = lock(&self.running).keys().copied().collect();
        held.sort_unstable();
        held
    }

    /// Returns the workers of any one ledger this node runs.
    pub fn any(&self) -> Option<Arc<Workers>> {
        lock(&self.running).values().next().cloned()
    }

    /// Runs a round now rather than at the end of the pause when `ledger_id` is new to
    /// the supervisor, so the workers of a new ledger start at once somewhere.
    pub fn notice(&self, ledger_id: Uuid) {
        if !lock(&self.known).contains(&ledger_id) {
            self.wake.notify_one();
        }
    }

    /// Stops the workers and releases the leases. Calling it again does nothing.
    pub async fn shutdown(&self) {
        self.stop.send_replace(true);
        let task = lock(&self.task).take();
        if let Some(task) = task {
            if let Err(error) = task.await {
                tracing::error!(%error, "ledger lease supervisor ended abnormally");
            }
        }
    }
}

impl Drop for LedgerWorkers {
    fn drop(&mut self) {
        // Without an explicit shutdown the supervisor still stops at its next pause.
        self.stop.send_replace(true);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Each critical section is one insert, removal or clone, so a poisoned value is whole.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Why a round ended early.
enum RoundFailure {
    /// The lease store failed; every lease may be lost.
    Lease(LeaseError),
    /// The workers of a ledger failed to start.
    Start(anyhow::Error),
}

impl From<LeaseError> for RoundFailure {
    fn from(error: LeaseError) -> Self {
        RoundFailure::Lease(error)
    }
}

/// The background task's state.
struct Supervisor {
    leases: Box<dyn LeaseSession>,
    timings: LeaseTimings,
    store: EventStore,
    start_workers: StartWorkers,
    running: Running,
    known: Known,
    stop: watch::Receiver<bool>,
    wake: Arc<Notify>,
    /// Orders the ledgers this node tries first, differently on each node.
    salt: u64,
    /// Failed rounds in a row.
    failures: u32,
}

/// Failed rounds in a row between two log lines.
const FAILURE_LOG_EVERY: u32 = 60;

impl Supervisor {
    async fn run(mut self) {
        loop {
            let pause = match self.round().await {
                Ok(()) => {
                    self.failures = 0;
                    self.timings.check
                }
                Err(RoundFailure::Lease(error)) => {
                    self.lost(&error).await;
                    self.timings.retry
                }
                Err(RoundFailure::Start(error)) => {
                    tracing::error!(error = %format!("{error:#}"), "ledger workers failed to start; lease released");
                    self.timings.retry
                }
            };
            if self.pause(pause).await {
                break;
            }
        }
        // Other nodes take the released ledgers at their next round.
        self.stop_all().await;
        tracing::info!("ledger leases released");
    }

    /// Confirms the held leases, hands over ledgers above the share and takes free ones
    /// below it.
    async fn round(&mut self) -> Result<(), RoundFailure> {
        let running = self.running_ledgers();
        let held = self.leases.held(&running).await?;
        for &ledger_id in running.iter().filter(|l| !held.contains(l)) {
            tracing::warn!(ledger = %ledger_id, "ledger lease lost; workers stopped");
            self.stop_ledger(ledger_id).await;
        }

        let ledgers = match self.store.ledgers().await {
            Ok(ledgers) => ledgers
                .iter()
                .map(|info| info.ledger_id)
                .collect::<Vec<_>>(),
            Err(error) => {
                // The held leases stay: the store may come back before the lease store.
                tracing::warn!(%error, "listing ledgers for the leases failed; retrying");
                return Ok(());
            }
        };
        *lock(&self.known) = ledgers.iter().copied().collect();
        let members = self.leases.members().await?;
        let share = ledgers.len().div_ceil(members as usize);
        self.hand_over_above(share).await?;
        self.take_free(ledgers, share).await
    }

    /// Stops the workers of the ledgers above `share` and releases their leases.
    async fn hand_over_above(&mut self, share: usize) -> Result<(), RoundFailure> {
        let mut running = self.running_ledgers();
        while running.len() > share {
            let Some(ledger_id) = running.pop() else {
                break;
            };
            self.stop_ledger(ledger_id).await;
            self.leases.release(ledger_id).await?;
            tracing::info!(ledger = %ledger_id, share, "ledger lease handed over to another node");
        }
        Ok(())
    }

    /// Tries the leases of ledgers this node does not run until it runs `share` of them.
    async fn take_free(
        &mut self,
        mut ledgers: Vec<Uuid>,
        share: usize,
    ) -> Result<(), RoundFailure> {
        let salt = self.salt;
        ledgers.sort_by_cached_key(|ledger_id| preference(salt, *ledger_id));
        for ledger_id in ledgers {
            if lock(&self.running).len() >= share {
                break;
            }
            if lock(&self.running).contains_key(&ledger_id) {
                continue;
            }
            if self.leases.try_acquire(ledger_id).await? {
                self.start_ledger(ledger_id).await?;
            }
        }
        Ok(())
    }

    /// Starts the workers of a ledger whose lease this node has just taken, releasing the
    /// lease when they fail to start.
    async fn start_ledger(&mut self, ledger_id: Uuid) -> Result<(), RoundFailure> {
        match (self.start_workers)(ledger_id) {
            Ok(workers) => {
                lock(&self.running).insert(ledger_id, Arc::new(workers));
                tracing::info!(ledger = %ledger_id, "ledger lease acquired; workers started");
                Ok(())
            }
            Err(error) => {
                self.leases.release(ledger_id).await?;
                Err(RoundFailure::Start(error))
            }
        }
    }

    async fn stop_ledger(&mut self, ledger_id: Uuid) {
        let workers = lock(&self.running).remove(&ledger_id);
        if let Some(workers) = workers {
            workers.shutdown().await;
        }
    }

    fn running_ledgers(&self) -> Vec<Uuid> {
        let mut running: Vec<Uuid> = lock(&self.running).keys().copied().collect();
        running.sort_unstable();
        running
    }

    /// Stops every worker after the lease store failed, and closes the session. The log
    /// line comes with the first failure of a run and then every [`FAILURE_LOG_EVERY`]th,
    /// so an unreachable database does not flood the log.
    async fn lost(&mut self, error: &LeaseError) {
        if self.failures.is_multiple_of(FAILURE_LOG_EVERY) {
            let failures = self.failures + 1;
            let ledgers = lock(&self.running).len();
            tracing::warn!(%error, failures, ledgers, "lease store failed; workers stopped, retrying");
        }
        self.failures = self.failures.saturating_add(1);
        self.stop_all().await;
    }

    /// Stops every worker, then closes the session, which gives every lease up.
    async fn stop_all(&mut self) {
        for ledger_id in self.running_ledgers() {
            self.stop_ledger(ledger_id).await;
        }
        self.leases.close().await;
    }

    /// Sleeps for `duration` or until woken; returns `true` at once if a stop is asked.
    async fn pause(&mut self, duration: Duration) -> bool {
        if *self.stop.borrow() {
            return true;
        }
        tokio::select! {
            _ = tokio::time::sleep(duration) => false,
            () = self.wake.notified() => *self.stop.borrow(),
            changed = self.stop.changed() => changed.is_err() || *self.stop.borrow(),
        }
    }
}

/// Returns where a ledger comes in this node's order of attempts.
fn preference(salt: u64, ledger_id: Uuid) -> [u8; 8] {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&salt.to_be_bytes());
    hasher.update(ledger_id.as_bytes());
    let mut first = [0_u8; 8];
    first.copy_from_slice(&hasher.finalize().as_bytes()[..8]);
    first
}

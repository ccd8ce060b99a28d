//! Background workers that run only while this node holds the lease.
//!
//! [`LeasedWorkers`] loops over two phases. As a standby it tries the lease every retry
//! interval. As the holder it starts the workers, confirms the lease every check interval,
//! and on the first failed check stops the workers, then waits one retry interval before it
//! tries to acquire again.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use projections::RunnerHandle;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::dispatcher::Dispatcher;
use crate::lease::{HeldLease, Lease, LeaseError};

/// The workers one lease holder runs.
#[derive(Default)]
pub struct Workers {
    /// Projection runner, when the read models are shared between nodes.
    pub runner: Option<RunnerHandle>,
    /// Bank dispatcher, when a bank is configured.
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

/// Starts a fresh set of workers each time the lease is acquired.
pub type StartWorkers = Box<dyn Fn() -> anyhow::Result<Workers> + Send + Sync>;

/// How often a standby retries and a holder checks.
#[derive(Debug, Clone, Copy)]
pub struct LeaseTimings {
    /// Pause between acquisition attempts.
    pub retry: Duration,
    /// Pause between checks of the held lease.
    pub check: Duration,
}

/// Runner of [`Workers`] for as long as this node has the [`Lease`].
pub struct LeasedWorkers {
    current: Arc<Mutex<Option<Arc<Workers>>>>,
    stop: watch::Sender<bool>,
    held: watch::Receiver<bool>,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// Workers started under a lease, with the lease.
type Running = (Arc<Workers>, Box<dyn HeldLease>);

/// Reason the holder gave up its workers.
enum HoldEnd {
    Lost(LeaseError),
    Stopped(Box<dyn HeldLease>),
}

impl LeasedWorkers {
    /// Tries the lease once now, so a granted lease has its workers running when this
    /// returns, then keeps acquiring, holding and checking it in a background task.
    ///
    /// Must be called inside a Tokio runtime.
    ///
    /// # Errors
    /// Returns the error of `start_workers` when the lease is granted at once but the
    /// workers fail to start, so a configuration error stops the process at start-up.
    /// Later failures are logged and retried.
    pub async fn start(
        lease: Box<dyn Lease>,
        timings: LeaseTimings,
        start_workers: StartWorkers,
    ) -> anyhow::Result<LeasedWorkers> {
        let (stop, stop_rx) = watch::channel(false);
        let (held_tx, held) = watch::channel(false);
        let mut supervisor = Supervisor {
            lease,
            timings,
            start_workers,
            current: Arc::new(Mutex::new(None)),
            held: held_tx,
            stop: stop_rx,
            failures: 0,
        };
        tracing::info!(lease = %supervisor.lease.describe(), "lease supervisor started");
        let running = match supervisor.try_acquire().await {
            Some(held) => Some(supervisor.start(held).await?),
            None => None,
        };
        let current = Arc::clone(&supervisor.current);
        let task = tokio::spawn(supervisor.run(running));
        Ok(LeasedWorkers {
            current,
            stop,
            held,
            task: Mutex::new(Some(task)),
        })
    }

    /// Returns the running workers, or `None` while another node holds the lease.
    pub fn current(&self) -> Option<Arc<Workers>> {
        lock(&self.current).clone()
    }

    /// Returns whether this node holds the lease and runs the workers.
    pub fn is_held(&self) -> bool {
        *self.held.borrow()
    }

    /// Returns a receiver that changes whenever the lease is gained or lost.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.held.clone()
    }

    /// Stops the workers and releases the lease. Calling it again does nothing.
    pub async fn shutdown(&self) {
        self.stop.send_replace(true);
        let task = lock(&self.task).take();
        if let Some(task) = task {
            if let Err(error) = task.await {
                tracing::error!(%error, "lease supervisor ended abnormally");
            }
        }
    }
}

impl Drop for LeasedWorkers {
    fn drop(&mut self) {
        // Without an explicit shutdown the supervisor still stops at its next pause.
        self.stop.send_replace(true);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Each critical section is one assignment or clone, so a poisoned value is whole.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The background task's state.
struct Supervisor {
    lease: Box<dyn Lease>,
    timings: LeaseTimings,
    start_workers: StartWorkers,
    current: Arc<Mutex<Option<Arc<Workers>>>>,
    held: watch::Sender<bool>,
    stop: watch::Receiver<bool>,
    /// Acquisition failures in a row.
    failures: u32,
}

/// Failed acquisitions in a row between two log lines.
const FAILURE_LOG_EVERY: u32 = 60;

impl Supervisor {
    async fn run(mut self, mut running: Option<Running>) {
        loop {
            let (workers, held) = match running.take() {
                Some(running) => running,
                None => match self.acquire().await {
                    Some(held) => match self.start(held).await {
                        Ok(running) => running,
                        Err(error) => {
                            tracing::error!(error = %format!("{error:#}"), "workers failed to start; lease released");
                            if self.pause(self.timings.retry).await {
                                return;
                            }
                            continue;
                        }
                    },
                    None => return,
                },
            };
            let end = self.hold(held).await;
            self.stop_workers(&workers).await;
            match end {
                HoldEnd::Lost(error) => {
                    tracing::warn!(%error, "lease lost; workers stopped, retrying as a standby");
                    // Waiting one retry interval first lets a standby that is already
                    // retrying take over, rather than the node whose session just failed.
                    if self.pause(self.timings.retry).await {
                        return;
                    }
                }
                HoldEnd::Stopped(held) => {
                    held.release().await;
                    tracing::info!("lease released");
                    return;
                }
            }
        }
    }

    /// Tries the lease once, logging the first failure of a run of failures and then
    /// every [`FAILURE_LOG_EVERY`]th, so an unreachable database does not flood the log.
    async fn try_acquire(&mut self) -> Option<Box<dyn HeldLease>> {
        match self.lease.try_acquire().await {
            Ok(granted) => {
                self.failures = 0;
                granted
            }
            Err(error) => {
                if self.failures.is_multiple_of(FAILURE_LOG_EVERY) {
                    let failures = self.failures + 1;
                    tracing::warn!(%error, failures, "lease acquisition failed; retrying");
                }
                self.failures = self.failures.saturating_add(1);
                None
            }
        }
    }

    /// Retries until the lease is granted; `None` once asked to stop.
    async fn acquire(&mut self) -> Option<Box<dyn HeldLease>> {
        loop {
            if *self.stop.borrow() {
                return None;
            }
            if let Some(held) = self.try_acquire().await {
                return Some(held);
            }
            if self.pause(self.timings.retry).await {
                return None;
            }
        }
    }

    /// Starts the workers under a held lease, releasing the lease when they fail.
    async fn start(&mut self, held: Box<dyn HeldLease>) -> anyhow::Result<Running> {
        let workers = match (self.start_workers)() {
            Ok(workers) => Arc::new(workers),
            Err(error) => {
                held.release().await;
                return Err(error);
            }
        };
        *lock(&self.current) = Some(Arc::clone(&workers));
        self.held.send_replace(true);
        tracing::info!(lease = %self.lease.describe(), "lease acquired; workers started");
        Ok((workers, held))
    }

    /// Confirms the lease every check interval until a check fails or a stop is asked.
    async fn hold(&mut self, mut held: Box<dyn HeldLease>) -> HoldEnd {
        loop {
            if self.pause(self.timings.check).await {
                return HoldEnd::Stopped(held);
            }
            if let Err(error) = held.confirm().await {
                return HoldEnd::Lost(error);
            }
        }
    }

    async fn stop_workers(&self, workers: &Workers) {
        *lock(&self.current) = None;
        self.held.send_replace(false);
        workers.shutdown().await;
    }

    /// Sleeps for `duration`; returns `true` at once if a stop is asked meanwhile.
    async fn pause(&mut self, duration: Duration) -> bool {
        if *self.stop.borrow() {
            return true;
        }
        tokio::select! {
            _ = tokio::time::sleep(duration) => false,
            changed = self.stop.changed() => changed.is_err() || *self.stop.borrow(),
        }
    }
}

//! The bank dispatcher: follows each ledger's events and sends every submitted
//! payment to the bank, recording each attempt, failure, receipt and
//! dead-lettering as events on the payment's stream.
//!
//! The state of every payment is rebuilt from the ledger on start, so a crash
//! resumes where the events end. The next attempt number follows the last
//! recorded one, and the bank idempotency key is the one in `payment.submitted`,
//! so a payment whose receipt was lost in the crash is not paid twice.
//! An attempt is appended with the payment stream's exact expected version, so
//! two dispatchers racing on one payment cannot both record an attempt.
//!
//! A parked payment goes back to the bank only through an approved DLQ retry. The
//! dispatcher releases the payments of an approved retry in batches at the configured
//! pace ([`ReleasePace`]), each with a `dlq.retry_released` event on the payment's stream,
//! and skips decisions whose release is paused. A released payment is dispatched like any
//! other, with the idempotency key of its submission, so the bank books it at most once.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use async_trait::async_trait;
use domain::anomaly_events::ReviewDecision;
use domain::dlq::{DlqAction, DlqRetryReleased};
use domain::events::{
    BreakerStateChanged, DispatchAttempted, DispatchFailed, DomainEvent, EventPayload,
    PaymentDeadLettered, PaymentSubmitted, ReceiptRecorded,
};
use domain::record::{Actor, SealedEvent};
use eventstore_adapter::{AppendRequest, EventStore, ExpectedVersion, StreamWrite};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::anomalies::ReviewState;
use crate::bank::{
    dispatch_payment, BankAdapter, BankError, BankMetrics, BankPaymentRequest, BankReceipt,
    CircuitBreaker, DispatchOutcome, DispatchRecorder, RetryPolicy,
};
use crate::commands::draft;
use crate::config::BankConfig;
use crate::db_password::SecretHealth;

/// Stream that records circuit-breaker transitions.
const BANK_STREAM: &str = "bank-dispatch";

/// How often a paused dispatch checks whether the database password secrets are served again.
const SECRET_HEALTH_POLL: Duration = Duration::from_millis(250);

/// Pace at which the payments of an approved DLQ retry go back to the bank.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReleasePace {
    /// Payments released at each tick.
    pub batch_size: u32,
    /// Pause between two ticks.
    pub interval: Duration,
}

impl Default for ReleasePace {
    fn default() -> Self {
        ReleasePace {
            batch_size: 10,
            interval: Duration::from_secs(1),
        }
    }
}

/// Handle to the dispatcher; cheap to clone.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

struct Inner {
    store: EventStore,
    adapter: Arc<dyn BankAdapter>,
    breaker: Arc<CircuitBreaker>,
    policy: RetryPolicy,
    permits: Arc<Semaphore>,
    pace: ReleasePace,
    /// The one ledger this dispatcher follows, or `None` for every ledger.
    only: Option<Uuid>,
    tracked: StdMutex<HashSet<Uuid>>,
    tasks: tokio::sync::Mutex<JoinSet<()>>,
    /// Payment dispatches in progress, so shutdown can wait for them to end.
    jobs: StdMutex<JoinSet<()>>,
    stop: watch::Sender<bool>,
    /// Runtime the dispatcher was started on. Workers and bank calls are spawned here
    /// even when `track` is called from an HTTP worker's runtime, so they outlive it.
    runtime: tokio::runtime::Handle,
    /// Opens sealed payee accounts of `payment.submitted` (schema 2) before dispatch.
    opener: Option<Arc<crate::personal::PersonalFields>>,
    /// Database password secrets; no attempt starts while one is stale.
    secret_health: Option<SecretHealth>,
}

/// The bank connection that the dispatchers of one node share: the adapter, its circuit
/// breaker and the retry policy. The breaker counts the bank's failures for every ledger
/// of the node.
#[derive(Clone)]
pub struct BankLink {
    adapter: Arc<dyn BankAdapter>,
    breaker: Arc<CircuitBreaker>,
    policy: RetryPolicy,
    max_in_flight: usize,
    /// Pace at which approved DLQ retries are released to the bank.
    pace: ReleasePace,
    /// Opens sealed payee accounts of `payment.submitted` (schema 2) before dispatch.
    opener: Option<Arc<crate::personal::PersonalFields>>,
    /// Database password secrets; no attempt starts while one is stale.
    secret_health: Option<SecretHealth>,
}

impl BankLink {
    /// Builds the mutual-TLS bank adapter and the breaker from `config`.
    ///
    /// # Errors
    /// Fails when the certificates or key cannot be loaded.
    pub async fn from_config(
        config: &BankConfig,
        pace: ReleasePace,
        metrics: Arc<BankMetrics>,
        secrets: Arc<crate::secrets::Secrets>,
    ) -> anyhow::Result<Self> {
        let adapter =
            crate::bank::HttpsBankAdapter::from_config(config, Arc::clone(&metrics), secrets)
                .await?;
        let breaker = CircuitBreaker::from_config(config).with_metrics(metrics);
        Ok(BankLink {
            adapter: Arc::new(adapter),
            breaker: Arc::new(breaker),
            policy: RetryPolicy::from_config(config),
            max_in_flight: config.max_in_flight,
            pace,
            opener: None,
            secret_health: None,
        })
    }

    /// Opens sealed payments with `opener` before they are sent.
    pub fn with_opener(mut self, opener: Arc<crate::personal::PersonalFields>) -> Self {
        self.opener = Some(opener);
        self
    }

    /// Holds every dispatch attempt while `health` lists a stale database password, so
    /// payments are neither sent nor recorded on a credential the secrets provider no
    /// longer vouches for. The API stops on the same condition.
    pub fn with_secret_health(mut self, health: SecretHealth) -> Self {
        self.secret_health = Some(health);
        self
    }

    /// Builds the link over any adapter, releasing approved DLQ retries at the default pace.
    pub fn new(
        adapter: Arc<dyn BankAdapter>,
        breaker: CircuitBreaker,
        policy: RetryPolicy,
        max_in_flight: usize,
    ) -> Self {
        BankLink {
            adapter,
            breaker: Arc::new(breaker),
            policy,
            max_in_flight,
            pace: ReleasePace::default(),
            opener: None,
            secret_health: None,
        }
    }
}

impl Dispatcher {
    /// Starts a dispatcher over any adapter that follows every ledger of the store, now
    /// and as [`Dispatcher::track`] names new ones.
    pub fn with_adapter(
        store: EventStore,
        adapter: Arc<dyn BankAdapter>,
        breaker: CircuitBreaker,
        policy: RetryPolicy,
        max_in_flight: usize,
    ) -> Dispatcher {
        let link = BankLink::new(adapter, breaker, policy, max_in_flight);
        let dispatcher = Self::build(store, &link, None);
        let starter = dispatcher.clone();
        dispatcher.inner.runtime.spawn(async move {
            match starter.inner.store.ledgers().await {
                Ok(ledgers) => ledgers
                    .iter()
                    .for_each(|info| starter.track(info.ledger_id)),
                Err(error) => tracing::error!(%error, "dispatcher could not list ledgers"),
            }
        });
        dispatcher
    }

    /// Starts a dispatcher of one ledger, as a node does for each ledger whose lease it
    /// holds; [`Dispatcher::track`] ignores other ledgers.
    pub fn for_ledger(store: EventStore, link: &BankLink, ledger_id: Uuid) -> Dispatcher {
        let dispatcher = Self::build(store, link, Some(ledger_id));
        dispatcher.track(ledger_id);
        dispatcher
    }

    fn build(store: EventStore, link: &BankLink, only: Option<Uuid>) -> Dispatcher {
        let (stop, _) = watch::channel(false);
        Dispatcher {
            inner: Arc::new(Inner {
                store,
                adapter: Arc::clone(&link.adapter),
                breaker: Arc::clone(&link.breaker),
                policy: link.policy.clone(),
                permits: Arc::new(Semaphore::new(link.max_in_flight)),
                pace: link.pace,
                opener: link.opener.clone(),
                secret_health: link.secret_health.clone(),
                only,
                tracked: StdMutex::new(HashSet::new()),
                tasks: tokio::sync::Mutex::new(JoinSet::new()),
                jobs: StdMutex::new(JoinSet::new()),
                stop,
                runtime: tokio::runtime::Handle::current(),
            }),
        }
    }

    /// Current state of the bank circuit breaker: `closed`, `open` or `half_open`.
    pub fn breaker_state(&self) -> &'static str {
        self.inner.breaker.state().as_str()
    }

    /// Starts following `ledger_id` if it is not followed yet.
    pub fn track(&self, ledger_id: Uuid) {
        if self.inner.only.is_some_and(|only| only != ledger_id) {
            return;
        }
        let newly_tracked = match self.inner.tracked.lock() {
            Ok(mut tracked) => tracked.insert(ledger_id),
            Err(_) => false,
        };
        if !newly_tracked {
            return;
        }
        let inner = Arc::clone(&self.inner);
        self.inner.runtime.spawn(async move {
            let worker = LedgerWorker::new(Arc::clone(&inner), ledger_id);
            let runtime = inner.runtime.clone();
            inner.tasks.lock().await.spawn_on(worker.run(), &runtime);
        });
    }

    /// Stops following ledgers and interrupts every payment dispatch at its next await,
    /// then waits for them to end.
    ///
    /// An interrupted payment resumes from the ledger on the next start, on this node or
    /// on the next lease holder, with the same bank idempotency key.
    pub async fn shutdown(&self) {
        self.inner.stop.send_replace(true);
        let mut tasks = self.inner.tasks.lock().await;
        while tasks.join_next().await.is_some() {}
        let mut jobs = std::mem::take(&mut *lock_jobs(&self.inner.jobs));
        while jobs.join_next().await.is_some() {}
    }
}

fn lock_jobs(jobs: &StdMutex<JoinSet<()>>) -> std::sync::MutexGuard<'_, JoinSet<()>> {
    // Each critical section is one spawn, reap or take, so a poisoned set is still whole.
    jobs.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// State of one unfinished payment, rebuilt from the ledger.
struct Pending {
    request: BankPaymentRequest,
    attempts_done: u32,
    stream_version: u64,
    submitted_event: Uuid,
    correlation_id: Uuid,
    /// Flagged by the anomaly rules and not yet released by a reviewer.
    held: bool,
}

struct LedgerWorker {
    inner: Arc<Inner>,
    ledger_id: Uuid,
    pending: HashMap<Uuid, Pending>,
    in_flight: HashSet<Uuid>,
    /// Dead-lettered payments, kept so an approved retry can send them again.
    parked: HashMap<Uuid, Pending>,
    releases: Releases,
}

/// Approved DLQ retries waiting for release, rebuilt from the ledger like the payments.
#[derive(Default)]
struct Releases {
    /// Payments of each proposed retry decision.
    proposed: HashMap<Uuid, Vec<Uuid>>,
    /// Decision and payment, in approval order.
    queue: VecDeque<(Uuid, Uuid)>,
    /// Decisions whose release is paused.
    paused: HashSet<Uuid>,
    /// Last batch number released per decision.
    batches: HashMap<Uuid, u32>,
}

impl LedgerWorker {
    fn new(inner: Arc<Inner>, ledger_id: Uuid) -> Self {
        LedgerWorker {
            inner,
            ledger_id,
            pending: HashMap::new(),
            in_flight: HashSet::new(),
            parked: HashMap::new(),
            releases: Releases::default(),
        }
    }

    async fn run(mut self) {
        let mut stop = self.inner.stop.subscribe();
        let caught_up_at = match self.inner.store.head(self.ledger_id).await {
            Ok(head) => head.position,
            Err(error) => {
                tracing::error!(ledger = %self.ledger_id, %error, "dispatcher could not read head");
                return;
            }
        };
        let mut subscription = self.inner.store.subscribe(self.ledger_id, 0);
        let mut live = false;
        let mut release_tick = tokio::time::interval(self.inner.pace.interval);
        release_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tracing::info!(ledger = %self.ledger_id, "dispatcher following ledger");
        loop {
            let next = tokio::select! {
                next = subscription.next() => next,
                _ = release_tick.tick(), if live => {
                    self.release_batch().await;
                    continue;
                }
                _ = stop.changed() => break,
            };
            let event = match next {
                Some(Ok(event)) => event,
                Some(Err(error)) => {
                    tracing::error!(ledger = %self.ledger_id, %error, "dispatcher subscription failed");
                    break;
                }
                None => break,
            };
            let position = event.position;
            let Some(decoded) = self.decode(&event).await else {
                break;
            };
            self.apply(&event, decoded);
            if !live && position >= caught_up_at {
                live = true;
            }
            if live {
                self.dispatch_ready();
            }
        }
        tracing::info!(ledger = %self.ledger_id, "dispatcher stopped following ledger");
    }

    /// Decodes an event, opening a sealed payment; `None` stops following the ledger
    /// (the KMS failed), and the next lease holder or restart resumes it.
    async fn decode(&self, event: &SealedEvent) -> Option<Result<DomainEvent, ()>> {
        let decoded = DomainEvent::decode(&event.event_type, event.schema_version, &event.payload);
        let Ok(decoded) = decoded else {
            return Some(Err(()));
        };
        let (Some(opener), DomainEvent::PaymentSubmittedSealed(_)) = (&self.inner.opener, &decoded)
        else {
            return Some(Ok(decoded.without_keys()));
        };
        match opener
            .open(self.ledger_id, &event.stream_id, event.event_id, decoded)
            .await
        {
            Ok(opened) => Some(Ok(opened)),
            Err(error) => {
                tracing::error!(
                    ledger = %self.ledger_id,
                    position = event.position,
                    %error,
                    "dispatcher cannot open a sealed payment; stopping this ledger"
                );
                None
            }
        }
    }

    fn apply(&mut self, event: &SealedEvent, decoded: Result<DomainEvent, ()>) {
        let Ok(decoded) = decoded else { return };
        match decoded {
            DomainEvent::PaymentSubmitted(submitted) => {
                let pending = Pending {
                    request: bank_request(&submitted),
                    attempts_done: 0,
                    stream_version: event.stream_version,
                    submitted_event: event.event_id,
                    correlation_id: event.correlation_id,
                    held: false,
                };
                self.pending.insert(submitted.payment_id, pending);
            }
            DomainEvent::DispatchAttempted(attempted) => {
                self.update(
                    attempted.payment_id,
                    event.stream_version,
                    Some(attempted.attempt),
                );
            }
            // An attempt the open breaker rejected has a failure but no attempt event.
            DomainEvent::DispatchFailed(failed) => {
                self.update(
                    failed.payment_id,
                    event.stream_version,
                    Some(failed.attempt),
                );
            }
            DomainEvent::ReceiptRecorded(done) => self.finish(done.payment_id),
            DomainEvent::PaymentDeadLettered(done) => {
                self.park(done.payment_id, event.stream_version, done.attempts);
            }
            DomainEvent::PaymentFlagged(flagged) => {
                self.hold(flagged.payment_id, true, event.stream_version)
            }
            DomainEvent::PaymentReviewed(reviewed) => match reviewed.decision {
                ReviewDecision::Release => {
                    self.hold(reviewed.payment_id, false, event.stream_version)
                }
                ReviewDecision::Reject => self.finish(reviewed.payment_id),
            },
            other => self.apply_dlq(event, &other),
        }
    }

    fn park(&mut self, payment_id: Uuid, version: u64, attempts: u32) {
        self.in_flight.remove(&payment_id);
        if let Some(mut pending) = self.pending.remove(&payment_id) {
            pending.stream_version = version;
            pending.attempts_done = pending.attempts_done.max(attempts);
            self.parked.insert(payment_id, pending);
        }
    }

    /// Follows DLQ decisions: approved retries join the release queue, releases move a
    /// parked payment back to the pending set, pauses hold a decision's queue.
    fn apply_dlq(&mut self, event: &SealedEvent, decoded: &DomainEvent) {
        let releases = &mut self.releases;
        match decoded {
            DomainEvent::DlqDecisionProposed(proposed) if proposed.action == DlqAction::Retry => {
                let ids = proposed.payment_ids.clone();
                releases.proposed.insert(proposed.decision_id, ids);
            }
            DomainEvent::DlqDecisionApproved(approved) => {
                let Some(ids) = releases.proposed.remove(&approved.decision_id) else {
                    return;
                };
                let parked = ids.into_iter().filter(|id| self.parked.contains_key(id));
                let decision = approved.decision_id;
                releases.queue.extend(parked.map(|id| (decision, id)));
            }
            DomainEvent::DlqReleasePaused(paused) => {
                releases.paused.insert(paused.decision_id);
            }
            DomainEvent::DlqReleaseResumed(resumed) => {
                releases.paused.remove(&resumed.decision_id);
            }
            DomainEvent::DlqRetryReleased(released) => {
                let key = (released.decision_id, released.payment_id);
                releases.queue.retain(|entry| *entry != key);
                let batch = releases.batches.entry(released.decision_id).or_default();
                *batch = (*batch).max(released.batch);
                if let Some(mut pending) = self.parked.remove(&released.payment_id) {
                    pending.stream_version = event.stream_version;
                    self.pending.insert(released.payment_id, pending);
                }
            }
            _ => {}
        }
    }

    /// Releases the next batch of approved retries: at most `pace.batch_size` payments
    /// whose decision is not paused, each recorded before the dispatcher may send it.
    async fn release_batch(&mut self) {
        // Released into an open breaker, a payment would spend its attempts without reaching
        // the bank. While the breaker is open nothing is released; half-open, one payment
        // goes, and its call is the probe that closes the breaker again.
        if self.inner.breaker.cooling_down().is_some() {
            return;
        }
        // A release is written with the store's credentials, so it waits, like attempts do,
        // while a database password secret is stale.
        if (self.inner.secret_health.as_ref()).is_some_and(|health| health.problem().is_some()) {
            return;
        }
        let batch_size = match self.inner.breaker.state() {
            crate::bank::BreakerState::Closed => self.inner.pace.batch_size,
            crate::bank::BreakerState::Open | crate::bank::BreakerState::HalfOpen => 1,
        };

        let limit = usize::try_from(batch_size).unwrap_or(usize::MAX);
        let due = self.take_due_releases(limit);

        let mut numbered: HashMap<Uuid, u32> = HashMap::new();
        for (decision_id, payment_id) in due {
            let batch = *numbered.entry(decision_id).or_insert_with(|| {
                self.releases
                    .batches
                    .get(&decision_id)
                    .copied()
                    .unwrap_or(0)
                    + 1
            });
            let Some(parked) = self.parked.get(&payment_id) else {
                continue;
            };
            let released = DlqRetryReleased {
                decision_id,
                payment_id,
                batch,
            };
            let recorder = PaymentRecorder::new(&self.inner, self.ledger_id, payment_id, parked);
            if let Err(error) = recorder.release(&released).await {
                // Back in the queue for the next tick. If another dispatcher recorded the
                // release, its event reaches this one and takes the entry out again.
                tracing::warn!(
                    ledger = %self.ledger_id,
                    payment = %payment_id,
                    %error,
                    "DLQ retry release not recorded; retrying at the next tick"
                );
                self.releases.queue.push_back((decision_id, payment_id));
            }
        }
    }

    /// Removes from the release queue, in queue order, at most `limit` entries whose decision
    /// is not paused; the others stay queued.
    fn take_due_releases(&mut self, limit: usize) -> Vec<(Uuid, Uuid)> {
        let mut due = Vec::new();
        let mut waiting = VecDeque::new();
        while let Some(entry) = self.releases.queue.pop_front() {
            if due.len() < limit && !self.releases.paused.contains(&entry.0) {
                due.push(entry);
            } else {
                waiting.push_back(entry);
            }
        }
        self.releases.queue = waiting;
        due
    }

    /// Holds or releases a payment. A job started for it before the flag was applied
    /// finds the flag in the payment's stream and ends without calling the bank, so the
    /// payment is no longer in flight.
    fn hold(&mut self, payment_id: Uuid, held: bool, version: u64) {
        self.in_flight.remove(&payment_id);
        self.update(payment_id, version, None);
        if let Some(pending) = self.pending.get_mut(&payment_id) {
            pending.held = held;
        }
    }

    fn update(&mut self, payment_id: Uuid, version: u64, attempt: Option<u32>) {
        if self.in_flight.contains(&payment_id) {
            return;
        }
        if let Some(pending) = self.pending.get_mut(&payment_id) {
            pending.stream_version = version;
            if let Some(attempt) = attempt {
                pending.attempts_done = pending.attempts_done.max(attempt);
            }
        }
    }

    fn finish(&mut self, payment_id: Uuid) {
        self.pending.remove(&payment_id);
        self.in_flight.remove(&payment_id);
    }

    fn dispatch_ready(&mut self) {
        let ready: Vec<Uuid> = self
            .pending
            .iter()
            .filter(|(id, pending)| !pending.held && !self.in_flight.contains(*id))
            .map(|(id, _)| *id)
            .collect();
        for payment_id in ready {
            let Some(pending) = self.pending.get(&payment_id) else {
                continue;
            };
            self.in_flight.insert(payment_id);
            let job = DispatchJob {
                inner: Arc::clone(&self.inner),
                ledger_id: self.ledger_id,
                payment_id,
                request: pending.request.clone(),
                first_attempt: pending.attempts_done + 1,
                recorder: PaymentRecorder::new(&self.inner, self.ledger_id, payment_id, pending),
            };
            let mut jobs = lock_jobs(&self.inner.jobs);
            while jobs.try_join_next().is_some() {}
            if *self.inner.stop.borrow() {
                return;
            }
            jobs.spawn_on(job.run(), &self.inner.runtime);
        }
    }
}

struct DispatchJob {
    inner: Arc<Inner>,
    ledger_id: Uuid,
    payment_id: Uuid,
    request: BankPaymentRequest,
    first_attempt: u32,
    recorder: PaymentRecorder,
}

impl DispatchJob {
    async fn run(self) {
        let mut stop = self.inner.stop.subscribe();
        tokio::select! {
            () = self.dispatch() => {}
            _ = stop.wait_for(|stopped| *stopped) => tracing::info!(
                ledger = %self.ledger_id,
                payment = %self.payment_id,
                "payment dispatch interrupted by shutdown; the next start resumes it"
            ),
        }
    }

    async fn dispatch(&self) {
        if !self.cleared_for_dispatch().await {
            return;
        }
        let Ok(_permit) = Arc::clone(&self.inner.permits).acquire_owned().await else {
            return;
        };
        let outcome = dispatch_payment(
            self.inner.adapter.as_ref(),
            &self.inner.breaker,
            &self.inner.policy,
            &self.request,
            self.payment_id,
            self.first_attempt,
            &self.recorder,
        )
        .await;
        match outcome {
            Ok(DispatchOutcome::Receipted(receipt)) => tracing::info!(
                ledger = %self.ledger_id,
                payment = %self.payment_id,
                bank_reference = %receipt.bank_reference,
                "payment dispatch finished: receipted"
            ),
            Ok(DispatchOutcome::DeadLettered) => tracing::warn!(
                ledger = %self.ledger_id,
                payment = %self.payment_id,
                "payment dispatch finished: dead-lettered"
            ),
            Err(error) => tracing::error!(
                ledger = %self.ledger_id,
                payment = %self.payment_id,
                error = %error,
                "payment dispatch stopped; it resumes from the ledger on restart"
            ),
        }
    }
}

impl DispatchJob {
    /// Reads the payment's stream and returns whether anomaly review lets it go to the
    /// bank: never flagged, or released. The flag is committed with the submission, so
    /// this read sees it even when the worker has not applied it yet.
    async fn cleared_for_dispatch(&self) -> bool {
        let store = &self.inner.store;
        let events =
            crate::anomalies::read_payment_stream(store, self.ledger_id, self.payment_id).await;
        let state = events
            .map_err(|e| e.to_string())
            .and_then(|events| crate::anomalies::review_state(&events).map_err(|e| e.to_string()));
        match state {
            Ok(ReviewState::NotFlagged | ReviewState::Decided(ReviewDecision::Release)) => true,
            Ok(ReviewState::Held { .. } | ReviewState::Decided(ReviewDecision::Reject)) => {
                tracing::info!(
                    ledger = %self.ledger_id,
                    payment = %self.payment_id,
                    "payment held for anomaly review; not dispatched"
                );
                false
            }
            Err(error) => {
                tracing::error!(
                    ledger = %self.ledger_id,
                    payment = %self.payment_id,
                    %error,
                    "could not read the payment's review state; not dispatched"
                );
                false
            }
        }
    }
}

fn bank_request(submitted: &PaymentSubmitted) -> BankPaymentRequest {
    BankPaymentRequest {
        idempotency_key: submitted.bank_idempotency_key.clone(),
        amount_minor: submitted.amount_minor,
        currency: submitted.currency.clone(),
        account: submitted.account.clone(),
        payee_name: submitted.payee_name.clone(),
        reference: submitted.reference.clone(),
    }
}

/// Records dispatch events on one payment's stream with exact expected versions.
struct PaymentRecorder {
    store: EventStore,
    ledger_id: Uuid,
    payment_id: Uuid,
    stream_id: String,
    version: tokio::sync::Mutex<u64>,
    correlation_id: Uuid,
    causation_id: Uuid,
    actor: Actor,
    bank_idempotency_key: String,
    secret_health: Option<SecretHealth>,
}

impl PaymentRecorder {
    fn new(inner: &Inner, ledger_id: Uuid, payment_id: Uuid, pending: &Pending) -> Self {
        PaymentRecorder {
            store: inner.store.clone(),
            secret_health: inner.secret_health.clone(),
            ledger_id,
            payment_id,
            stream_id: crate::state::payment_stream(payment_id),
            version: tokio::sync::Mutex::new(pending.stream_version),
            correlation_id: pending.correlation_id,
            causation_id: pending.submitted_event,
            actor: Actor::system("dispatcher"),
            bank_idempotency_key: pending.request.idempotency_key.clone(),
        }
    }

    /// Records the release of a parked payment by an approved DLQ retry.
    async fn release(&self, released: &DlqRetryReleased) -> anyhow::Result<()> {
        let version = *self.version.lock().await;
        let mut event = draft(
            released,
            &Actor::system("dlq-release"),
            released.decision_id,
        );
        event.causation_id = Some(self.causation_id);
        let write = StreamWrite {
            stream_id: self.stream_id.clone(),
            expected: ExpectedVersion::Exact(version),
            events: vec![event],
        };
        let request = AppendRequest {
            writes: vec![write],
            idempotency: None,
        };
        self.store.append(self.ledger_id, request).await?;
        Ok(())
    }

    async fn record<P: EventPayload>(&self, payload: &P) -> anyhow::Result<()> {
        let mut version = self.version.lock().await;
        let expected = ExpectedVersion::Exact(*version);
        self.append(self.stream_id.clone(), expected, payload)
            .await?;
        *version += 1;
        Ok(())
    }

    /// Appends one event caused by the payment's submission.
    async fn append<P: EventPayload>(
        &self,
        stream_id: String,
        expected: ExpectedVersion,
        payload: &P,
    ) -> anyhow::Result<()> {
        let mut event = draft(payload, &self.actor, self.correlation_id);
        event.causation_id = Some(self.causation_id);
        let write = StreamWrite {
            stream_id,
            expected,
            events: vec![event],
        };
        let request = AppendRequest {
            writes: vec![write],
            idempotency: None,
        };
        self.store.append(self.ledger_id, request).await?;
        Ok(())
    }
}

#[async_trait]
impl DispatchRecorder for PaymentRecorder {
    async fn before_attempt(&self, payment_id: Uuid, attempt: u32) {
        let Some(health) = &self.secret_health else {
            return;
        };
        let mut waited = false;
        while let Some(problem) = health.problem() {
            if !waited {
                tracing::warn!(
                    ledger = %self.ledger_id,
                    payment = %payment_id,
                    attempt,
                    %problem,
                    "payment dispatch paused: a database password secret is stale"
                );
                waited = true;
            }
            tokio::time::sleep(SECRET_HEALTH_POLL).await;
        }
        if waited {
            tracing::info!(
                ledger = %self.ledger_id,
                payment = %payment_id,
                attempt,
                "payment dispatch resumed: database password secrets are served again"
            );
        }
    }

    async fn attempted(&self, payment_id: Uuid, attempt: u32) -> anyhow::Result<()> {
        assert_eq!(
            payment_id, self.payment_id,
            "recorder used for another payment"
        );
        self.record(&DispatchAttempted {
            payment_id,
            attempt,
            bank_idempotency_key: self.bank_idempotency_key.clone(),
        })
        .await
    }

    async fn failed(
        &self,
        payment_id: Uuid,
        attempt: u32,
        error: &BankError,
        will_retry: bool,
        retry_in: Option<std::time::Duration>,
    ) -> anyhow::Result<()> {
        self.record(&DispatchFailed {
            payment_id,
            attempt,
            error_kind: error.kind().to_owned(),
            detail: error.to_string(),
            will_retry,
            retry_in_ms: retry_in.map(|delay| u64::try_from(delay.as_millis()).unwrap_or(u64::MAX)),
        })
        .await
    }

    async fn receipted(
        &self,
        payment_id: Uuid,
        attempt: u32,
        receipt: &BankReceipt,
    ) -> anyhow::Result<()> {
        self.record(&ReceiptRecorded {
            payment_id,
            attempt,
            bank_reference: receipt.bank_reference.clone(),
            response_status: receipt.status,
            response_blake3: *blake3::hash(&receipt.raw_body).as_bytes(),
        })
        .await
    }

    async fn dead_lettered(
        &self,
        payment_id: Uuid,
        attempts: u32,
        error: &BankError,
    ) -> anyhow::Result<()> {
        self.record(&PaymentDeadLettered {
            payment_id,
            attempts,
            last_error_kind: error.kind().to_owned(),
            last_error: error.to_string(),
        })
        .await
    }

    async fn breaker_changed(&self, from: &str, to: &str, reason: &str) -> anyhow::Result<()> {
        let payload = BreakerStateChanged {
            from: from.to_owned(),
            to: to.to_owned(),
            reason: reason.to_owned(),
        };
        self.append(BANK_STREAM.to_owned(), ExpectedVersion::Any, &payload)
            .await
    }
}

//! Shared application state: the store, read models, tokens and background workers.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context;
use domain::clock::{Clock, SystemClock};
use domain::events::DomainEvent;
use domain::payments::{AllowList, Currency, PaymentPolicy};
use eventstore_adapter::sqlite::SqliteBackend;
use eventstore_adapter::EventStore;
use projections::{ProjectionRunner, ReadModels, RunnerHandle};
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::auth::TokenStore;
use crate::bank::BankMetrics;
use crate::config::Config;
use crate::dispatcher::Dispatcher;
use crate::keys::KeyRing;
use crate::problem::ApiError;

/// Stream holding a ledger's allow-list changes.
pub const ALLOW_LIST_STREAM: &str = "allowlist";

/// Returns the stream id of a payment, shared by the commands that write it and the
/// dispatcher that follows it.
pub fn payment_stream(payment_id: Uuid) -> String {
    format!("payment-{payment_id}")
}

/// Events read from the allow-list stream per store call.
const ALLOW_LIST_PAGE: u32 = 1_000;

/// A cached allow-list and the stream version it reflects.
pub struct CachedAllowList {
    /// The list.
    pub list: AllowList,
    /// Last version of the `allowlist` stream applied, `None` before the first event.
    pub version: Option<u64>,
}

/// Everything request handlers and workers share.
pub struct AppState {
    /// Configuration in force.
    pub config: Config,
    /// The event store.
    pub store: EventStore,
    /// Read models.
    pub models: ReadModels,
    /// Projection runner.
    pub runner: RunnerHandle,
    /// API tokens.
    pub tokens: TokenStore,
    /// Time source for everything but sealing.
    pub clock: Arc<dyn Clock>,
    /// Allow-lists by ledger, refreshed from the store before each decision.
    pub allow_lists: Mutex<HashMap<Uuid, CachedAllowList>>,
    /// Bank dispatcher, when a bank is configured.
    pub dispatcher: Option<Dispatcher>,
    /// Bank call metrics.
    pub bank_metrics: Arc<BankMetrics>,
    /// Serialises ledger creation, so one tenant gets one ledger.
    pub ledger_creation: Mutex<()>,
    /// Publisher of signed checkpoints to the configured witnesses.
    pub witness: Mutex<Option<crate::witness::Publisher>>,
    /// Exclusive lock on the data directory, held while the state lives.
    _data_dir_lock: std::fs::File,
}

impl AppState {
    /// Opens the embedded store, read models and tokens under `config.data_dir`, and
    /// starts the projection runner and (if a bank is configured) the dispatcher.
    ///
    /// # Errors
    /// Fails when a file cannot be opened or created, naming it.
    pub async fn open(config: Config) -> anyhow::Result<Arc<AppState>> {
        let data_dir = config.data_dir.clone();
        crate::files::create_private_dir(&data_dir)?;
        let lock = crate::files::lock_data_dir(&data_dir)?;
        let keys = KeyRing::load_or_create(&data_dir)?;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);

        let events_path = data_dir.join("events.sqlite");
        crate::files::create_private_file(&events_path)?;
        let backend = SqliteBackend::open(&events_path)
            .await
            .with_context(|| format!("cannot open event store {}", events_path.display()))?;
        let others = keys.keys[1..].to_vec();
        let store = EventStore::open_with_ring(
            Arc::new(backend),
            keys.current(),
            others,
            Arc::clone(&clock),
        );
        store.set_checkpoint_policy(config.checkpoints.policy());
        let witness =
            crate::witness::Publisher::start(&config.checkpoints, &data_dir, store.clone())?;

        let read_path = data_dir.join("read.sqlite");
        crate::files::create_private_file(&read_path)?;
        let models = ReadModels::open(&read_path)
            .await
            .with_context(|| format!("cannot open read models {}", read_path.display()))?;
        let runner = ProjectionRunner::spawn(store.clone(), models.clone());
        let auth_path = data_dir.join("auth.sqlite");
        crate::files::create_private_file(&auth_path)?;
        let tokens = TokenStore::open(&auth_path).await?;
        let bank_metrics = Arc::new(BankMetrics::default());
        let dispatcher = if config.bank.url.is_empty() {
            tracing::warn!("bank.url is empty: payments are recorded but not dispatched");
            None
        } else {
            Some(Dispatcher::start(
                &config.bank,
                store.clone(),
                Arc::clone(&bank_metrics),
            )?)
        };

        Ok(Arc::new(AppState {
            config,
            store,
            models,
            runner,
            tokens,
            clock,
            allow_lists: Mutex::new(HashMap::new()),
            dispatcher,
            bank_metrics,
            ledger_creation: Mutex::new(()),
            witness: Mutex::new(witness),
            _data_dir_lock: lock,
        }))
    }

    /// Returns the allow-list of a ledger as of the store's head, with the stream
    /// version it reflects, applying only the events added since the last call.
    ///
    /// # Errors
    /// Store failures, or an allow-list event that does not decode.
    pub async fn allow_list(&self, ledger_id: Uuid) -> Result<(AllowList, Option<u64>), ApiError> {
        let mut cache = self.allow_lists.lock().await;
        let entry = cache.entry(ledger_id).or_insert_with(|| CachedAllowList {
            list: AllowList::new(),
            version: None,
        });
        loop {
            let from = entry.version.map_or(0, |version| version + 1);
            let events = self
                .store
                .read_stream(ledger_id, ALLOW_LIST_STREAM, from, ALLOW_LIST_PAGE)
                .await?;
            for event in &events {
                let decoded =
                    DomainEvent::decode(&event.event_type, event.schema_version, &event.payload)
                        .map_err(ApiError::internal)?;
                // A replayed event that contradicts the list means damaged history.
                entry.list.apply(&decoded).map_err(ApiError::internal)?;
                entry.version = Some(event.stream_version);
            }
            if events.len() < ALLOW_LIST_PAGE as usize {
                return Ok((entry.list.clone(), entry.version));
            }
        }
    }

    /// Returns the payment rules in force.
    pub fn payment_policy(&self) -> PaymentPolicy {
        PaymentPolicy {
            max_amount_minor: self.config.payments.max_amount_minor,
            // Config::load validated every code, so none is dropped here.
            allowed_currencies: (self.config.payments.currencies.iter())
                .filter_map(|code| Currency::parse(code).ok())
                .collect(),
        }
    }

    /// Tells background workers that a ledger has new events.
    pub fn notify_appended(&self, ledger_id: Uuid) {
        self.runner.track(ledger_id);
        if let Some(dispatcher) = &self.dispatcher {
            dispatcher.track(ledger_id);
        }
    }

    /// Stops the workers and the sequencers, letting committed work finish.
    pub async fn shutdown(&self) {
        if let Some(dispatcher) = &self.dispatcher {
            dispatcher.shutdown().await;
        }
        self.runner.shutdown().await;
        if let Some(witness) = self.witness.lock().await.take() {
            witness.shutdown().await;
        }
        self.store.shutdown().await;
    }
}

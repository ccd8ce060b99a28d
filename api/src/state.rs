//! Shared application state: the store, read models, tokens and background workers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use domain::clock::{Clock, SystemClock};
use domain::events::DomainEvent;
use domain::operators::ProposalBook;
use domain::payments::{AllowList, Currency, PaymentPolicy};
use eventstore_adapter::EventStore;
use projections::{ProjectionError, ProjectionRunner, ProjectionStatus, ReadModels, RunnerHandle};
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::auth::TokenStore;
use crate::bank::BankMetrics;
use crate::config::Config;
use crate::db_password::{DbPasswords, PasswordPool, SecretHealth};
use crate::dispatcher::{BankLink, Dispatcher};
use crate::keys::KeyRing;
use crate::problem::ApiError;
use crate::workers::{LeaseTimings, LedgerWorkers, StartWorkers, Workers};

/// Stream holding a ledger's allow-list changes.
pub const ALLOW_LIST_STREAM: &str = "allowlist";

/// Returns the stream id of a payment, shared by the commands that write it and the
/// dispatcher that follows it.
pub fn payment_stream(payment_id: Uuid) -> String {
    format!("payment-{payment_id}")
}

/// Events read from the allow-list stream per store call.
const ALLOW_LIST_PAGE: u32 = 1_000;

/// A cached allow-list, its proposals, and the stream version they reflect.
pub struct CachedAllowList {
    /// The list.
    pub list: AllowList,
    /// Proposals to change it.
    pub proposals: ProposalBook,
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
    /// Projection runner of read models private to this node; `None` when the read models
    /// are shared, and the workers of each ledger's lease holder run its projection.
    pub local_runner: Option<RunnerHandle>,
    /// API tokens.
    pub tokens: TokenStore,
    /// Operators, sessions and second factors.
    pub mfa: crate::operators::Mfa,
    /// The KMS holding the key-encryption key.
    pub kms: Arc<dyn crate::kms::Kms>,
    /// Sealing, opening and erasure of payees' personal fields.
    pub personal: Arc<crate::personal::PersonalFields>,
    /// Time source for everything but sealing.
    pub clock: Arc<dyn Clock>,
    /// Allow-lists by ledger, refreshed from the store before each decision.
    pub allow_lists: Mutex<HashMap<Uuid, CachedAllowList>>,
    /// DLQ decisions by ledger, refreshed from the store before each decision.
    pub dlq_books: Mutex<HashMap<Uuid, crate::dlq::CachedDlqBook>>,
    /// Dispatcher and shared projections of each ledger whose lease this node holds.
    pub workers: LedgerWorkers,
    /// Bank call metrics.
    pub bank_metrics: Arc<BankMetrics>,
    /// Serialises ledger creation in this process, so one tenant gets one ledger. Across
    /// nodes on PostgreSQL, a unique tenant column settles the race.
    pub ledger_creation: Mutex<()>,
    /// Publisher of signed checkpoints to the configured witnesses.
    pub witness: Mutex<Option<crate::witness::Publisher>>,
    /// Anomaly history and operator analytics by ledger, caught up from the store.
    pub insights: crate::anomalies::Insights,
    /// The background job that moves data keys off older KEK versions.
    pub rewrap: crate::key_rotation::RewrapJob,
    /// The secrets provider and its cache, shared by every consumer of a secret.
    pub secrets: Arc<crate::secrets::Secrets>,
    /// Settings whose secret the provider can no longer serve; the API returns 503 while
    /// any is listed.
    pub secret_health: SecretHealth,
    /// Database passwords read from secrets, and the pools they apply to.
    pub db_passwords: DbPasswords,
    /// Background refresh of `db_passwords`, stopped when the state is dropped.
    _password_refresh: Option<RefreshTask>,
    /// Exclusive lock on the data directory, held while the state lives.
    _data_dir_lock: std::fs::File,
}

impl AppState {
    /// Opens the event store that `config.store` names, the read models and the tokens, and
    /// starts the projection runner and (if a bank is configured) the dispatcher. Workers
    /// that only one node may run start once this node holds the cluster lease.
    ///
    /// # Errors
    /// Fails when a file cannot be opened or created, naming it.
    pub async fn open(config: Config) -> anyhow::Result<Arc<AppState>> {
        Self::open_with_clock(config, Arc::new(SystemClock)).await
    }

    /// Opens the state like [`AppState::open`] with another time source, which must
    /// never go backwards (tests move it forward to reach time limits).
    ///
    /// # Errors
    /// As [`AppState::open`].
    pub async fn open_with_clock(
        config: Config,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Arc<AppState>> {
        let data_dir = config.data_dir.clone();
        crate::files::create_private_dir(&data_dir)?;
        let lock = crate::files::lock_data_dir(&data_dir)?;

        // Database passwords, the bank client certificate and the Vault token come through
        // the secrets provider, so a rotated value is used without a restart.
        let secrets = Arc::new(crate::secrets::Secrets::new(config.secrets.clone())?);
        let secret_health = SecretHealth::default();
        let passwords = DbPasswords::new(Arc::clone(&secrets), secret_health.clone());

        // The KMS comes first: it unwraps the signing keys, the TOTP key and the data keys.
        let kms = crate::kms::open(&config.kms, config.profile, &data_dir, &secrets)?;
        tracing::info!(
            provider = kms.provider(),
            kek = kms.kek_id(),
            "KMS configured"
        );
        let keys = KeyRing::open(&data_dir, kms.as_ref()).await?;
        if !crate::keys::plain_key_files(&data_dir)?.is_empty() {
            tracing::warn!(
                "keys/ holds plain signing key files from before the KMS; stop the server and \
                 run `folio keys wrap-signing-keys` to wrap them"
            );
        }

        // `[store]` picks SQLite in the data directory or a PostgreSQL database that several
        // nodes share; the keys stay in the data directory either way.
        let location = store_location(&config, &passwords).await?;
        let backend =
            (location.open_watched(config.store.max_connections, Some(&passwords))).await?;
        tracing::info!(store = %location.describe(), "event store opened");
        let others = keys.keys[1..].to_vec();
        let store = EventStore::open_with_ring(backend, keys.current(), others, Arc::clone(&clock));
        store.set_checkpoint_policy(config.checkpoints.policy());
        let witness =
            crate::witness::Publisher::start(&config.checkpoints, &data_dir, store.clone())?;

        // The data keys come before the read models, which open sealed fields.
        let store_url = match &location {
            crate::store::StoreLocation::Postgres(url) => Some(url.as_str()),
            crate::store::StoreLocation::Sqlite(_) => None,
        };
        let personal = open_personal(&config, &data_dir, store_url, Arc::clone(&kms)).await?;
        let personal = Arc::new(personal);
        if store_url.is_some() {
            let pool = PasswordPool::Any(personal.keys().pool().clone());
            passwords.watch(crate::store::STORE_PASSWORD, pool);
        }

        let models = config.read_models.open(&data_dir, &passwords).await?;
        let models = models.with_opener(Arc::clone(&personal) as Arc<dyn projections::EventOpener>);
        let shared_models = config.read_models.is_shared();
        let local_runner =
            (!shared_models).then(|| ProjectionRunner::spawn(store.clone(), models.clone()));
        // Operators and tokens follow the event store onto PostgreSQL, so every node
        // accepts the same sessions and tokens.
        let (credentials, credentials_password) = credentials_location(&config, &passwords).await?;
        let tokens = TokenStore::open(&credentials).await?;
        let mfa = crate::operators::Mfa::open(
            &credentials,
            &data_dir,
            &config.mfa,
            &config.allow_list,
            clock.now_micros(),
            kms.as_ref(),
        )
        .await?;
        tracing::info!(store = %credentials.describe(), "operators and tokens opened");
        if credentials.is_shared() {
            passwords.watch(
                credentials_password,
                PasswordPool::Any(tokens.pool().clone()),
            );
            passwords.watch(
                credentials_password,
                PasswordPool::Any(mfa.store.pool().clone()),
            );
        }
        let password_refresh = (!passwords.is_empty()).then(|| {
            let interval = Duration::from_secs(config.secrets.ttl_seconds.max(1));
            RefreshTask(passwords.spawn_refresh(interval))
        });
        let bank_metrics = Arc::new(BankMetrics::default());
        if config.bank.url.is_empty() {
            tracing::warn!("bank.url is empty: payments are recorded but not dispatched");
        }
        // Built once, so bad certificates stop the process at start-up, and shared by the
        // dispatchers of every ledger, so one breaker counts the bank's failures.
        let bank = match config.bank.url.is_empty() {
            true => None,
            false => Some(
                BankLink::from_config(
                    &config.bank,
                    config.dlq.release_pace(),
                    Arc::clone(&bank_metrics),
                    Arc::clone(&secrets),
                )
                .await?
                .with_opener(Arc::clone(&personal))
                .with_secret_health(secret_health.clone()),
            ),
        };
        let start_workers =
            worker_starter(bank, store.clone(), shared_models.then(|| models.clone()));
        let timings = LeaseTimings {
            retry: config.cluster.retry_interval(),
            check: config.cluster.check_interval(),
        };
        let leases = config.cluster.leases()?;
        let workers = LedgerWorkers::start(leases, timings, store.clone(), start_workers).await?;

        Ok(Arc::new(AppState {
            config,
            store,
            models,
            local_runner,
            tokens,
            mfa,
            kms,
            personal,
            clock,
            allow_lists: Mutex::new(HashMap::new()),
            dlq_books: Mutex::new(HashMap::new()),
            workers,
            bank_metrics,
            ledger_creation: Mutex::new(()),
            witness: Mutex::new(witness),
            insights: crate::anomalies::Insights::default(),
            rewrap: crate::key_rotation::RewrapJob::new(),
            secrets,
            secret_health,
            db_passwords: passwords,
            _password_refresh: password_refresh,
            _data_dir_lock: lock,
        }))
    }

    /// Returns the allow-list of a ledger as of the store's head, with the stream
    /// version it reflects, applying only the events added since the last call.
    ///
    /// # Errors
    /// Store failures, or an allow-list event that does not decode.
    pub async fn allow_list(&self, ledger_id: Uuid) -> Result<(AllowList, Option<u64>), ApiError> {
        let (list, _, version) = self.allow_list_and_proposals(ledger_id).await?;
        Ok((list, version))
    }

    /// Destroys the data keys of an erased subject. Called for every `subject.erased` the
    /// allow-list applies, so keys left behind by a crash between the append and the
    /// destruction are destroyed on the next read; a second call finds none.
    async fn destroy_erased(&self, ledger_id: Uuid, subject: &str) -> Result<(), ApiError> {
        let now = self.clock.now_micros();
        let keys = self.personal.keys();
        let destroyed = keys
            .destroy_subject(ledger_id, subject, now)
            .await
            .map_err(ApiError::internal)?;
        if !destroyed.is_empty() {
            tracing::info!(%ledger_id, subject, keys = destroyed.len(), "personal fields erased");
        }
        Ok(())
    }

    /// Returns the allow-list and its proposals as of the store's head, with the stream
    /// version they reflect.
    ///
    /// # Errors
    /// Store failures, or an allow-list event that does not decode.
    pub async fn allow_list_and_proposals(
        &self,
        ledger_id: Uuid,
    ) -> Result<(AllowList, ProposalBook, Option<u64>), ApiError> {
        let mut cache = self.allow_lists.lock().await;
        let entry = cache.entry(ledger_id).or_insert_with(|| CachedAllowList {
            list: AllowList::new(),
            proposals: ProposalBook::default(),
            version: None,
        });
        // An erasure seen in this call rebuilds the entry once, so proposals opened before
        // the keys were destroyed read as erased too.
        let (mut erased_seen, mut rebuilt) = (false, false);
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
                let decoded = self
                    .personal
                    .open(ledger_id, &event.stream_id, event.event_id, decoded)
                    .await
                    .map_err(ApiError::internal)?;
                if let DomainEvent::SubjectErased(erased) = &decoded {
                    self.destroy_erased(ledger_id, &erased.subject).await?;
                    erased_seen = true;
                }
                // A replayed event that contradicts the list means damaged history.
                entry.list.apply(&decoded).map_err(ApiError::internal)?;
                entry.proposals.apply(&decoded);
                entry.version = Some(event.stream_version);
            }
            if events.len() < ALLOW_LIST_PAGE as usize {
                if erased_seen && !rebuilt {
                    *entry = CachedAllowList {
                        list: AllowList::new(),
                        proposals: ProposalBook::default(),
                        version: None,
                    };
                    rebuilt = true;
                    continue;
                }
                return Ok((entry.list.clone(), entry.proposals.clone(), entry.version));
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
            decided_at_micros: self.clock.now_micros(),
        }
    }

    /// Tells background workers that a ledger has new events.
    pub fn notify_appended(&self, ledger_id: Uuid) {
        if let Some(runner) = &self.local_runner {
            runner.track(ledger_id);
        }
        match self.workers.for_ledger(ledger_id) {
            Some(workers) => {
                if let Some(runner) = &workers.runner {
                    runner.track(ledger_id);
                }
                if let Some(dispatcher) = &workers.dispatcher {
                    dispatcher.track(ledger_id);
                }
            }
            // A new ledger, or one that another node runs.
            None => self.workers.notice(ledger_id),
        }
    }

    /// Returns the progress of a ledger's projection, from the runner that writes this
    /// node's read models, or from the stored checkpoint when another node runs it.
    ///
    /// # Errors
    /// Read-model or store failures.
    pub async fn projection_status(
        &self,
        ledger_id: Uuid,
    ) -> Result<ProjectionStatus, ProjectionError> {
        if let Some(runner) = &self.local_runner {
            return runner.status(ledger_id).await;
        }
        let workers = self.workers.for_ledger(ledger_id);
        match workers.as_ref().and_then(|workers| workers.runner.as_ref()) {
            Some(runner) => runner.status(ledger_id).await,
            None => ProjectionRunner::idle_status(&self.store, &self.models, ledger_id).await,
        }
    }

    /// Returns the bank circuit breaker's state, or `None` when this node does not
    /// dispatch (no bank configured, or other nodes hold the leases of every ledger).
    pub fn breaker_state(&self) -> Option<&'static str> {
        let workers = self.workers.any()?;
        workers
            .dispatcher
            .as_ref()
            .map(|dispatcher| dispatcher.breaker_state())
    }

    /// Stops the workers and the sequencers, letting committed work finish.
    pub async fn shutdown(&self) {
        self.rewrap.stop();
        self.workers.shutdown().await;
        if let Some(runner) = &self.local_runner {
            runner.shutdown().await;
        }
        if let Some(witness) = self.witness.lock().await.take() {
            witness.shutdown().await;
        }
        self.store.shutdown().await;
    }
}

/// A background task aborted when dropped.
struct RefreshTask(tokio::task::JoinHandle<()>);

impl Drop for RefreshTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Returns the event store that `config` names, with the password of
/// `store.password_secret` in its URL when one is set.
///
/// # Errors
/// The secret cannot be read or the URL cannot carry a password.
pub async fn store_location(
    config: &Config,
    passwords: &DbPasswords,
) -> anyhow::Result<crate::store::StoreLocation> {
    use crate::store::{StoreLocation, STORE_PASSWORD};
    Ok(match StoreLocation::from_config(config) {
        StoreLocation::Postgres(url) => {
            let secret = &config.store.password_secret;
            let url = passwords.resolve(STORE_PASSWORD, secret, &url).await?;
            StoreLocation::Postgres(url.expose().to_owned())
        }
        sqlite => sqlite,
    })
}

/// Returns where operators and tokens live, with the password of its secret in the URL,
/// and the setting that names that secret.
async fn credentials_location(
    config: &Config,
    passwords: &DbPasswords,
) -> anyhow::Result<(crate::credentials::CredentialsLocation, &'static str)> {
    use crate::credentials::CredentialsLocation;
    let (setting, secret) = match config.operators.url.is_empty() {
        true => (crate::store::STORE_PASSWORD, &config.store.password_secret),
        false => (
            "operators.password_secret",
            &config.operators.password_secret,
        ),
    };
    Ok(match CredentialsLocation::from_config(config) {
        CredentialsLocation::Postgres(url) => {
            let url = passwords.resolve(setting, secret, &url).await?;
            (
                CredentialsLocation::Postgres(url.expose().to_owned()),
                setting,
            )
        }
        files => (files, setting),
    })
}

/// Opens the data keys over the KMS: `data-keys.sqlite` in the data directory, or the
/// `data_keys` table of the PostgreSQL store that every node shares.
///
/// `store_url` is the PostgreSQL store's URL with the password of `store.password_secret`
/// in it, or `None` for the embedded store.
async fn open_personal(
    config: &Config,
    data_dir: &std::path::Path,
    store_url: Option<&str>,
    kms: Arc<dyn crate::kms::Kms>,
) -> anyhow::Result<crate::personal::PersonalFields> {
    use crate::kms::data_keys::{DataKeys, KeyStore, DATA_KEYS_FILE};
    let store = match store_url {
        Some(url) => KeyStore::Postgres(url.to_owned()),
        None => {
            let path = data_dir.join(DATA_KEYS_FILE);
            crate::files::create_private_file(&path)?;
            KeyStore::File(path)
        }
    };
    let cache = crate::kms::cache::DataKeyCache::new(
        std::time::Duration::from_secs(config.kms.cache_ttl_seconds),
        config.kms.cache_max_entries,
    );
    let keys = DataKeys::open_at(&store, kms, cache, config.kms.limits())
        .await
        .map_err(|error| {
            anyhow::anyhow!("cannot open the data keys in {}: {error}", store.describe())
        })?;
    tracing::info!(store = %store.describe(), "data keys opened");
    Ok(crate::personal::PersonalFields::new(
        Arc::new(keys),
        config.kms.seal_payee_fields,
    ))
}

/// Returns the function that starts the workers of a ledger whose lease this node has
/// taken: the projection runner when `shared_models` is set, and the dispatcher when a bank
/// is configured.
fn worker_starter(
    bank: Option<BankLink>,
    store: EventStore,
    shared_models: Option<ReadModels>,
) -> StartWorkers {
    Box::new(move |ledger_id| {
        let dispatcher =
            (bank.as_ref()).map(|link| Dispatcher::for_ledger(store.clone(), link, ledger_id));
        let runner = (shared_models.as_ref())
            .map(|models| ProjectionRunner::spawn_for(store.clone(), models.clone(), ledger_id));
        Ok(Workers { runner, dispatcher })
    })
}

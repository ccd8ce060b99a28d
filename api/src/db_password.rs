//! PostgreSQL passwords read through the secrets provider and applied to the live pools.
//!
//! `store.password_secret`, `read_models.password_secret` and `operators.password_secret`
//! name a secret reference. At start its value replaces the password of the matching URL.
//! A background task then reads the reference every `secrets.ttl_seconds` and, when the
//! value changes, gives the new password to every pool opened on that URL, so new
//! connections use it without a restart. Connections already open stay open, because
//! PostgreSQL checks the password only when a connection starts.
//!
//! While the provider fails, [`Secrets::get`] serves the last good value for at most
//! `secrets.max_stale_seconds`. Past that the setting is recorded in [`SecretHealth`]:
//! `/readyz` reports it and the API returns 503 instead of running on a stale password.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, ResponseError};
use anyhow::Context;
use sqlx::postgres::PgPool;
use sqlx::AnyPool;

use crate::problem::ApiError;
use crate::secret::SecretString;
use crate::secrets::Secrets;

/// Settings whose secret the provider can no longer serve, with the reason.
#[derive(Debug, Clone, Default)]
pub struct SecretHealth(Arc<Mutex<BTreeMap<&'static str, String>>>);

impl SecretHealth {
    /// Records that the secret of `setting` failed with `reason` (no value in it), and
    /// returns whether it was served until now.
    pub fn fail(&self, setting: &'static str, reason: String) -> bool {
        self.lock().insert(setting, reason).is_none()
    }

    /// Records that the secret of `setting` is served again.
    pub fn recover(&self, setting: &'static str) {
        self.lock().remove(setting);
    }

    /// Returns one line naming each failed setting and its reason, or `None` when all are
    /// served.
    pub fn problem(&self) -> Option<String> {
        let failed = self.lock();
        let lines: Vec<String> = (failed.iter())
            .map(|(setting, reason)| format!("{setting}: {reason}"))
            .collect();
        (!lines.is_empty()).then(|| lines.join("; "))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, String>> {
        // The map stays consistent even if a holder panicked.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Paths served while a database password secret is stale: probes and metrics, so the
/// failure is visible.
const SERVED_WHILE_STALE: [&str; 3] = ["/healthz", "/readyz", "/metrics"];

/// Middleware that returns 503, naming the setting and the reason, while a database
/// password secret is listed in [`SecretHealth`], instead of running on a stale password.
///
/// # Errors
/// The 503 problem, or the inner service's error.
pub async fn reject_while_stale(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let problem = (request.app_data::<web::Data<crate::state::AppState>>())
        .and_then(|state| state.secret_health.problem())
        .filter(|_| !SERVED_WHILE_STALE.contains(&request.path()));
    match problem {
        Some(problem) => {
            let detail = format!(
                "a database password secret cannot be read, so requests are rejected until the \
                 secrets provider recovers: {problem}"
            );
            let response = ApiError::unavailable(detail).error_response();
            Ok(request.into_response(response).map_into_right_body())
        }
        None => Ok(next.call(request).await?.map_into_left_body()),
    }
}

/// A pool whose new connections take the rotated password.
#[derive(Debug, Clone)]
pub enum PasswordPool {
    /// A pool of the PostgreSQL driver (the event store).
    Postgres(PgPool),
    /// A pool of the `Any` driver on a PostgreSQL URL (read models, operators, tokens).
    Any(AnyPool),
}

impl PasswordPool {
    fn apply(&self, password: &SecretString) -> anyhow::Result<()> {
        match self {
            PasswordPool::Postgres(pool) => {
                let options = (*pool.connect_options()).clone();
                pool.set_connect_options(options.password(password.expose()));
            }
            PasswordPool::Any(pool) => {
                let mut options = (*pool.connect_options()).clone();
                // `Url::set_password` fails only on URLs that cannot have a user part.
                (options.database_url)
                    .set_password(Some(password.expose()))
                    .map_err(|()| anyhow::anyhow!("the database URL cannot carry a password; write postgres://user@host:5432/database"))?;
                pool.set_connect_options(options);
            }
        }
        Ok(())
    }
}

/// One password secret and the pools that use it.
struct Watched {
    setting: &'static str,
    reference: String,
    applied: SecretString,
    pools: Vec<PasswordPool>,
}

/// The database password secrets of this process and their background refresh.
#[derive(Clone)]
pub struct DbPasswords {
    secrets: Arc<Secrets>,
    health: SecretHealth,
    watched: Arc<Mutex<Vec<Watched>>>,
}

impl DbPasswords {
    /// Creates an empty set over `secrets`, recording failures in `health`.
    pub fn new(secrets: Arc<Secrets>, health: SecretHealth) -> DbPasswords {
        DbPasswords {
            secrets,
            health,
            watched: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Returns `url` with its password replaced by the value of `reference`, or `url`
    /// unchanged when `reference` is empty.
    ///
    /// # Errors
    /// The secret cannot be read, or `url` is not a URL that can carry a password; the
    /// message names `setting` and never the value.
    pub async fn resolve(
        &self,
        setting: &'static str,
        reference: &str,
        url: &str,
    ) -> anyhow::Result<SecretString> {
        if reference.is_empty() {
            return Ok(SecretString::new(url.to_owned()));
        }
        let password = (self.secrets.get(reference).await)
            .with_context(|| format!("cannot read {setting}"))?;
        let url = url_with_password(url, &password)
            .with_context(|| format!("cannot apply {setting} to its URL"))?;
        let mut watched = self.lock();
        if !watched.iter().any(|entry| entry.setting == setting) {
            watched.push(Watched {
                setting,
                reference: reference.to_owned(),
                applied: password,
                pools: Vec::new(),
            });
        }
        Ok(url)
    }

    /// Gives the password of `setting` to `pool` from now on; a setting that
    /// [`DbPasswords::resolve`] did not read (no secret configured) is ignored.
    pub fn watch(&self, setting: &'static str, pool: PasswordPool) {
        let mut watched = self.lock();
        if let Some(entry) = watched.iter_mut().find(|entry| entry.setting == setting) {
            entry.pools.push(pool);
        }
    }

    /// Returns whether any password comes from a secret.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Starts the task that reads every password secret each `interval`. The task ends
    /// when the returned handle is aborted.
    pub fn spawn_refresh(&self, interval: Duration) -> tokio::task::JoinHandle<()> {
        let passwords = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                passwords.refresh().await;
            }
        })
    }

    /// Reads every password secret once and applies a changed value to its pools.
    pub async fn refresh(&self) {
        let references: Vec<(&'static str, String)> = (self.lock().iter())
            .map(|entry| (entry.setting, entry.reference.clone()))
            .collect();
        for (setting, reference) in references {
            match self.secrets.get(&reference).await {
                Ok(password) => {
                    self.health.recover(setting);
                    self.apply_if_changed(setting, password);
                }
                Err(error) => {
                    // Logged once when the setting fails; the provider's own log and the
                    // refused counter cover each later attempt.
                    if self.health.fail(setting, error.to_string()) {
                        tracing::error!(setting, %error, "database password unavailable");
                    }
                }
            }
        }
    }

    fn apply_if_changed(&self, setting: &'static str, password: SecretString) {
        let mut watched = self.lock();
        let Some(entry) = watched.iter_mut().find(|entry| entry.setting == setting) else {
            return;
        };
        if entry.applied == password {
            return;
        }
        for pool in &entry.pools {
            if let Err(error) = pool.apply(&password) {
                tracing::error!(setting, %error, "rotated database password not applied");
                return;
            }
        }
        entry.applied = password;
        tracing::info!(
            setting,
            reference = entry.reference,
            pools = entry.pools.len(),
            "database password rotated; new connections use it"
        );
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Watched>> {
        // The list stays consistent even if a holder panicked.
        self.watched
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Returns `url` with its password set to `password`, percent-encoded.
///
/// # Errors
/// `url` does not parse or cannot carry a password; the message contains no password.
pub fn url_with_password(url: &str, password: &SecretString) -> anyhow::Result<SecretString> {
    let mut parsed = reqwest::Url::parse(url).map_err(|error| {
        anyhow::anyhow!(
            "invalid database URL {}: {error}",
            crate::store::redact(url)
        )
    })?;
    parsed.set_password(Some(password.expose())).map_err(|()| {
        anyhow::anyhow!(
            "the database URL cannot carry a password; write postgres://user@host:5432/database"
        )
    })?;
    Ok(SecretString::new(parsed.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_replaces_the_one_in_the_url() {
        let password = SecretString::new("p@ss/w:rd".to_owned());
        let url = url_with_password("postgres://folio:old@127.0.0.1:5432/folio", &password);
        let url = url.unwrap();
        assert_eq!(
            url.expose(),
            "postgres://folio:p%40ss%2Fw%3Ard@127.0.0.1:5432/folio"
        );
        let error = url_with_password("not a url", &password).unwrap_err();
        assert!(
            error.to_string().contains("invalid database URL"),
            "{error}"
        );
    }

    #[test]
    fn health_names_each_failed_setting() {
        let health = SecretHealth::default();
        assert_eq!(health.problem(), None);
        health.fail("store.password_secret", "stale".to_owned());
        let problem = health.problem().unwrap();
        assert_eq!(problem, "store.password_secret: stale");
        health.recover("store.password_secret");
        assert_eq!(health.problem(), None);
    }
}

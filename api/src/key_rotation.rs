//! Rotation of the ledger signing key and of the key-encryption key, without downtime.
//!
//! A signing rotation writes a new key file, then appends `ledger.key_rotated` signed by
//! the old key; the sequencer seals every later event with the new key, and requests in
//! flight wait in its queue. A KEK rotation makes a new version current at the KMS, so
//! new data keys use it at once; [`rewrap`] then moves the stored data keys and the
//! wrapped TOTP and signing keys to it in bounded batches. Each batch commits per key, so a crash
//! loses nothing and the next run resumes with the keys still on the old version.
//!
//! [`run_rewrap_job`] runs beside the server: a pass at start (so a rewrap cut short by a
//! crash resumes), one every `kms.rewrap_interval_seconds`, and one as soon as a rotation
//! requests it. A pass learns the current KEK version from the KMS and moves every data
//! key still on an older one, batch by batch with a pause between batches.

use std::sync::Arc;

use domain::crypto::LedgerKey;
use domain::events::DomainEvent;
use domain::record::Actor;
use eventstore_adapter::AppendResult;
use uuid::Uuid;

use crate::kms::data_keys::RewrapBatch;
use crate::state::AppState;

/// Largest rewrap batch.
pub const MAX_REWRAP_BATCH: u32 = 1_000;

/// The background rewrap job's controls and last count, held by the application state.
#[derive(Debug, Default)]
pub struct RewrapJob {
    /// Wakes the job for a pass now.
    pass_requested: tokio::sync::Notify,
    /// One pass at a time, whichever caller starts it.
    running: tokio::sync::Mutex<()>,
    /// Data keys (and the wrapped key files) still wrapped by an older KEK version after the last
    /// pass, or `u64::MAX` before the first pass.
    pending: std::sync::atomic::AtomicU64,
    stopping: std::sync::atomic::AtomicBool,
    stopped: tokio::sync::Notify,
}

impl RewrapJob {
    /// Creates a job that has not run a pass yet.
    pub fn new() -> Self {
        RewrapJob {
            pending: std::sync::atomic::AtomicU64::new(u64::MAX),
            ..RewrapJob::default()
        }
    }

    /// Requests a pass now. A pass already running is followed by another.
    pub fn wake(&self) {
        self.pass_requested.notify_one();
    }

    /// Keys left on an older KEK version after the last pass, or `None` before the first.
    pub fn pending(&self) -> Option<u64> {
        let pending = self.pending.load(std::sync::atomic::Ordering::Relaxed);
        (pending != u64::MAX).then_some(pending)
    }

    /// Stops the job after its current batch.
    pub fn stop(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.stopped.notify_waiters();
        self.pass_requested.notify_one();
    }

    fn is_stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Returns the KEK version the KMS wraps new keys under, by wrapping a throwaway key: the
/// one question every provider answers the same way.
///
/// # Errors
/// The KMS fails or refuses.
pub async fn current_kek_version(kms: &dyn crate::kms::Kms) -> anyhow::Result<String> {
    let probe = crate::kms::random_key()?;
    let wrapped = kms.wrap(&probe, b"folio/kek-version-probe").await?;
    Ok(wrapped.kek_version)
}

/// Checks that `version` is a KEK version something can move off: not the current one,
/// and wrapping at least one data key or key file.
///
/// # Errors
/// The current version (nothing can move off it before a rotation), a version nothing
/// uses (naming those in use), or a KMS failure.
pub async fn check_old_version(state: &AppState, version: &str) -> anyhow::Result<()> {
    let current = current_kek_version(state.kms.as_ref()).await?;
    anyhow::ensure!(
        version != current,
        "{}",
        current_version_hint(state.kms.provider(), version)
    );
    let in_use = state.personal.keys().versions_in_use().await?;
    let files: Vec<String> = (wrapped_files(state)?.into_iter())
        .map(|file| file.kek_version)
        .collect();
    if !in_use.contains_key(version) && !files.iter().any(|file| file == version) {
        let mut known: Vec<String> = in_use.keys().cloned().collect();
        known.extend(files);
        known.sort();
        known.dedup();
        anyhow::bail!(
            "no data key or key file is wrapped by KEK version {version:?}; versions in use: \
             {} (the current one is {current})",
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        );
    }
    Ok(())
}

/// Runs one pass of the rewrap job: moves every data key, and the wrapped TOTP and signing keys, off
/// KEK versions older than the current one. Returns how many keys moved.
///
/// # Errors
/// A KMS or key-store failure. Keys moved before it stay moved.
pub async fn rewrap_pass(state: &AppState) -> anyhow::Result<u64> {
    let job = &state.rewrap;
    let _one_at_a_time = job.running.lock().await;
    let current = current_kek_version(state.kms.as_ref()).await?;
    let old = keys_off_version(state, &current).await?;
    // Published before the first batch and lowered after each, so the gauge shows
    // progress during a long pass rather than only at its end.
    job.pending
        .store(old.values().sum(), std::sync::atomic::Ordering::Relaxed);

    let mut moved = 0;
    for version in old.keys() {
        match rewrap_version(state, version).await? {
            (count, true) => moved += count,
            (count, false) => return Ok(moved + count),
        }
    }

    let pending = keys_off_version(state, &current).await?.values().sum();
    job.pending
        .store(pending, std::sync::atomic::Ordering::Relaxed);
    Ok(moved)
}

/// Counts the data keys and key files wrapped by each KEK version other than `current`.
async fn keys_off_version(
    state: &AppState,
    current: &str,
) -> anyhow::Result<std::collections::BTreeMap<String, u64>> {
    let mut old: std::collections::BTreeMap<String, u64> = state
        .personal
        .keys()
        .versions_in_use()
        .await?
        .into_iter()
        .filter(|(version, _)| version != current)
        .collect();
    for file in wrapped_files(state)? {
        if file.kek_version != current {
            *old.entry(file.kek_version).or_default() += 1;
        }
    }
    Ok(old)
}

/// Moves the keys of one KEK version in batches of `kms.rewrap_batch`, pausing between
/// batches. Returns the keys moved, and `false` when the job was stopped meanwhile.
async fn rewrap_version(state: &AppState, version: &str) -> anyhow::Result<(u64, bool)> {
    let job = &state.rewrap;
    let settings = &state.config.kms;
    let pause = std::time::Duration::from_millis(settings.rewrap_pause_ms);
    let mut moved = 0;
    loop {
        if job.is_stopping() {
            return Ok((moved, false));
        }
        let progress = rewrap(state, version, settings.rewrap_batch).await?;
        moved += progress.rewrapped;
        let _ = (job.pending).fetch_update(
            std::sync::atomic::Ordering::Relaxed,
            std::sync::atomic::Ordering::Relaxed,
            |pending| Some(pending.saturating_sub(progress.rewrapped)),
        );
        if progress.remaining == 0 || progress.rewrapped == 0 {
            return Ok((moved, true));
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = job.stopped.notified() => return Ok((moved, false)),
        }
    }
}

/// A key kept in a file of `keys/`, wrapped by the KEK: the TOTP key or a signing key.
struct WrappedKeyFile {
    path: std::path::PathBuf,
    context: Vec<u8>,
    kek_version: String,
}

/// The wrapped key files of the data directory, with the KEK version of each.
fn wrapped_files(state: &AppState) -> anyhow::Result<Vec<WrappedKeyFile>> {
    let data_dir = &state.config.data_dir;
    let mut files = Vec::new();
    let mfa_key = data_dir.join("keys").join("mfa-secret.wrapped");
    if mfa_key.exists() {
        let context = crate::operators::MFA_KEY_CONTEXT.to_vec();
        files.push((mfa_key, context));
    }
    for path in crate::keys::wrapped_key_files(data_dir)? {
        let context = crate::keys::wrap_context(&path);
        files.push((path, context));
    }
    files
        .into_iter()
        .map(|(path, context)| {
            let kek_version = crate::kms::wrapped_file::read(&path)?.kek_version;
            Ok(WrappedKeyFile {
                path,
                context,
                kek_version,
            })
        })
        .collect()
}

/// Runs rewrap passes until [`RewrapJob::stop`]: one at once, then one every
/// `kms.rewrap_interval_seconds` or when [`RewrapJob::wake`] requests one. A failed pass is logged
/// and tried again at the next one.
pub async fn run_rewrap_job(state: Arc<AppState>) {
    let interval = std::time::Duration::from_secs(state.config.kms.rewrap_interval_seconds);
    let job = &state.rewrap;
    while !job.is_stopping() {
        match rewrap_pass(&state).await {
            Ok(0) => {}
            Ok(moved) => tracing::info!(
                moved,
                pending = job.pending().unwrap_or(0),
                "rewrap job moved data keys to the current KEK version"
            ),
            Err(error) => tracing::warn!(
                error = %format!("{error:#}"),
                "KEK rewrap pass failed; it is tried again at the next pass"
            ),
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = job.pass_requested.notified() => {}
        }
    }
}

/// Rotates the signing key of `ledger_id`: the rotation event is signed by the old key.
///
/// # Errors
/// A key file that cannot be written, or a store failure.
pub async fn rotate_signing(
    state: &AppState,
    ledger_id: Uuid,
    actor: Actor,
    reason: &str,
) -> anyhow::Result<AppendResult> {
    let key = Arc::new(LedgerKey::generate());
    crate::keys::add_current_key(&state.config.data_dir, &key, state.kms.as_ref()).await?;
    let result = state
        .store
        .rotate_key(ledger_id, key, actor, reason)
        .await?;
    tracing::info!(%ledger_id, position = result.last_position, "signing key rotated");
    Ok(result)
}

/// Stream of the KEK events of a ledger.
pub const KMS_STREAM: &str = "kms";

/// Makes a new KEK version current at the KMS and records `kms.kek_rotated` on every
/// ledger, since the KEK protects the data keys of all of them; returns the version.
/// `actor` and `correlation_id` are stamped on the events: the operator and request of an
/// HTTP rotation, or the command line's system actor.
///
/// # Errors
/// A KMS or store failure; a failure to record leaves the rotation done.
pub async fn rotate_kek(
    state: &AppState,
    actor: &Actor,
    correlation_id: Uuid,
) -> anyhow::Result<String> {
    let version = state.kms.rotate().await?;
    tracing::info!(provider = state.kms.provider(), %version, "KEK rotated");
    let rotated = domain::key_events::KekRotated {
        provider: state.kms.provider().to_owned(),
        kek_id: state.kms.kek_id().to_owned(),
        new_version: version.clone(),
    };
    for ledger in state.store.ledgers().await? {
        record_as(state, ledger.ledger_id, &rotated, actor, correlation_id).await?;
    }
    Ok(version)
}

/// Outcome of a KEK retirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Retirement {
    /// The local KMS dropped the version, and `kms.kek_retired` is recorded.
    Local,
    /// Nothing depends on the version, which Folio has used before; the operator retires
    /// it at the provider (`provider`), which Folio cannot do for them.
    AtProvider {
        /// Provider name, as in `[kms] provider`.
        provider: &'static str,
    },
}

/// Retires KEK version `version` of the local KMS and records `kms.kek_retired` on every
/// ledger. Rejected while anything is still wrapped by the version. Other providers
/// retire the version themselves after this check. There the version must be one that a
/// `kms.kek_rotated` or `kms.data_keys_rewrapped` event names, so that a typo, an alias or
/// a bare key id is not reported as safe to retire.
///
/// # Errors
/// The current version, a version still in use or never used, or a key file, KMS or
/// store failure.
pub async fn retire_kek(state: &AppState, version: &str) -> anyhow::Result<Retirement> {
    let current = current_kek_version(state.kms.as_ref()).await?;
    let provider = state.kms.provider();
    anyhow::ensure!(
        version != current,
        "{}",
        current_version_hint(provider, version)
    );
    let in_use = kek_version_in_use(state, version).await?;
    anyhow::ensure!(
        in_use == 0,
        "KEK version {version} still wraps {in_use} key(s); run `folio keys rewrap \
         --from-version {version}` first"
    );
    if provider != "local" {
        let recorded = recorded_kek_versions(state).await?;
        anyhow::ensure!(
            recorded.contains(version),
            "KEK version {version:?} is not one Folio has used: no kms.kek_rotated or \
             kms.data_keys_rewrapped event names it, so Folio cannot tell whether anything \
             depends on it. Check the spelling against the versions Folio has recorded: {}",
            if recorded.is_empty() {
                "none".to_owned()
            } else {
                recorded.into_iter().collect::<Vec<_>>().join(", ")
            }
        );
        return Ok(Retirement::AtProvider { provider });
    }
    let path = state.config.kms.local_key_path(&state.config.data_dir);
    let local = crate::kms::local::LocalKms::open(&path)?;
    let number = version
        .parse::<u32>()
        .map_err(|_| anyhow::anyhow!("local KEK versions are numbers, not {version:?}"))?;
    local.retire(number)?;
    let retired = domain::key_events::KekRetired {
        provider: provider.to_owned(),
        kek_id: state.kms.kek_id().to_owned(),
        version: version.to_owned(),
    };
    for ledger in state.store.ledgers().await? {
        record(state, ledger.ledger_id, &retired).await?;
    }
    Ok(Retirement::Local)
}

/// Explains why the current KEK version cannot be retired or rewrapped from, and what to
/// do instead. AWS KMS rotates key material in place under the same key ARN, so the way
/// off a key there is a new key in `kms.aws.key_id`, not a rotation.
pub(crate) fn current_version_hint(provider: &str, version: &str) -> String {
    match provider {
        "aws" => format!(
            "KEK version {version} is the current AWS KMS key. AWS rotates key material in \
             place under the same ARN and keeps the old material for decryption, so no data \
             key needs rewrapping after `folio keys rotate-kek`. To move off this key, set \
             kms.aws.key_id to a new key, restart, run `folio keys rewrap --from-version \
             {version}`, then retire it"
        ),
        _ => format!(
            "KEK version {version} is the current version, so nothing can move off it; run \
             `folio keys rotate-kek` and wait for the rewrap (or run `folio keys rewrap \
             --from-version {version}`), then retire it"
        ),
    }
}

/// Collects the KEK versions still in use and those named by the `kms.kek_rotated` and
/// `kms.data_keys_rewrapped` events of every ledger.
async fn recorded_kek_versions(
    state: &AppState,
) -> anyhow::Result<std::collections::BTreeSet<String>> {
    // No version is named "", so this counts the keys of every version in use.
    let mut versions: std::collections::BTreeSet<String> =
        keys_off_version(state, "").await?.into_keys().collect();
    for ledger in state.store.ledgers().await? {
        let mut from_version = 0;
        loop {
            let events = state
                .store
                .read_stream(ledger.ledger_id, KMS_STREAM, from_version, 1_000)
                .await?;
            let Some(last) = events.last() else { break };
            from_version = last.stream_version + 1;
            for event in &events {
                let decoded =
                    DomainEvent::decode(&event.event_type, event.schema_version, &event.payload);
                match decoded {
                    Ok(DomainEvent::KekRotated(rotated)) => {
                        versions.insert(rotated.new_version);
                    }
                    Ok(DomainEvent::DataKeysRewrapped(rewrapped)) => {
                        versions.insert(rewrapped.from_version);
                        versions.insert(rewrapped.to_version);
                    }
                    _ => {}
                }
            }
        }
    }
    Ok(versions)
}

/// Appends a KEK event to a ledger's `kms` stream.
async fn record<P: domain::events::EventPayload>(
    state: &AppState,
    ledger_id: Uuid,
    payload: &P,
) -> anyhow::Result<()> {
    record_as(
        state,
        ledger_id,
        payload,
        &Actor::system("kms"),
        Uuid::now_v7(),
    )
    .await
}

async fn record_as<P: domain::events::EventPayload>(
    state: &AppState,
    ledger_id: Uuid,
    payload: &P,
    actor: &Actor,
    correlation_id: Uuid,
) -> anyhow::Result<()> {
    let request = eventstore_adapter::AppendRequest {
        writes: vec![eventstore_adapter::StreamWrite {
            stream_id: KMS_STREAM.to_owned(),
            expected: eventstore_adapter::ExpectedVersion::Any,
            events: vec![crate::commands::draft(payload, actor, correlation_id)],
        }],
        idempotency: None,
    };
    state.store.append(ledger_id, request).await?;
    Ok(())
}

/// Moves up to `batch` data keys (at most [`MAX_REWRAP_BATCH`]) from KEK version
/// `from_version` to the current one, and the wrapped key files of `keys/` with the first batch.
///
/// # Errors
/// A KMS or key-store failure; keys moved before it stay moved.
pub async fn rewrap(
    state: &AppState,
    from_version: &str,
    batch: u32,
) -> anyhow::Result<RewrapBatch> {
    let batch = batch.clamp(1, MAX_REWRAP_BATCH);
    for file in wrapped_files(state)? {
        if file.kek_version == from_version {
            let kms = state.kms.as_ref();
            crate::kms::wrapped_file::rewrap(kms, &file.path, &file.context).await?;
        }
    }
    let progress = state
        .personal
        .keys()
        .rewrap_batch(from_version, batch)
        .await?;
    if let Some(to_version) = &progress.to_version {
        for (ledger_id, rewrapped) in &progress.by_ledger {
            let event = domain::key_events::DataKeysRewrapped {
                from_version: from_version.to_owned(),
                to_version: to_version.clone(),
                rewrapped: *rewrapped,
                remaining: progress.remaining,
            };
            record(state, *ledger_id, &event).await?;
        }
    }
    tracing::info!(
        from_version,
        rewrapped = progress.rewrapped,
        remaining = progress.remaining,
        "data keys rewrapped"
    );
    Ok(progress)
}

/// Whether KEK version `version` still wraps anything: data keys or key files. A
/// version in use must not be retired.
///
/// # Errors
/// A key-store or file failure.
pub async fn kek_version_in_use(state: &AppState, version: &str) -> anyhow::Result<u64> {
    let mut count = state
        .personal
        .keys()
        .versions_in_use()
        .await?
        .get(version)
        .copied()
        .unwrap_or(0);
    let files = wrapped_files(state)?;
    count += files
        .iter()
        .filter(|file| file.kek_version == version)
        .count() as u64;
    Ok(count)
}

/// Stream of the key revocations of a ledger.
pub const REVOCATION_STREAM: &str = "signing-keys";

/// Revokes the signing key with id `key_id` (32 hex digits) from `from_position` on:
/// appends `ledger.key_revoked`, signed by the ledger's current key. The current key
/// itself cannot be revoked; rotate away from it first.
///
/// # Errors
/// An unknown key, the current key, or a store failure.
pub async fn revoke_signing(
    state: &AppState,
    ledger_id: Uuid,
    key_id: &str,
    from_position: u64,
    reason: &str,
) -> anyhow::Result<AppendResult> {
    use domain::events::{DomainEvent, LedgerKeyRevoked};

    let well_formed = key_id.len() == 32 && key_id.bytes().all(|b| b.is_ascii_hexdigit());
    anyhow::ensure!(
        well_formed,
        "key id {key_id:?} is not 32 hex digits; copy it from `folio verify` (its key lines)"
    );
    let reason = reason.trim();
    anyhow::ensure!(
        !reason.is_empty() && reason.chars().count() <= 500,
        "give a reason of 1 to 500 characters; auditors read it beside the revocation"
    );
    let head = state.store.head(ledger_id).await?.position;
    anyhow::ensure!(
        from_position <= head,
        "position {from_position} is past the head of ledger {ledger_id} ({head}); give the \
         first position the key could have been misused at, at most {head}"
    );
    let ring = crate::keys::KeyRing::open(&state.config.data_dir, state.kms.as_ref()).await?;
    let Some(key) = ring.keys.iter().find(|k| k.key_id().to_hex() == key_id) else {
        anyhow::bail!(
            "no signing key with id {key_id} in the key ring; `folio verify` lists key ids"
        );
    };
    let mut current = None;
    let ledger_events = state
        .store
        .read_stream(ledger_id, domain::seal::LEDGER_STREAM, 0, 10_000)
        .await?;
    for event in &ledger_events {
        match DomainEvent::decode(&event.event_type, event.schema_version, &event.payload) {
            Ok(DomainEvent::LedgerCreated(created)) => current = Some(created.public_key),
            Ok(DomainEvent::LedgerKeyRotated(rotated)) => current = Some(rotated.new_public_key),
            _ => {}
        }
    }
    let revoked = state
        .store
        .read_stream(ledger_id, REVOCATION_STREAM, 0, 10_000)
        .await?;
    for event in &revoked {
        let decoded = DomainEvent::decode(&event.event_type, event.schema_version, &event.payload);
        if let Ok(DomainEvent::LedgerKeyRevoked(earlier)) = decoded {
            if earlier.public_key == key.public_key() && earlier.from_position <= from_position {
                anyhow::bail!(
                    "key {key_id} is already revoked from position {} (event at position {}); \
                     a later start adds nothing",
                    earlier.from_position,
                    event.position
                );
            }
        }
    }
    if current == Some(key.public_key()) {
        anyhow::bail!(
            "key {key_id} still signs ledger {ledger_id}; run `folio keys rotate-signing` first"
        );
    }
    let revoked = LedgerKeyRevoked {
        key_algorithm: domain::record::SigAlg::Ed25519 as u8,
        public_key: key.public_key(),
        from_position,
        reason: reason.to_owned(),
    };
    let actor = Actor::system("folio keys revoke-signing");
    let request = eventstore_adapter::AppendRequest {
        writes: vec![eventstore_adapter::StreamWrite {
            stream_id: REVOCATION_STREAM.to_owned(),
            expected: eventstore_adapter::ExpectedVersion::Any,
            events: vec![crate::commands::draft(&revoked, &actor, Uuid::now_v7())],
        }],
        idempotency: None,
    };
    match state.store.append(ledger_id, request).await? {
        eventstore_adapter::AppendOutcome::Committed(result) => Ok(result),
        eventstore_adapter::AppendOutcome::Duplicate(_) => {
            anyhow::bail!("the revocation carries no idempotency key, so it cannot repeat")
        }
    }
}

/// Moves a plain TOTP key file from before the KMS (`keys/mfa-secret.key`) under the
/// KMS: writes it wrapped to `keys/mfa-secret.wrapped`, checks that it unwraps to the
/// same key, then deletes the plain file. Returns `false` when there is no plain file.
///
/// # Errors
/// A malformed key file, a wrapped file already present, or a KMS failure; the plain
/// file stays unless the wrapped one was written and checked.
pub async fn wrap_legacy_mfa_key(
    kms: &dyn crate::kms::Kms,
    data_dir: &std::path::Path,
) -> anyhow::Result<bool> {
    let keys = data_dir.join("keys");
    let legacy = keys.join("mfa-secret.key");
    let wrapped_path = keys.join("mfa-secret.wrapped");
    if !legacy.exists() {
        return Ok(false);
    }
    anyhow::ensure!(
        !wrapped_path.exists(),
        "both {} and {} exist; keep the one the TOTP secrets were sealed with",
        legacy.display(),
        wrapped_path.display()
    );
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(&legacy)?);
    let mut key = zeroize::Zeroizing::new([0u8; 32]);
    if hex::decode_to_slice(text.trim(), key.as_mut()).is_err() {
        anyhow::bail!("{} must hold 64 hex digits", legacy.display());
    }

    let context = crate::operators::MFA_KEY_CONTEXT;
    let wrapped = kms.wrap(&key, context).await?;
    crate::kms::wrapped_file::write(&wrapped_path, &wrapped)?;
    let back = kms
        .unwrap(&crate::kms::wrapped_file::read(&wrapped_path)?, context)
        .await?;
    anyhow::ensure!(
        *back == *key,
        "the wrapped TOTP key does not unwrap to the same key"
    );
    std::fs::remove_file(&legacy)?;
    tracing::info!(path = %wrapped_path.display(), "TOTP secret key wrapped by the KMS");
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kms::Kms;
    use crate::operators::{AesGcmBox, SecretBox};

    #[tokio::test]
    async fn legacy_totp_key_moves_under_the_kms() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("keys");
        std::fs::create_dir_all(&keys).unwrap();
        let legacy = AesGcmBox::load_or_create(&keys.join("mfa-secret.key"), true).unwrap();
        let sealed = legacy.seal(b"totp secret", b"op-1").unwrap();
        let kms = crate::kms::local::LocalKms::open(&keys.join("kms-local.kek")).unwrap();

        assert!(wrap_legacy_mfa_key(&kms, dir.path()).await.unwrap());
        assert!(!keys.join("mfa-secret.key").exists());
        let wrapped = crate::kms::wrapped_file::read(&keys.join("mfa-secret.wrapped")).unwrap();
        let key = kms
            .unwrap(&wrapped, crate::operators::MFA_KEY_CONTEXT)
            .await
            .unwrap();
        let opened = AesGcmBox::new(&key).open(&sealed, b"op-1").unwrap();
        assert_eq!(opened.as_slice(), b"totp secret");
        assert!(!wrap_legacy_mfa_key(&kms, dir.path()).await.unwrap());
    }
}

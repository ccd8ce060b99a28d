//! Rotation of the ledger signing key and of the key-encryption key, without downtime.
//!
//! A signing rotation writes a new key file, then appends `ledger.key_rotated` signed by
//! the old key; the sequencer seals every later event with the new key, and requests in
//! flight wait in its queue. A KEK rotation makes a new version current at the KMS, so
//! new data keys use it at once; [`rewrap`] then moves the stored data keys and the
//! wrapped TOTP key to it in bounded batches. Each batch commits per key, so a crash
//! loses nothing and the next run resumes with the keys still on the old version.

use std::sync::Arc;

use domain::crypto::LedgerKey;
use domain::record::Actor;
use eventstore_adapter::AppendResult;
use uuid::Uuid;

use crate::kms::data_keys::RewrapBatch;
use crate::state::AppState;

/// Largest rewrap batch.
pub const MAX_REWRAP_BATCH: u32 = 1_000;

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
    crate::keys::add_current_key(&state.config.data_dir, &key)?;
    let result = state
        .store
        .rotate_key(ledger_id, key, actor, reason)
        .await?;
    tracing::info!(%ledger_id, position = result.last_position, "signing key rotated");
    Ok(result)
}

/// Makes a new KEK version current at the KMS; returns it.
///
/// # Errors
/// A KMS failure.
pub async fn rotate_kek(state: &AppState) -> anyhow::Result<String> {
    let version = state.kms.rotate().await?;
    tracing::info!(provider = state.kms.provider(), %version, "KEK rotated");
    Ok(version)
}

/// Moves up to `batch` data keys (at most [`MAX_REWRAP_BATCH`]) from KEK version
/// `from_version` to the current one, and the wrapped TOTP key with the first batch.
///
/// # Errors
/// A KMS or key-store failure; keys moved before it stay moved.
pub async fn rewrap(
    state: &AppState,
    from_version: &str,
    batch: u32,
) -> anyhow::Result<RewrapBatch> {
    let batch = batch.clamp(1, MAX_REWRAP_BATCH);
    let mfa_key = state
        .config
        .data_dir
        .join("keys")
        .join("mfa-secret.wrapped");
    if mfa_key.exists() {
        let wrapped = crate::kms::wrapped_file::read(&mfa_key)?;
        if wrapped.kek_version == from_version {
            let context = crate::operators::MFA_KEY_CONTEXT;
            crate::kms::wrapped_file::rewrap(state.kms.as_ref(), &mfa_key, context).await?;
        }
    }
    let progress = state
        .personal
        .keys()
        .rewrap_batch(from_version, batch)
        .await?;
    tracing::info!(
        from_version,
        rewrapped = progress.rewrapped,
        remaining = progress.remaining,
        "data keys rewrapped"
    );
    Ok(progress)
}

/// Whether KEK version `version` still wraps anything: data keys or the TOTP key. A
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
    let mfa_key = state
        .config
        .data_dir
        .join("keys")
        .join("mfa-secret.wrapped");
    if mfa_key.exists() && crate::kms::wrapped_file::read(&mfa_key)?.kek_version == version {
        count += 1;
    }
    Ok(count)
}

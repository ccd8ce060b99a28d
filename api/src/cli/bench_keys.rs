//! `folio bench --key-cache-fields N`: sealing and opening payee fields through the data
//! keys, with the unwrapped-key cache warm and cold, over the local KMS.
//!
//! A cold open costs one KMS unwrap. The local KMS unwraps with AES-GCM in process, so
//! the cold rows bound Folio's own cost; a network KMS adds its round trip to each miss.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use domain::envelope::{DataKeyLimits, FieldContext, SealedField};
use uuid::Uuid;

use crate::kms::cache::DataKeyCache;
use crate::kms::data_keys::DataKeys;
use crate::kms::local::LocalKms;

/// Subjects (payees) the benchmark spreads its fields over.
const SUBJECTS: u64 = 100;

/// Seals `fields` fields over [`SUBJECTS`] subjects, then opens them all with a warm and
/// with a cold cache, printing a table row for each.
///
/// # Errors
/// A key file, database or KMS failure.
pub(super) async fn run(scratch: &Path, fields: u64) -> anyhow::Result<()> {
    let kms = Arc::new(LocalKms::open(&scratch.join("bench.kek"))?);
    let limits = DataKeyLimits {
        max_messages: 1 << 20,
        max_age_micros: i64::MAX,
    };
    let path = scratch.join("bench-keys.sqlite");
    let warm_cache = DataKeyCache::new(Duration::from_secs(3_600), 10_000);
    let warm = DataKeys::open(&path, kms.clone(), warm_cache, limits).await?;
    let ledger = Uuid::now_v7();
    let events: Vec<Uuid> = (0..fields).map(|_| Uuid::now_v7()).collect();

    println!("| run | fields | seconds | fields per second | KMS unwraps |");
    println!("|---|---:|---:|---:|---:|");
    let started = Instant::now();
    let mut sealed = Vec::with_capacity(events.len());
    for (n, event_id) in events.iter().enumerate() {
        let subject = format!("payee:{}", n as u64 % SUBJECTS);
        let place = place(ledger, *event_id);
        sealed.push(
            warm.seal_field(&subject, &place, b"062000 12345678", 0)
                .await?,
        );
    }
    row("seal, one key per payee", fields, started.elapsed(), 0);

    open_all(&warm, "open, warm cache", ledger, &events, &sealed).await?;
    drop(warm);
    // The same database with a cache that keeps nothing: every open unwraps its key.
    let cold_cache = DataKeyCache::new(Duration::ZERO, 10_000);
    let cold = DataKeys::open(&path, kms, cold_cache, limits).await?;
    open_all(&cold, "open, cold cache (TTL 0)", ledger, &events, &sealed).await?;
    Ok(())
}

async fn open_all(
    keys: &DataKeys,
    name: &str,
    ledger: Uuid,
    events: &[Uuid],
    sealed: &[SealedField],
) -> anyhow::Result<()> {
    let misses_before = keys.cache_metrics().misses.load(Ordering::Relaxed);
    let started = Instant::now();
    for (event_id, field) in events.iter().zip(sealed) {
        keys.open_field(&place(ledger, *event_id), field).await?;
    }
    let misses = keys.cache_metrics().misses.load(Ordering::Relaxed) - misses_before;
    row(name, events.len() as u64, started.elapsed(), misses);
    Ok(())
}

fn place(ledger_id: Uuid, event_id: Uuid) -> FieldContext<'static> {
    FieldContext {
        ledger_id,
        stream: "allowlist",
        event_id,
        field: "account",
    }
}

fn row(name: &str, fields: u64, elapsed: Duration, unwraps: u64) {
    let seconds = elapsed.as_secs_f64();
    let rate = fields as f64 / seconds.max(f64::EPSILON);
    println!("| {name} | {fields} | {seconds:.2} | {rate:.0} | {unwraps} |");
}

//! `folio bench --replay-events N`: replay speed, in events per second, of a ledger of
//! payments read from a SQLite store and from an export file.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use domain::clock::SystemClock;
use domain::events::{
    DispatchAttempted, DomainEvent, EventPayload, PayeeAccount, PayeeAdded, PaymentSource,
    PaymentSubmitted, ReceiptRecorded,
};
use domain::record::{Actor, EventDraft};
use eventstore_adapter::sqlite::SqliteBackend;
use eventstore_adapter::{AppendRequest, EventStore, ExpectedVersion, StreamWrite};
use uuid::Uuid;

use crate::replay::source::{Cutoff, EventSource};
use crate::store::StoreLocation;

/// Payments per append while the benchmark ledger is built (three events each).
const PAYMENTS_PER_APPEND: u64 = 300;

/// Builds a ledger of one payee and `events / 3` receipted payments, then times a replay
/// to the head from the store and from an export of it, printing a table row for each.
///
/// # Errors
/// A store, key or file error, or a replay that fails.
pub(super) async fn run(scratch: &Path, events: u64) -> anyhow::Result<()> {
    let data_dir = scratch.join("replay");
    let ledger = build(&data_dir, events / 3).await?;
    let export = scratch.join("replay.folio");
    super::export::export_ledger(&data_dir, ledger, &export).await?;

    println!("| run | events | seconds | events per second |");
    println!("|---|---:|---:|---:|");

    // Verification alone, as `folio verify` does it, is the bound for a replay.
    let location = StoreLocation::from_dir_or_url(&data_dir, None);
    let started = Instant::now();
    let verdicts = super::verify::verify_location(&location, Some(ledger)).await?;
    let seconds = started.elapsed().as_secs_f64();
    let verdict = verdicts
        .first()
        .context("folio verify returned no verdict")?;
    let summary = verdict
        .result
        .as_ref()
        .map_err(|f| anyhow::anyhow!("{f}"))?;
    print_row("folio verify, SQLite store", summary.event_count, seconds);

    let store = EventSource::Store(location);
    for (name, source) in [
        ("SQLite store", store),
        ("export file", EventSource::Export(export)),
    ] {
        let started = Instant::now();
        let state = crate::replay::state_at(&source, Some(ledger), Cutoff::Head).await?;
        let seconds = started.elapsed().as_secs_f64();
        print_row(
            &format!("folio replay, {name}"),
            state.as_of.position + 1,
            seconds,
        );
    }
    Ok(())
}

fn print_row(run: &str, events: u64, seconds: f64) {
    println!(
        "| {run} | {events} | {seconds:.2} | {:.0} |",
        events as f64 / seconds
    );
}

async fn build(data_dir: &Path, payments: u64) -> anyhow::Result<Uuid> {
    std::fs::create_dir_all(data_dir)?;
    let keys = crate::keys::KeyRing::load_or_create(data_dir)?;
    let backend = SqliteBackend::open_dir(data_dir)
        .await
        .context("open the benchmark store")?;
    let store = EventStore::open(Arc::new(backend), keys.current(), Arc::new(SystemClock));
    let ledger = Uuid::now_v7();
    store
        .create_ledger(ledger, "bench", Actor::system("bench"), Uuid::now_v7())
        .await?;
    let payee = payee_added();
    let payee_id = payee.payee_id;
    append(
        &store,
        ledger,
        vec![write("payees", vec![draft(&payee, None)])],
    )
    .await?;

    let mut written = 0;
    while written < payments {
        let count = PAYMENTS_PER_APPEND.min(payments - written);
        let writes = (0..count).map(|_| payment_write(payee_id)).collect();
        append(&store, ledger, writes).await?;
        written += count;
    }
    store.shutdown().await;
    Ok(ledger)
}

async fn append(store: &EventStore, ledger: Uuid, writes: Vec<StreamWrite>) -> anyhow::Result<()> {
    let request = AppendRequest {
        writes,
        idempotency: None,
    };
    store.append(ledger, request).await?;
    Ok(())
}

fn write(stream_id: &str, events: Vec<EventDraft>) -> StreamWrite {
    StreamWrite {
        stream_id: stream_id.to_owned(),
        expected: ExpectedVersion::Any,
        events,
    }
}

fn draft<P: EventPayload>(payload: &P, causation_id: Option<Uuid>) -> EventDraft {
    let (event_type, schema_version, payload) = DomainEvent::encode(payload);
    EventDraft {
        event_id: Uuid::now_v7(),
        event_type: event_type.to_owned(),
        schema_version,
        actor: Actor::system("bench"),
        correlation_id: Uuid::nil(),
        causation_id,
        payload,
    }
}

fn payee_added() -> PayeeAdded {
    PayeeAdded {
        payee_id: Uuid::now_v7(),
        name: "Bench Payee".to_owned(),
        normalized_name: "bench payee".to_owned(),
        account: account(),
        lookalike_of: Vec::new(),
    }
}

fn account() -> PayeeAccount {
    PayeeAccount::Bsb {
        bsb: "062000".to_owned(),
        account: "12345678".to_owned(),
    }
}

/// Returns the three events of a paid payment: submitted, attempted and receipted.
fn payment_write(payee_id: Uuid) -> StreamWrite {
    let payment_id = Uuid::now_v7();
    let key = format!("bench-{payment_id}");
    let submitted = draft(
        &PaymentSubmitted {
            payment_id,
            payee_id,
            amount_minor: 12_345,
            currency: "AUD".to_owned(),
            account: account(),
            payee_name: "Bench Payee".to_owned(),
            reference: "BENCH".to_owned(),
            bank_idempotency_key: key.clone(),
            source: PaymentSource::Api,
        },
        None,
    );
    let cause = Some(submitted.event_id);
    let attempted = draft(
        &DispatchAttempted {
            payment_id,
            attempt: 1,
            bank_idempotency_key: key,
        },
        cause,
    );
    let receipted = draft(
        &ReceiptRecorded {
            payment_id,
            attempt: 1,
            bank_reference: format!("ref-{payment_id}"),
            response_status: 200,
            response_blake3: [0; 32],
        },
        cause,
    );
    write(
        &format!("payment-{payment_id}"),
        vec![submitted, attempted, receipted],
    )
}

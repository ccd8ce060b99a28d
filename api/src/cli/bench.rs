//! `folio bench`: sealed durable appends and verification, each beside the bare
//! rate of the operation that should bound it, measured in the same run.
//!
//! Baselines: Ed25519 signing on all cores (bounds sealing), Ed25519 batch
//! verification on all cores (bounds `folio verify`), and `fdatasync` of a
//! small write on the data disk (bounds an append of one event).
//!
//! With `--backend postgres` the append rows run against a PostgreSQL database instead, from
//! one node and from two nodes (two stores with their own pools and sequencers in this
//! process) appending to one ledger.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use domain::clock::SystemClock;
use domain::crypto::{check_signature_encoding, LedgerKey};
use domain::record::{Actor, EventDraft};
use eventstore_adapter::postgres::PostgresBackend;
use eventstore_adapter::sqlite::SqliteBackend;
use eventstore_adapter::{AppendRequest, EventStore, ExpectedVersion, StreamWrite};
use rayon::prelude::*;
use uuid::Uuid;

/// Arguments of `folio bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory for the benchmark's scratch store (on the disk to measure).
    #[arg(long, default_value = "folio-data/bench")]
    dir: PathBuf,
    /// Events appended per batch size.
    #[arg(long, default_value_t = 100_000)]
    events: u64,
    /// Seconds spent on each baseline.
    #[arg(long, default_value_t = 2)]
    baseline_secs: u64,
    /// Store the append rows write to.
    #[arg(long, value_enum, default_value = "sqlite")]
    backend: BenchBackend,
    /// URL of a scratch PostgreSQL database for `--backend postgres`. The benchmark's ledgers
    /// stay there, because the store is append-only.
    #[arg(long, env = "FOLIO_STORE__URL", hide_env_values = true)]
    url: Option<String>,
    /// Instead of the append benchmark, export a whole-ledger evidence bundle from ledgers of
    /// these sizes (comma-separated event counts) and report the rate and peak memory.
    #[arg(long, value_delimiter = ',')]
    bundle_sizes: Vec<u64>,
    /// Instead of the append benchmark, build a ledger of about this many payment events and
    /// time `folio replay` (verify, decode and rebuild the state) over it.
    #[arg(long)]
    replay_events: Option<u64>,
    /// Instead of the append benchmark, seal this many payee fields and open them with a
    /// warm and a cold data-key cache.
    #[arg(long)]
    key_cache_fields: Option<u64>,
}

/// Store measured by `folio bench`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BenchBackend {
    /// A fresh SQLite file per row, under `--dir`.
    Sqlite,
    /// The PostgreSQL database at `--url`.
    Postgres,
}

/// Connections of each benchmark node's PostgreSQL pool, as in the default configuration.
const PG_CONNECTIONS: u32 = 8;

/// Bytes of the payload of each benchmark event.
const PAYLOAD_LEN: usize = 200;

pub(super) async fn run(args: Args) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&args.dir)?;
    let scratch = tempfile::tempdir_in(&args.dir)?;
    if let Some(fields) = args.key_cache_fields {
        super::bench_keys::run(scratch.path(), fields).await?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(events) = args.replay_events {
        super::bench_replay::run(scratch.path(), events).await?;
        return Ok(ExitCode::SUCCESS);
    }
    if !args.bundle_sizes.is_empty() {
        super::bench_bundle::run(scratch.path(), &args.bundle_sizes).await?;
        return Ok(ExitCode::SUCCESS);
    }
    let window = Duration::from_secs(args.baseline_secs);
    let cores = rayon::current_num_threads();
    println!(
        "folio bench: {cores} cores, {} events per append run, scratch {}",
        args.events,
        scratch.path().display()
    );

    let sign_rate = signing_rate(window);
    let verify_rate = batch_verify_rate(window);
    let strict_rate = strict_batch_verify_rate(window);
    let fsync_rate = fsync_rate(scratch.path(), window)?;
    println!("| measure | rate (per s) | ratio to baseline |");
    println!("|---|---:|---:|");
    println!("| ed25519 sign, all cores (baseline) | {sign_rate:.0} | 1.00 |");
    println!("| ed25519 batch verify, all cores (baseline) | {verify_rate:.0} | 1.00 |");
    println!("| ed25519 batch verify + strict R checks, all cores (baseline) | {strict_rate:.0} | 1.00 |");
    println!("| fdatasync of a 4 KiB write (baseline) | {fsync_rate:.0} | 1.00 |");
    if args.backend == BenchBackend::Postgres {
        let Some(url) = args.url.as_deref().filter(|url| !url.is_empty()) else {
            anyhow::bail!("--backend postgres needs --url postgres://user@host:5432/scratch");
        };
        postgres_rows(url, args.events, sign_rate).await?;
        return Ok(ExitCode::SUCCESS);
    }

    for batch in [1u64, 16, 256] {
        // Batch 1 is bounded by fsync, so it gets fewer events to keep the run short.
        let events = if batch == 1 {
            (args.events / 20).max(200)
        } else {
            args.events
        };
        let (rate, ledger) =
            append_rate(&scratch.path().join(format!("b{batch}")), batch, events, 1).await?;
        let baseline = if batch == 1 { fsync_rate } else { sign_rate };
        let name = if batch == 1 { "fsync" } else { "sign" };
        println!(
            "| sealed durable append, batch {batch}, 1 caller | {rate:.0} | {:.2} of {name} |",
            rate / baseline
        );
        if batch == 256 {
            let rate = verify_rate_of(&scratch.path().join(format!("b{batch}")), ledger).await?;
            println!(
                "| folio verify (store, {events} events) | {rate:.0} | {:.2} of batch verify, \
                 {:.2} of strict batch verify |",
                rate / verify_rate,
                rate / strict_rate
            );
        }
    }
    let (rate, _) = append_rate(&scratch.path().join("concurrent"), 1, args.events / 4, 64).await?;
    println!(
        "| sealed durable append, batch 1, 64 concurrent callers | {rate:.0} | {:.2} of sign |",
        rate / sign_rate
    );
    concurrent_batches(scratch.path(), args.events, sign_rate).await?;
    Ok(ExitCode::SUCCESS)
}

/// Measures batch appends from several concurrent callers. Each caller waits for the result of
/// its append before it sends the next, so these rows show how far commits overlap with sealing.
async fn concurrent_batches(scratch: &Path, events: u64, sign_rate: f64) -> anyhow::Result<()> {
    for batch in [16u64, 256] {
        for callers in [4u64, 16] {
            let dir = scratch.join(format!("b{batch}-c{callers}"));
            let (rate, _) = append_rate(&dir, batch, events, callers).await?;
            println!(
                "| sealed durable append, batch {batch}, {callers} concurrent callers \
                 | {rate:.0} | {:.2} of sign |",
                rate / sign_rate
            );
        }
    }
    Ok(())
}

fn signing_rate(window: Duration) -> f64 {
    let key = LedgerKey::from_seed([7; 32]);
    let chunk = 4_096u64;
    let started = Instant::now();
    let mut done = 0u64;
    while started.elapsed() < window {
        (0..chunk).into_par_iter().for_each(|i| {
            let hash = *blake3::hash(&i.to_be_bytes()).as_bytes();
            std::hint::black_box(key.sign_event_hash(&hash));
        });
        done += chunk;
    }
    done as f64 / started.elapsed().as_secs_f64()
}

fn batch_verify_rate(window: Duration) -> f64 {
    verify_rate_with(window, false)
}

/// Batch verification plus the per-signature checks of `R` that Folio's strict rules add
/// (canonical, not small order, torsion-free): the bound for `folio verify`.
fn strict_batch_verify_rate(window: Duration) -> f64 {
    verify_rate_with(window, true)
}

fn verify_rate_with(window: Duration, strict: bool) -> f64 {
    use ed25519_dalek::{Signer, SigningKey};
    let key = SigningKey::from_bytes(&[9; 32]);
    let public = key.verifying_key();
    let messages: Vec<[u8; 32]> = (0..4_096u64)
        .map(|i| *blake3::hash(&i.to_be_bytes()).as_bytes())
        .collect();
    let signatures: Vec<_> = messages.iter().map(|m| key.sign(m)).collect();
    let started = Instant::now();
    let mut done = 0u64;
    while started.elapsed() < window {
        messages
            .par_chunks(64)
            .zip(signatures.par_chunks(64))
            .for_each(|(ms, ss)| {
                if strict {
                    for signature in ss {
                        let checked = check_signature_encoding(&signature.to_bytes());
                        assert!(checked.is_ok());
                    }
                }
                let refs: Vec<&[u8]> = ms.iter().map(|m| m.as_slice()).collect();
                let keys = vec![public; ms.len()];
                assert!(ed25519_dalek::verify_batch(&refs, ss, &keys).is_ok());
            });
        done += messages.len() as u64;
    }
    done as f64 / started.elapsed().as_secs_f64()
}

fn fsync_rate(dir: &Path, window: Duration) -> anyhow::Result<f64> {
    let path = dir.join("fsync-probe");
    let mut file = std::fs::File::create(&path)?;
    let block = [0u8; 4_096];
    let started = Instant::now();
    let mut done = 0u64;
    while started.elapsed() < window {
        file.write_all(&block)?;
        file.sync_data()?;
        done += 1;
    }
    std::fs::remove_file(&path)?;
    Ok(done as f64 / started.elapsed().as_secs_f64())
}

/// Measures appends to PostgreSQL from one node and from two nodes sharing one ledger.
async fn postgres_rows(url: &str, events: u64, sign_rate: f64) -> anyhow::Result<()> {
    let runs: [(u64, u64, u64); 8] = [
        (1, 1, 1),
        (1, 64, 1),
        (1, 64, 2),
        (16, 16, 1),
        (16, 16, 2),
        (256, 1, 1),
        (256, 16, 1),
        (256, 16, 2),
    ];
    for (batch, callers, nodes) in runs {
        // One event per append is bounded by commit latency, so it gets fewer events.
        let events = if batch == 1 && callers == 1 {
            (events / 50).max(200)
        } else {
            events
        };
        let rate = postgres_append_rate(url, batch, events, callers, nodes).await?;
        let node_text = if nodes == 1 { "1 node" } else { "2 nodes" };
        println!(
            "| PostgreSQL sealed durable append, batch {batch}, {callers} callers, {node_text} \
             | {rate:.0} | {:.2} of sign |",
            rate / sign_rate
        );
    }
    Ok(())
}

/// Appends to one new ledger from `nodes` stores on the database at `url`, each with its own
/// pool and sequencer, with the callers spread over them. Checks afterwards that the ledger
/// contains every event.
async fn postgres_append_rate(
    url: &str,
    batch: u64,
    events: u64,
    callers: u64,
    nodes: u64,
) -> anyhow::Result<f64> {
    let key = Arc::new(LedgerKey::from_seed([3; 32]));
    let mut stores = Vec::new();
    for _ in 0..nodes {
        let backend = PostgresBackend::connect_with(url, PG_CONNECTIONS).await?;
        let store = EventStore::open(Arc::new(backend), Arc::clone(&key), Arc::new(SystemClock));
        stores.push(store);
    }
    let ledger_id = Uuid::now_v7();
    stores[0]
        .create_ledger(
            ledger_id,
            &bench_tenant(ledger_id),
            Actor::system("bench"),
            Uuid::now_v7(),
        )
        .await?;
    let appends_per_caller = events / batch / callers;
    let elapsed = drive(&stores, ledger_id, batch, appends_per_caller, callers).await?;
    let expected = appends_per_caller * batch * callers;
    let head = stores[0].head(ledger_id).await?;
    anyhow::ensure!(
        head.position == expected,
        "bench ledger holds {} events after genesis, expected {expected}",
        head.position
    );
    for store in &stores {
        store.shutdown().await;
    }
    Ok(expected as f64 / elapsed)
}

async fn append_rate(
    dir: &Path,
    batch: u64,
    events: u64,
    callers: u64,
) -> anyhow::Result<(f64, Uuid)> {
    std::fs::create_dir_all(dir)?;
    let backend = SqliteBackend::open(&dir.join("events.sqlite")).await?;
    let key = Arc::new(LedgerKey::from_seed([3; 32]));
    let store = EventStore::open(Arc::new(backend), key, Arc::new(SystemClock));
    let ledger_id = Uuid::now_v7();
    store
        .create_ledger(
            ledger_id,
            &bench_tenant(ledger_id),
            Actor::system("bench"),
            Uuid::now_v7(),
        )
        .await?;
    let appends_per_caller = events / batch / callers;
    let stores = [store];
    let elapsed = drive(&stores, ledger_id, batch, appends_per_caller, callers).await?;
    stores[0].shutdown().await;
    Ok((
        (appends_per_caller * batch * callers) as f64 / elapsed,
        ledger_id,
    ))
}

/// Runs `callers` callers, spread over `stores`, each appending `appends_per_caller` appends
/// of `batch` events and waiting for each before the next. Returns the seconds taken.
async fn drive(
    stores: &[EventStore],
    ledger_id: Uuid,
    batch: u64,
    appends_per_caller: u64,
    callers: u64,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for caller in 0..callers {
        let store = stores[caller as usize % stores.len()].clone();
        tasks.spawn(async move {
            for append in 0..appends_per_caller {
                let write = StreamWrite {
                    stream_id: format!("bench-{caller}-{append}"),
                    expected: ExpectedVersion::NoStream,
                    events: (0..batch).map(|_| bench_event()).collect(),
                };
                store
                    .append(
                        ledger_id,
                        AppendRequest {
                            writes: vec![write],
                            idempotency: None,
                        },
                    )
                    .await?;
            }
            Ok::<_, eventstore_adapter::StoreError>(())
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.context("bench caller panicked")??;
    }
    Ok(started.elapsed().as_secs_f64())
}

/// Tenant of a benchmark ledger: one per ledger, since a tenant may own only one ledger
/// of a store and PostgreSQL keeps the ledgers of earlier runs.
fn bench_tenant(ledger_id: Uuid) -> String {
    format!("bench-{ledger_id}")
}

pub(super) fn bench_event() -> EventDraft {
    EventDraft {
        event_id: Uuid::now_v7(),
        event_type: "bench.event".to_owned(),
        schema_version: 1,
        actor: Actor::system("bench"),
        correlation_id: Uuid::nil(),
        causation_id: None,
        payload: vec![0x5a; PAYLOAD_LEN],
    }
}

async fn verify_rate_of(dir: &Path, ledger_id: Uuid) -> anyhow::Result<f64> {
    let started = Instant::now();
    let verdicts = super::verify::verify_store(dir, Some(ledger_id)).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let summary = verdicts[0]
        .result
        .as_ref()
        .map_err(|failure| anyhow::anyhow!("bench ledger broken: {failure}"))?;
    Ok(summary.event_count as f64 / elapsed)
}

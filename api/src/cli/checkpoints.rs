//! Checks of signed checkpoints that an auditor kept (`folio verify --checkpoints FILE`) and
//! of proof documents served by the API (`folio verify-proof`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use domain::checkpoint::SignedCheckpoint;
use domain::crypto::PUBLIC_KEY_LEN;
use domain::merkle::{self, Hash};
use domain::record::SealedEvent;
use domain::verify::Summary;

use crate::proofs::{checkpoint_from_json, verify_document};

/// Arguments of `folio verify-proof`.
#[derive(Debug, clap::Args)]
pub struct ProofArgs {
    /// JSON document from `GET /v1/ledgers/{id}/proofs/inclusion` or `.../consistency`.
    file: PathBuf,
    /// The ledger's public key, 64 hex digits, as the auditor has it.
    #[arg(long)]
    public_key: String,
}

/// Runs `folio verify-proof`: exit 0 when the proof and its checkpoints verify, 1 otherwise.
pub(super) async fn run_proof(args: ProofArgs) -> anyhow::Result<ExitCode> {
    let public_key = parse_public_key(&args.public_key)?;
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let document: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not JSON", args.file.display()))?;
    match verify_document(&document, &public_key) {
        Ok(statement) => {
            println!("{}: VALID: {statement}", args.file.display());
            Ok(ExitCode::SUCCESS)
        }
        Err(error) => {
            println!("{}: INVALID: {error:#}", args.file.display());
            Ok(ExitCode::FAILURE)
        }
    }
}

fn parse_public_key(text: &str) -> anyhow::Result<[u8; PUBLIC_KEY_LEN]> {
    let bytes = hex::decode(text.trim())
        .with_context(|| format!("--public-key {text:?} is not hex; pass the 64 hex digits"))?;
    <[u8; PUBLIC_KEY_LEN]>::try_from(bytes.as_slice()).map_err(|_| {
        anyhow::anyhow!(
            "--public-key is {} bytes; pass 32 bytes (64 hex digits)",
            bytes.len()
        )
    })
}

/// Reads a file of checkpoints as a witness keeps it: one JSON checkpoint per line.
///
/// # Errors
/// Names the line that cannot be read.
pub fn read_kept(path: &Path) -> anyhow::Result<Vec<SignedCheckpoint>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read checkpoints file {}", path.display()))?;
    let mut kept = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{} line {}: not JSON", path.display(), index + 1))?;
        let checkpoint = checkpoint_from_json(&value)
            .with_context(|| format!("{} line {}", path.display(), index + 1))?;
        kept.push(checkpoint);
    }
    Ok(kept)
}

/// Reads every event hash of an export file, in position order.
///
/// # Errors
/// When the file cannot be read or decoded.
pub fn export_hashes(path: &Path) -> anyhow::Result<Vec<Hash>> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let exported = domain::export::decode(&bytes)?;
    exported
        .records
        .iter()
        .map(|record| Ok(SealedEvent::from_bytes(record)?.hash))
        .collect()
}

/// Checks the kept checkpoints against a verified ledger: each must be signed by a key the
/// ledger names, the ledger must hold a checkpoint of the same tree size and root, and a
/// consistency proof from it to the ledger's current tree must verify. Returns one line per
/// checkpoint, and whether all of them hold.
pub fn check_kept(
    summary: &Summary,
    hashes: &[Hash],
    kept: &[SignedCheckpoint],
) -> (Vec<String>, bool) {
    assert_eq!(
        hashes.len() as u64,
        summary.event_count,
        "one hash per verified event"
    );
    let mut lines = Vec::with_capacity(kept.len());
    let mut all_hold = true;
    for checkpoint in kept {
        let line = match check_one(summary, hashes, checkpoint) {
            Ok(()) => format!("checkpoint of size {}: HOLDS", checkpoint.tree_size),
            Err(reason) => {
                all_hold = false;
                format!(
                    "checkpoint of size {}: VIOLATED: {reason}",
                    checkpoint.tree_size
                )
            }
        };
        lines.push(line);
    }
    (lines, all_hold)
}

fn check_one(summary: &Summary, hashes: &[Hash], kept: &SignedCheckpoint) -> Result<(), String> {
    if kept.ledger_id != summary.ledger_id {
        return Err(format!(
            "it names ledger {}, not {}",
            kept.ledger_id, summary.ledger_id
        ));
    }
    let key = summary
        .keys
        .iter()
        .find(|span| span.key_id == kept.key_id)
        .ok_or_else(|| {
            format!(
                "it is signed by key {}, which the ledger never named",
                kept.key_id
            )
        })?;
    kept.verify(&key.public_key)
        .map_err(|error| error.to_string())?;
    if kept.tree_size > summary.event_count {
        return Err(format!(
            "the ledger was cut off: it has {} events, the checkpoint covers {}",
            summary.event_count, kept.tree_size
        ));
    }
    let recorded = summary
        .checkpoints
        .iter()
        .find(|c| c.tree_size == kept.tree_size);
    match recorded {
        None => return Err("the ledger holds no checkpoint of this size: it was rewritten".into()),
        Some(c) if c.merkle_root != kept.merkle_root || c.head_hash != kept.head_hash => {
            return Err(format!(
                "the ledger's checkpoint of this size states root {}, the kept one {}: the \
                 ledger was rewritten",
                hex::encode(c.merkle_root),
                hex::encode(kept.merkle_root)
            ));
        }
        Some(_) => {}
    }
    let proof = merkle::consistency_proof(hashes, kept.tree_size, summary.event_count)
        .map_err(|error| error.to_string())?;
    merkle::verify_consistency(
        kept.tree_size,
        summary.event_count,
        &kept.merkle_root,
        &summary.merkle_root,
        &proof,
    )
    .map_err(|error| format!("the current ledger does not extend the checkpoint: {error}"))
}

/// Loads the kept checkpoints and the hashes of the single verified ledger, and checks them.
///
/// # Errors
/// When the file, the export or the store cannot be read, or when more than one ledger was
/// verified.
pub async fn check_verdict(
    kept_path: &Path,
    summary: &Summary,
    source: HashSource<'_>,
) -> anyhow::Result<(Vec<String>, bool)> {
    let kept = read_kept(kept_path)?;
    let hashes = match source {
        HashSource::Export(path) => export_hashes(path)?,
        HashSource::Store(backend) => {
            eventstore_adapter::checkpoints::event_hashes(
                backend,
                summary.ledger_id,
                summary.event_count,
            )
            .await?
        }
    };
    if hashes.len() as u64 != summary.event_count {
        bail!("the ledger changed while it was verified; run the check again");
    }
    Ok(check_kept(summary, &hashes, &kept))
}

/// Source of the event hashes of a verified ledger.
pub enum HashSource<'a> {
    /// An export file.
    Export(&'a Path),
    /// An open store.
    Store(&'a dyn eventstore_adapter::Backend),
}

//! Evidence bundles: a reproducible BagIt directory (or ustar archive) that proves what a
//! ledger recorded for a scope, checkable offline with `folio verify-bundle` or
//! `tests/verifier/verify_bundle.py`. `docs/evidence.md` describes the layout.
//!
//! A bundle carries the whole chain from genesis up to and including one checkpoint event,
//! so every event, link and signature is checked from the start, and the checkpoint anchors
//! the end. The scope selects the CSV rows, the report and the inclusion proofs. Nothing in
//! a bundle depends on the time of export, the time zone or the locale.

pub mod content;
pub mod pdf;
pub mod tar;
pub mod verify;

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use domain::checkpoint::SignedCheckpoint;
use domain::crypto::LedgerKey;
use domain::events::DomainEvent;
use domain::export::ExportWriter;
use domain::merkle::{self, Hash};
use domain::record::SealedEvent;
use domain::verify::{ChainVerifier, Summary};
use eventstore_adapter::Backend;
use serde_json::{json, Value};
use sha2::Digest;
use uuid::Uuid;

use self::content::{Content, Scope, Sinks};
use crate::proofs::{checkpoint_json, inclusion_json};

/// Events read from the store per page.
const PAGE: u32 = 4_096;

/// Most inclusion proofs in one bundle; a larger scope counts the rest in `proofs.json` as
/// omitted, because the whole chain is in the bundle and verified from genesis anyway. The
/// proofs are built in memory, so this cap also bounds their share of it.
pub const MAX_PROOFS: usize = 1_000;

/// Domain-separation prefix of the manifest signature (the trailing NUL is part of it).
pub const MANIFEST_SIGNATURE_PREFIX: &[u8] = b"folio/bundle-manifest/v1\0";

/// Exact contents of `bagit.txt`.
pub const BAGIT_TXT: &str = "BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n";

/// Payload files, in the order the manifests list them (sorted by path).
pub const DATA_FILES: [&str; 12] = [
    "data/anomaly_decisions.csv",
    "data/audit.csv",
    "data/checkpoints.json",
    "data/controls.csv",
    "data/dlq_actions.csv",
    "data/events.folio",
    "data/events.jsonl",
    "data/keys.json",
    "data/payments.csv",
    "data/proofs.json",
    "data/report.html",
    "data/report.pdf",
];

/// Tag files covered by `tagmanifest-sha256.txt`.
pub const TAG_FILES: [&str; 5] = [
    "bag-info.txt",
    "bagit.txt",
    "folio-manifest.sig",
    "folio-manifest.txt",
    "manifest-sha256.txt",
];

/// Export parameters.
#[derive(Clone)]
pub struct ExportRequest {
    /// KMS that unwraps the signing keys of the data directory.
    pub kms: std::sync::Arc<dyn crate::kms::Kms>,
    /// Store holding the ledger, opened read-only.
    pub store: crate::store::StoreLocation,
    /// Data directory holding the signing keys.
    pub data_dir: PathBuf,
    /// Ledger to export.
    pub ledger_id: Uuid,
    /// Scope.
    pub scope: Scope,
    /// Output directory, or archive file when `archive` is set; it must not exist.
    pub out: PathBuf,
    /// Write one ustar archive instead of a directory.
    pub archive: bool,
}

/// Result of an export.
#[derive(Debug, Clone)]
pub struct Exported {
    /// Tree size of the checkpoint that ends the bundle.
    pub tree_size: u64,
    /// Events selected by the scope.
    pub selected: u64,
    /// BLAKE3 of `folio-manifest.txt`, as hex.
    pub manifest_blake3: String,
}

/// Writes a bundle.
///
/// # Errors
/// When the store or keys cannot be read, the ledger has no checkpoint that covers the
/// scope, the chain does not verify, or the output exists or cannot be written.
pub async fn export(request: &ExportRequest) -> anyhow::Result<Exported> {
    if request.out.exists() {
        bail!("{} exists; pass a new path", request.out.display());
    }
    let backend = request.store.open_read_only().await?;
    let backend = backend.as_ref();
    check_scope(backend, request).await?;
    let anchor = choose_checkpoint(backend, request.ledger_id, &request.scope).await?;
    let keys = load_keys(&request.data_dir, request.kms.as_ref()).await?;

    // A directory is built in place; an archive is built from a directory beside it.
    let staging = match request.archive {
        true => Some(tempfile::tempdir_in(parent_of(&request.out))?),
        false => None,
    };
    let dir = staging
        .as_ref()
        .map_or(request.out.clone(), |s| s.path().join("bundle"));
    std::fs::create_dir_all(dir.join("data"))
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let exported = write_bundle(backend, request, &anchor, &keys, &dir).await?;
    if exported.selected == 0 && matches!(request.scope, Scope::Payment(_) | Scope::Payee(_)) {
        // An id with no events is most likely mistyped; a valid empty bundle would hide that.
        if !request.archive {
            std::fs::remove_dir_all(&request.out)
                .with_context(|| format!("cannot remove {}", request.out.display()))?;
        }
        return Err(ScopeError::NotFound(format!(
            "ledger {} has no event of {} up to its checkpoint at tree size {}; check the id",
            request.ledger_id,
            request.scope.describe(),
            exported.tree_size
        ))
        .into());
    }
    if request.archive {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&request.out)
            .with_context(|| format!("cannot create {}", request.out.display()))?;
        let mut out = BufWriter::new(file);
        tar::write_archive(&dir, &bundle_files(), &mut out)?;
        out.flush()?;
    }
    Ok(exported)
}

/// Scope error that the API returns as 400 or 404, kept apart from store and file errors.
#[derive(Debug, thiserror::Error)]
pub enum ScopeError {
    /// The scope ends past the ledger's head.
    #[error("{0}")]
    PastHead(String),
    /// The ledger, payment or payee named by the scope has no events.
    #[error("{0}")]
    NotFound(String),
}

/// Rejects a position scope that ends past the ledger's head.
async fn check_scope(backend: &dyn Backend, request: &ExportRequest) -> anyhow::Result<()> {
    let Some(head) = backend.head(request.ledger_id).await? else {
        return Err(ScopeError::NotFound(format!(
            "ledger {} is not in {}",
            request.ledger_id,
            request.store.describe()
        ))
        .into());
    };
    if let Scope::Positions { to, .. } = request.scope {
        if to > head.position {
            return Err(ScopeError::PastHead(format!(
                "the scope ends at position {to}, past the ledger's head at position {}; pick an \
                 end at most {}",
                head.position, head.position
            ))
            .into());
        }
    }
    Ok(())
}

fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    }
}

/// Lists every file of a bundle, tag files and payload, in sorted order.
pub fn bundle_files() -> Vec<String> {
    let mut files: Vec<String> = TAG_FILES
        .iter()
        .chain(DATA_FILES.iter())
        .map(|s| (*s).to_owned())
        .collect();
    files.push("tagmanifest-sha256.txt".to_owned());
    files.sort();
    files
}

/// Picks the checkpoint that ends the bundle: for a position range, the first one after
/// its last position; for any other scope, the latest.
async fn choose_checkpoint(
    backend: &dyn Backend,
    ledger_id: Uuid,
    scope: &Scope,
) -> anyhow::Result<SignedCheckpoint> {
    let found = eventstore_adapter::checkpoints::checkpoints(backend, ledger_id).await?;
    let latest = found.last().map(|c| c.tree_size);
    let chosen = match scope {
        Scope::Positions { to, .. } => found.into_iter().find(|c| c.tree_size > *to),
        _ => found.into_iter().last(),
    };
    chosen.with_context(|| match latest {
        None => format!(
            "ledger {ledger_id} has no checkpoint yet; turn on [checkpoints] (every_events or \
             every_seconds) and export after the first one"
        ),
        Some(size) => format!(
            "the latest checkpoint of ledger {ledger_id} covers positions 0 to {}, not the \
             scope {}; export again after the next checkpoint",
            size - 1,
            scope.describe()
        ),
    })
}

async fn load_keys(
    data_dir: &Path,
    kms: &dyn crate::kms::Kms,
) -> anyhow::Result<Vec<std::sync::Arc<LedgerKey>>> {
    if !data_dir.join("keys").is_dir() {
        bail!(
            "no keys directory in {}; bundles are signed with the ledger key",
            data_dir.display()
        );
    }
    Ok(crate::keys::KeyRing::open(data_dir, kms).await?.keys)
}

/// The event-driven outputs of a bundle, to files.
type FileContent = Content<BufWriter<std::fs::File>>;

async fn write_bundle(
    backend: &dyn Backend,
    request: &ExportRequest,
    anchor: &SignedCheckpoint,
    keys: &[std::sync::Arc<LedgerKey>],
    dir: &Path,
) -> anyhow::Result<Exported> {
    let data = dir.join("data");
    let create = |name: &str| -> anyhow::Result<BufWriter<std::fs::File>> {
        Ok(BufWriter::new(std::fs::File::create(data.join(name))?))
    };
    let sinks = Sinks {
        events: create("events.jsonl")?,
        audit: create("audit.csv")?,
        payments: create("payments.csv")?,
        dlq: create("dlq_actions.csv")?,
        controls: create("controls.csv")?,
    };
    let mut content: FileContent = Content::new(request.scope.clone(), sinks)?;
    let mut writer = ExportWriter::new(create("events.folio")?)?;
    let last = anchor.tree_size;
    let mut walk = Walk::new();
    let mut proofs = ProofSet::new(last);
    let mut from = 0;
    while from <= last {
        let events = backend.read_ledger(request.ledger_id, from, PAGE).await?;
        if events.is_empty() {
            bail!("ledger {} ends before position {last}", request.ledger_id);
        }
        let page: Vec<&SealedEvent> = events.iter().take_while(|e| e.position <= last).collect();
        for event in &page {
            writer.write_record(&event.to_bytes())?;
            let selected = content.push(event)?;
            proofs.push(event, selected);
        }
        walk.push(&page)?;
        from = events.last().map_or(from, |e| e.position + 1);
    }

    // The head at the checkpoint is signed by the key active there, as the export file needs.
    let key = keys
        .iter()
        .find(|k| Some(k.public_key()) == walk.active_key)
        .context("the key active at the checkpoint is not in the key ring")?;
    let head_hash = walk.head_hash.context("the bundle has events")?;
    let head = domain::seal::Sealer::new(
        std::sync::Arc::clone(key),
        std::sync::Arc::new(domain::clock::SystemClock),
    )
    .sign_head(request.ledger_id, last, head_hash);
    writer.finish(&head)?.flush()?;
    let summary = walk.verifier.finish(Some(&head)).map_err(|failure| {
        anyhow::anyhow!("the ledger does not verify, so no bundle is written: {failure}")
    })?;
    let selected = content.selected;
    let mut sinks = content_finish(content, &summary, &proofs.finish(), dir)?;
    for sink in [
        &mut sinks.events,
        &mut sinks.audit,
        &mut sinks.payments,
        &mut sinks.dlq,
        &mut sinks.controls,
    ] {
        sink.flush()?;
    }
    let manifest_blake3 = write_manifests(dir, request, &summary, key)?;
    Ok(Exported {
        tree_size: last,
        selected,
        manifest_blake3,
    })
}

/// Inclusion proofs of the first [`MAX_PROOFS`] selected events against the bundle's
/// checkpoint, collected while the events stream past, so memory does not grow with the range.
#[derive(Debug)]
pub struct ProofSet {
    tree_size: u64,
    collector: merkle::ProofCollector,
    /// Positions and hashes of the chosen events, in order.
    chosen: Vec<(u64, Hash)>,
}

impl ProofSet {
    /// Starts collecting for a checkpoint of `tree_size`.
    pub fn new(tree_size: u64) -> Self {
        ProofSet {
            tree_size,
            collector: merkle::ProofCollector::new(tree_size),
            chosen: Vec::new(),
        }
    }

    /// Adds the next event in position order. The checkpoint event itself is not a leaf of
    /// its own tree, so it and anything after it are skipped.
    pub fn push(&mut self, event: &SealedEvent, selected: bool) {
        if event.position >= self.tree_size {
            return;
        }
        let choose = selected && self.chosen.len() < MAX_PROOFS;
        if choose {
            self.chosen.push((event.position, event.hash));
        }
        self.collector.push(&event.hash, choose);
    }

    /// Returns each chosen event's position, hash and proof.
    pub fn finish(self) -> Vec<(u64, Hash, Vec<Hash>)> {
        let proofs = self.collector.finish();
        assert_eq!(
            proofs.len(),
            self.chosen.len(),
            "one proof per chosen event"
        );
        self.chosen
            .into_iter()
            .zip(proofs)
            .map(|((position, hash), (index, proof))| {
                assert_eq!(position, index, "proofs come in the order chosen");
                (position, hash, proof)
            })
            .collect()
    }
}

/// Verifies the chain and collects what the bundle needs while the pages go by.
struct Walk {
    verifier: ChainVerifier,
    head_hash: Option<Hash>,
    active_key: Option<[u8; 32]>,
}

impl Walk {
    fn new() -> Self {
        Walk {
            verifier: ChainVerifier::new(),
            head_hash: None,
            active_key: None,
        }
    }

    fn push(&mut self, page: &[&SealedEvent]) -> anyhow::Result<()> {
        let records: Vec<Vec<u8>> = page.iter().map(|e| e.to_bytes()).collect();
        self.verifier
            .push_chunk(&records)
            .map_err(|failure| anyhow::anyhow!("the ledger does not verify: {failure}"))?;
        for event in page {
            self.head_hash = Some(event.hash);
            match DomainEvent::decode(&event.event_type, event.schema_version, &event.payload) {
                Ok(DomainEvent::LedgerCreated(p)) => self.active_key = Some(p.public_key),
                Ok(DomainEvent::LedgerKeyRotated(p)) => self.active_key = Some(p.new_public_key),
                _ => {}
            }
        }
        Ok(())
    }
}

/// Writes the files that follow from the verified summary: keys, checkpoints, proofs and
/// the reports, and returns the sinks of the event-driven files.
fn content_finish<W: Write>(
    content: Content<W>,
    summary: &Summary,
    proofs: &[(u64, Hash, Vec<Hash>)],
    dir: &Path,
) -> anyhow::Result<Sinks<W>> {
    let data = dir.join("data");
    let derived = derived_files(&content, summary, proofs)?;
    for (name, bytes) in derived {
        std::fs::write(data.join(name), bytes)?;
    }
    Ok(content.sinks)
}

/// Builds the files computed from the summary and the selection, by name.
pub fn derived_files<W: Write>(
    content: &Content<W>,
    summary: &Summary,
    proofs: &[(u64, Hash, Vec<Hash>)],
) -> anyhow::Result<Vec<(&'static str, Vec<u8>)>> {
    let status = chain_status(summary);
    let html = content.report_html(summary.ledger_id, &status);
    let pdf = pdf::render(&content.report_lines(summary.ledger_id, &status));
    Ok(vec![
        ("anomaly_decisions.csv", content.anomaly_csv()),
        ("keys.json", pretty(&keys_json(summary))),
        ("checkpoints.json", pretty(&checkpoints_json(summary))),
        (
            "proofs.json",
            pretty(&proofs_json(summary, proofs, content.selected)?),
        ),
        ("report.html", html.into_bytes()),
        ("report.pdf", pdf),
    ])
}

fn pretty(value: &Value) -> Vec<u8> {
    // serde_json writes object keys in sorted order (no preserve_order feature), so the
    // bytes depend on the values only.
    let mut bytes = serde_json::to_vec_pretty(value).expect("JSON values serialise");
    bytes.push(b'\n');
    bytes
}

/// Describes the state of the bundle's chain in one line.
pub fn chain_status(summary: &Summary) -> String {
    format!(
        "intact from genesis: {} events, ending with the checkpoint of tree size {}, head hash {}, Merkle root {}",
        summary.event_count,
        summary.head_position,
        hex::encode(summary.head_hash),
        hex::encode(summary.merkle_root)
    )
}

fn keys_json(summary: &Summary) -> Value {
    let keys: Vec<Value> = summary
        .keys
        .iter()
        .map(|key| {
            json!({
                "key_id": key.key_id.to_hex(),
                "public_key": hex::encode(key.public_key),
                "named_at": key.named_at,
                "signed_first": key.signed.map(|s| s.0),
                "signed_last": key.signed.map(|s| s.1),
            })
        })
        .collect();
    let rotations: Vec<Value> = summary
        .rotations
        .iter()
        .map(|r| json!({"position": r.position, "old_key_id": r.old_key_id.to_hex(), "new_key_id": r.new_key_id.to_hex()}))
        .collect();
    json!({"ledger_id": summary.ledger_id, "keys": keys, "rotations": rotations})
}

fn checkpoints_json(summary: &Summary) -> Value {
    let items: Vec<Value> = summary.checkpoints.iter().map(checkpoint_json).collect();
    json!({"items": items})
}

fn proofs_json(
    summary: &Summary,
    proofs: &[(u64, Hash, Vec<Hash>)],
    selected: u64,
) -> anyhow::Result<Value> {
    // The bundle ends with its checkpoint event, whose tree covers every event before it.
    let anchor = summary
        .checkpoints
        .last()
        .context("the bundle ends with a checkpoint")?;
    assert_eq!(
        anchor.tree_size, summary.head_position,
        "the bundle ends at its checkpoint"
    );
    let items: Vec<Value> = proofs
        .iter()
        .map(|(position, hash, proof)| inclusion_json(anchor, *position, hash, proof))
        .collect();
    Ok(json!({"items": items, "omitted": selected - proofs.len() as u64}))
}

/// Writes `manifest-sha256.txt`, `folio-manifest.txt` and its signature, `bagit.txt`,
/// `bag-info.txt` and `tagmanifest-sha256.txt`, and returns the BLAKE3 of the Folio manifest.
fn write_manifests(
    dir: &Path,
    request: &ExportRequest,
    summary: &Summary,
    key: &LedgerKey,
) -> anyhow::Result<String> {
    let (mut sha_lines, mut blake_lines) = (String::new(), String::new());
    let (mut bytes, mut count) = (0u64, 0u64);
    for name in DATA_FILES {
        let (sha, blake, size) = file_digests(&dir.join(name))?;
        sha_lines.push_str(&format!("{sha}  {name}\n"));
        blake_lines.push_str(&format!("{blake}  {name}\n"));
        bytes += size;
        count += 1;
    }
    std::fs::write(dir.join("manifest-sha256.txt"), &sha_lines)?;
    std::fs::write(dir.join("folio-manifest.txt"), &blake_lines)?;
    let signature = key.sign(&manifest_message(blake_lines.as_bytes()));
    let sig = format!(
        "key_id {}\nsignature {}\n",
        key.key_id().to_hex(),
        hex::encode(signature)
    );
    std::fs::write(dir.join("folio-manifest.sig"), sig)?;
    std::fs::write(dir.join("bagit.txt"), BAGIT_TXT)?;
    let info = format!(
        "Bag-Software-Agent: folio\nExternal-Identifier: {}\nFolio-Scope: {}\nFolio-Checkpoint-Tree-Size: {}\nPayload-Oxum: {bytes}.{count}\n",
        request.ledger_id,
        request.scope.describe(),
        summary.head_position
    );
    std::fs::write(dir.join("bag-info.txt"), info)?;
    let mut tag_lines = String::new();
    for name in TAG_FILES {
        let (sha, _, _) = file_digests(&dir.join(name))?;
        tag_lines.push_str(&format!("{sha}  {name}\n"));
    }
    std::fs::write(dir.join("tagmanifest-sha256.txt"), tag_lines)?;
    Ok(blake3::hash(blake_lines.as_bytes()).to_hex().to_string())
}

/// Builds the message the manifest signature covers.
pub fn manifest_message(manifest: &[u8]) -> Vec<u8> {
    let mut message = MANIFEST_SIGNATURE_PREFIX.to_vec();
    message.extend_from_slice(manifest);
    message
}

/// Returns the SHA-256 and BLAKE3 of a file, as hex, and its length, reading it in blocks.
///
/// # Errors
/// A read error.
pub fn file_digests(path: &Path) -> anyhow::Result<(String, String, u64)> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut sha = sha2::Sha256::new();
    let mut blake = blake3::Hasher::new();
    let mut buffer = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let read = std::io::Read::read(&mut file, &mut buffer)?;
        if read == 0 {
            break;
        }
        sha.update(&buffer[..read]);
        blake.update(&buffer[..read]);
        size += read as u64;
    }
    Ok((
        hex::encode(sha.finalize()),
        blake.finalize().to_hex().to_string(),
        size,
    ))
}

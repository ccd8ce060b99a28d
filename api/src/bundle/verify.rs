//! `folio verify-bundle`: checks a bundle end to end without the store.
//!
//! The checks run in this order, and the first failure is the verdict: BagIt layout and
//! SHA-256 manifests (`bagit`, `file_set`, `file_hash`), the BLAKE3 Folio manifest and its
//! signature by the ledger key active at the bundle's checkpoint (`manifest`,
//! `manifest_signature`), the chain from genesis (`chain`, with the chain verifier's own
//! code in the message), the checkpoint that ends it (`checkpoint`), the inclusion proofs
//! (`proof`), and every file derived from the events, rebuilt and compared (`content`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Context;
use domain::record::SealedEvent;
use domain::record::SigAlg;
use domain::verify::Summary;

use super::content::{Content, Scope, Sinks};
use super::{derived_files, file_digests, manifest_message, BAGIT_TXT, DATA_FILES, TAG_FILES};

/// The first failure of a bundle check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct BundleFailure {
    /// Stable code of the failed check.
    pub code: &'static str,
    /// Description of the failure.
    pub message: String,
}

fn fail(code: &'static str, message: impl Into<String>) -> BundleFailure {
    BundleFailure {
        code,
        message: message.into(),
    }
}

/// Contents of an intact bundle.
#[derive(Debug, Clone)]
pub struct BundleSummary {
    /// The chain's summary.
    pub chain: Summary,
    /// The scope from `bag-info.txt`.
    pub scope: Scope,
    /// Inclusion proofs checked.
    pub proofs: usize,
}

/// Verifies a bundle directory or archive.
///
/// # Errors
/// An operating error (unreadable file, bad archive) as `Err`; a bundle that fails a check
/// is `Ok(Err(failure))`.
pub fn verify_path(path: &Path) -> anyhow::Result<Result<BundleSummary, BundleFailure>> {
    if path.is_dir() {
        return Ok(verify_dir(path));
    }
    let staging = tempfile::tempdir()?;
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    if let Err(error) = super::tar::extract(&mut std::io::BufReader::new(&mut file), staging.path())
    {
        return Ok(Err(fail("archive", format!("{error:#}"))));
    }
    Ok(verify_dir(staging.path()))
}

/// Verifies a bundle directory.
pub fn verify_dir(dir: &Path) -> Result<BundleSummary, BundleFailure> {
    check_bagit(dir)?;
    let listed = check_manifest(dir, "manifest-sha256.txt", 0, "file_hash")?;
    check_file_set(dir, &listed)?;
    check_manifest(dir, "tagmanifest-sha256.txt", 0, "file_hash")?;
    check_manifest(dir, "folio-manifest.txt", 1, "manifest")?;
    let (summary, events) = check_chain(dir)?;
    check_signature(dir, &summary)?;
    let scope = read_scope(dir, &summary)?;
    let proofs = check_proofs(dir, &summary)?;
    check_content(dir, &summary, &scope, &events)?;
    Ok(BundleSummary {
        chain: summary,
        scope,
        proofs,
    })
}

fn read(dir: &Path, name: &str) -> Result<Vec<u8>, BundleFailure> {
    std::fs::read(dir.join(name)).map_err(|e| fail("file_set", format!("cannot read {name}: {e}")))
}

fn read_text(dir: &Path, name: &str) -> Result<String, BundleFailure> {
    String::from_utf8(read(dir, name)?).map_err(|_| fail("bagit", format!("{name} is not UTF-8")))
}

fn check_bagit(dir: &Path) -> Result<(), BundleFailure> {
    if read_text(dir, "bagit.txt")? != BAGIT_TXT {
        return Err(fail(
            "bagit",
            "bagit.txt is not BagIt 1.0 with UTF-8 tag files",
        ));
    }
    Ok(())
}

/// Checks every line `digest  path` of a manifest; `algorithm` 0 is SHA-256, 1 is BLAKE3.
/// Returns the listed paths.
fn check_manifest(
    dir: &Path,
    name: &str,
    algorithm: u8,
    code: &'static str,
) -> Result<BTreeSet<String>, BundleFailure> {
    let text = read_text(dir, name)?;
    let mut listed = BTreeSet::new();
    for line in text.lines() {
        let (digest, path) = line
            .split_once("  ")
            .ok_or_else(|| fail(code, format!("{name}: line {line:?} is not `digest  path`")))?;
        super::tar::safe_path(dir, path).map_err(|e| fail(code, format!("{name}: {e}")))?;
        let (sha, blake, _) = file_digests(&dir.join(path))
            .map_err(|_| fail("file_set", format!("{path}, listed in {name}, is missing")))?;
        let actual = if algorithm == 0 { sha } else { blake };
        if actual != digest {
            return Err(fail(
                code,
                format!("{path} does not match its digest in {name}: it was changed"),
            ));
        }
        listed.insert(path.to_owned());
    }
    Ok(listed)
}

/// Checks that the payload and tag files are exactly the bundle's files.
fn check_file_set(dir: &Path, listed: &BTreeSet<String>) -> Result<(), BundleFailure> {
    let expected: BTreeSet<String> = DATA_FILES.iter().map(|s| (*s).to_owned()).collect();
    if *listed != expected {
        return Err(fail(
            "file_set",
            "manifest-sha256.txt does not list exactly the bundle's payload files",
        ));
    }
    let mut present = BTreeSet::new();
    collect_files(dir, dir, &mut present).map_err(|e| fail("file_set", e.to_string()))?;
    let mut allowed = expected;
    allowed.extend(TAG_FILES.iter().map(|s| (*s).to_owned()));
    allowed.insert("tagmanifest-sha256.txt".to_owned());
    if let Some(extra) = present.difference(&allowed).next() {
        return Err(fail(
            "file_set",
            format!("{extra} is not part of a bundle: a file was added"),
        ));
    }
    if let Some(missing) = allowed.difference(&present).next() {
        return Err(fail(
            "file_set",
            format!("{missing} is missing: a file was removed"),
        ));
    }
    Ok(())
}

fn collect_files(root: &Path, dir: &Path, out: &mut BTreeSet<String>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path: PathBuf = entry?.path();
        if path.is_dir() {
            collect_files(root, &path, out)?;
        } else {
            let relative = path.strip_prefix(root).unwrap_or(&path);
            out.insert(relative.to_string_lossy().replace('\\', "/"));
        }
    }
    Ok(())
}

/// Verifies `events.folio` from genesis and returns its summary and events.
// TODO: this reads the whole file and keeps every event, so verifying a bundle needs memory
// in proportion to its size. Verifying and rebuilding the derived files page by page, as the
// export does, would make it flat.
fn check_chain(dir: &Path) -> Result<(Summary, Vec<SealedEvent>), BundleFailure> {
    let bytes = read(dir, "data/events.folio")?;
    let summary =
        domain::verify::verify_export(&bytes).map_err(|f| fail("chain", f.to_string()))?;
    let exported = domain::export::decode(&bytes).map_err(|e| fail("chain", e.to_string()))?;
    let events = exported
        .records
        .iter()
        .map(|record| SealedEvent::from_bytes(record))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail("chain", e.to_string()))?;
    let Some(anchor) = summary.checkpoints.last() else {
        return Err(fail("checkpoint", "the chain holds no checkpoint"));
    };
    if anchor.tree_size != summary.head_position {
        return Err(fail(
            "checkpoint",
            "the chain does not end with its last checkpoint",
        ));
    }
    Ok((summary, events))
}

fn check_signature(dir: &Path, summary: &Summary) -> Result<(), BundleFailure> {
    let text = read_text(dir, "folio-manifest.sig")?;
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .map(str::to_owned)
            .ok_or_else(|| {
                fail(
                    "manifest_signature",
                    format!("folio-manifest.sig has no {name}line"),
                )
            })
    };
    let key_id = field("key_id ")?;
    let signature = hex::decode(field("signature ")?)
        .map_err(|_| fail("manifest_signature", "signature is not hex"))?;
    let signature: [u8; 64] = signature
        .try_into()
        .map_err(|_| fail("manifest_signature", "signature is not 64 bytes"))?;
    // The key active at the end of the chain is the last one it named.
    let Some(active) = summary.keys.last() else {
        return Err(fail("manifest_signature", "the chain names no key"));
    };
    if active.key_id.to_hex() != key_id {
        return Err(fail(
            "manifest_signature",
            format!(
                "manifest is signed by key {key_id}, the chain's active key is {}",
                active.key_id
            ),
        ));
    }
    debug_assert_eq!(
        domain::crypto::KeyId::from_public_key(SigAlg::Ed25519, &active.public_key),
        active.key_id
    );
    let manifest = read(dir, "folio-manifest.txt")?;
    domain::crypto::verify_strict(&active.public_key, &manifest_message(&manifest), &signature)
        .map_err(|e| {
            fail(
                "manifest_signature",
                format!("manifest signature does not verify: {e}"),
            )
        })
}

fn read_scope(dir: &Path, summary: &Summary) -> Result<Scope, BundleFailure> {
    let info = read_text(dir, "bag-info.txt")?;
    let value = |name: &str| {
        info.lines()
            .find_map(|line| line.strip_prefix(name))
            .map(str::to_owned)
    };
    let scope =
        value("Folio-Scope: ").ok_or_else(|| fail("bagit", "bag-info.txt has no Folio-Scope"))?;
    let size = value("Folio-Checkpoint-Tree-Size: ");
    if size != Some(summary.head_position.to_string()) {
        return Err(fail(
            "checkpoint",
            "bag-info.txt names another checkpoint than the chain ends with",
        ));
    }
    Scope::parse(&scope).map_err(|e| fail("bagit", e.to_string()))
}

/// Checks each inclusion proof against the ledger's key and the chain's own event hash.
fn check_proofs(dir: &Path, summary: &Summary) -> Result<usize, BundleFailure> {
    let bytes = read(dir, "data/proofs.json")?;
    let document: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| fail("proof", format!("proofs.json: {e}")))?;
    let items = document["items"].as_array().cloned().unwrap_or_default();
    let public_key = summary.keys.last().map(|k| k.public_key).unwrap_or([0; 32]);
    for item in &items {
        crate::proofs::verify_document(item, &public_key)
            .map_err(|e| fail("proof", format!("{e:#}")))?;
    }
    Ok(items.len())
}

/// Rebuilds every event-derived file from the chain and compares BLAKE3 digests with the
/// bundle's files.
fn check_content(
    dir: &Path,
    summary: &Summary,
    scope: &Scope,
    events: &[SealedEvent],
) -> Result<(), BundleFailure> {
    let sinks = Sinks {
        events: blake3::Hasher::new(),
        audit: blake3::Hasher::new(),
        payments: blake3::Hasher::new(),
        dlq: blake3::Hasher::new(),
        controls: blake3::Hasher::new(),
    };
    let io = |e: std::io::Error| fail("content", e.to_string());
    let mut content = Content::new(scope.clone(), sinks).map_err(io)?;
    let mut proofs = super::ProofSet::new(summary.head_position);
    for event in events {
        let selected = content.push(event).map_err(io)?;
        proofs.push(event, selected);
    }
    let derived = derived_files(&content, summary, &proofs.finish())
        .map_err(|e| fail("content", e.to_string()))?;
    let mut expected: Vec<(String, String)> = derived
        .into_iter()
        .map(|(name, bytes)| {
            (
                format!("data/{name}"),
                blake3::hash(&bytes).to_hex().to_string(),
            )
        })
        .collect();
    let sinks = &content.sinks;
    for (name, hasher) in [
        ("data/events.jsonl", &sinks.events),
        ("data/audit.csv", &sinks.audit),
        ("data/payments.csv", &sinks.payments),
        ("data/dlq_actions.csv", &sinks.dlq),
        ("data/controls.csv", &sinks.controls),
    ] {
        expected.push((name.to_owned(), hasher.finalize().to_hex().to_string()));
    }
    for (name, digest) in expected {
        let (_, actual, _) =
            file_digests(&dir.join(&name)).map_err(|e| fail("file_set", e.to_string()))?;
        if actual != digest {
            return Err(fail(
                "content",
                format!("{name} does not agree with the sealed events"),
            ));
        }
    }
    Ok(())
}

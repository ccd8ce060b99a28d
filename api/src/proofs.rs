//! JSON forms of signed checkpoints and Merkle proofs, shared by the API, the witness
//! publisher and the CLI, and the checks `folio verify-proof` runs on them.
//!
//! In every JSON form, `checkpoint` contains the hex of the 192 signed bytes. The other fields
//! repeat them for reading, and a reader that finds them different rejects the document.

use anyhow::{bail, Context};
use domain::checkpoint::SignedCheckpoint;
use domain::crypto::PUBLIC_KEY_LEN;
use domain::merkle::{self, Hash};
use serde_json::{json, Value};

/// Builds the JSON form of a signed checkpoint.
pub fn checkpoint_json(checkpoint: &SignedCheckpoint) -> Value {
    json!({
        "ledger_id": checkpoint.ledger_id,
        "tree_size": checkpoint.tree_size,
        "head_hash": hex::encode(checkpoint.head_hash),
        "merkle_root": hex::encode(checkpoint.merkle_root),
        "key_id": checkpoint.key_id.to_hex(),
        "signature": hex::encode(checkpoint.signature),
        "checkpoint": hex::encode(checkpoint.to_bytes()),
    })
}

/// Reads a checkpoint from its JSON form: decodes `checkpoint` and checks that the readable
/// fields that are present agree with it.
///
/// # Errors
/// Names the field that is missing, malformed or disagrees.
pub fn checkpoint_from_json(value: &Value) -> anyhow::Result<SignedCheckpoint> {
    let text = value["checkpoint"]
        .as_str()
        .context("checkpoint JSON has no \"checkpoint\" field with the hex of the signed bytes")?;
    let bytes = hex::decode(text).context("\"checkpoint\" is not hex")?;
    let checkpoint = SignedCheckpoint::from_bytes(&bytes)?;
    let readable = checkpoint_json(&checkpoint);
    for field in [
        "ledger_id",
        "tree_size",
        "head_hash",
        "merkle_root",
        "key_id",
        "signature",
    ] {
        let given = &value[field];
        if !given.is_null() && *given != readable[field] {
            bail!(
                "checkpoint field {field} is {given}, but the signed bytes say {}",
                readable[field]
            );
        }
    }
    Ok(checkpoint)
}

/// Builds the JSON document of an inclusion proof of the event at `position` under
/// `checkpoint`.
pub fn inclusion_json(
    checkpoint: &SignedCheckpoint,
    position: u64,
    event_hash: &Hash,
    proof: &[Hash],
) -> Value {
    json!({
        "kind": "inclusion",
        "ledger_id": checkpoint.ledger_id,
        "position": position,
        "event_hash": hex::encode(event_hash),
        "tree_size": checkpoint.tree_size,
        "proof": proof.iter().map(hex::encode).collect::<Vec<_>>(),
        "checkpoint": checkpoint_json(checkpoint),
    })
}

/// Builds the JSON document of a consistency proof from `old` to `new`.
pub fn consistency_json(old: &SignedCheckpoint, new: &SignedCheckpoint, proof: &[Hash]) -> Value {
    json!({
        "kind": "consistency",
        "ledger_id": new.ledger_id,
        "old_size": old.tree_size,
        "new_size": new.tree_size,
        "proof": proof.iter().map(hex::encode).collect::<Vec<_>>(),
        "old": checkpoint_json(old),
        "new": checkpoint_json(new),
    })
}

/// Checks a proof document (inclusion or consistency) against the ledger's public key and
/// returns a one-line description of what it proves.
///
/// # Errors
/// Names what does not verify: a checkpoint signature, a field, or the proof itself.
pub fn verify_document(
    document: &Value,
    public_key: &[u8; PUBLIC_KEY_LEN],
) -> anyhow::Result<String> {
    match document["kind"].as_str() {
        Some("inclusion") => verify_inclusion_document(document, public_key),
        Some("consistency") => verify_consistency_document(document, public_key),
        other => {
            bail!("proof kind {other:?} is unknown; expected \"inclusion\" or \"consistency\"")
        }
    }
}

fn verify_inclusion_document(
    document: &Value,
    public_key: &[u8; PUBLIC_KEY_LEN],
) -> anyhow::Result<String> {
    let checkpoint = signed_checkpoint(&document["checkpoint"], public_key, "checkpoint")?;
    let position = document["position"]
        .as_u64()
        .context("\"position\" is not a number")?;
    let event_hash = hash_field(&document["event_hash"], "event_hash")?;
    let proof = hash_list(&document["proof"])?;
    merkle::verify_inclusion(
        &event_hash,
        position,
        checkpoint.tree_size,
        &proof,
        &checkpoint.merkle_root,
    )
    .context("inclusion proof does not verify")?;
    Ok(format!(
        "event {} is at position {position} of ledger {} under its signed checkpoint of size {}",
        hex::encode(event_hash),
        checkpoint.ledger_id,
        checkpoint.tree_size
    ))
}

fn verify_consistency_document(
    document: &Value,
    public_key: &[u8; PUBLIC_KEY_LEN],
) -> anyhow::Result<String> {
    let old = signed_checkpoint(&document["old"], public_key, "old")?;
    let new = signed_checkpoint(&document["new"], public_key, "new")?;
    if old.ledger_id != new.ledger_id {
        bail!(
            "the checkpoints name ledgers {} and {}",
            old.ledger_id,
            new.ledger_id
        );
    }
    let proof = hash_list(&document["proof"])?;
    merkle::verify_consistency(
        old.tree_size,
        new.tree_size,
        &old.merkle_root,
        &new.merkle_root,
        &proof,
    )
    .context("consistency proof does not verify")?;
    Ok(format!(
        "ledger {} at size {} extends its signed checkpoint of size {}",
        new.ledger_id, new.tree_size, old.tree_size
    ))
}

/// Reads a checkpoint and checks its signature under `public_key`.
fn signed_checkpoint(
    value: &Value,
    public_key: &[u8; PUBLIC_KEY_LEN],
    field: &str,
) -> anyhow::Result<SignedCheckpoint> {
    let checkpoint = checkpoint_from_json(value).with_context(|| format!("field {field}"))?;
    checkpoint
        .verify(public_key)
        .with_context(|| format!("{field} checkpoint of size {}", checkpoint.tree_size))?;
    Ok(checkpoint)
}

/// Parses a 32-byte hash written as 64 hex digits.
///
/// # Errors
/// Names the field.
pub fn hash_field(value: &Value, field: &str) -> anyhow::Result<Hash> {
    let text = value
        .as_str()
        .with_context(|| format!("\"{field}\" is not a string"))?;
    parse_hash(text).with_context(|| format!("\"{field}\""))
}

/// Parses 64 hex digits into a hash.
///
/// # Errors
/// When the text is not 64 hex digits.
pub fn parse_hash(text: &str) -> anyhow::Result<Hash> {
    let bytes = hex::decode(text).with_context(|| format!("{text:?} is not hex"))?;
    <Hash>::try_from(bytes.as_slice())
        .map_err(|_| anyhow::anyhow!("{text:?} is {} bytes, expected 32", bytes.len()))
}

fn hash_list(value: &Value) -> anyhow::Result<Vec<Hash>> {
    let items = value
        .as_array()
        .context("\"proof\" is not a list of hex hashes")?;
    items
        .iter()
        .enumerate()
        .map(|(index, item)| hash_field(item, &format!("proof[{index}]")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::crypto::LedgerKey;
    use uuid::Uuid;

    fn checkpoint(key: &LedgerKey, hashes: &[Hash]) -> SignedCheckpoint {
        let size = hashes.len() as u64;
        let root = merkle::root(hashes);
        let head = hashes[hashes.len() - 1];
        let message = SignedCheckpoint::signature_message(Uuid::from_u128(1), size, &head, &root);
        SignedCheckpoint {
            ledger_id: Uuid::from_u128(1),
            tree_size: size,
            head_hash: head,
            merkle_root: root,
            key_id: key.key_id(),
            signature: key.sign(&message),
        }
    }

    #[test]
    fn documents_verify_and_edits_are_caught() {
        let key = LedgerKey::from_seed([9; 32]);
        let hashes: Vec<Hash> = (0u8..11).map(|i| [i; 32]).collect();
        let (old, new) = (checkpoint(&key, &hashes[..6]), checkpoint(&key, &hashes));

        let proof = merkle::inclusion_proof(&hashes, 4, 11).unwrap();
        let mut document = inclusion_json(&new, 4, &hashes[4], &proof);
        verify_document(&document, &key.public_key()).unwrap();
        document["position"] = json!(5);
        assert!(verify_document(&document, &key.public_key()).is_err());

        let proof = merkle::consistency_proof(&hashes, 6, 11).unwrap();
        let mut document = consistency_json(&old, &new, &proof);
        verify_document(&document, &key.public_key()).unwrap();
        let other = LedgerKey::from_seed([8; 32]);
        assert!(verify_document(&document, &other.public_key()).is_err());
        document["new"]["tree_size"] = json!(12);
        let error = verify_document(&document, &key.public_key()).unwrap_err();
        assert!(format!("{error:#}").contains("tree_size"), "{error:#}");
    }
}

//! The golden ledger: a small ledger built deterministically (fixed seeds, fixed
//! ids, a stepping clock), its tampered copies, and the verdict each must get.
//!
//! The files live in `fixtures/golden/`. `FOLIO_REGENERATE_GOLDEN=1 cargo test
//! -p folio-e2e --test golden` rewrites them. The normal test rebuilds them in
//! memory and requires byte-identical files. Any change to the record layout,
//! the hash or the signing therefore shows up as a fixture diff.

use std::collections::BTreeMap;
use std::sync::Arc;

use domain::clock::SteppingClock;
use domain::crypto::LedgerKey;
use domain::events::{
    DispatchAttempted, DispatchFailed, EventPayload, LedgerKeyRotated, PayeeAccount, PayeeAdded,
    PaymentSource, PaymentSubmitted, ReceiptRecorded,
};
use domain::export;
use domain::record::{Actor, ActorKind, EventDraft, SealedEvent};
use domain::seal::{ChainTip, Sealer, Unsealed, LEDGER_STREAM};
use serde::Serialize;
use uuid::Uuid;

/// File name of the intact golden ledger.
pub const LEDGER_FILE: &str = "ledger.folio";

/// File name of the verdict table.
pub const VERDICTS_FILE: &str = "verdicts.json";

/// Seed of the genesis key.
pub const SEED_A: [u8; 32] = [0x11; 32];

/// Seed of the key the ledger rotates to.
pub const SEED_B: [u8; 32] = [0x22; 32];

/// Seed of a key that never appears in the ledger.
pub const SEED_FOREIGN: [u8; 32] = [0x33; 32];

/// Ledger id of the golden ledger.
pub const LEDGER_ID: Uuid = Uuid::from_u128(0x0194_1a2b_0000_7000_8000_00a0_0000_0001);

/// 2026-01-01T00:00:00Z in microseconds since the Unix epoch.
pub const START_MICROS: i64 = 1_767_225_600_000_000;

/// Clock step between events: 250 ms.
pub const STEP_MICROS: i64 = 250_000;

/// The verdict a verifier must give for a file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Whether the ledger is intact.
    pub intact: bool,
    /// Position of the first failure, `None` when intact or when no position applies.
    pub position: Option<u64>,
    /// `ok` when intact, else the failure code.
    pub code: String,
}

impl Verdict {
    fn intact() -> Self {
        Verdict {
            intact: true,
            position: None,
            code: "ok".to_owned(),
        }
    }

    fn failed(code: &str, position: Option<u64>) -> Self {
        Verdict {
            intact: false,
            position,
            code: code.to_owned(),
        }
    }
}

/// One fixture file: its name, bytes and expected verdict.
#[derive(Debug, Clone)]
pub struct GoldenFile {
    /// File name inside `fixtures/golden/`.
    pub name: &'static str,
    /// File contents.
    pub bytes: Vec<u8>,
    /// Verdict stated by hand for this file (not computed by a verifier).
    pub verdict: Verdict,
}

/// The intact golden ledger as sealed events plus the encoded signed head.
#[derive(Debug, Clone)]
pub struct GoldenLedger {
    /// Events in position order.
    pub events: Vec<SealedEvent>,
    /// Encoded signed head of the last event.
    pub signed_head: Vec<u8>,
}

fn key(seed: [u8; 32]) -> Arc<LedgerKey> {
    Arc::new(LedgerKey::from_seed(seed))
}

fn id(n: u128) -> Uuid {
    Uuid::from_u128(0x0194_1a2b_0000_7000_8000_0000_0000_0000 | n)
}

fn client() -> Actor {
    Actor {
        kind: ActorKind::ApiClient,
        id: "client-acme".into(),
        credential: "token-7".into(),
    }
}

fn draft<P: EventPayload>(
    n: u128,
    actor: Actor,
    causation: Option<Uuid>,
    payload: &P,
) -> EventDraft {
    EventDraft {
        event_id: id(0x100 + n),
        event_type: P::EVENT_TYPE.to_owned(),
        schema_version: P::SCHEMA_VERSION,
        actor,
        correlation_id: id(0x200 + n),
        causation_id: causation,
        payload: payload.encode(),
    }
}

fn unsealed(stream: &str, version: u64, draft: EventDraft) -> Unsealed {
    Unsealed {
        stream_id: stream.to_owned(),
        stream_version: version,
        draft,
    }
}

fn account() -> PayeeAccount {
    PayeeAccount::Bsb {
        bsb: "062000".into(),
        account: "012345678".into(),
    }
}

fn payees() -> Vec<Unsealed> {
    let first = PayeeAdded {
        payee_id: id(1),
        name: "Harbour Supplies Pty Ltd".into(),
        normalized_name: "harbour supplies pty ltd".into(),
        account: account(),
        lookalike_of: vec![],
    };
    let second = PayeeAdded {
        payee_id: id(2),
        name: "Harb0ur Supplies".into(),
        normalized_name: "harb0ur supplies".into(),
        account: PayeeAccount::Iban {
            iban: "GB33BUKB20201555555555".into(),
        },
        lookalike_of: vec![id(1)],
    };
    let operator = Actor {
        kind: ActorKind::Operator,
        id: "op-jane".into(),
        credential: "session-3".into(),
    };
    vec![
        unsealed("payee-1", 0, draft(1, operator.clone(), None, &first)),
        unsealed("payee-2", 0, draft(2, operator, None, &second)),
    ]
}

fn submitted(payment: u128, amount_minor: u64) -> PaymentSubmitted {
    PaymentSubmitted {
        payment_id: id(payment),
        payee_id: id(1),
        amount_minor,
        currency: "AUD".into(),
        account: account(),
        payee_name: "Harbour Supplies Pty Ltd".into(),
        reference: format!("INV-{payment}"),
        bank_idempotency_key: format!("folio-{payment}"),
        source: PaymentSource::Api,
    }
}

fn attempted(payment: u128) -> DispatchAttempted {
    DispatchAttempted {
        payment_id: id(payment),
        attempt: 1,
        bank_idempotency_key: format!("folio-{payment}"),
    }
}

fn first_payment() -> Vec<Unsealed> {
    vec![
        unsealed(
            "payment-10",
            0,
            draft(3, client(), Some(id(0x103)), &submitted(10, 125_000)),
        ),
        unsealed(
            "payment-10",
            1,
            draft(4, Actor::system("dispatcher"), None, &attempted(10)),
        ),
    ]
}

fn after_rotation() -> Vec<Unsealed> {
    let receipt = ReceiptRecorded {
        payment_id: id(10),
        attempt: 1,
        bank_reference: "BNK-000042".into(),
        response_status: 201,
        response_blake3: [0x5a; 32],
    };
    let failed = DispatchFailed {
        payment_id: id(11),
        attempt: 1,
        error_kind: "timeout".into(),
        detail: "bank did not answer within 10 s".into(),
        will_retry: true,
        retry_in_ms: Some(2_000),
    };
    let dispatcher = Actor::system("dispatcher");
    vec![
        unsealed(
            "payment-10",
            2,
            draft(6, dispatcher.clone(), Some(id(0x104)), &receipt),
        ),
        unsealed(
            "payment-11",
            0,
            draft(7, client(), None, &submitted(11, 99)),
        ),
        unsealed(
            "payment-11",
            1,
            draft(8, dispatcher.clone(), None, &attempted(11)),
        ),
        unsealed(
            "payment-11",
            2,
            draft(9, dispatcher, Some(id(0x108)), &failed),
        ),
    ]
}

/// Builds the golden ledger: genesis, two payees, a payment and its dispatch,
/// a key rotation at position 5, then four events signed by the new key.
pub fn build_ledger() -> GoldenLedger {
    let clock = Arc::new(SteppingClock::new(START_MICROS, STEP_MICROS));
    let sealer_a = Sealer::new(key(SEED_A), clock);
    let (genesis, mut tip) =
        sealer_a.genesis(LEDGER_ID, "acme-payroll", Actor::system("setup"), id(0x200));
    let mut events = vec![genesis];
    events.extend(sealer_a.seal_batch(&mut tip, payees()));
    events.extend(sealer_a.seal_batch(&mut tip, first_payment()));

    let operator = Actor {
        kind: ActorKind::Operator,
        id: "op-jane".into(),
        credential: "session-3".into(),
    };
    let (rotation, sealer_b) =
        sealer_a.rotation_draft(key(SEED_B), operator, id(0x205), "scheduled");
    events.extend(sealer_a.seal_batch(&mut tip, vec![unsealed(LEDGER_STREAM, 1, rotation)]));
    events.extend(sealer_b.seal_batch(&mut tip, after_rotation()));

    assert_eq!(events.len(), 10);
    let signed_head = sign_head(&tip, &sealer_b);
    GoldenLedger {
        events,
        signed_head,
    }
}

fn sign_head(tip: &ChainTip, sealer: &Sealer) -> Vec<u8> {
    sealer.sign_head(tip.ledger_id, tip.next_position - 1, tip.prev_hash)
}

/// Encodes an export file; `None` leaves out the trailer.
fn encode(events: &[SealedEvent], signed_head: Option<&[u8]>) -> Vec<u8> {
    let records: Vec<Vec<u8>> = events.iter().map(SealedEvent::to_bytes).collect();
    let mut bytes = export::encode(
        records.iter().map(Vec::as_slice),
        signed_head.unwrap_or(&[]),
    );
    if signed_head.is_none() {
        // The trailer of an empty head is the zero marker plus a zero length: 8 bytes.
        bytes.truncate(bytes.len() - 8);
    }
    bytes
}

/// Re-hashes and re-signs the event at `index` with `key` (after the caller
/// changed it), then relinks and re-signs the rest with the key each names.
fn reseal_from(events: &mut [SealedEvent], index: usize, key: &LedgerKey) {
    let known = [LedgerKey::from_seed(SEED_A), LedgerKey::from_seed(SEED_B)];
    events[index].hash = events[index].compute_hash();
    events[index].signature = key.sign_event_hash(&events[index].hash);
    for later in index + 1..events.len() {
        events[later].prev_hash = events[later - 1].hash;
        events[later].hash = events[later].compute_hash();
        if let Some(signer) = known.iter().find(|k| k.key_id() == events[later].key_id) {
            events[later].signature = signer.sign_event_hash(&events[later].hash);
        }
    }
}

/// Adds the group order L to the S half of a signature (S + L stays below 2^256
/// for any canonical S), which lax verifiers accept and strict ones reject.
fn add_group_order_to_s(signature: &mut [u8; 64]) {
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde,
        0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut carry = 0u16;
    for (byte, l_byte) in signature[32..].iter_mut().zip(L) {
        let sum = u16::from(*byte) + u16::from(l_byte) + carry;
        *byte = (sum & 0xff) as u8;
        carry = sum >> 8;
    }
    assert_eq!(carry, 0, "S + L overflowed 256 bits");
}

/// Builds every fixture file: the intact ledger and its tampered copies.
pub fn golden_files() -> Vec<GoldenFile> {
    let ledger = build_ledger();
    let events = &ledger.events;
    let head = Some(ledger.signed_head.as_slice());
    let file = |name, bytes, verdict| GoldenFile {
        name,
        bytes,
        verdict,
    };
    let mut files = vec![file(LEDGER_FILE, encode(events, head), Verdict::intact())];
    files.extend(simple_tampering(&ledger));
    files.extend(resealed_tampering(&ledger));
    files.extend(semantic_tampering(&ledger));
    files.extend(raw_tampering(&ledger));
    files
}

/// Copies changed without re-signing anything.
fn simple_tampering(ledger: &GoldenLedger) -> Vec<GoldenFile> {
    let events = &ledger.events;
    let head = Some(ledger.signed_head.as_slice());
    let mut files = Vec::new();
    let mut add = |name, changed: Vec<SealedEvent>, head: Option<&[u8]>, verdict| {
        files.push(GoldenFile {
            name,
            bytes: encode(&changed, head),
            verdict,
        });
    };

    // The first byte of the amount varint (after two 17-byte UUIDs): 125000 cents become 125001.
    let mut changed = events.clone();
    changed[3].payload[34] ^= 0x01;
    add(
        "tampered-payload-byte.folio",
        changed,
        head,
        Verdict::failed("changed_bytes", Some(3)),
    );

    let mut removed = events.clone();
    removed.remove(4);
    add(
        "tampered-event-removed.folio",
        removed,
        head,
        Verdict::failed("missing_event", Some(4)),
    );

    let mut swapped = events.clone();
    swapped.swap(6, 7);
    add(
        "tampered-events-swapped.folio",
        swapped,
        head,
        Verdict::failed("reordered_event", Some(6)),
    );

    add(
        "tampered-tail-cut.folio",
        events[..8].to_vec(),
        None,
        Verdict::failed("truncated_tail", Some(8)),
    );
    add(
        "tampered-tail-cut-head-kept.folio",
        events[..8].to_vec(),
        head,
        Verdict::failed("truncated_tail", Some(8)),
    );
    add(
        "tampered-head-removed.folio",
        events.clone(),
        None,
        Verdict::failed("truncated_tail", Some(10)),
    );

    let stale_head = Sealer::new(key(SEED_B), Arc::new(SteppingClock::new(0, 0))).sign_head(
        LEDGER_ID,
        8,
        events[8].hash,
    );
    add(
        "tampered-head-stale.folio",
        events.clone(),
        Some(&stale_head),
        Verdict::failed("head_mismatch", Some(8)),
    );

    let mut foreign = events.clone();
    foreign[7].signature = LedgerKey::from_seed(SEED_FOREIGN).sign_event_hash(&foreign[7].hash);
    add(
        "tampered-foreign-signature.folio",
        foreign,
        head,
        Verdict::failed("bad_signature", Some(7)),
    );

    let mut malleable = events.clone();
    add_group_order_to_s(&mut malleable[2].signature);
    add(
        "tampered-noncanonical-s.folio",
        malleable,
        head,
        Verdict::failed("bad_signature", Some(2)),
    );
    files
}

/// Copies changed and then re-hashed and re-signed, so only a semantic check catches them.
fn resealed_tampering(ledger: &GoldenLedger) -> Vec<GoldenFile> {
    let head = Some(ledger.signed_head.as_slice());
    let foreign_key = LedgerKey::from_seed(SEED_FOREIGN);
    let key_b = LedgerKey::from_seed(SEED_B);
    let key_a = LedgerKey::from_seed(SEED_A);
    let mut files = Vec::new();
    let mut add = |name, changed: Vec<SealedEvent>, verdict| {
        files.push(GoldenFile {
            name,
            bytes: encode(&changed, head),
            verdict,
        });
    };

    // Re-signed by a key the ledger never named, with that key's id.
    let mut foreign = ledger.events.clone();
    foreign[7].key_id = foreign_key.key_id();
    reseal_from(&mut foreign, 7, &foreign_key);
    add(
        "tampered-foreign-key.folio",
        foreign,
        Verdict::failed("unknown_key", Some(7)),
    );

    let mut gap = ledger.events.clone();
    gap[7].stream_version = 3;
    reseal_from(&mut gap, 7, &key_b);
    add(
        "tampered-stream-version-gap.folio",
        gap,
        Verdict::failed("stream_version_gap", Some(7)),
    );

    // The Edwards identity point: a small-order (weak) key.
    let mut weak = ledger.events.clone();
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let payload = LedgerKeyRotated {
        key_algorithm: 1,
        new_public_key: identity,
        reason: "x".into(),
    };
    weak[5].payload = payload.encode();
    reseal_from(&mut weak, 5, &key_a);
    add(
        "tampered-rotation-weak-key.folio",
        weak,
        Verdict::failed("bad_rotation", Some(5)),
    );
    files
}

/// Renders the verdict table as pretty JSON with sorted file names and a final newline.
pub fn verdicts_json(files: &[GoldenFile]) -> String {
    let table: BTreeMap<&str, &Verdict> = files.iter().map(|f| (f.name, &f.verdict)).collect();
    // Serialising a map of plain structs to a String cannot fail.
    let mut json = serde_json::to_string_pretty(&table).expect("verdicts serialise");
    json.push('\n');
    json
}

/// More re-signed copies, one per chain rule that only a resealed change reaches.
fn semantic_tampering(ledger: &GoldenLedger) -> Vec<GoldenFile> {
    let head = Some(ledger.signed_head.as_slice());
    let key_a = LedgerKey::from_seed(SEED_A);
    let key_b = LedgerKey::from_seed(SEED_B);
    let mut files = Vec::new();
    let mut add = |name, changed: Vec<SealedEvent>, verdict| {
        files.push(GoldenFile {
            name,
            bytes: encode(&changed, head),
            verdict,
        });
    };

    let mut link = ledger.events.clone();
    link[4].prev_hash[0] ^= 0x80;
    reseal_from(&mut link, 4, &key_a);
    add(
        "tampered-broken-link.folio",
        link,
        Verdict::failed("broken_link", Some(4)),
    );

    let mut other_ledger = ledger.events.clone();
    other_ledger[2].ledger_id = id(0xdead);
    reseal_from(&mut other_ledger, 2, &key_a);
    add(
        "tampered-wrong-ledger.folio",
        other_ledger,
        Verdict::failed("wrong_ledger", Some(2)),
    );

    let mut time = ledger.events.clone();
    time[8].recorded_at_micros = time[7].recorded_at_micros - 1;
    reseal_from(&mut time, 8, &key_b);
    add(
        "tampered-time-backwards.folio",
        time,
        Verdict::failed("time_went_backwards", Some(8)),
    );

    let mut second_genesis = ledger.events.clone();
    second_genesis[6].event_type = "ledger.created".into();
    reseal_from(&mut second_genesis, 6, &key_b);
    add(
        "tampered-second-genesis.folio",
        second_genesis,
        Verdict::failed("bad_genesis", Some(6)),
    );
    files
}

/// Copies changed at the byte level: the file header, a record header, the head.
fn raw_tampering(ledger: &GoldenLedger) -> Vec<GoldenFile> {
    let intact = encode(&ledger.events, Some(&ledger.signed_head));
    let mut files = Vec::new();

    let mut magic = intact.clone();
    magic[0] = b'X';
    files.push(GoldenFile {
        name: "tampered-bad-magic.folio",
        bytes: magic,
        verdict: Verdict::failed("bad_export", None),
    });

    // Record 3's format version (low byte): the record no longer decodes.
    let mut version = ledger
        .events
        .iter()
        .map(SealedEvent::to_bytes)
        .collect::<Vec<_>>();
    version[3][1] = 9;
    let bytes = export::encode(version.iter().map(Vec::as_slice), &ledger.signed_head);
    files.push(GoldenFile {
        name: "tampered-undecodable-record.folio",
        bytes,
        verdict: Verdict::failed("undecodable", Some(3)),
    });

    // The head re-signed by the genesis key, which stopped being active at position 5.
    let last = &ledger.events[9];
    let old_key_head = Sealer::new(key(SEED_A), Arc::new(SteppingClock::new(0, 0))).sign_head(
        LEDGER_ID,
        last.position,
        last.hash,
    );
    files.push(GoldenFile {
        name: "tampered-head-old-key.folio",
        bytes: encode(&ledger.events, Some(&old_key_head)),
        verdict: Verdict::failed("bad_head", None),
    });
    files
}

//! Record layout, sealing, strict signatures and every verifier failure kind.

use std::sync::Arc;

use curve25519_dalek::constants::EIGHT_TORSION;
use curve25519_dalek::edwards::CompressedEdwardsY;
use curve25519_dalek::scalar::Scalar;
use domain::clock::SteppingClock;
use domain::crypto::{self, KeyId, LedgerKey, SignatureError};
use domain::events::{DispatchAttempted, EventPayload, LedgerCreated};
use domain::export;
use domain::record::{
    Actor, ActorKind, EventDraft, RecordError, SealedEvent, SigAlg, SignedHead, MAX_PAYLOAD_LEN,
    MAX_STRING_LEN,
};
use domain::seal::{ChainTip, Sealer, Unsealed};
use domain::verify::{verify_export, ChainVerifier, FailureKind};
use uuid::Uuid;

const LEDGER: Uuid = Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0001);
const START_MICROS: i64 = 1_767_225_600_000_000;

fn key_a() -> Arc<LedgerKey> {
    Arc::new(LedgerKey::from_seed([1; 32]))
}

fn key_b() -> Arc<LedgerKey> {
    Arc::new(LedgerKey::from_seed([2; 32]))
}

fn clock() -> Arc<SteppingClock> {
    Arc::new(SteppingClock::new(START_MICROS, 1_000))
}

fn draft(n: u128) -> EventDraft {
    let payload = DispatchAttempted {
        payment_id: Uuid::from_u128(n),
        attempt: 1,
        bank_idempotency_key: format!("key-{n}"),
    };
    EventDraft {
        event_id: Uuid::from_u128(0x1000 + n),
        event_type: DispatchAttempted::EVENT_TYPE.to_owned(),
        schema_version: DispatchAttempted::SCHEMA_VERSION,
        actor: Actor {
            kind: ActorKind::ApiClient,
            id: "client-1".into(),
            credential: "tok-1".into(),
        },
        correlation_id: Uuid::from_u128(0x2000 + n),
        causation_id: n.is_multiple_of(2).then(|| Uuid::from_u128(0x3000 + n)),
        payload: payload.encode(),
    }
}

fn item(stream: &str, version: u64, n: u128) -> Unsealed {
    Unsealed {
        stream_id: stream.to_owned(),
        stream_version: version,
        draft: draft(n),
    }
}

/// A ledger of 7 events: genesis, 2 events by key A, rotation to key B, 3 events by key B.
struct Ledger {
    events: Vec<SealedEvent>,
    head: Vec<u8>,
}

fn build_ledger() -> Ledger {
    let sealer_a = Sealer::new(key_a(), clock());
    let (genesis, mut tip) = sealer_a.genesis(
        LEDGER,
        "tenant-1",
        Actor::system("setup"),
        Uuid::from_u128(9),
    );
    let mut events = vec![genesis];
    events.extend(sealer_a.seal_batch(&mut tip, vec![item("s-1", 0, 1), item("s-2", 0, 2)]));

    let (rotation, sealer_b) = sealer_a.rotation_draft(
        key_b(),
        Actor::system("operator"),
        Uuid::from_u128(10),
        "scheduled",
    );
    let rotation = Unsealed {
        stream_id: "ledger".into(),
        stream_version: 1,
        draft: rotation,
    };
    events.extend(sealer_a.seal_batch(&mut tip, vec![rotation]));

    let later = vec![item("s-1", 1, 3), item("s-2", 1, 4), item("s-3", 0, 5)];
    events.extend(sealer_b.seal_batch(&mut tip, later));
    let head = sealer_b.sign_head(LEDGER, tip.next_position - 1, tip.prev_hash);
    Ledger { events, head }
}

fn encode(events: &[SealedEvent], head: Option<&[u8]>) -> Vec<u8> {
    let records: Vec<Vec<u8>> = events.iter().map(SealedEvent::to_bytes).collect();
    let mut bytes = export::encode(records.iter().map(Vec::as_slice), head.unwrap_or(&[]));
    if head.is_none() {
        // Drop the trailer: the 4-byte zero marker and the 4-byte length of an empty head.
        bytes.truncate(bytes.len() - 8);
    }
    bytes
}

fn verdict(events: &[SealedEvent], head: Option<&[u8]>) -> (FailureKind, Option<u64>) {
    let failure = verify_export(&encode(events, head)).expect_err("tampered ledger must fail");
    (failure.kind, failure.position)
}

/// Re-hashes and re-signs events from `from` on with the key each names, and
/// relinks every event after `from` to its predecessor.
fn reseal(events: &mut [SealedEvent], from: usize) {
    let keys = [key_a(), key_b()];
    for index in from..events.len() {
        if index > from {
            events[index].prev_hash = events[index - 1].hash;
        }
        let event = &mut events[index];
        event.hash = event.compute_hash();
        if let Some(key) = keys.iter().find(|key| key.key_id() == event.key_id) {
            event.signature = key.sign_event_hash(&event.hash);
        }
    }
}

fn head_for(events: &[SealedEvent], key: &Arc<LedgerKey>) -> Vec<u8> {
    let last = events.last().expect("non-empty ledger");
    Sealer::new(Arc::clone(key), clock()).sign_head(LEDGER, last.position, last.hash)
}

#[test]
fn record_round_trips() {
    let ledger = build_ledger();
    for event in &ledger.events {
        let bytes = event.to_bytes();
        assert_eq!(SealedEvent::from_bytes(&bytes).as_ref(), Ok(event));
        assert_eq!(event.hash, event.compute_hash());
    }
}

#[test]
fn intact_ledger_verifies_with_summary() {
    let ledger = build_ledger();
    let summary = verify_export(&encode(&ledger.events, Some(&ledger.head))).expect("intact");
    assert_eq!(summary.event_count, 7);
    assert_eq!(summary.head_position, 6);
    assert_eq!(summary.head_hash, ledger.events[6].hash);
    assert_eq!(summary.ledger_id, LEDGER);
    assert_eq!(summary.keys.len(), 2);
    assert_eq!(summary.keys[0].key_id, key_a().key_id());
    assert_eq!(summary.keys[0].signed, Some((0, 3)));
    assert_eq!(summary.keys[1].key_id, key_b().key_id());
    assert_eq!(summary.keys[1].named_at, 3);
    assert_eq!(summary.keys[1].signed, Some((4, 6)));
    assert_eq!(summary.rotations.len(), 1);
    assert_eq!(summary.rotations[0].position, 3);
}

#[test]
fn streaming_chunks_match_one_shot() {
    let ledger = build_ledger();
    let records: Vec<Vec<u8>> = ledger.events.iter().map(SealedEvent::to_bytes).collect();
    let mut verifier = ChainVerifier::new();
    for chunk in records.chunks(2) {
        verifier.push_chunk(chunk).expect("chunk verifies");
    }
    let summary = verifier.finish(Some(&ledger.head)).expect("intact");
    assert_eq!(summary.event_count, 7);
}

#[test]
fn sealed_times_never_go_backwards() {
    let sealer = Sealer::new(key_a(), Arc::new(SteppingClock::new(START_MICROS, -5)));
    let (genesis, mut tip) = sealer.genesis(LEDGER, "t", Actor::system("setup"), Uuid::nil());
    let events = sealer.seal_batch(&mut tip, vec![item("s", 0, 1), item("s", 1, 2)]);
    assert_eq!(events[0].recorded_at_micros, genesis.recorded_at_micros);
    assert_eq!(events[1].recorded_at_micros, genesis.recorded_at_micros);
    assert_eq!(
        tip,
        ChainTip {
            ledger_id: LEDGER,
            next_position: 3,
            prev_hash: events[1].hash,
            last_recorded_at_micros: genesis.recorded_at_micros,
        }
    );
}

#[test]
fn every_field_changes_the_hash() {
    let base = build_ledger().events[1].clone();
    let original = base.compute_hash();
    type Mutation = (&'static str, fn(&mut SealedEvent));
    let mutations: Vec<Mutation> = vec![
        ("ledger_id", |e| e.ledger_id = Uuid::from_u128(7)),
        ("position", |e| e.position += 1),
        ("stream_id", |e| e.stream_id.push('x')),
        ("stream_version", |e| e.stream_version += 1),
        ("event_id", |e| e.event_id = Uuid::from_u128(7)),
        ("event_type", |e| e.event_type.push('x')),
        ("schema_version", |e| e.schema_version += 1),
        ("recorded_at_micros", |e| e.recorded_at_micros += 1),
        ("actor_kind", |e| e.actor.kind = ActorKind::Operator),
        ("actor_id", |e| e.actor.id.push('x')),
        ("actor_credential", |e| e.actor.credential.push('x')),
        ("correlation_id", |e| e.correlation_id = Uuid::from_u128(7)),
        ("causation_id", |e| {
            e.causation_id = Some(Uuid::from_u128(7))
        }),
        ("payload", |e| e.payload.push(0)),
        ("prev_hash", |e| e.prev_hash[31] ^= 1),
        ("key_id", |e| e.key_id.0[0] ^= 1),
    ];
    for (field, mutate) in mutations {
        let mut event = base.clone();
        mutate(&mut event);
        assert_ne!(
            event.compute_hash(),
            original,
            "changing {field} must change the hash"
        );
    }
}

#[test]
fn moving_bytes_between_strings_changes_the_hash() {
    let mut left = build_ledger().events[1].clone();
    left.actor.id = "ab".into();
    left.actor.credential = "c".into();
    let mut right = left.clone();
    right.actor.id = "a".into();
    right.actor.credential = "bc".into();
    assert_ne!(left.compute_hash(), right.compute_hash());
}

#[test]
fn decoder_rejects_malformed_records() {
    let good = build_ledger().events[2].to_bytes();
    let with = |offset: usize, value: u8| {
        let mut bytes = good.clone();
        bytes[offset] = value;
        SealedEvent::from_bytes(&bytes).expect_err("malformed record")
    };
    assert_eq!(with(1, 2), RecordError::UnsupportedFormatVersion(2));
    assert_eq!(with(2, 9), RecordError::UnknownHashAlg(9));
    assert_eq!(with(3, 9), RecordError::UnknownSigAlg(9));

    let mut trailing = good.clone();
    trailing.push(0);
    assert_eq!(
        SealedEvent::from_bytes(&trailing),
        Err(RecordError::TrailingBytes { count: 1 })
    );
    let short = SealedEvent::from_bytes(&good[..good.len() - 1]);
    assert_eq!(short, Err(RecordError::Truncated { field: "signature" }));
    assert_eq!(
        SealedEvent::from_bytes(&[]),
        Err(RecordError::Truncated {
            field: "format_version"
        })
    );
}

/// Offset of the stream id length prefix: version 2, algorithms 2, ledger id 16, position 8.
const STREAM_LEN_OFFSET: usize = 28;

#[test]
fn decoder_rejects_bad_strings_and_flags() {
    let event = build_ledger().events[2].clone();
    let good = event.to_bytes();

    let mut bad_utf8 = good.clone();
    bad_utf8[STREAM_LEN_OFFSET + 4] = 0xff;
    assert_eq!(
        SealedEvent::from_bytes(&bad_utf8),
        Err(RecordError::InvalidUtf8 { field: "stream_id" })
    );

    let mut too_long = good.clone();
    too_long[STREAM_LEN_OFFSET..STREAM_LEN_OFFSET + 4].copy_from_slice(&2000u32.to_be_bytes());
    assert!(matches!(
        SealedEvent::from_bytes(&too_long),
        Err(RecordError::TooLong {
            field: "stream_id",
            len: 2000,
            max: MAX_STRING_LEN
        })
    ));

    // The actor kind and causation flag sit at fixed offsets from the end of the event type.
    let kind_offset = good.len()
        - 96
        - 16
        - 32
        - event.payload.len()
        - 4
        - 17
        - 16
        - 4
        - event.actor.credential.len()
        - 4
        - event.actor.id.len()
        - 1;
    let mut bad_kind = good.clone();
    bad_kind[kind_offset] = 7;
    assert_eq!(
        SealedEvent::from_bytes(&bad_kind),
        Err(RecordError::UnknownActorKind(7))
    );

    let flag_offset = good.len() - 96 - 16 - 32 - event.payload.len() - 4 - 17;
    assert_eq!(event.causation_id.is_some(), good[flag_offset] == 1);
    let mut bad_flag = good.clone();
    bad_flag[flag_offset] = 2;
    assert_eq!(
        SealedEvent::from_bytes(&bad_flag),
        Err(RecordError::InvalidCausationFlag(2))
    );
}

#[test]
fn draft_limits_are_enforced() {
    let mut big = draft(1);
    big.payload = vec![0; MAX_PAYLOAD_LEN + 1];
    assert!(matches!(
        big.check_limits(),
        Err(RecordError::TooLong {
            field: "payload",
            ..
        })
    ));
    let mut long_type = draft(1);
    long_type.event_type = "x".repeat(MAX_STRING_LEN + 1);
    assert!(matches!(
        long_type.check_limits(),
        Err(RecordError::TooLong {
            field: "event_type",
            ..
        })
    ));
    assert_eq!(draft(1).check_limits(), Ok(()));
}

#[test]
fn key_id_and_debug() {
    let key = key_a();
    assert_eq!(
        key.key_id(),
        KeyId::from_public_key(SigAlg::Ed25519, &key.public_key())
    );
    assert_eq!(key.key_id().to_hex().len(), 32);
    assert_eq!(
        LedgerKey::from_seed(key.seed_bytes()).public_key(),
        key.public_key()
    );
    let debug = format!("{key:?}");
    assert!(debug.contains(&key.key_id().to_hex()));
    assert!(!debug.contains(&hex::encode([1u8; 32])));
    assert_ne!(
        LedgerKey::generate().public_key(),
        LedgerKey::generate().public_key()
    );
}

/// Encoding of the Edwards identity point, which has small order.
const IDENTITY: [u8; 32] = {
    let mut bytes = [0u8; 32];
    bytes[0] = 1;
    bytes
};

#[test]
fn strict_rejects_weak_key_and_small_r() {
    assert_eq!(
        crypto::check_public_key(&IDENTITY),
        Err(SignatureError::WeakKey)
    );
    let key = key_a();
    let mut signature = key.sign(b"m");
    signature[..32].copy_from_slice(&IDENTITY);
    assert_eq!(
        crypto::check_signature_encoding(&signature),
        Err(SignatureError::SmallOrderR)
    );
    // With A and R both the identity and S = 0, the cofactorless equation holds for any message.
    let mut forged = [0u8; 64];
    forged[..32].copy_from_slice(&IDENTITY);
    assert_eq!(
        crypto::verify_strict(&IDENTITY, b"any", &forged),
        Err(SignatureError::WeakKey)
    );
}

/// Adds the group order L to S, which keeps the signature valid under lax verification.
fn add_group_order_to_s(signature: &mut [u8; 64]) {
    let l = Scalar::ZERO - Scalar::ONE;
    let mut carry = 1u16; // L = (L - 1) + 1.
    for (byte, l_byte) in signature[32..].iter_mut().zip(l.to_bytes()) {
        let sum = u16::from(*byte) + u16::from(l_byte) + carry;
        *byte = sum as u8;
        carry = sum >> 8;
    }
}

#[test]
fn strict_checks_reject_non_canonical_s() {
    let key = key_a();
    let mut signature = key.sign(b"m");
    assert_eq!(
        crypto::verify_strict(&key.public_key(), b"m", &signature),
        Ok(())
    );
    add_group_order_to_s(&mut signature);
    assert_eq!(
        crypto::check_signature_encoding(&signature),
        Err(SignatureError::NonCanonicalS)
    );

    let mut ledger = build_ledger();
    add_group_order_to_s(&mut ledger.events[2].signature);
    assert_eq!(
        verdict(&ledger.events, Some(&ledger.head)),
        (FailureKind::BadSignature, Some(2))
    );
}

#[test]
fn batch_finds_first_bad_signature() {
    let key = key_a();
    let checks: Vec<crypto::SignatureCheck> = (0..150u32)
        .map(|n| {
            let message = n.to_be_bytes().to_vec();
            crypto::SignatureCheck {
                public_key: key.public_key(),
                signature: key.sign(&message),
                message,
            }
        })
        .collect();
    assert_eq!(crypto::first_invalid_signature(&checks), None);
    let mut bad = checks.clone();
    bad[130].message.push(0);
    bad[100].signature[40] ^= 1;
    assert_eq!(crypto::first_invalid_signature(&bad), Some(100));
}

#[test]
fn batch_checks_each_key_of_a_mixed_batch() {
    let (a, b) = (key_a(), key_b());
    let checks: Vec<crypto::SignatureCheck> = (0..200u32)
        .map(|n| {
            let key = if n.is_multiple_of(3) { &b } else { &a };
            let message = n.to_be_bytes().to_vec();
            crypto::SignatureCheck {
                public_key: key.public_key(),
                signature: key.sign(&message),
                message,
            }
        })
        .collect();
    assert_eq!(crypto::first_invalid_signature(&checks), None);

    // A key with a torsion component, and the weak identity key, later in the batch.
    let point = CompressedEdwardsY(a.public_key()).decompress().unwrap();
    let torsion_key = (point + EIGHT_TORSION[1]).compress().to_bytes();
    assert_eq!(
        crypto::check_public_key(&torsion_key),
        Err(SignatureError::KeyNotTorsionFree)
    );
    let mut bad = checks.clone();
    bad[150].public_key = IDENTITY;
    bad[77].public_key = torsion_key;
    assert_eq!(crypto::first_invalid_signature(&bad), Some(77));
    bad[77].public_key = a.public_key();
    assert_eq!(crypto::first_invalid_signature(&bad), Some(150));
}

#[test]
fn genesis_with_weak_key_is_rejected() {
    let mut ledger = build_ledger();
    let payload = LedgerCreated {
        key_algorithm: 1,
        public_key: IDENTITY,
        tenant: "t".into(),
    };
    ledger.events[0].payload = payload.encode();
    ledger.events[0].key_id = KeyId::from_public_key(SigAlg::Ed25519, &IDENTITY);
    reseal(&mut ledger.events, 0);
    assert_eq!(
        verdict(&ledger.events, Some(&ledger.head)),
        (FailureKind::BadGenesis, Some(0))
    );
}

#[test]
fn rotation_to_weak_key_is_rejected() {
    let mut ledger = build_ledger();
    let payload = domain::events::LedgerKeyRotated {
        key_algorithm: 1,
        new_public_key: IDENTITY,
        reason: "r".into(),
    };
    ledger.events[3].payload = payload.encode();
    reseal(&mut ledger.events, 3);
    assert_eq!(
        verdict(&ledger.events, Some(&ledger.head)),
        (FailureKind::BadRotation, Some(3))
    );
}

#[test]
fn old_key_after_rotation_is_unknown() {
    let mut ledger = build_ledger();
    ledger.events[5].key_id = key_a().key_id();
    reseal(&mut ledger.events, 5);
    assert_eq!(
        verdict(&ledger.events, Some(&ledger.head)),
        (FailureKind::UnknownKey, Some(5))
    );
}

#[test]
fn rotation_signed_by_new_key_is_unknown() {
    let mut ledger = build_ledger();
    ledger.events[3].key_id = key_b().key_id();
    reseal(&mut ledger.events, 3);
    assert_eq!(
        verdict(&ledger.events, Some(&ledger.head)),
        (FailureKind::UnknownKey, Some(3))
    );
}

#[test]
fn each_failure_kind_is_detected() {
    let ledger = build_ledger();
    let head = Some(ledger.head.as_slice());
    type Tamper = Box<dyn Fn(&mut Vec<SealedEvent>)>;
    let cases: Vec<(&str, Tamper, FailureKind, Option<u64>)> = vec![
        (
            "changed payload",
            Box::new(|e| e[2].payload[0] ^= 1),
            FailureKind::ChangedBytes,
            Some(2),
        ),
        (
            "removed event",
            Box::new(|e| drop(e.remove(4))),
            FailureKind::MissingEvent,
            Some(4),
        ),
        (
            "swapped events",
            Box::new(|e| e.swap(4, 5)),
            FailureKind::ReorderedEvent,
            Some(4),
        ),
        (
            "repeated event",
            Box::new(|e| e.insert(3, e[2].clone())),
            FailureKind::ReorderedEvent,
            Some(3),
        ),
        (
            "bad signature",
            Box::new(|e| e[4].signature[40] ^= 1),
            FailureKind::BadSignature,
            Some(4),
        ),
        (
            "broken link",
            Box::new(|e| {
                e[4].prev_hash[0] ^= 1;
                reseal(e, 4)
            }),
            FailureKind::BrokenLink,
            Some(4),
        ),
        (
            "wrong ledger",
            Box::new(|e| {
                e[1].ledger_id = Uuid::nil();
                reseal(e, 1)
            }),
            FailureKind::WrongLedger,
            Some(1),
        ),
        (
            "time backwards",
            Box::new(|e| {
                e[2].recorded_at_micros = 0;
                reseal(e, 2)
            }),
            FailureKind::TimeWentBackwards,
            Some(2),
        ),
        (
            "stream version gap",
            Box::new(|e| {
                e[5].stream_version = 5;
                reseal(e, 5)
            }),
            FailureKind::StreamVersionGap,
            Some(5),
        ),
        (
            "second genesis",
            Box::new(|e| {
                e[2].event_type = "ledger.created".into();
                reseal(e, 2)
            }),
            FailureKind::BadGenesis,
            Some(2),
        ),
        (
            "genesis on wrong stream",
            Box::new(|e| {
                e[0].stream_id = "other".into();
                reseal(e, 0)
            }),
            FailureKind::BadGenesis,
            Some(0),
        ),
        (
            "rotation on wrong stream",
            Box::new(|e| {
                e[3].stream_id = "other".into();
                e[3].stream_version = 0;
                reseal(e, 3)
            }),
            FailureKind::BadRotation,
            Some(3),
        ),
        (
            "undecodable",
            Box::new(|e| e[3].format_version = 2),
            FailureKind::Undecodable,
            Some(3),
        ),
    ];
    for (name, tamper, kind, position) in cases {
        let mut events = ledger.events.clone();
        tamper(&mut events);
        let failure = verify_export(&encode(&events, head)).expect_err(name);
        assert_eq!(
            (failure.kind, failure.position),
            (kind, position),
            "case {name}"
        );
    }
}

#[test]
fn signature_failure_earlier_than_order_failure_wins() {
    let mut ledger = build_ledger();
    ledger.events[2].signature[40] ^= 1;
    ledger.events.remove(5);
    assert_eq!(
        verdict(&ledger.events, Some(&ledger.head)),
        (FailureKind::BadSignature, Some(2))
    );
}

#[test]
fn head_failures_are_detected() {
    let ledger = build_ledger();
    let events = &ledger.events;
    assert_eq!(verdict(events, None), (FailureKind::TruncatedTail, Some(7)));
    assert_eq!(
        verdict(&events[..5], Some(&ledger.head)),
        (FailureKind::TruncatedTail, Some(5))
    );

    let old_head = head_for(&events[..6], &key_b());
    assert_eq!(
        verdict(events, Some(&old_head)),
        (FailureKind::HeadMismatch, Some(5))
    );

    let wrong_key = head_for(events, &key_a());
    assert_eq!(
        verdict(events, Some(&wrong_key)),
        (FailureKind::BadHead, None)
    );

    let mut bad_signature = ledger.head.clone();
    let last = bad_signature.len() - 1;
    bad_signature[last] ^= 1;
    assert_eq!(
        verdict(events, Some(&bad_signature)),
        (FailureKind::BadHead, None)
    );

    let mut wrong_hash = SignedHead::from_bytes(&ledger.head).expect("head decodes");
    wrong_hash.head_hash[0] ^= 1;
    let message = SignedHead::signature_message(LEDGER, 6, &wrong_hash.head_hash);
    wrong_hash.signature = key_b().sign(&message);
    assert_eq!(
        verdict(events, Some(&wrong_hash.to_bytes())),
        (FailureKind::HeadMismatch, Some(6))
    );
}

#[test]
fn empty_and_malformed_exports_fail() {
    let empty = export::encode(std::iter::empty(), &[]);
    let failure = verify_export(&empty[..10]).expect_err("no events");
    assert_eq!(
        (failure.kind, failure.position),
        (FailureKind::BadGenesis, Some(0))
    );
    let failure = verify_export(b"NOTFOLIO\0\x01").expect_err("bad magic");
    assert_eq!(
        (failure.kind, failure.position),
        (FailureKind::BadExport, None)
    );

    let ledger = build_ledger();
    let bytes = encode(&ledger.events, Some(&ledger.head));
    let failure = verify_export(&bytes[..bytes.len() - 200]).expect_err("cut inside a record");
    assert_eq!(failure.kind, FailureKind::BadExport);
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert_eq!(
        verify_export(&trailing).expect_err("trailing").kind,
        FailureKind::BadExport
    );
}

#[test]
fn export_round_trips() {
    let ledger = build_ledger();
    let bytes = encode(&ledger.events, Some(&ledger.head));
    let decoded = export::decode(&bytes).expect("decodes");
    assert_eq!(decoded.records.len(), 7);
    assert_eq!(decoded.records[3], ledger.events[3].to_bytes());
    assert_eq!(decoded.signed_head.as_deref(), Some(ledger.head.as_slice()));
    assert_eq!(
        export::decode(&bytes[..bytes.len() - 8 - ledger.head.len()]).map(|e| e.signed_head),
        Ok(None)
    );
}

fn verdict_in_chunks_of_one(events: &[SealedEvent], head: &[u8]) -> (FailureKind, Option<u64>) {
    let records: Vec<Vec<u8>> = events.iter().map(SealedEvent::to_bytes).collect();
    let mut verifier = ChainVerifier::new();
    for chunk in records.chunks(1) {
        if verifier.push_chunk(chunk).is_err() {
            break;
        }
    }
    let failure = verifier
        .finish(Some(head))
        .expect_err("tampered ledger must fail");
    (failure.kind, failure.position)
}

#[test]
fn gap_kind_is_resolved_across_chunks() {
    let ledger = build_ledger();
    let mut swapped = ledger.events.clone();
    swapped.swap(4, 5);
    let reordered = verdict_in_chunks_of_one(&swapped, &ledger.head);
    assert_eq!(reordered, (FailureKind::ReorderedEvent, Some(4)));

    let mut removed = ledger.events.clone();
    removed.remove(4);
    let missing = verdict_in_chunks_of_one(&removed, &ledger.head);
    assert_eq!(missing, (FailureKind::MissingEvent, Some(4)));
}

#[test]
fn failure_is_latched_for_later_chunks() {
    let ledger = build_ledger();
    let mut records: Vec<Vec<u8>> = ledger.events.iter().map(SealedEvent::to_bytes).collect();
    records[1][200] ^= 1;
    let mut verifier = ChainVerifier::new();
    let first = verifier
        .push_chunk(&records[..3])
        .expect_err("changed record");
    let again = verifier.push_chunk(&records[3..]).expect_err("latched");
    assert_eq!(first, again);
    assert_eq!(verifier.finish(Some(&ledger.head)), Err(first));
}

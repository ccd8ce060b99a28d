//! A backend on KurrentDB, over the official `kurrentdb` gRPC client (cargo feature
//! `kurrentdb`).
//!
//! How the [`Backend`] contract maps onto KurrentDB:
//!
//! - Each ledger is one KurrentDB stream, `folio-ledger-<ledger id>`. Revision n contains
//!   the sealed event at position n: the data is the sealed bytes (the same bytes the SQLite
//!   backend stores), the KurrentDB event id is Folio's event id, and the type is Folio's.
//! - A commit is one append to that stream, with the expected revision set to the batch's
//!   expected head position (`NoStream` for a genesis). KurrentDB appends to one stream
//!   atomically, so a moved head comes back as a wrong expected version and is reported as
//!   [`BackendError::HeadMoved`].
//! - The batch's idempotency records and signed head travel in the custom metadata of the
//!   batch's last event, so they commit in the same append as the events.
//! - The stream `folio-ledgers` lists the ledgers, one event per ledger, appended before the
//!   genesis. An entry whose ledger stream does not exist (its genesis failed) is skipped.
//! - Stream versions, stream membership, idempotency records and the signed head are kept in
//!   an in-memory index per ledger, built by reading the ledger's stream and brought up to
//!   date with the events appended since, before every lookup. Several processes may share
//!   a server: each catches up before it answers.
//!
//! Limits: the index holds a few bytes per event and an entry per stream and key, and its
//! first build reads the whole ledger. Reading a Folio stream reads its events one at a
//! time. The server does not forbid appends or deletes by another client with write
//! access; the hash chain and signed heads make such changes detectable, not impossible.
//! Durability is the server's: an append returns after KurrentDB has acknowledged it.
//!
//! NOTE: untested against a live server: the contract tests run against this backend only
//! where `FOLIO_TEST_KURRENTDB_URL` names one.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use bytes::Bytes;
use domain::events::{EventPayload, LedgerCreated};
use domain::record::{SealedEvent, HASH_LEN};
use kurrentdb::{
    AppendToStreamOptions, Client, ClientSettings, EventData, ReadStreamOptions, RecordedEvent,
    StreamPosition, StreamState,
};
use uuid::Uuid;

use crate::{
    Backend, BackendError, ChainHead, CommitBatch, IdempotencyClaim, IdempotencyRecord, LedgerInfo,
    SignedHead,
};

/// Stream listing every ledger id.
const LEDGERS_STREAM: &str = "folio-ledgers";

/// Event type of an entry of [`LEDGERS_STREAM`].
const LEDGER_ENTRY_TYPE: &str = "folio.ledger-registered";

/// Events read per request while catching up.
const READ_PAGE: usize = 500;

/// First bytes of the batch metadata, with its format version.
const META_MAGIC: &[u8; 4] = b"FKM1";

/// A Folio store on a KurrentDB server.
pub struct KurrentBackend {
    client: Client,
    indexes: Mutex<HashMap<Uuid, Arc<tokio::sync::Mutex<LedgerIndex>>>>,
}

impl std::fmt::Debug for KurrentBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KurrentBackend").finish_non_exhaustive()
    }
}

impl KurrentBackend {
    /// Creates a backend for the server at `url`, such as
    /// `kurrentdb://127.0.0.1:2113?tls=false`. The client connects on first use.
    ///
    /// Must be called inside a Tokio runtime.
    ///
    /// # Errors
    /// [`BackendError::Unavailable`] when the URL does not parse or the client cannot start.
    pub fn connect(url: &str) -> Result<Self, BackendError> {
        let settings = url.parse::<ClientSettings>().map_err(|error| {
            BackendError::Unavailable(format!(
                "invalid KurrentDB URL: {error}; expected kurrentdb://host:port?tls=..."
            ))
        })?;
        let client = Client::new(settings)
            .map_err(|error| BackendError::Unavailable(format!("KurrentDB client: {error}")))?;
        Ok(KurrentBackend {
            client,
            indexes: Mutex::new(HashMap::new()),
        })
    }

    /// Runs `read` on the ledger's index after bringing it up to date with the server.
    async fn with_index<T>(
        &self,
        ledger_id: Uuid,
        read: impl FnOnce(&LedgerIndex) -> T,
    ) -> Result<T, BackendError> {
        let index = {
            let mut indexes = self.indexes.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(indexes.entry(ledger_id).or_default())
        };
        let mut index = index.lock().await;
        self.catch_up(ledger_id, &mut index).await?;
        Ok(read(&index))
    }

    async fn catch_up(&self, ledger_id: Uuid, index: &mut LedgerIndex) -> Result<(), BackendError> {
        loop {
            let events = self
                .read_raw(&ledger_stream(ledger_id), index.next_revision, READ_PAGE)
                .await?;
            for event in &events {
                index.apply(ledger_id, event)?;
            }
            if events.len() < READ_PAGE {
                return Ok(());
            }
        }
    }

    /// Reads up to `limit` events of a KurrentDB stream from `revision`; a missing stream
    /// reads as empty.
    async fn read_raw(
        &self,
        stream: &str,
        revision: u64,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, BackendError> {
        let options = ReadStreamOptions::default()
            .forwards()
            .position(StreamPosition::Position(revision))
            .max_count(limit);
        let mut reader = match self.client.read_stream(stream, &options).await {
            Ok(reader) => reader,
            Err(kurrentdb::Error::ResourceNotFound) => return Ok(Vec::new()),
            Err(error) => return Err(unavailable(error)),
        };
        let mut events = Vec::new();
        loop {
            match reader.next().await {
                // The original event is the link when there is one, as in
                // `ResolvedEvent::get_original_event`; ledger streams contain no links.
                Ok(Some(resolved)) => events.extend(resolved.link.or(resolved.event)),
                Ok(None) => return Ok(events),
                Err(kurrentdb::Error::ResourceNotFound) => return Ok(events),
                Err(error) => return Err(unavailable(error)),
            }
        }
    }

    async fn register_ledger(&self, ledger_id: Uuid) -> Result<(), BackendError> {
        let entry = Bytes::copy_from_slice(ledger_id.as_bytes());
        let event = EventData::binary(LEDGER_ENTRY_TYPE, entry);
        let options = AppendToStreamOptions::default().stream_state(StreamState::Any);
        self.client
            .append_to_stream(LEDGERS_STREAM, &options, event)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn read_event(
        &self,
        ledger_id: Uuid,
        position: u64,
    ) -> Result<Option<SealedEvent>, BackendError> {
        let events = self
            .read_raw(&ledger_stream(ledger_id), position, 1)
            .await?;
        events
            .first()
            .map(|event| decode_event(ledger_id, event))
            .transpose()
    }
}

#[async_trait]
impl Backend for KurrentBackend {
    async fn commit(&self, batch: CommitBatch) -> Result<(), BackendError> {
        let last = batch
            .events
            .last()
            .ok_or_else(|| BackendError::ConstraintViolation {
                ledger_id: batch.ledger_id,
                reason: "commit without events".into(),
            })?;
        assert_eq!(
            batch.signed_head.head.position, last.position,
            "signed head must cover the batch's last event"
        );
        if batch.expected_head.is_none() {
            self.register_ledger(batch.ledger_id).await?;
        }

        let meta = Bytes::from(encode_meta(&batch.idempotency, &batch.signed_head.record));
        let count = batch.events.len();
        let events: Vec<EventData> = (batch.events.iter().enumerate())
            .map(|(index, event)| {
                let data = Bytes::from(event.to_bytes());
                let data = EventData::binary(&event.event_type, data).id(event.event_id);
                if index + 1 == count {
                    data.metadata(meta.clone())
                } else {
                    data
                }
            })
            .collect();
        let state = match batch.expected_head {
            None => StreamState::NoStream,
            Some(head) => StreamState::StreamRevision(head.position),
        };
        let options = AppendToStreamOptions::default().stream_state(state);
        let stream = ledger_stream(batch.ledger_id);
        match self.client.append_to_stream(stream, &options, events).await {
            Ok(_) => Ok(()),
            Err(kurrentdb::Error::WrongExpectedVersion { .. }) => Err(BackendError::HeadMoved {
                ledger_id: batch.ledger_id,
                expected: batch.expected_head.map(|head| head.position),
            }),
            Err(error) => Err(unavailable(error)),
        }
    }

    async fn head(&self, ledger_id: Uuid) -> Result<Option<ChainHead>, BackendError> {
        self.with_index(ledger_id, |index| index.head).await
    }

    async fn signed_head(&self, ledger_id: Uuid) -> Result<Option<SignedHead>, BackendError> {
        self.with_index(ledger_id, |index| index.signed_head.clone())
            .await
    }

    async fn stream_version(
        &self,
        ledger_id: Uuid,
        stream_id: &str,
    ) -> Result<Option<u64>, BackendError> {
        self.with_index(ledger_id, |index| {
            let positions = index.streams.get(stream_id)?;
            (positions.len() as u64).checked_sub(1)
        })
        .await
    }

    async fn idempotency(
        &self,
        ledger_id: Uuid,
        key: &str,
    ) -> Result<Option<IdempotencyRecord>, BackendError> {
        self.with_index(ledger_id, |index| index.keys.get(key).cloned())
            .await
    }

    async fn read_ledger(
        &self,
        ledger_id: Uuid,
        from_position: u64,
        limit: u32,
    ) -> Result<Vec<SealedEvent>, BackendError> {
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let events = self
            .read_raw(&ledger_stream(ledger_id), from_position, limit)
            .await?;
        events
            .iter()
            .map(|event| decode_event(ledger_id, event))
            .collect()
    }

    async fn read_stream(
        &self,
        ledger_id: Uuid,
        stream_id: &str,
        from_version: u64,
        limit: u32,
    ) -> Result<Vec<SealedEvent>, BackendError> {
        let positions = self
            .with_index(ledger_id, |index| {
                let positions = index.streams.get(stream_id).map(Vec::as_slice);
                let from = usize::try_from(from_version).unwrap_or(usize::MAX);
                let limit = usize::try_from(limit).unwrap_or(usize::MAX);
                positions
                    .unwrap_or_default()
                    .iter()
                    .skip(from)
                    .take(limit)
                    .copied()
                    .collect::<Vec<u64>>()
            })
            .await?;
        let mut events = Vec::with_capacity(positions.len());
        for position in positions {
            let event = self.read_event(ledger_id, position).await?;
            let event = event.ok_or_else(|| BackendError::Corrupt {
                ledger_id,
                position,
                reason: "event listed in the index is missing from the server".into(),
            })?;
            events.push(event);
        }
        Ok(events)
    }

    async fn ledgers(&self) -> Result<Vec<LedgerInfo>, BackendError> {
        let mut ids = BTreeSet::new();
        let mut revision = 0;
        loop {
            let entries = self.read_raw(LEDGERS_STREAM, revision, READ_PAGE).await?;
            for entry in &entries {
                if let Ok(id) = Uuid::from_slice(&entry.data) {
                    ids.insert(id);
                }
                revision = entry.revision + 1;
            }
            if entries.len() < READ_PAGE {
                break;
            }
        }
        let mut ledgers = Vec::with_capacity(ids.len());
        for ledger_id in ids {
            let info = self
                .with_index(ledger_id, |index| {
                    let head = index.head?;
                    let tenant = index.tenant.clone()?;
                    Some(LedgerInfo {
                        ledger_id,
                        tenant,
                        head,
                    })
                })
                .await?;
            ledgers.extend(info);
        }
        Ok(ledgers)
    }
}

/// One process's index of a ledger's stream, up to `next_revision`.
#[derive(Debug, Default)]
struct LedgerIndex {
    next_revision: u64,
    head: Option<ChainHead>,
    signed_head: Option<SignedHead>,
    tenant: Option<String>,
    /// Positions of each Folio stream's events, in version order.
    streams: HashMap<String, Vec<u64>>,
    keys: HashMap<String, IdempotencyRecord>,
}

impl LedgerIndex {
    fn apply(&mut self, ledger_id: Uuid, recorded: &RecordedEvent) -> Result<(), BackendError> {
        let event = decode_event(ledger_id, recorded)?;
        let corrupt = |reason: String| BackendError::Corrupt {
            ledger_id,
            position: event.position,
            reason,
        };
        if event.position != self.next_revision {
            return Err(corrupt(format!(
                "stored at revision {} but expected {}",
                recorded.revision, self.next_revision
            )));
        }
        if event.position == 0 {
            let created =
                LedgerCreated::decode(&event.payload).map_err(|e| corrupt(e.to_string()))?;
            self.tenant = Some(created.tenant);
        }

        let positions = self.streams.entry(event.stream_id.clone()).or_default();
        if event.stream_version != positions.len() as u64 {
            return Err(corrupt(format!(
                "stream {} version {} does not follow {} events",
                event.stream_id,
                event.stream_version,
                positions.len()
            )));
        }
        positions.push(event.position);
        let head = ChainHead {
            ledger_id,
            position: event.position,
            hash: event.hash,
        };
        self.head = Some(head);

        if !recorded.custom_metadata.is_empty() {
            let meta = decode_meta(&recorded.custom_metadata).map_err(corrupt)?;
            self.signed_head = Some(SignedHead {
                head,
                record: meta.signed_head,
            });
            for record in meta.records {
                self.keys.insert(record.claim.key.clone(), record);
            }
        }
        self.next_revision = event.position + 1;
        Ok(())
    }
}

fn ledger_stream(ledger_id: Uuid) -> String {
    format!("folio-ledger-{ledger_id}")
}

fn unavailable(error: kurrentdb::Error) -> BackendError {
    BackendError::Unavailable(format!("KurrentDB: {error}"))
}

fn decode_event(ledger_id: Uuid, recorded: &RecordedEvent) -> Result<SealedEvent, BackendError> {
    let event = SealedEvent::from_bytes(&recorded.data).map_err(|error| BackendError::Corrupt {
        ledger_id,
        position: recorded.revision,
        reason: error.to_string(),
    })?;
    if event.ledger_id != ledger_id || event.position != recorded.revision {
        return Err(BackendError::Corrupt {
            ledger_id,
            position: recorded.revision,
            reason: format!(
                "event of ledger {} at position {} is stored at revision {}",
                event.ledger_id, event.position, recorded.revision
            ),
        });
    }
    Ok(event)
}

/// Idempotency records and signed head of one batch, as stored in its last event.
struct BatchMeta {
    signed_head: Vec<u8>,
    records: Vec<IdempotencyRecord>,
}

/// Encodes the batch metadata: magic, signed head, then each record. Lengths are u32 and
/// numbers big-endian.
fn encode_meta(records: &[IdempotencyRecord], signed_head: &[u8]) -> Vec<u8> {
    let mut out = META_MAGIC.to_vec();
    put_bytes(&mut out, signed_head);
    put_u32(&mut out, records.len());
    for record in records {
        let claim = &record.claim;
        put_bytes(&mut out, claim.key.as_bytes());
        out.extend_from_slice(&claim.request_hash);
        put_bytes(&mut out, &claim.request);
        out.extend_from_slice(&claim.response_status.to_be_bytes());
        put_bytes(&mut out, &claim.response_body);
        out.extend_from_slice(&record.first_position.to_be_bytes());
        out.extend_from_slice(&record.last_position.to_be_bytes());
    }
    out
}

fn put_u32(out: &mut Vec<u8>, value: usize) {
    // Append requests are capped far below 4 GiB, so every length fits.
    let value = u32::try_from(value).expect("metadata length fits in u32");
    out.extend_from_slice(&value.to_be_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u32(out, bytes.len());
    out.extend_from_slice(bytes);
}

fn decode_meta(bytes: &[u8]) -> Result<BatchMeta, String> {
    let mut reader = MetaReader { rest: bytes };
    if reader.take(META_MAGIC.len())? != META_MAGIC {
        return Err("batch metadata has an unknown format".into());
    }
    let signed_head = reader.bytes()?.to_vec();
    let count = reader.u32()?;
    let mut records = Vec::new();
    for _ in 0..count {
        let key = String::from_utf8(reader.bytes()?.to_vec())
            .map_err(|_| "idempotency key is not UTF-8".to_owned())?;
        let request_hash: [u8; HASH_LEN] = reader
            .take(HASH_LEN)?
            .try_into()
            .map_err(|_| "request hash is truncated".to_owned())?;
        let request = reader.bytes()?.to_vec();
        let response_status = u16::from_be_bytes(reader.array()?);
        let response_body = reader.bytes()?.to_vec();
        let first_position = u64::from_be_bytes(reader.array()?);
        let last_position = u64::from_be_bytes(reader.array()?);
        let claim = IdempotencyClaim {
            key,
            request_hash,
            request,
            response_status,
            response_body,
        };
        records.push(IdempotencyRecord {
            claim,
            first_position,
            last_position,
        });
    }
    if !reader.rest.is_empty() {
        return Err(format!(
            "{} trailing bytes in batch metadata",
            reader.rest.len()
        ));
    }
    Ok(BatchMeta {
        signed_head,
        records,
    })
}

struct MetaReader<'a> {
    rest: &'a [u8],
}

impl<'a> MetaReader<'a> {
    fn take(&mut self, count: usize) -> Result<&'a [u8], String> {
        if self.rest.len() < count {
            return Err("batch metadata is truncated".into());
        }
        let (taken, rest) = self.rest.split_at(count);
        self.rest = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let taken = self.take(N)?;
        taken
            .try_into()
            .map_err(|_| "batch metadata is truncated".to_owned())
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let length = usize::try_from(self.u32()?).map_err(|e| e.to_string())?;
        self.take(length)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_meta_round_trips() {
        let record = IdempotencyRecord {
            claim: IdempotencyClaim {
                key: "key-1".into(),
                request_hash: [7; HASH_LEN],
                request: b"POST /x".to_vec(),
                response_status: 201,
                response_body: b"{}".to_vec(),
            },
            first_position: 4,
            last_position: 6,
        };
        let encoded = encode_meta(std::slice::from_ref(&record), b"signed");
        let decoded = decode_meta(&encoded).unwrap();
        assert_eq!(decoded.signed_head, b"signed");
        assert_eq!(decoded.records, [record]);
    }

    #[test]
    fn truncated_meta_is_rejected() {
        let encoded = encode_meta(&[], b"signed");
        let error = decode_meta(&encoded[..encoded.len() - 1]).err().unwrap();
        assert!(
            error.contains("truncated") || error.contains("trailing"),
            "{error}"
        );
        assert!(decode_meta(b"XXXX").is_err());
    }
}

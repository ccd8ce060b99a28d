//! A verified event source: the events of one ledger, read from an export file or a store
//! and checked link by link before anything is built from them.

use std::path::PathBuf;

use anyhow::{anyhow, bail, ensure, Context};
use domain::record::SealedEvent;
use domain::verify::{ChainVerifier, Failure};
use eventstore_adapter::Backend;
use uuid::Uuid;

use crate::store::StoreLocation;

/// Events read from a store per page.
const PAGE: u32 = 4_096;

/// Source of the events.
#[derive(Debug, Clone)]
pub enum EventSource {
    /// An export file written by `folio export-ledger`.
    Export(PathBuf),
    /// A SQLite data directory or a PostgreSQL store, opened read-only.
    Store(StoreLocation),
}

impl EventSource {
    /// Returns the source as a phrase for messages, with no password.
    pub fn describe(&self) -> String {
        match self {
            EventSource::Export(path) => format!("export file {}", path.display()),
            EventSource::Store(location) => location.describe(),
        }
    }
}

/// The last event to read: the head, a position, or a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cutoff {
    /// Every event up to the signed head.
    Head,
    /// Events at positions up to and including this one.
    Position(u64),
    /// Events recorded at or before this time, in microseconds since the Unix epoch.
    Time(i64),
}

impl std::fmt::Display for Cutoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cutoff::Head => f.write_str("the signed head"),
            Cutoff::Position(position) => write!(f, "position {position}"),
            Cutoff::Time(micros) => write!(f, "{}", super::event_view::format_micros(*micros)),
        }
    }
}

impl Cutoff {
    /// Returns whether `event` lies at or before the cutoff.
    pub fn includes(self, event: &SealedEvent) -> bool {
        match self {
            Cutoff::Head => true,
            Cutoff::Position(position) => event.position <= position,
            Cutoff::Time(micros) => event.recorded_at_micros <= micros,
        }
    }
}

// TODO: replay page by page instead of holding every event, so memory stays flat as a
// ledger grows; the state is small, but the events up to the cutoff are all kept.
/// The events of one ledger from genesis to a cutoff, every one verified.
#[derive(Debug, Clone)]
pub struct VerifiedEvents {
    /// Ledger the events belong to.
    pub ledger_id: Uuid,
    /// Events in position order, from position 0.
    pub events: Vec<SealedEvent>,
    /// Whether the read reached the signed head and checked its signature too. It is false
    /// when the cutoff stopped the read before the head.
    pub signed_head_checked: bool,
}

/// Reads one ledger up to `cutoff`, verifying hashes, links, positions and signatures on
/// the way. `ledger` may be omitted when the source contains a single ledger.
///
/// # Errors
/// Fails when the source cannot be read, names another ledger, has no event at or before
/// the cutoff, or does not verify up to the cutoff. A broken chain is an error here, so no
/// result is built on one.
pub async fn load(
    source: &EventSource,
    ledger: Option<Uuid>,
    cutoff: Cutoff,
) -> anyhow::Result<VerifiedEvents> {
    let loaded = match source {
        EventSource::Export(path) => load_export(path, cutoff)?,
        EventSource::Store(location) => load_store(location, ledger, cutoff).await?,
    };
    if let Some(wanted) = ledger {
        ensure!(
            loaded.ledger_id == wanted,
            "{} holds ledger {}, not {wanted}; drop --ledger or pass the right file",
            source.describe(),
            loaded.ledger_id
        );
    }
    Ok(loaded)
}

fn load_export(path: &std::path::Path, cutoff: Cutoff) -> anyhow::Result<VerifiedEvents> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let exported = domain::export::decode(&bytes)
        .map_err(|error| anyhow!("{} is not a valid export file: {error}", path.display()))?;
    let mut reader = Reader::new(cutoff);
    for chunk in exported.records.chunks(PAGE as usize) {
        reader.push(chunk)?;
        if reader.cutoff_reached {
            break;
        }
    }
    reader.finish(exported.signed_head.as_deref())
}

async fn load_store(
    location: &StoreLocation,
    ledger: Option<Uuid>,
    cutoff: Cutoff,
) -> anyhow::Result<VerifiedEvents> {
    let backend = location.open_read_only().await?;
    load_backend(backend.as_ref(), &location.describe(), ledger, cutoff).await
}

/// Reads one ledger of an open store up to `cutoff`, verifying as [`load`] does; `subject`
/// names the store in messages.
///
/// # Errors
/// As [`load`].
pub async fn load_backend(
    backend: &dyn Backend,
    subject: &str,
    ledger: Option<Uuid>,
    cutoff: Cutoff,
) -> anyhow::Result<VerifiedEvents> {
    let ledger_id = pick_ledger(backend, subject, ledger).await?;

    // The head is read first and bounds the read, as `folio export-ledger` does, so events
    // appended meanwhile by a running server do not count as a cut-off tail.
    let Some(signed_head) = backend.signed_head(ledger_id).await? else {
        bail!("ledger {ledger_id} has no signed head in {subject}");
    };
    let last = signed_head.head.position;
    let mut reader = Reader::new(cutoff);
    let mut from = 0;
    while from <= last && !reader.cutoff_reached {
        let events = backend.read_ledger(ledger_id, from, PAGE).await?;
        let Some(newest) = events.last() else { break };
        from = newest.position + 1;
        let records: Vec<Vec<u8>> = events
            .iter()
            .take_while(|event| event.position <= last)
            .map(SealedEvent::to_bytes)
            .collect();
        // Verification uses every core, so it runs on a blocking thread and leaves the
        // async workers (a server's request handlers among them) free.
        // TODO: read the next page while this one is verified, as `folio verify` does; the
        // replay benchmark runs at 0.87 of `folio verify` partly for this reason.
        let verifying = tokio::task::spawn_blocking(move || {
            let result = reader.push(&records);
            (reader, result)
        });
        let (verified, result) = verifying.await.context("verification thread panicked")?;
        reader = verified;
        result?;
    }
    reader.finish(Some(&signed_head.record))
}

/// Returns `ledger`, or the only ledger of the store when it is `None`.
async fn pick_ledger(
    backend: &dyn Backend,
    subject: &str,
    ledger: Option<Uuid>,
) -> anyhow::Result<Uuid> {
    let known: Vec<Uuid> = backend
        .ledgers()
        .await?
        .iter()
        .map(|info| info.ledger_id)
        .collect();
    match (ledger, known.as_slice()) {
        (Some(wanted), _) if known.contains(&wanted) => Ok(wanted),
        (Some(wanted), _) => bail!("ledger {wanted} not found in {subject}"),
        (None, [only]) => Ok(*only),
        (None, []) => bail!("{subject} contains no ledger"),
        (None, _) => {
            let ids: Vec<String> = known.iter().map(Uuid::to_string).collect();
            bail!(
                "{subject} contains {} ledgers; pass --ledger with one of: {}",
                known.len(),
                ids.join(", ")
            )
        }
    }
}

/// Decodes records up to the cutoff and feeds them to a chain verifier.
struct Reader {
    verifier: ChainVerifier,
    events: Vec<SealedEvent>,
    cutoff: Cutoff,
    cutoff_reached: bool,
}

impl Reader {
    fn new(cutoff: Cutoff) -> Self {
        Reader {
            verifier: ChainVerifier::new(),
            events: Vec::new(),
            cutoff,
            cutoff_reached: false,
        }
    }

    /// Decodes and verifies the records of one page that lie at or before the cutoff.
    fn push<R: AsRef<[u8]> + Sync>(&mut self, records: &[R]) -> anyhow::Result<()> {
        let mut decoded = Vec::with_capacity(records.len());
        for (index, bytes) in records.iter().enumerate() {
            let event = match SealedEvent::from_bytes(bytes.as_ref()) {
                Ok(event) => event,
                Err(error) => {
                    // The verifier names the failure in ledger terms, when it can.
                    self.verifier
                        .push_chunk(&records[..=index])
                        .map_err(broken)?;
                    let ordinal = self.events.len() + index;
                    bail!("record {ordinal} of the ledger (from 0) cannot be decoded: {error}");
                }
            };
            if !self.cutoff.includes(&event) {
                self.cutoff_reached = true;
                break;
            }
            // The verifier reports a missing event only after reading the records that follow,
            // which a cutoff may never read, so the positions are checked here as well.
            let expected = (self.events.len() + decoded.len()) as u64;
            if event.position != expected {
                // Records before this one are checked first, so the first failure is named.
                self.verifier
                    .push_chunk(&records[..decoded.len()])
                    .map_err(broken)?;
                bail!(
                    "the chain is broken: expected position {expected}, found {}",
                    event.position
                );
            }
            decoded.push(event);
        }
        self.verifier
            .push_chunk(&records[..decoded.len()])
            .map_err(broken)?;
        self.events.extend(decoded);
        Ok(())
    }

    /// Checks the signed head when the read reached it, and returns the events.
    fn finish(self, signed_head: Option<&[u8]>) -> anyhow::Result<VerifiedEvents> {
        let Some(first) = self.events.first() else {
            bail!(
                "no event lies at or before {}; the ledger starts later",
                self.cutoff
            );
        };
        let ledger_id = first.ledger_id;
        let signed_head_checked = !self.cutoff_reached;
        if signed_head_checked {
            self.verifier.finish(signed_head).map_err(broken)?;
        }
        Ok(VerifiedEvents {
            ledger_id,
            events: self.events,
            signed_head_checked,
        })
    }
}

fn broken(failure: Failure) -> anyhow::Error {
    let position = failure
        .position
        .map_or_else(|| "the signed head".to_owned(), |p| format!("position {p}"));
    anyhow!(
        "the ledger does not verify at {position}: {} ({}); nothing is built on a broken \
         chain, run folio verify for the full verdict",
        failure.message,
        failure.kind.code()
    )
}

impl Cutoff {
    /// Parses a point given as a position (digits) or as an RFC 3339 time.
    ///
    /// # Errors
    /// Names the text and the two accepted forms.
    pub fn parse_point(text: &str) -> anyhow::Result<Cutoff> {
        if let Ok(position) = text.parse::<u64>() {
            return Ok(Cutoff::Position(position));
        }
        let micros = super::event_view::parse_time(text).map_err(|_| {
            anyhow!(
                "invalid point {text:?}: expected a position such as 42, or an RFC 3339 time \
                 such as 2026-12-04T21:00:00Z"
            )
        })?;
        Ok(Cutoff::Time(micros))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn point_is_position_or_time() {
        assert_eq!(Cutoff::parse_point("42").unwrap(), Cutoff::Position(42));
        assert_eq!(
            Cutoff::parse_point("1970-01-01T00:00:01Z").unwrap(),
            Cutoff::Time(1_000_000)
        );
        let error = Cutoff::parse_point("last tuesday").unwrap_err().to_string();
        assert!(error.contains("\"last tuesday\""), "{error}");
        assert!(error.contains("RFC 3339"), "{error}");
    }
}

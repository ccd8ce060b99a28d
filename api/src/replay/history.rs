//! History browser: filters over verified events, causation links followed both ways, and
//! output as a table, JSON lines or CSV.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::Write as _;

use domain::record::SealedEvent;
use serde_json::Value;
use uuid::Uuid;

use super::event_view::{actor_kind, event_json, format_micros, SIGNATURE_VERIFIED};

/// Event filter of `folio history`. Every filter that is set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Stream id.
    pub stream: Option<String>,
    /// Actor id (API client id, operator id or system component), or the operator id of
    /// the authentication context.
    pub actor: Option<String>,
    /// Correlation id.
    pub correlation: Option<Uuid>,
    /// First position listed.
    pub from_position: Option<u64>,
    /// Last position listed.
    pub to_position: Option<u64>,
    /// Earliest recording time, microseconds since the Unix epoch.
    pub since_micros: Option<i64>,
    /// Latest recording time, microseconds since the Unix epoch.
    pub until_micros: Option<i64>,
}

impl Filter {
    /// Checks that the position range is not reversed.
    ///
    /// # Errors
    /// Names both positions when `from_position` is after `to_position`.
    pub fn check_range(&self) -> anyhow::Result<()> {
        if let (Some(from), Some(to)) = (self.from_position, self.to_position) {
            anyhow::ensure!(from <= to, "from {from} is after to {to}; swap them");
        }
        Ok(())
    }

    /// Returns the point where reading can stop: the last position or time listed, so a
    /// later break in the chain does not hide the history before it.
    pub fn cutoff(&self) -> super::source::Cutoff {
        use super::source::Cutoff;
        match (self.to_position, self.until_micros) {
            (Some(position), _) => Cutoff::Position(position),
            (None, Some(micros)) => Cutoff::Time(micros),
            (None, None) => Cutoff::Head,
        }
    }

    /// Returns whether `event` passes every filter that is set.
    pub fn matches(&self, event: &SealedEvent) -> bool {
        let actor_matches = |actor: &String| {
            event.actor.id == *actor || auth_operator(event).is_some_and(|id| id == *actor)
        };
        self.stream.as_ref().is_none_or(|s| event.stream_id == *s)
            && self.actor.as_ref().is_none_or(actor_matches)
            && self.correlation.is_none_or(|c| event.correlation_id == c)
            && self.from_position.is_none_or(|p| event.position >= p)
            && self.to_position.is_none_or(|p| event.position <= p)
            && self
                .since_micros
                .is_none_or(|t| event.recorded_at_micros >= t)
            && self
                .until_micros
                .is_none_or(|t| event.recorded_at_micros <= t)
    }
}

/// Returns the operator id of the event's authentication context, as text.
fn auth_operator(event: &SealedEvent) -> Option<String> {
    let decoded = domain::events::DomainEvent::decode(
        &event.event_type,
        event.schema_version,
        &event.payload,
    )
    .ok()?;
    super::event_view::auth_context(&decoded).map(|auth| auth.operator_id.to_string())
}

/// Selects the events to list: all of them, or those on a causation walk, then those that
/// pass `filter`. Also returns the id outside the ledger that caused the first event walked,
/// when there is one.
///
/// # Errors
/// The walk's start event is not in `events`.
pub fn select<'a>(
    events: &'a [SealedEvent],
    walk: Option<Causation>,
    filter: &Filter,
) -> anyhow::Result<(Vec<&'a SealedEvent>, Option<Uuid>)> {
    let (walked, external_cause) = match walk {
        None => (events.iter().collect(), None),
        Some(walk) => {
            let walked = follow(events, walk)?;
            (walked.events, walked.external_cause)
        }
    };
    let listed = walked
        .into_iter()
        .filter(|event| filter.matches(event))
        .collect();
    Ok((listed, external_cause))
}

/// Causation links to follow from one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Causation {
    /// The event and its causes, back to the first: "why did this happen".
    Why(Uuid),
    /// The event and everything it caused, directly or not: "what did this cause".
    Caused(Uuid),
}

/// The events selected by a causation walk, in position order, and the id of a cause that
/// is not an event of the ledger (a request id), if the walk reached one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CausationWalk<'a> {
    /// Events on the walk, in position order.
    pub events: Vec<&'a SealedEvent>,
    /// A causation id that names no event of the ledger.
    pub external_cause: Option<Uuid>,
}

/// Follows causation links from `walk`'s event.
///
/// # Errors
/// Names the event id when no event of the ledger has it.
pub fn follow<'a>(events: &'a [SealedEvent], walk: Causation) -> anyhow::Result<CausationWalk<'a>> {
    let by_id: HashMap<Uuid, &SealedEvent> =
        events.iter().map(|event| (event.event_id, event)).collect();
    let start = match walk {
        Causation::Why(id) | Causation::Caused(id) => id,
    };
    let Some(first) = by_id.get(&start) else {
        anyhow::bail!("no event with id {start} in the ledger up to the cutoff; check the id");
    };
    let mut walked = match walk {
        Causation::Why(_) => follow_causes(&by_id, first),
        Causation::Caused(_) => CausationWalk {
            events: follow_effects(events, first),
            external_cause: None,
        },
    };
    walked.events.sort_by_key(|event| event.position);
    Ok(walked)
}

fn follow_causes<'a>(
    by_id: &HashMap<Uuid, &'a SealedEvent>,
    first: &'a SealedEvent,
) -> CausationWalk<'a> {
    let mut chain = vec![first];
    let mut seen = HashSet::from([first.event_id]);
    let mut external_cause = None;
    let mut current = first;
    while let Some(cause) = current.causation_id {
        match by_id.get(&cause) {
            // A cause is always earlier in a verified ledger; the set guards against a loop.
            Some(&event) if seen.insert(event.event_id) => {
                chain.push(event);
                current = event;
            }
            Some(_) => break,
            None => {
                external_cause = Some(cause);
                break;
            }
        }
    }
    CausationWalk {
        events: chain,
        external_cause,
    }
}

fn follow_effects<'a>(events: &'a [SealedEvent], first: &'a SealedEvent) -> Vec<&'a SealedEvent> {
    let mut children: HashMap<Uuid, Vec<&SealedEvent>> = HashMap::new();
    for event in events {
        if let Some(cause) = event.causation_id {
            children.entry(cause).or_default().push(event);
        }
    }
    let mut found = vec![first];
    let mut seen = HashSet::from([first.event_id]);
    let mut queue = VecDeque::from([first.event_id]);
    while let Some(id) = queue.pop_front() {
        for &child in children.get(&id).into_iter().flatten() {
            if seen.insert(child.event_id) {
                found.push(child);
                queue.push_back(child.event_id);
            }
        }
    }
    found
}

/// Output format of `folio history`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for a terminal.
    Table,
    /// One JSON object per event, per line.
    Jsonl,
    /// Comma-separated values with a header row (RFC 4180 quoting).
    Csv,
}

/// Columns of the table and CSV formats.
const COLUMNS: [&str; 10] = [
    "position",
    "recorded_at",
    "event_type",
    "stream_id",
    "actor",
    "auth_operator",
    "event_id",
    "causation_id",
    "hash",
    "signature",
];

/// Renders events in `format`; the table and CSV carry the envelope columns, and the CSV
/// adds the decoded payload as a JSON column.
pub fn render(events: &[&SealedEvent], format: Format) -> String {
    match format {
        Format::Jsonl => events
            .iter()
            .map(|event| format!("{}\n", event_json(event)))
            .collect(),
        Format::Csv => render_csv(events),
        Format::Table => render_table(events),
    }
}

fn columns(event: &SealedEvent) -> [String; 10] {
    let auth = auth_operator(event).unwrap_or_default();
    [
        event.position.to_string(),
        format_micros(event.recorded_at_micros),
        event.event_type.clone(),
        event.stream_id.clone(),
        format!("{}:{}", actor_kind(event.actor.kind), event.actor.id),
        auth,
        event.event_id.to_string(),
        event
            .causation_id
            .map(|id| id.to_string())
            .unwrap_or_default(),
        hex::encode(event.hash),
        SIGNATURE_VERIFIED.to_owned(),
    ]
}

fn render_csv(events: &[&SealedEvent]) -> String {
    let mut out = String::new();
    let header: Vec<&str> = COLUMNS.iter().copied().chain(["payload"]).collect();
    out.push_str(&header.join(","));
    out.push_str("\r\n");
    for event in events {
        let payload = event_json(event)
            .get("payload")
            .cloned()
            .unwrap_or(Value::Null)
            .to_string();
        let row: Vec<String> = columns(event)
            .into_iter()
            .chain([payload])
            .map(|field| csv_field(&field))
            .collect();
        out.push_str(&row.join(","));
        out.push_str("\r\n");
    }
    out
}

/// Quotes a CSV field that contains a comma, quote or line break, doubling inner quotes.
fn csv_field(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_owned()
    }
}

fn render_table(events: &[&SealedEvent]) -> String {
    // The table leaves out the event id, causation id and full hash to fit a terminal;
    // `--format jsonl` has every field.
    let shown_columns = [0, 1, 2, 3, 4, 5, 8];
    let rows: Vec<[String; 10]> = events.iter().map(|event| columns(event)).collect();
    let widths: Vec<usize> = shown_columns
        .iter()
        .map(|&column| {
            rows.iter()
                .map(|row| display_cell(column, &row[column]).chars().count())
                .chain([COLUMNS[column].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let header: Vec<String> = shown_columns
        .iter()
        .map(|&c| COLUMNS[c].to_owned())
        .collect();
    push_row(&mut out, &header, &widths);
    for row in &rows {
        let cells: Vec<String> = shown_columns
            .iter()
            .map(|&c| display_cell(c, &row[c]))
            .collect();
        push_row(&mut out, &cells, &widths);
    }
    out
}

/// Shortens the hash column of the table to its first 16 hex digits.
fn display_cell(column: usize, cell: &str) -> String {
    if COLUMNS[column] == "hash" {
        cell.chars().take(16).collect()
    } else {
        cell.to_owned()
    }
}

fn push_row(out: &mut String, cells: &[String], widths: &[usize]) {
    let mut line = String::new();
    for (cell, width) in cells.iter().zip(widths) {
        // Writing to a String cannot fail.
        let _ = write!(line, "{cell:<width$}  ");
    }
    out.push_str(line.trim_end());
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
    }
}

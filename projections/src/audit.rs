//! The audit trail: every event of a ledger in order, with a readable summary.

use domain::record::ActorKind;
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::AnyConnection;
use sqlx::Row;
use uuid::Uuid;

use crate::apply::EventContext;
use crate::page::{into_page, Page, PageRequest};
use crate::read_models::load_checkpoint;
use crate::row::{get_opt_uuid, get_u64, get_uuid, to_db};
use crate::timestamp::format_micros;
use crate::{ProjectionError, ReadModels};

const TABLE: &str = "audit_events";

/// One event in the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    /// Ledger position.
    pub position: u64,
    /// Event id.
    pub event_id: Uuid,
    /// Time the event was recorded (RFC 3339, UTC).
    pub recorded_at: String,
    /// Time the event was recorded, in microseconds since the Unix epoch.
    pub recorded_at_micros: i64,
    /// Stream id.
    pub stream_id: String,
    /// Version within the stream.
    pub stream_version: u64,
    /// Dotted event type.
    pub event_type: String,
    /// Payload schema version.
    pub schema_version: u16,
    /// Actor kind: `system`, `api_client` or `operator`.
    pub actor_kind: String,
    /// Actor id.
    pub actor_id: String,
    /// Credential the actor used; empty for the system.
    pub actor_credential: String,
    /// Correlation id.
    pub correlation_id: Uuid,
    /// Causation id.
    pub causation_id: Option<Uuid>,
    /// Id (hex) of the key that signed the event.
    pub key_id: String,
    /// Event hash (hex).
    pub hash: String,
    /// Previous event's hash (hex).
    pub prev_hash: String,
    /// Readable payload summary with account numbers masked; `None` for an event type
    /// this build does not know.
    pub summary: Option<String>,
}

/// Filters for an audit-trail query; every filter that is set must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Earliest recorded time, inclusive, in microseconds since the Unix epoch.
    pub from_micros: Option<i64>,
    /// Latest recorded time, exclusive, in microseconds since the Unix epoch.
    pub to_micros: Option<i64>,
    /// Actor id.
    pub actor_id: Option<String>,
    /// Stream id.
    pub stream_id: Option<String>,
    /// Event type.
    pub event_type: Option<String>,
    /// Cursor (by position) and page size.
    pub page: PageRequest,
}

/// Returns the stored name of an actor kind.
fn actor_kind_name(kind: ActorKind) -> &'static str {
    match kind {
        ActorKind::System => "system",
        ActorKind::ApiClient => "api_client",
        ActorKind::Operator => "operator",
        // A kind added to the domain later is stored under a neutral name until it is
        // named here.
        _ => "other",
    }
}

/// Records an event in the audit trail.
pub(crate) async fn record(
    conn: &mut AnyConnection,
    context: &EventContext<'_>,
    summary: Option<String>,
) -> Result<(), ProjectionError> {
    let event = context.event;
    sqlx::query(
        "INSERT INTO audit_events (ledger_id, position, event_id, recorded_at_micros, stream_id,
            stream_version, event_type, schema_version, actor_kind, actor_id, actor_credential,
            correlation_id, causation_id, key_id, hash, prev_hash, summary)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)",
    )
    .bind(&context.ledger)
    .bind(context.position)
    .bind(event.event_id.to_string())
    .bind(event.recorded_at_micros)
    .bind(&event.stream_id)
    .bind(to_db("stream_version", event.stream_version)?)
    .bind(&event.event_type)
    .bind(i32::from(event.schema_version))
    .bind(actor_kind_name(event.actor.kind))
    .bind(&event.actor.id)
    .bind(&event.actor.credential)
    .bind(event.correlation_id.to_string())
    .bind(event.causation_id.map(|id| id.to_string()))
    .bind(hex::encode(event.key_id.0))
    .bind(hex::encode(event.hash))
    .bind(hex::encode(event.prev_hash))
    .bind(summary)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

impl ReadModels {
    /// Lists audit-trail entries of a ledger that match `query`, in position order.
    ///
    /// # Errors
    /// [`ProjectionError::Database`] or [`ProjectionError::CorruptRow`].
    pub async fn audit_trail(
        &self,
        ledger_id: Uuid,
        query: &AuditQuery,
    ) -> Result<Page<AuditEntry>, ProjectionError> {
        let mut tx = self.pool.begin().await?;
        let checkpoint = load_checkpoint(&mut tx, ledger_id).await?;

        let mut sql = Filters::default();
        sql.push("ledger_id =", Bind::Text(ledger_id.to_string()));
        sql.push("position >", Bind::Int(query.page.after_bound()));
        if let Some(from) = query.from_micros {
            sql.push("recorded_at_micros >=", Bind::Int(from));
        }
        if let Some(to) = query.to_micros {
            sql.push("recorded_at_micros <", Bind::Int(to));
        }
        sql.push_text("actor_id =", query.actor_id.as_deref());
        sql.push_text("stream_id =", query.stream_id.as_deref());
        sql.push_text("event_type =", query.event_type.as_deref());
        let text = format!(
            "SELECT * FROM audit_events WHERE {} ORDER BY position LIMIT ${}",
            sql.conditions.join(" AND "),
            sql.binds.len() + 1
        );

        let mut statement = sqlx::query(&text);
        for bind in sql.binds {
            statement = match bind {
                Bind::Text(value) => statement.bind(value),
                Bind::Int(value) => statement.bind(value),
            };
        }
        let statement = statement.bind(query.page.fetch_limit());
        let rows = statement.fetch_all(&mut *tx).await?;
        let entries = rows
            .iter()
            .map(entry_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let entries = entries.into_iter().map(|e| (e.position, e)).collect();
        Ok(into_page(&query.page, entries, checkpoint.as_ref()))
    }
}

/// A bound value of a filter.
enum Bind {
    Text(String),
    Int(i64),
}

/// Filter conditions with numbered placeholders. sqlx's `QueryBuilder` writes `?` for the
/// `Any` driver, which PostgreSQL rejects, so the `$n` placeholders are numbered here.
#[derive(Default)]
struct Filters {
    conditions: Vec<String>,
    binds: Vec<Bind>,
}

impl Filters {
    /// Adds `column_and_operator $n`, such as `position > $2`.
    fn push(&mut self, column_and_operator: &str, value: Bind) {
        self.binds.push(value);
        let number = self.binds.len();
        self.conditions
            .push(format!("{column_and_operator} ${number}"));
    }

    fn push_text(&mut self, column_and_operator: &str, value: Option<&str>) {
        if let Some(value) = value {
            self.push(column_and_operator, Bind::Text(value.to_owned()));
        }
    }
}

fn entry_from_row(row: &AnyRow) -> Result<AuditEntry, ProjectionError> {
    let recorded_at_micros: i64 = row.try_get("recorded_at_micros")?;
    let schema_version: i32 = row.try_get("schema_version")?;
    let schema_version =
        u16::try_from(schema_version).map_err(|_| ProjectionError::CorruptRow {
            table: TABLE,
            reason: format!("schema_version {schema_version} is out of range"),
        })?;
    Ok(AuditEntry {
        position: get_u64(row, TABLE, "position")?,
        event_id: get_uuid(row, TABLE, "event_id")?,
        recorded_at: format_micros(recorded_at_micros),
        recorded_at_micros,
        stream_id: row.try_get("stream_id")?,
        stream_version: get_u64(row, TABLE, "stream_version")?,
        event_type: row.try_get("event_type")?,
        schema_version,
        actor_kind: row.try_get("actor_kind")?,
        actor_id: row.try_get("actor_id")?,
        actor_credential: row.try_get("actor_credential")?,
        correlation_id: get_uuid(row, TABLE, "correlation_id")?,
        causation_id: get_opt_uuid(row, TABLE, "causation_id")?,
        key_id: row.try_get("key_id")?,
        hash: row.try_get("hash")?,
        prev_hash: row.try_get("prev_hash")?,
        summary: row.try_get("summary")?,
    })
}

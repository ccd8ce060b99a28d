//! The read-model tables.
//!
//! The SQL uses only types and syntax that SQLite and PostgreSQL share (`BIGINT`,
//! `TEXT`, `INTEGER`, `ON CONFLICT`, `$n` parameters), so the same statements serve both
//! through sqlx's `Any` driver. Hashes and ids are stored as lowercase hex and hyphenated
//! UUID text, which both databases compare byte for byte.

/// Statements that create every table and index; each is idempotent.
pub(crate) const CREATE: &[&str] = &[
    // One row per ledger: the position and hash that every model reflects. It is
    // written in the same transaction as the rows it covers.
    "CREATE TABLE IF NOT EXISTS checkpoints (
        ledger_id TEXT NOT NULL PRIMARY KEY,
        position BIGINT NOT NULL,
        head_hash TEXT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS audit_events (
        ledger_id TEXT NOT NULL,
        position BIGINT NOT NULL,
        event_id TEXT NOT NULL,
        recorded_at_micros BIGINT NOT NULL,
        stream_id TEXT NOT NULL,
        stream_version BIGINT NOT NULL,
        event_type TEXT NOT NULL,
        schema_version INTEGER NOT NULL,
        actor_kind TEXT NOT NULL,
        actor_id TEXT NOT NULL,
        actor_credential TEXT NOT NULL,
        correlation_id TEXT NOT NULL,
        causation_id TEXT,
        key_id TEXT NOT NULL,
        hash TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        summary TEXT,
        PRIMARY KEY (ledger_id, position)
    )",
    "CREATE INDEX IF NOT EXISTS audit_events_time
        ON audit_events (ledger_id, recorded_at_micros, position)",
    "CREATE INDEX IF NOT EXISTS audit_events_actor
        ON audit_events (ledger_id, actor_id, position)",
    "CREATE INDEX IF NOT EXISTS audit_events_stream
        ON audit_events (ledger_id, stream_id, position)",
    "CREATE INDEX IF NOT EXISTS audit_events_type
        ON audit_events (ledger_id, event_type, position)",
    // Submission fields are NULL for a payment rejected before it was submitted.
    "CREATE TABLE IF NOT EXISTS payments (
        ledger_id TEXT NOT NULL,
        payment_id TEXT NOT NULL,
        first_position BIGINT NOT NULL,
        status TEXT NOT NULL,
        amount_minor BIGINT,
        currency TEXT,
        payee_id TEXT,
        payee_name TEXT,
        account_masked TEXT,
        reference TEXT,
        bank_reference TEXT,
        attempts BIGINT NOT NULL,
        source TEXT,
        batch_id TEXT,
        batch_line BIGINT,
        last_error_kind TEXT,
        last_error TEXT,
        submitted_at_micros BIGINT,
        updated_at_micros BIGINT NOT NULL,
        updated_position BIGINT NOT NULL,
        PRIMARY KEY (ledger_id, payment_id)
    )",
    "CREATE INDEX IF NOT EXISTS payments_status ON payments (ledger_id, status, first_position)",
    "CREATE INDEX IF NOT EXISTS payments_batch ON payments (ledger_id, batch_id, first_position)",
    "CREATE TABLE IF NOT EXISTS payment_history (
        ledger_id TEXT NOT NULL,
        position BIGINT NOT NULL,
        payment_id TEXT NOT NULL,
        status TEXT NOT NULL,
        at_micros BIGINT NOT NULL,
        detail TEXT NOT NULL,
        PRIMARY KEY (ledger_id, position)
    )",
    "CREATE INDEX IF NOT EXISTS payment_history_payment
        ON payment_history (ledger_id, payment_id, position)",
    "CREATE TABLE IF NOT EXISTS payees (
        ledger_id TEXT NOT NULL,
        payee_id TEXT NOT NULL,
        added_position BIGINT NOT NULL,
        name TEXT NOT NULL,
        normalized_name TEXT NOT NULL,
        account_masked TEXT NOT NULL,
        added_at_micros BIGINT NOT NULL,
        removed_at_micros BIGINT,
        removed_reason TEXT,
        PRIMARY KEY (ledger_id, payee_id)
    )",
    "CREATE INDEX IF NOT EXISTS payees_order ON payees (ledger_id, added_position)",
    "CREATE TABLE IF NOT EXISTS payee_lookalikes (
        ledger_id TEXT NOT NULL,
        payee_id TEXT NOT NULL,
        lookalike_of TEXT NOT NULL,
        PRIMARY KEY (ledger_id, payee_id, lookalike_of)
    )",
    // One row per payment that was ever parked; `status` follows the operators'
    // decisions: parked, retry_pending_approval, ignore_pending_approval, retrying,
    // resolved or ignored.
    "CREATE TABLE IF NOT EXISTS dead_letters (
        ledger_id TEXT NOT NULL,
        payment_id TEXT NOT NULL,
        parked_position BIGINT NOT NULL,
        parked_at_micros BIGINT NOT NULL,
        attempts BIGINT NOT NULL,
        last_error_kind TEXT NOT NULL,
        last_error TEXT NOT NULL,
        amount_minor BIGINT NOT NULL,
        currency TEXT NOT NULL,
        payee_id TEXT NOT NULL,
        status TEXT NOT NULL,
        decision_id TEXT,
        updated_position BIGINT NOT NULL,
        PRIMARY KEY (ledger_id, payment_id)
    )",
    "CREATE INDEX IF NOT EXISTS dead_letters_order ON dead_letters (ledger_id, parked_position)",
    "CREATE INDEX IF NOT EXISTS dead_letters_decision ON dead_letters (ledger_id, decision_id)",
    // What happened to each parked payment, one row per payment and event.
    "CREATE TABLE IF NOT EXISTS dead_letter_history (
        ledger_id TEXT NOT NULL,
        position BIGINT NOT NULL,
        payment_id TEXT NOT NULL,
        status TEXT NOT NULL,
        at_micros BIGINT NOT NULL,
        actor_id TEXT NOT NULL,
        detail TEXT NOT NULL,
        PRIMARY KEY (ledger_id, position, payment_id)
    )",
    "CREATE INDEX IF NOT EXISTS dead_letter_history_payment
        ON dead_letter_history (ledger_id, payment_id, position)",
    "CREATE TABLE IF NOT EXISTS dlq_decisions (
        ledger_id TEXT NOT NULL,
        decision_id TEXT NOT NULL,
        proposed_position BIGINT NOT NULL,
        action TEXT NOT NULL,
        reason_code TEXT,
        reason TEXT NOT NULL,
        proposer_id TEXT NOT NULL,
        expires_at_micros BIGINT NOT NULL,
        status TEXT NOT NULL,
        approver_id TEXT,
        decided_position BIGINT,
        paused INTEGER NOT NULL,
        payment_count BIGINT NOT NULL,
        released_count BIGINT NOT NULL,
        PRIMARY KEY (ledger_id, decision_id)
    )",
    "CREATE TABLE IF NOT EXISTS dlq_decision_payments (
        ledger_id TEXT NOT NULL,
        decision_id TEXT NOT NULL,
        payment_id TEXT NOT NULL,
        PRIMARY KEY (ledger_id, decision_id, payment_id)
    )",
    "CREATE TABLE IF NOT EXISTS aba_batches (
        ledger_id TEXT NOT NULL,
        batch_id TEXT NOT NULL,
        position BIGINT NOT NULL,
        imported_at_micros BIGINT NOT NULL,
        file_hash TEXT NOT NULL,
        detail_count BIGINT NOT NULL,
        credit_total_minor BIGINT NOT NULL,
        debit_total_minor BIGINT NOT NULL,
        user_name TEXT NOT NULL,
        processing_date TEXT NOT NULL,
        PRIMARY KEY (ledger_id, batch_id)
    )",
    "CREATE INDEX IF NOT EXISTS aba_batches_order ON aba_batches (ledger_id, position)",
    // `rules` holds the rule ids with a comma before and after each, so a filter on one
    // id is a `LIKE '%,id,%'` on both engines; `findings` is the JSON the reviewer saw.
    "CREATE TABLE IF NOT EXISTS anomalies (
        ledger_id TEXT NOT NULL,
        payment_id TEXT NOT NULL,
        flag_event_id TEXT NOT NULL,
        flag_position BIGINT NOT NULL,
        flagged_at_micros BIGINT NOT NULL,
        payee_id TEXT NOT NULL,
        amount_minor BIGINT NOT NULL,
        currency TEXT NOT NULL,
        rules TEXT NOT NULL,
        findings TEXT NOT NULL,
        status TEXT NOT NULL,
        decided_by TEXT,
        decided_at_micros BIGINT,
        decision_reason TEXT,
        decision_position BIGINT,
        decision_event_id TEXT,
        PRIMARY KEY (ledger_id, payment_id)
    )",
    "CREATE INDEX IF NOT EXISTS anomalies_order ON anomalies (ledger_id, flag_position)",
];

/// Every table with the columns that order its rows uniquely, for [`crate::ReadModels::dump`].
pub(crate) const TABLES: &[(&str, &str)] = &[
    ("checkpoints", "ledger_id"),
    ("audit_events", "ledger_id, position"),
    ("payments", "ledger_id, payment_id"),
    ("payment_history", "ledger_id, position"),
    ("payees", "ledger_id, payee_id"),
    ("payee_lookalikes", "ledger_id, payee_id, lookalike_of"),
    ("dead_letters", "ledger_id, payment_id"),
    ("dead_letter_history", "ledger_id, position, payment_id"),
    ("dlq_decisions", "ledger_id, decision_id"),
    (
        "dlq_decision_payments",
        "ledger_id, decision_id, payment_id",
    ),
    ("aba_batches", "ledger_id, batch_id"),
    ("anomalies", "ledger_id, payment_id"),
];

/// Version of the tables above. A database that records another version (or none, as
/// before versions were recorded) has its read-model tables dropped and rebuilt from the
/// ledger, which is always possible because the read models hold nothing else.
pub(crate) const SCHEMA_VERSION: i64 = 3;

/// Table that records [`SCHEMA_VERSION`].
pub(crate) const VERSION_TABLE: &str = "CREATE TABLE IF NOT EXISTS read_model_schema (
    id INTEGER NOT NULL PRIMARY KEY,
    version BIGINT NOT NULL
)";
/// Each read model by name, with its tables, for `folio projections rebuild NAME`.
pub(crate) const MODELS: &[(&str, &[&str])] = &[
    ("audit", &["audit_events"]),
    ("payments", &["payments", "payment_history"]),
    ("payees", &["payees", "payee_lookalikes"]),
    (
        "dlq",
        &[
            "dead_letters",
            "dead_letter_history",
            "dlq_decisions",
            "dlq_decision_payments",
        ],
    ),
    ("aba_batches", &["aba_batches"]),
    ("anomalies", &["anomalies"]),
];

//! Every SQL text of the PostgreSQL engine: the SDK's `SQLAlchemySession` DDL for the basic
//! tables (POSTGRES.md §1), our DDL for the Advanced tables, and the statements, built once per
//! opener over validated [`Ident`]s (always double-quoted, as SQLAlchemy names a table that is
//! not all lowercase). User data is always a bound parameter.
//!
//! Timestamps are shown as SQLite shows them (`YYYY-MM-DD HH24:MI:SS`) and stored with the
//! server's microseconds. Messages are stamped after the session is locked with
//! `GREATEST(clock_timestamp(), newest stamp of the session)`, so within a session our writes
//! sort by `(created_at, id)` in commit order (the SDK stamps the transaction's start).

use crate::engine::ident::Ident;
use crate::error::{Error, Result};

/// PostgreSQL truncates longer identifiers (two long names could then name one table).
const MAX_IDENT_BYTES: usize = 63;

/// `timestamp` as text, as SQLite's `CURRENT_TIMESTAMP` reads.
macro_rules! ts {
    ($col:expr) => {
        concat!("to_char(", $col, ", 'YYYY-MM-DD HH24:MI:SS')")
    };
}

/// One opener's pair of tables and every statement that names them.
#[derive(Debug)]
pub(crate) struct Tables {
    pub(crate) sessions: Ident,
    pub(crate) messages: Ident,
    /// Prefix of this pair's advisory-lock keys (the sessions table, as named in SQL).
    pub(crate) lock_scope: String,
    pub(crate) ddl: Vec<String>,
    pub(crate) structure_ddl: Vec<String>,
    pub(crate) lock_session: String,
    /// Creates the session row if missing, leaving an existing one's `updated_at` alone.
    pub(crate) ensure_session: String,
    /// Blocks every writer of the two tables until the transaction ends (prune).
    pub(crate) lock_tables: String,
    pub(crate) insert_items: String,
    pub(crate) insert_raw: String,
    pub(crate) select_all: String,
    pub(crate) select_newest: String,
    pub(crate) pop_newest: String,
    pub(crate) delete_messages: String,
    pub(crate) delete_session: String,
    pub(crate) list_sessions: String,
    pub(crate) idle_sessions: String,
    pub(crate) session_row: String,
    pub(crate) export_messages: String,
    pub(crate) import_session: String,
    pub(crate) import_message: String,
    pub(crate) items_all: String,
    pub(crate) items_newest: String,
    pub(crate) message_by_id: String,
    pub(crate) orphans: String,
    pub(crate) turn_user_message: String,
    pub(crate) turns: String,
    pub(crate) find_turns: String,
    /// The foreign keys of one table in the current schema: (column, referenced table,
    /// referenced column).
    pub(crate) foreign_keys: &'static str,
    pub(crate) table_exists: &'static str,
}

impl Tables {
    /// Validate the table names and build their statements.
    pub(crate) fn new(sessions: &str, messages: &str) -> Result<Tables> {
        let s = Ident::parse(sessions, "sessions table")?;
        let m = Ident::parse(messages, "messages table")?;
        for (ident, what) in [(&s, "sessions table"), (&m, "messages table")] {
            if ident.name().len() > MAX_IDENT_BYTES {
                return Err(Error::InvalidArgument(format!(
                    "{what} {:?} is longer than PostgreSQL's {MAX_IDENT_BYTES}-byte identifiers",
                    ident.name()
                )));
            }
        }
        if s.name() == m.name() {
            return Err(Error::InvalidArgument(format!(
                "the sessions and messages tables must differ (both are {:?})",
                s.name()
            )));
        }
        let (st, mt) = (s.always_quoted(), m.always_quoted());
        let index = Ident::parse(
            &format!("\"idx_{}_session_time\"", m.name().replace('"', "\"\"")),
            "index",
        )?;
        // The newest stamp of the session, or the server clock if later (evaluated once per
        // statement: an uncorrelated subquery).
        let stamp = format!(
            "(SELECT GREATEST(clock_timestamp()::timestamp, \
             COALESCE(max(created_at), '-infinity'::timestamp)) FROM {mt} WHERE session_id = $1::text)"
        );
        let turns_select = format!(
            "SELECT ms.branch_turn_number, am.message_data, {} \
             FROM message_structure ms JOIN {mt} am ON ms.message_id = am.id \
             WHERE ms.session_id = $1 AND ms.branch_id = $2 AND ms.message_type = 'user'",
            ts!("ms.created_at")
        );
        Ok(Tables {
            lock_scope: st.clone(),
            ddl: vec![
                format!(
                    "CREATE TABLE IF NOT EXISTS {st} (\
                     session_id VARCHAR NOT NULL PRIMARY KEY, \
                     created_at TIMESTAMP WITHOUT TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL, \
                     updated_at TIMESTAMP WITHOUT TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL)"
                ),
                format!(
                    "CREATE TABLE IF NOT EXISTS {mt} (\
                     id SERIAL NOT NULL PRIMARY KEY, \
                     session_id VARCHAR NOT NULL REFERENCES {st} (session_id) ON DELETE CASCADE, \
                     message_data TEXT NOT NULL, \
                     created_at TIMESTAMP WITHOUT TIME ZONE DEFAULT CURRENT_TIMESTAMP NOT NULL)"
                ),
                format!(
                    "CREATE INDEX IF NOT EXISTS {} ON {mt} (session_id, created_at)",
                    index.always_quoted()
                ),
            ],
            structure_ddl: vec![
                format!(
                    "CREATE TABLE IF NOT EXISTS message_structure (\
                     id BIGSERIAL PRIMARY KEY, \
                     session_id VARCHAR NOT NULL REFERENCES {st} (session_id) ON DELETE CASCADE, \
                     message_id INTEGER NOT NULL REFERENCES {mt} (id) ON DELETE CASCADE, \
                     branch_id VARCHAR NOT NULL DEFAULT 'main', \
                     message_type VARCHAR NOT NULL, \
                     sequence_number BIGINT NOT NULL, \
                     user_turn_number BIGINT, \
                     branch_turn_number BIGINT, \
                     tool_name VARCHAR, \
                     created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL \
                         DEFAULT date_trunc('second', LOCALTIMESTAMP), \
                     UNIQUE (session_id, sequence_number))"
                ),
                format!(
                    "CREATE TABLE IF NOT EXISTS turn_usage (\
                     id BIGSERIAL PRIMARY KEY, \
                     session_id VARCHAR NOT NULL REFERENCES {st} (session_id) ON DELETE CASCADE, \
                     branch_id VARCHAR NOT NULL DEFAULT 'main', \
                     user_turn_number BIGINT NOT NULL, \
                     requests BIGINT DEFAULT 0, \
                     input_tokens BIGINT DEFAULT 0, \
                     output_tokens BIGINT DEFAULT 0, \
                     total_tokens BIGINT DEFAULT 0, \
                     input_tokens_details TEXT, \
                     output_tokens_details TEXT, \
                     created_at TIMESTAMP WITHOUT TIME ZONE NOT NULL \
                         DEFAULT date_trunc('second', LOCALTIMESTAMP), \
                     UNIQUE (session_id, branch_id, user_turn_number))"
                ),
                "CREATE TABLE IF NOT EXISTS branch_reservations (\
                 session_id VARCHAR NOT NULL, branch_id VARCHAR NOT NULL, \
                 PRIMARY KEY (session_id, branch_id))"
                    .into(),
                "CREATE TABLE IF NOT EXISTS session_clear_generations (\
                 session_id VARCHAR PRIMARY KEY, generation BIGINT NOT NULL DEFAULT 0)"
                    .into(),
                "CREATE INDEX IF NOT EXISTS idx_structure_branch_seq \
                 ON message_structure (session_id, branch_id, sequence_number)"
                    .into(),
                "CREATE INDEX IF NOT EXISTS idx_structure_turn \
                 ON message_structure (session_id, branch_id, user_turn_number)"
                    .into(),
                "CREATE INDEX IF NOT EXISTS idx_structure_message ON message_structure (message_id)"
                    .into(),
            ],
            lock_session: format!("SELECT 1 FROM {st} WHERE session_id = $1 FOR UPDATE"),
            ensure_session: format!(
                "INSERT INTO {st} (session_id) VALUES ($1) ON CONFLICT (session_id) DO NOTHING"
            ),
            lock_tables: format!("LOCK TABLE {st}, {mt} IN EXCLUSIVE MODE"),
            // The session row first (created, or its lock taken and `updated_at` touched), then
            // the items — one statement: the CTE runs before the rows that join it, and the
            // stamp is read after the lock (a Python writer that held it stamped its rows with
            // its transaction's start, which is earlier).
            insert_items: format!(
                "WITH s AS (INSERT INTO {st} (session_id) VALUES ($1::text) \
                 ON CONFLICT (session_id) DO UPDATE SET updated_at = CURRENT_TIMESTAMP \
                 RETURNING session_id) \
                 INSERT INTO {mt} (session_id, message_data, created_at) \
                 SELECT s.session_id, u.d, {stamp} \
                 FROM s, unnest($2::text[]) WITH ORDINALITY AS u(d, n) \
                 ORDER BY u.n RETURNING id::int8"
            ),
            insert_raw: format!(
                "INSERT INTO {mt} (session_id, message_data, created_at) VALUES ($1::text, $2, {stamp})"
            ),
            select_all: format!(
                "SELECT message_data FROM {mt} WHERE session_id = $1 ORDER BY created_at, id"
            ),
            select_newest: format!(
                "SELECT message_data FROM {mt} WHERE session_id = $1 \
                 ORDER BY created_at DESC, id DESC LIMIT $2"
            ),
            pop_newest: format!(
                "DELETE FROM {mt} WHERE id = (SELECT id FROM {mt} WHERE session_id = $1 \
                 ORDER BY created_at DESC, id DESC LIMIT 1) RETURNING message_data"
            ),
            delete_messages: format!("DELETE FROM {mt} WHERE session_id = $1"),
            delete_session: format!("DELETE FROM {st} WHERE session_id = $1"),
            list_sessions: format!(
                "SELECT s.session_id, {}, {}, \
                 (SELECT count(*) FROM {mt} m WHERE m.session_id = s.session_id) \
                 FROM {st} s ORDER BY s.session_id COLLATE \"C\"",
                ts!("s.created_at"),
                ts!("s.updated_at")
            ),
            idle_sessions: format!(
                "SELECT s.session_id, {}, {}, \
                 (SELECT count(*) FROM {mt} m WHERE m.session_id = s.session_id) \
                 FROM {st} s WHERE s.updated_at < $1::text::timestamp \
                 ORDER BY s.session_id COLLATE \"C\" LIMIT $2",
                ts!("s.created_at"),
                ts!("s.updated_at")
            ),
            session_row: format!(
                "SELECT {}, {} FROM {st} WHERE session_id = $1",
                ts!("created_at"),
                ts!("updated_at")
            ),
            export_messages: format!(
                "SELECT message_data, {} FROM {mt} WHERE session_id = $1 ORDER BY created_at, id",
                ts!("created_at")
            ),
            import_session: format!(
                "INSERT INTO {st} (session_id, created_at, updated_at) VALUES ($1, \
                 COALESCE(NULLIF($2::text, '')::timestamp, CURRENT_TIMESTAMP), \
                 COALESCE(NULLIF($3::text, '')::timestamp, CURRENT_TIMESTAMP)) \
                 ON CONFLICT (session_id) DO NOTHING"
            ),
            // An imported row never sorts before the session's newest: reads keep import order.
            import_message: format!(
                "INSERT INTO {mt} (session_id, message_data, created_at) \
                 SELECT $1::text, $2::text, GREATEST(COALESCE(NULLIF($3::text, '')::timestamp, \
                 clock_timestamp()::timestamp), COALESCE(max(created_at), '-infinity')) \
                 FROM {mt} WHERE session_id = $1::text"
            ),
            items_all: format!(
                "SELECT m.message_data FROM {mt} m JOIN message_structure s ON m.id = s.message_id \
                 WHERE s.session_id = $1 AND s.branch_id = $2 ORDER BY s.sequence_number ASC"
            ),
            items_newest: format!(
                "SELECT m.message_data FROM {mt} m JOIN message_structure s ON m.id = s.message_id \
                 WHERE s.session_id = $1 AND s.branch_id = $2 \
                 ORDER BY s.sequence_number DESC LIMIT $3"
            ),
            message_by_id: format!("SELECT message_data FROM {mt} WHERE id = $1::int8"),
            orphans: format!(
                "DELETE FROM {mt} m WHERE m.session_id = $1 AND NOT EXISTS \
                 (SELECT 1 FROM message_structure ms WHERE ms.message_id = m.id)"
            ),
            turn_user_message: format!(
                "SELECT 1 FROM message_structure ms JOIN {mt} am ON ms.message_id = am.id \
                 WHERE ms.session_id = $1 AND ms.branch_id = $2 \
                 AND ms.branch_turn_number = $3 AND ms.message_type = 'user'"
            ),
            turns: format!("{turns_select} ORDER BY ms.branch_turn_number, ms.sequence_number"),
            find_turns: format!(
                "{turns_select} AND am.message_data ILIKE $3 ESCAPE '\\' \
                 ORDER BY ms.branch_turn_number, ms.sequence_number"
            ),
            foreign_keys: FOREIGN_KEYS,
            table_exists: TABLE_EXISTS,
            sessions: s,
            messages: m,
        })
    }
}

pub(crate) const BEGIN_WRITE: &str = "BEGIN ISOLATION LEVEL READ COMMITTED";
/// One snapshot for a multi-statement read.
pub(crate) const BEGIN_READ: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";
pub(crate) const COMMIT: &str = "COMMIT";
pub(crate) const ROLLBACK: &str = "ROLLBACK";
pub(crate) const SAVEPOINT: &str = "SAVEPOINT request";
/// Undo one request and drop its savepoint.
pub(crate) const ROLLBACK_TO: &str = "ROLLBACK TO SAVEPOINT request; RELEASE SAVEPOINT request";
/// The previous request's RELEASE and the next one's SAVEPOINT, in one round trip.
pub(crate) const RELEASE_THEN_SAVEPOINT: &str = "RELEASE SAVEPOINT request; SAVEPOINT request";
pub(crate) const XACT_ID: &str = "SELECT pg_current_xact_id()::text";
pub(crate) const XACT_STATUS: &str = "SELECT pg_xact_status($1::text::xid8)";
pub(crate) const SCHEMA_AND_VERSION: &str =
    "SELECT current_schema()::text, current_setting('server_version_num')::int4";
/// Serialises DDL across hosts (`CREATE TABLE IF NOT EXISTS` races otherwise).
pub(crate) const DDL_LOCK: &str = "SELECT pg_advisory_xact_lock($1::int8)";
/// Takes the advisory locks of a group in the list's order (the caller sorts it; `keys` is a
/// comma-separated list of integers the engine computed).
pub(crate) fn lock_keys(keys: &str) -> String {
    format!("; SELECT count(pg_advisory_xact_lock(k)) FROM unnest(ARRAY[{keys}]::int8[]) AS k")
}

const FOREIGN_KEYS: &str = "SELECT a.attname::text, ft.relname::text, fa.attname::text \
     FROM pg_constraint c \
     JOIN pg_class t ON t.oid = c.conrelid \
     JOIN pg_namespace n ON n.oid = t.relnamespace \
     JOIN pg_class ft ON ft.oid = c.confrelid \
     JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1] \
     JOIN pg_attribute fa ON fa.attrelid = c.confrelid AND fa.attnum = c.confkey[1] \
     WHERE c.contype = 'f' AND n.nspname = current_schema() AND t.relname = $1";
const TABLE_EXISTS: &str =
    "SELECT 1 FROM pg_class t JOIN pg_namespace n ON n.oid = t.relnamespace \
     WHERE n.nspname = current_schema() AND t.relname = $1 AND t.relkind IN ('r', 'p')";

pub(crate) const GEN_INSERT: &str =
    "INSERT INTO session_clear_generations (session_id, generation) \
     VALUES ($1, 0) ON CONFLICT (session_id) DO NOTHING";
pub(crate) const GEN_SELECT: &str =
    "SELECT generation FROM session_clear_generations WHERE session_id = $1";
pub(crate) const GEN_BUMP: &str =
    "UPDATE session_clear_generations SET generation = generation + 1 WHERE session_id = $1";
pub(crate) const RES_BACKFILL: &str = "INSERT INTO branch_reservations (session_id, branch_id) \
     SELECT DISTINCT session_id, branch_id FROM message_structure WHERE session_id = $1 \
     ON CONFLICT DO NOTHING";
pub(crate) const RES_INSERT: &str = "INSERT INTO branch_reservations (session_id, branch_id) \
     VALUES ($1, $2) ON CONFLICT DO NOTHING";
pub(crate) const SEQ_MAX: &str =
    "SELECT max(sequence_number) FROM message_structure WHERE session_id = $1";
pub(crate) const TURN_MAX: &str =
    "SELECT max(user_turn_number) FROM message_structure WHERE session_id = $1 AND branch_id = $2";
pub(crate) const BRANCH_TURN_MAX: &str = "SELECT max(branch_turn_number) FROM message_structure \
     WHERE session_id = $1 AND branch_id = $2 AND user_turn_number = $3";
pub(crate) const STRUCT_INSERT: &str = "INSERT INTO message_structure (session_id, message_id, \
     branch_id, message_type, sequence_number, user_turn_number, branch_turn_number, tool_name) \
     SELECT $1::text, m, $2::text, t, s, u, b, n FROM unnest($3::int8[], $4::text[], $5::int8[], \
     $6::int8[], $7::int8[], $8::text[]) WITH ORDINALITY AS r(m, t, s, u, b, n, o) ORDER BY o";
pub(crate) const POP_CLAIM: &str = "DELETE FROM message_structure WHERE id = (SELECT id FROM \
     message_structure WHERE session_id = $1 AND branch_id = $2 \
     ORDER BY sequence_number DESC LIMIT 1) RETURNING message_id::int8, user_turn_number";
pub(crate) const TURN_COUNT: &str = "SELECT count(*) FROM message_structure \
     WHERE session_id = $1 AND branch_id = $2 AND user_turn_number = $3";
pub(crate) const USAGE_DELETE_TURN: &str =
    "DELETE FROM turn_usage WHERE session_id = $1 AND branch_id = $2 AND user_turn_number = $3";
pub(crate) const STRUCT_CLEAR: &str = "DELETE FROM message_structure WHERE session_id = $1";
pub(crate) const USAGE_CLEAR: &str = "DELETE FROM turn_usage WHERE session_id = $1";
pub(crate) const ANCHOR: &str = "SELECT min(id) FROM message_structure \
     WHERE session_id = $1 AND branch_id = $2 AND user_turn_number = $3";
pub(crate) const USAGE_GUARD: &str = "SELECT 1 FROM message_structure WHERE session_id = $1 \
     AND branch_id = $2 AND user_turn_number = $3 AND id = $4";
pub(crate) const USAGE_UPSERT: &str = "INSERT INTO turn_usage (session_id, branch_id, \
     user_turn_number, requests, input_tokens, output_tokens, total_tokens, \
     input_tokens_details, output_tokens_details) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
     ON CONFLICT (session_id, branch_id, user_turn_number) DO UPDATE SET \
     requests = EXCLUDED.requests, input_tokens = EXCLUDED.input_tokens, \
     output_tokens = EXCLUDED.output_tokens, total_tokens = EXCLUDED.total_tokens, \
     input_tokens_details = EXCLUDED.input_tokens_details, \
     output_tokens_details = EXCLUDED.output_tokens_details, \
     created_at = date_trunc('second', LOCALTIMESTAMP)";
pub(crate) const BRANCH_COUNT: &str =
    "SELECT count(*) FROM message_structure WHERE session_id = $1 AND branch_id = $2";
pub(crate) const USAGE_DELETE_BRANCH: &str =
    "DELETE FROM turn_usage WHERE session_id = $1 AND branch_id = $2";
pub(crate) const STRUCT_DELETE_BRANCH: &str =
    "DELETE FROM message_structure WHERE session_id = $1 AND branch_id = $2";
pub(crate) const LIST_BRANCHES: &str = concat!(
    "SELECT ms.branch_id::text, count(*), \
     count(CASE WHEN ms.message_type = 'user' THEN 1 END), ",
    ts!("min(ms.created_at)"),
    " FROM message_structure ms WHERE ms.session_id = $1 \
     GROUP BY ms.branch_id ORDER BY min(ms.created_at), ms.branch_id COLLATE \"C\""
);
pub(crate) const COPY_SELECT: &str = "SELECT ms.message_id::int8, ms.message_type::text, \
     ms.user_turn_number, ms.branch_turn_number, ms.tool_name::text FROM message_structure ms \
     WHERE ms.session_id = $1 AND ms.branch_id = $2 AND ms.branch_turn_number < $3 \
     ORDER BY ms.sequence_number";
pub(crate) const BY_TURNS: &str =
    "SELECT user_turn_number, message_type::text, tool_name::text FROM message_structure \
     WHERE session_id = $1 AND branch_id = $2 ORDER BY sequence_number";
pub(crate) const TOOL_USAGE: &str = "SELECT tool_name::text, sum(usage_count)::int8, \
     user_turn_number FROM ( \
     SELECT COALESCE(tool_name, CASE WHEN message_type IN ('shell_call', 'apply_patch_call') \
     THEN message_type END) AS tool_name, 1 AS usage_count, user_turn_number \
     FROM message_structure WHERE session_id = $1 AND branch_id = $2 AND message_type IN ( \
     'tool_call', 'function_call', 'computer_call', 'file_search_call', 'web_search_call', \
     'code_interpreter_call', 'tool_search_call', 'custom_tool_call', 'mcp_call', \
     'mcp_approval_request', 'shell_call', 'apply_patch_call') \
     UNION ALL \
     SELECT ms.tool_name, 1 AS usage_count, ms.user_turn_number FROM message_structure ms \
     WHERE ms.session_id = $1 AND ms.branch_id = $2 AND ms.message_type = 'tool_search_output' \
     AND NOT EXISTS (SELECT 1 FROM message_structure calls \
     WHERE calls.session_id = ms.session_id AND calls.branch_id = ms.branch_id \
     AND calls.user_turn_number = ms.user_turn_number AND calls.tool_name = ms.tool_name \
     AND calls.message_type = 'tool_search_call')) AS uses \
     GROUP BY tool_name, user_turn_number \
     ORDER BY user_turn_number, tool_name COLLATE \"C\" NULLS FIRST";
pub(crate) const USAGE_SUM_BRANCH: &str = "SELECT sum(requests)::int8, sum(input_tokens)::int8, \
     sum(output_tokens)::int8, sum(total_tokens)::int8, count(*) FROM turn_usage \
     WHERE session_id = $1 AND branch_id = $2";
pub(crate) const USAGE_SUM_ALL: &str = "SELECT sum(requests)::int8, sum(input_tokens)::int8, \
     sum(output_tokens)::int8, sum(total_tokens)::int8, count(*) FROM turn_usage \
     WHERE session_id = $1";
pub(crate) const TURN_USAGE_ONE: &str = "SELECT user_turn_number, requests, input_tokens, \
     output_tokens, total_tokens, input_tokens_details, output_tokens_details FROM turn_usage \
     WHERE session_id = $1 AND branch_id = $2 AND user_turn_number = $3";
pub(crate) const TURN_USAGE_ALL: &str = "SELECT user_turn_number, requests, input_tokens, \
     output_tokens, total_tokens, input_tokens_details, output_tokens_details FROM turn_usage \
     WHERE session_id = $1 AND branch_id = $2 ORDER BY user_turn_number";

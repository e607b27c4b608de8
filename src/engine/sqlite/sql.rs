//! Every SQL text of the SQLite engine: the DDL (byte for byte Python's, so `sqlite_master`
//! reads the same whichever side created the tables), the statements over the fixed-name
//! Advanced tables as constants, and the statements that name an opener's table pair, built
//! once per opener so each connection's statement cache (`prepare_cached`) keys on them.
//! Nothing here is built from user text: only validated [`Ident`]s are spliced in.

use crate::engine::ident::Ident;
use crate::error::{Error, Result};

// ------------------------------------------------------------------------------------------
// Connections and transactions
// ------------------------------------------------------------------------------------------

/// The writer's group transaction: `IMMEDIATE`, so SQLite's busy handler applies to taking the
/// write lock (a deferred transaction upgraded later fails at once with `SQLITE_BUSY`).
pub(crate) const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";
/// A reader's snapshot for one multi-statement read.
pub(crate) const BEGIN_READ: &str = "BEGIN";
pub(crate) const COMMIT: &str = "COMMIT";
pub(crate) const ROLLBACK: &str = "ROLLBACK";
/// One request inside the writer's group transaction.
pub(crate) const SAVEPOINT: &str = "SAVEPOINT request";
pub(crate) const RELEASE: &str = "RELEASE request";
pub(crate) const ROLLBACK_TO: &str = "ROLLBACK TO request";
pub(crate) const JOURNAL_WAL: &str = "PRAGMA journal_mode=WAL";
/// Reads the schema, so a file that is not a database fails at open, not on the first read.
pub(crate) const TOUCH_SCHEMA: &str = "SELECT count(*) FROM sqlite_master";

/// `PRAGMA max_page_count` (a test hook: a database capped at `pages` pages).
pub(crate) fn max_page_count(pages: u32) -> String {
    format!("PRAGMA max_page_count = {pages}")
}

// ------------------------------------------------------------------------------------------
// Statements that name the opener's tables
// ------------------------------------------------------------------------------------------

/// One opener's pair of tables and every statement that names them.
#[derive(Debug)]
pub(crate) struct Tables {
    pub(crate) sessions: Ident,
    pub(crate) messages: Ident,
    pub(crate) basic: BasicSql,
    pub(crate) advanced: AdvancedSql,
}

/// The base tables' DDL and the basic session statements (Python's `SQLiteSession`).
#[derive(Debug)]
pub(crate) struct BasicSql {
    pub(crate) ddl: Vec<String>,
    pub(crate) insert_session: String,
    pub(crate) insert_message: String,
    pub(crate) touch_session: String,
    pub(crate) select_all: String,
    pub(crate) select_newest: String,
    pub(crate) pop_newest: String,
    pub(crate) delete_messages: String,
    pub(crate) delete_session: String,
    pub(crate) list_sessions: String,
    /// Sessions last updated before a cutoff, at most a count of them (prune).
    pub(crate) idle_sessions: String,
    pub(crate) session_row: String,
    pub(crate) export_messages: String,
    pub(crate) import_session: String,
    pub(crate) import_message: String,
}

impl Tables {
    /// Validate the table names and build their statements.
    pub(crate) fn new(sessions: &str, messages: &str) -> Result<Tables> {
        let s = Ident::parse(sessions, "sessions table")?;
        let m = Ident::parse(messages, "messages table")?;
        if s.name().eq_ignore_ascii_case(m.name()) {
            return Err(Error::InvalidArgument(format!(
                "the sessions and messages tables must differ (both are {:?})",
                s.name()
            )));
        }
        let (st, mt) = (s.sql(), m.sql());
        let ddl = vec![
            format!(
                "\n            CREATE TABLE IF NOT EXISTS {st} (\n                session_id TEXT PRIMARY KEY,\n                created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,\n                updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP\n            )\n        "
            ),
            format!(
                "\n            CREATE TABLE IF NOT EXISTS {mt} (\n                id INTEGER PRIMARY KEY AUTOINCREMENT,\n                session_id TEXT NOT NULL,\n                message_data TEXT NOT NULL,\n                created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,\n                FOREIGN KEY (session_id) REFERENCES {st} (session_id)\n                    ON DELETE CASCADE\n            )\n        "
            ),
            format!(
                "\n            CREATE INDEX IF NOT EXISTS {}\n            ON {mt} (session_id, id)\n        ",
                m.index_name()
            ),
        ];
        let basic = BasicSql {
            ddl,
            insert_session: format!("INSERT OR IGNORE INTO {st} (session_id) VALUES (?1)"),
            insert_message: format!("INSERT INTO {mt} (session_id, message_data) VALUES (?1, ?2)"),
            touch_session: format!(
                "UPDATE {st} SET updated_at = CURRENT_TIMESTAMP WHERE session_id = ?1"
            ),
            select_all: format!(
                "SELECT message_data FROM {mt} WHERE session_id = ?1 ORDER BY id ASC"
            ),
            select_newest: format!(
                "SELECT message_data FROM {mt} WHERE session_id = ?1 ORDER BY id DESC LIMIT ?2"
            ),
            pop_newest: format!(
                "DELETE FROM {mt} WHERE id = (SELECT id FROM {mt} WHERE session_id = ?1 \
                 ORDER BY id DESC LIMIT 1) RETURNING message_data"
            ),
            delete_messages: format!("DELETE FROM {mt} WHERE session_id = ?1"),
            delete_session: format!("DELETE FROM {st} WHERE session_id = ?1"),
            idle_sessions: format!(
                "SELECT s.session_id, s.created_at, s.updated_at, \
                 (SELECT COUNT(*) FROM {mt} m WHERE m.session_id = s.session_id) \
                 FROM {st} s WHERE s.updated_at < ?1 AND typeof(s.session_id) = 'text' \
                 ORDER BY s.session_id LIMIT ?2"
            ),
            list_sessions: format!(
                "SELECT s.session_id, s.created_at, s.updated_at, \
                 (SELECT COUNT(*) FROM {mt} m WHERE m.session_id = s.session_id) \
                 FROM {st} s ORDER BY s.session_id"
            ),
            session_row: format!("SELECT created_at, updated_at FROM {st} WHERE session_id = ?1"),
            export_messages: format!(
                "SELECT message_data, created_at FROM {mt} WHERE session_id = ?1 ORDER BY id ASC"
            ),
            import_session: format!(
                "INSERT OR IGNORE INTO {st} (session_id, created_at, updated_at) \
                 VALUES (?1, COALESCE(NULLIF(?2, ''), CURRENT_TIMESTAMP), \
                 COALESCE(NULLIF(?3, ''), CURRENT_TIMESTAMP))"
            ),
            import_message: format!(
                "INSERT INTO {mt} (session_id, message_data, created_at) \
                 VALUES (?1, ?2, COALESCE(?3, CURRENT_TIMESTAMP))"
            ),
        };
        let advanced = AdvancedSql::new(&s, &m);
        Ok(Tables {
            sessions: s,
            messages: m,
            basic,
            advanced,
        })
    }
}

/// The structure tables' DDL and the Advanced statements that name the opener's tables.
#[derive(Debug)]
pub(crate) struct AdvancedSql {
    /// `message_structure` and `turn_usage`, whose foreign keys name the opener's tables.
    pub(crate) structure_ddl: [String; 2],
    pub(crate) items_all: String,
    pub(crate) items_newest: String,
    pub(crate) message_by_id: String,
    pub(crate) orphans: String,
    pub(crate) turn_user_message: String,
    pub(crate) turns: String,
    /// [`AdvancedSql::turns`] prefiltered by a [`like_pattern`](crate::engine::advanced::like_pattern) (`?3`).
    pub(crate) find_turns: String,
}

impl AdvancedSql {
    fn new(s: &Ident, m: &Ident) -> AdvancedSql {
        let (st, mt) = (s.sql(), m.sql());
        let turns_select = format!(
            "SELECT ms.branch_turn_number, am.message_data, ms.created_at \
             FROM message_structure ms JOIN {mt} am ON ms.message_id = am.id \
             WHERE ms.session_id = ?1 AND ms.branch_id = ?2 AND ms.message_type = 'user'"
        );
        AdvancedSql {
            structure_ddl: [
                format!(
                    "\n            CREATE TABLE IF NOT EXISTS message_structure (\n                id INTEGER PRIMARY KEY AUTOINCREMENT,\n                session_id TEXT NOT NULL,\n                message_id INTEGER NOT NULL,\n                branch_id TEXT NOT NULL DEFAULT 'main',\n                message_type TEXT NOT NULL,\n                sequence_number INTEGER NOT NULL,\n                user_turn_number INTEGER,\n                branch_turn_number INTEGER,\n                tool_name TEXT,\n                created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,\n                FOREIGN KEY (session_id)\n                    REFERENCES {st}(session_id) ON DELETE CASCADE,\n                FOREIGN KEY (message_id)\n                    REFERENCES {mt}(id) ON DELETE CASCADE\n            )\n        "
                ),
                format!(
                    "\n            CREATE TABLE IF NOT EXISTS turn_usage (\n                id INTEGER PRIMARY KEY AUTOINCREMENT,\n                session_id TEXT NOT NULL,\n                branch_id TEXT NOT NULL DEFAULT 'main',\n                user_turn_number INTEGER NOT NULL,\n                requests INTEGER DEFAULT 0,\n                input_tokens INTEGER DEFAULT 0,\n                output_tokens INTEGER DEFAULT 0,\n                total_tokens INTEGER DEFAULT 0,\n                input_tokens_details JSON,\n                output_tokens_details JSON,\n                created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,\n                FOREIGN KEY (session_id)\n                    REFERENCES {st}(session_id) ON DELETE CASCADE,\n                UNIQUE(session_id, branch_id, user_turn_number)\n            )\n        "
                ),
            ],
            // Python filters on `m.session_id` only; also naming `s.session_id` (the same rows:
            // a structure row points at a message of its own session) lets SQLite walk
            // `idx_structure_branch_seq` instead of every session's rows.
            items_all: format!(
                "SELECT m.message_data FROM {mt} m JOIN message_structure s ON m.id = s.message_id \
                 WHERE m.session_id = ?1 AND s.session_id = ?1 AND s.branch_id = ?2 \
                 ORDER BY s.sequence_number ASC"
            ),
            items_newest: format!(
                "SELECT m.message_data FROM {mt} m JOIN message_structure s ON m.id = s.message_id \
                 WHERE m.session_id = ?1 AND s.session_id = ?1 AND s.branch_id = ?2 \
                 ORDER BY s.sequence_number DESC LIMIT ?3"
            ),
            message_by_id: format!("SELECT message_data FROM {mt} WHERE id = ?1"),
            orphans: format!(
                "DELETE FROM {mt} WHERE session_id = ?1 AND id NOT IN \
                 (SELECT message_id FROM message_structure ms WHERE ms.session_id = ?1)"
            ),
            turn_user_message: format!(
                "SELECT am.message_data FROM message_structure ms \
                 JOIN {mt} am ON ms.message_id = am.id \
                 WHERE ms.session_id = ?1 AND ms.branch_id = ?2 \
                 AND ms.branch_turn_number = ?3 AND ms.message_type = 'user'"
            ),
            turns: format!("{turns_select} ORDER BY ms.branch_turn_number, ms.sequence_number"),
            find_turns: format!(
                "{turns_select} AND am.message_data LIKE ?3 ESCAPE '\\' \
                 ORDER BY ms.branch_turn_number, ms.sequence_number"
            ),
        }
    }
}

// ------------------------------------------------------------------------------------------
// The fixed-name Advanced tables
// ------------------------------------------------------------------------------------------

// Python's DDL for the tables and indexes that name no opener table, in Python's order.
pub(crate) const RESERVATIONS_DDL: &str = "\n            CREATE TABLE IF NOT EXISTS branch_reservations (\n                session_id TEXT NOT NULL,\n                branch_id TEXT NOT NULL,\n                PRIMARY KEY (session_id, branch_id)\n            )\n        ";
pub(crate) const GENERATIONS_DDL: &str = "\n            CREATE TABLE IF NOT EXISTS session_clear_generations (\n                session_id TEXT PRIMARY KEY,\n                generation INTEGER NOT NULL DEFAULT 0\n            )\n        ";
pub(crate) const INDEX_DDL: [&str; 5] = [
    "\n            CREATE INDEX IF NOT EXISTS idx_structure_session_seq\n            ON message_structure(session_id, sequence_number)\n        ",
    "\n            CREATE INDEX IF NOT EXISTS idx_structure_branch\n            ON message_structure(session_id, branch_id)\n        ",
    "\n            CREATE INDEX IF NOT EXISTS idx_structure_turn\n            ON message_structure(session_id, branch_id, user_turn_number)\n        ",
    "\n            CREATE INDEX IF NOT EXISTS idx_structure_branch_seq\n            ON message_structure(session_id, branch_id, sequence_number)\n        ",
    "\n            CREATE INDEX IF NOT EXISTS idx_turn_usage_session_turn\n            ON turn_usage(session_id, branch_id, user_turn_number)\n        ",
];

pub(crate) const GEN_INSERT: &str =
    "INSERT OR IGNORE INTO session_clear_generations (session_id, generation) VALUES (?1, 0)";
pub(crate) const GEN_SELECT: &str =
    "SELECT generation FROM session_clear_generations WHERE session_id = ?1";
pub(crate) const GEN_BUMP: &str =
    "UPDATE session_clear_generations SET generation = generation + 1 WHERE session_id = ?1";
pub(crate) const RES_MISSING: &str = "SELECT 1 FROM message_structure ms WHERE ms.session_id = ?1 \
     AND NOT EXISTS (SELECT 1 FROM branch_reservations br \
     WHERE br.session_id = ms.session_id AND br.branch_id = ms.branch_id) LIMIT 1";
pub(crate) const RES_BACKFILL: &str =
    "INSERT OR IGNORE INTO branch_reservations (session_id, branch_id) \
     SELECT DISTINCT session_id, branch_id FROM message_structure WHERE session_id = ?1";
pub(crate) const RES_INSERT: &str =
    "INSERT OR IGNORE INTO branch_reservations (session_id, branch_id) VALUES (?1, ?2)";
// Bare MAX/MIN aggregates over an index prefix, so SQLite answers them with one index probe
// (Python wraps them in COALESCE and asks for both turn maxima at once, which costs a scan of
// the session or branch on every write).
pub(crate) const SEQ_MAX: &str =
    "SELECT MAX(sequence_number) FROM message_structure WHERE session_id = ?1";
pub(crate) const TURN_MAX: &str =
    "SELECT MAX(user_turn_number) FROM message_structure WHERE session_id = ?1 AND branch_id = ?2";
// `branch_turn_number` has no index; the protocol asks for the highest one only among the rows
// of the branch's highest user turn (see `StructureRows::max_branch_turn`), which is a probe of
// `idx_structure_turn` instead of a scan of the branch.
pub(crate) const BRANCH_TURN_MAX: &str = "SELECT MAX(branch_turn_number) FROM message_structure \
     WHERE session_id = ?1 AND branch_id = ?2 AND user_turn_number = ?3";
pub(crate) const STRUCT_INSERT: &str =
    "INSERT INTO message_structure (session_id, message_id, branch_id, \
     message_type, sequence_number, user_turn_number, branch_turn_number, tool_name) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";
pub(crate) const POP_CLAIM: &str = "DELETE FROM message_structure WHERE id = (SELECT id FROM \
     message_structure WHERE session_id = ?1 AND branch_id = ?2 \
     ORDER BY sequence_number DESC LIMIT 1) RETURNING message_id, user_turn_number";
pub(crate) const TURN_COUNT: &str = "SELECT COUNT(*) FROM message_structure \
     WHERE session_id = ?1 AND branch_id = ?2 AND user_turn_number = ?3";
pub(crate) const USAGE_DELETE_TURN: &str =
    "DELETE FROM turn_usage WHERE session_id = ?1 AND branch_id = ?2 AND user_turn_number = ?3";
pub(crate) const STRUCT_CLEAR: &str = "DELETE FROM message_structure WHERE session_id = ?1";
pub(crate) const USAGE_CLEAR: &str = "DELETE FROM turn_usage WHERE session_id = ?1";
pub(crate) const ANCHOR: &str = "SELECT MIN(id) FROM message_structure \
     WHERE session_id = ?1 AND branch_id = ?2 AND user_turn_number = ?3";
pub(crate) const USAGE_GUARD: &str = "SELECT 1 FROM message_structure WHERE session_id = ?1 \
     AND branch_id = ?2 AND user_turn_number = ?3 AND id = ?4";
pub(crate) const USAGE_UPSERT: &str = "INSERT OR REPLACE INTO turn_usage (session_id, branch_id, \
     user_turn_number, requests, input_tokens, output_tokens, total_tokens, \
     input_tokens_details, output_tokens_details) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";
pub(crate) const BRANCH_COUNT: &str =
    "SELECT COUNT(*) FROM message_structure WHERE session_id = ?1 AND branch_id = ?2";
pub(crate) const USAGE_DELETE_BRANCH: &str =
    "DELETE FROM turn_usage WHERE session_id = ?1 AND branch_id = ?2";
pub(crate) const STRUCT_DELETE_BRANCH: &str =
    "DELETE FROM message_structure WHERE session_id = ?1 AND branch_id = ?2";
// Python orders by `created_at` alone; ties (same second) come out by branch id in practice,
// which is made explicit here.
pub(crate) const LIST_BRANCHES: &str = "SELECT ms.branch_id, COUNT(*) AS message_count, \
     COUNT(CASE WHEN ms.message_type = 'user' THEN 1 END) AS user_turns, \
     MIN(ms.created_at) AS created_at FROM message_structure ms WHERE ms.session_id = ?1 \
     GROUP BY ms.branch_id ORDER BY created_at, ms.branch_id";
pub(crate) const COPY_SELECT: &str = "SELECT ms.message_id, ms.message_type, ms.user_turn_number, \
     ms.branch_turn_number, ms.tool_name FROM message_structure ms \
     WHERE ms.session_id = ?1 AND ms.branch_id = ?2 AND ms.branch_turn_number < ?3 \
     ORDER BY ms.sequence_number";
pub(crate) const BY_TURNS: &str =
    "SELECT user_turn_number, message_type, tool_name FROM message_structure \
     WHERE session_id = ?1 AND branch_id = ?2 ORDER BY sequence_number";
// Python orders by turn alone; within a turn SQLite gives tool names ascending (NULL first),
// made explicit here.
pub(crate) const TOOL_USAGE: &str = "SELECT tool_name, SUM(usage_count), user_turn_number FROM ( \
     SELECT COALESCE(tool_name, CASE WHEN message_type IN ('shell_call', 'apply_patch_call') \
     THEN message_type END) AS tool_name, 1 AS usage_count, user_turn_number \
     FROM message_structure WHERE session_id = ?1 AND branch_id = ?2 AND message_type IN ( \
     'tool_call', 'function_call', 'computer_call', 'file_search_call', 'web_search_call', \
     'code_interpreter_call', 'tool_search_call', 'custom_tool_call', 'mcp_call', \
     'mcp_approval_request', 'shell_call', 'apply_patch_call') \
     UNION ALL \
     SELECT ms.tool_name, 1 AS usage_count, ms.user_turn_number FROM message_structure ms \
     WHERE ms.session_id = ?1 AND ms.branch_id = ?2 AND ms.message_type = 'tool_search_output' \
     AND NOT EXISTS (SELECT 1 FROM message_structure calls \
     WHERE calls.session_id = ms.session_id AND calls.branch_id = ms.branch_id \
     AND calls.user_turn_number = ms.user_turn_number AND calls.tool_name = ms.tool_name \
     AND calls.message_type = 'tool_search_call')) \
     GROUP BY tool_name, user_turn_number ORDER BY user_turn_number, tool_name";
pub(crate) const USAGE_SUM_BRANCH: &str =
    "SELECT SUM(requests), SUM(input_tokens), SUM(output_tokens), \
     SUM(total_tokens), COUNT(*) FROM turn_usage WHERE session_id = ?1 AND branch_id = ?2";
pub(crate) const USAGE_SUM_ALL: &str =
    "SELECT SUM(requests), SUM(input_tokens), SUM(output_tokens), \
     SUM(total_tokens), COUNT(*) FROM turn_usage WHERE session_id = ?1";
pub(crate) const TURN_USAGE_ONE: &str =
    "SELECT user_turn_number, requests, input_tokens, output_tokens, \
     total_tokens, input_tokens_details, output_tokens_details FROM turn_usage \
     WHERE session_id = ?1 AND branch_id = ?2 AND user_turn_number = ?3";
pub(crate) const TURN_USAGE_ALL: &str =
    "SELECT user_turn_number, requests, input_tokens, output_tokens, \
     total_tokens, input_tokens_details, output_tokens_details FROM turn_usage \
     WHERE session_id = ?1 AND branch_id = ?2 ORDER BY user_turn_number";
// The ownership check's reads of the schema.
pub(crate) const FOREIGN_KEYS: &str =
    "SELECT \"table\", \"from\", \"to\" FROM pragma_foreign_key_list(?1)";
pub(crate) const TABLE_NAME: &str =
    "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?1 COLLATE NOCASE";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_tables_must_differ_as_sqlite_compares_names() {
        assert!(matches!(
            Tables::new("same", "SAME"),
            Err(Error::InvalidArgument(_))
        ));
    }
}

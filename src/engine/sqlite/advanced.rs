//! Advanced sessions in SQL (SPEC §5.3): the Python SDK's `AdvancedSQLiteSession` statement for
//! statement, with two deliberate differences the SPEC asks for — every write runs atomically in
//! the writer's `BEGIN IMMEDIATE` group transaction (so capture-then-write sequences such as the
//! usage guard cannot interleave with other writers), and the handle state travels with each
//! operation as a [`HandleView`] instead of living in a shared object.
//!
//! The semantics are the reference model's ([`agent_sessions_model::advanced`]); the item-level rules
//! (classification, tool names, turn content, search matching) are the model's own functions,
//! and every error is built by [`agent_sessions_model::advanced::errors`], so the engine and the model
//! cannot drift apart in wording either.

use agent_sessions_model::advanced::{
    classify, errors, is_blank, is_user_item, tool_name, turn_matches, user_content,
};
use agent_sessions_model::{
    parse_item, AdvancedAnswer, AdvancedOp, BranchInfo, HandleView, Item, ModelError, Outcome,
    StructureStatus, ToolUse, TurnAnchor, TurnGroup, TurnItem, TurnRecord, TurnUsage, Usage,
    UsageTotals,
};
use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;

use super::basic::{limited_items, text_of};
use super::schema::{Ident, Tables};
use crate::error::{Error, Result};

/// The structure-table DDL and every Advanced statement of one opener, built once.
#[derive(Debug)]
pub struct AdvSql {
    /// `message_structure` and `turn_usage` (they name the opener's tables), byte for byte
    /// Python's text so `sqlite_master` reads the same whichever side created them.
    structure_ddl: [String; 2],
    items_all: String,
    items_newest: String,
    message_by_id: String,
    orphans: String,
    turn_user_message: String,
    turns: String,
    find_turns: String,
}

const RESERVATIONS_DDL: &str = "\n            CREATE TABLE IF NOT EXISTS branch_reservations (\n                session_id TEXT NOT NULL,\n                branch_id TEXT NOT NULL,\n                PRIMARY KEY (session_id, branch_id)\n            )\n        ";
const GENERATIONS_DDL: &str = "\n            CREATE TABLE IF NOT EXISTS session_clear_generations (\n                session_id TEXT PRIMARY KEY,\n                generation INTEGER NOT NULL DEFAULT 0\n            )\n        ";
const INDEX_DDL: [&str; 5] = [
    "\n            CREATE INDEX IF NOT EXISTS idx_structure_session_seq\n            ON message_structure(session_id, sequence_number)\n        ",
    "\n            CREATE INDEX IF NOT EXISTS idx_structure_branch\n            ON message_structure(session_id, branch_id)\n        ",
    "\n            CREATE INDEX IF NOT EXISTS idx_structure_turn\n            ON message_structure(session_id, branch_id, user_turn_number)\n        ",
    "\n            CREATE INDEX IF NOT EXISTS idx_structure_branch_seq\n            ON message_structure(session_id, branch_id, sequence_number)\n        ",
    "\n            CREATE INDEX IF NOT EXISTS idx_turn_usage_session_turn\n            ON turn_usage(session_id, branch_id, user_turn_number)\n        ",
];

const GEN_INSERT: &str =
    "INSERT OR IGNORE INTO session_clear_generations (session_id, generation) VALUES (?1, 0)";
const GEN_SELECT: &str = "SELECT generation FROM session_clear_generations WHERE session_id = ?1";
const GEN_BUMP: &str =
    "UPDATE session_clear_generations SET generation = generation + 1 WHERE session_id = ?1";
const RES_MISSING: &str = "SELECT 1 FROM message_structure ms WHERE ms.session_id = ?1 \
     AND NOT EXISTS (SELECT 1 FROM branch_reservations br \
     WHERE br.session_id = ms.session_id AND br.branch_id = ms.branch_id) LIMIT 1";
const RES_BACKFILL: &str = "INSERT OR IGNORE INTO branch_reservations (session_id, branch_id) \
     SELECT DISTINCT session_id, branch_id FROM message_structure WHERE session_id = ?1";
const RES_INSERT: &str =
    "INSERT OR IGNORE INTO branch_reservations (session_id, branch_id) VALUES (?1, ?2)";
// Bare MAX/MIN aggregates over an index prefix, so SQLite answers them with one index probe
// (Python wraps them in COALESCE and asks for both turn maxima at once, which costs a scan of
// the session or branch on every write).
const SEQ_MAX: &str = "SELECT MAX(sequence_number) FROM message_structure WHERE session_id = ?1";
const TURN_MAX: &str =
    "SELECT MAX(user_turn_number) FROM message_structure WHERE session_id = ?1 AND branch_id = ?2";
// `branch_turn_number` has no index. Every writer (Python's and this one) gives a row equal user
// and branch turn numbers, so the branch's highest branch turn is found among the rows of its
// highest user turn: a probe of `idx_structure_turn` instead of a scan of the branch.
const BRANCH_TURN_MAX: &str = "SELECT MAX(branch_turn_number) FROM message_structure \
     WHERE session_id = ?1 AND branch_id = ?2 AND user_turn_number = ?3";
const STRUCT_INSERT: &str = "INSERT INTO message_structure (session_id, message_id, branch_id, \
     message_type, sequence_number, user_turn_number, branch_turn_number, tool_name) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";
const POP_CLAIM: &str = "DELETE FROM message_structure WHERE id = (SELECT id FROM \
     message_structure WHERE session_id = ?1 AND branch_id = ?2 \
     ORDER BY sequence_number DESC LIMIT 1) RETURNING message_id, user_turn_number";
const TURN_COUNT: &str = "SELECT COUNT(*) FROM message_structure \
     WHERE session_id = ?1 AND branch_id = ?2 AND user_turn_number = ?3";
const USAGE_DELETE_TURN: &str =
    "DELETE FROM turn_usage WHERE session_id = ?1 AND branch_id = ?2 AND user_turn_number = ?3";
const STRUCT_CLEAR: &str = "DELETE FROM message_structure WHERE session_id = ?1";
const USAGE_CLEAR: &str = "DELETE FROM turn_usage WHERE session_id = ?1";
const ANCHOR: &str = "SELECT MIN(id) FROM message_structure \
     WHERE session_id = ?1 AND branch_id = ?2 AND user_turn_number = ?3";
const USAGE_GUARD: &str = "SELECT 1 FROM message_structure WHERE session_id = ?1 \
     AND branch_id = ?2 AND user_turn_number = ?3 AND id = ?4";
const USAGE_UPSERT: &str = "INSERT OR REPLACE INTO turn_usage (session_id, branch_id, \
     user_turn_number, requests, input_tokens, output_tokens, total_tokens, \
     input_tokens_details, output_tokens_details) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";
const BRANCH_COUNT: &str =
    "SELECT COUNT(*) FROM message_structure WHERE session_id = ?1 AND branch_id = ?2";
const USAGE_DELETE_BRANCH: &str = "DELETE FROM turn_usage WHERE session_id = ?1 AND branch_id = ?2";
const STRUCT_DELETE_BRANCH: &str =
    "DELETE FROM message_structure WHERE session_id = ?1 AND branch_id = ?2";
// Python orders by `created_at` alone; ties (same second) come out by branch id in practice,
// which is made explicit here.
const LIST_BRANCHES: &str = "SELECT ms.branch_id, COUNT(*) AS message_count, \
     COUNT(CASE WHEN ms.message_type = 'user' THEN 1 END) AS user_turns, \
     MIN(ms.created_at) AS created_at FROM message_structure ms WHERE ms.session_id = ?1 \
     GROUP BY ms.branch_id ORDER BY created_at, ms.branch_id";
const COPY_SELECT: &str = "SELECT ms.message_id, ms.message_type, ms.user_turn_number, \
     ms.branch_turn_number, ms.tool_name FROM message_structure ms \
     WHERE ms.session_id = ?1 AND ms.branch_id = ?2 AND ms.branch_turn_number < ?3 \
     ORDER BY ms.sequence_number";
const BY_TURNS: &str = "SELECT user_turn_number, message_type, tool_name FROM message_structure \
     WHERE session_id = ?1 AND branch_id = ?2 ORDER BY sequence_number";
// Python orders by turn alone; within a turn SQLite gives tool names ascending (NULL first),
// made explicit here.
const TOOL_USAGE: &str = "SELECT tool_name, SUM(usage_count), user_turn_number FROM ( \
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
const USAGE_SUM_BRANCH: &str = "SELECT SUM(requests), SUM(input_tokens), SUM(output_tokens), \
     SUM(total_tokens), COUNT(*) FROM turn_usage WHERE session_id = ?1 AND branch_id = ?2";
const USAGE_SUM_ALL: &str = "SELECT SUM(requests), SUM(input_tokens), SUM(output_tokens), \
     SUM(total_tokens), COUNT(*) FROM turn_usage WHERE session_id = ?1";
const TURN_USAGE_ONE: &str = "SELECT user_turn_number, requests, input_tokens, output_tokens, \
     total_tokens, input_tokens_details, output_tokens_details FROM turn_usage \
     WHERE session_id = ?1 AND branch_id = ?2 AND user_turn_number = ?3";
const TURN_USAGE_ALL: &str = "SELECT user_turn_number, requests, input_tokens, output_tokens, \
     total_tokens, input_tokens_details, output_tokens_details FROM turn_usage \
     WHERE session_id = ?1 AND branch_id = ?2 ORDER BY user_turn_number";
const FOREIGN_KEYS: &str = "SELECT \"table\", \"from\", \"to\" FROM pragma_foreign_key_list(?1)";
const TABLE_NAME: &str =
    "SELECT name FROM sqlite_master WHERE type = 'table' AND name = ?1 COLLATE NOCASE";

impl AdvSql {
    pub fn new(s: &Ident, m: &Ident) -> AdvSql {
        let (st, mt) = (s.sql(), m.sql());
        let turns_select = format!(
            "SELECT ms.branch_turn_number, am.message_data, ms.created_at \
             FROM message_structure ms JOIN {mt} am ON ms.message_id = am.id \
             WHERE ms.session_id = ?1 AND ms.branch_id = ?2 AND ms.message_type = 'user'"
        );
        AdvSql {
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
// Creating and claiming the structure tables
// ------------------------------------------------------------------------------------------

/// Create the structure tables, check that they belong to this opener's table pair, then create
/// the helper tables and indexes (Python's order, so `sqlite_master` matches). Runs inside the
/// writer's transaction: a rejected claim rolls back with the request and leaves nothing.
pub(super) fn init_structure(conn: &Connection, t: &Tables) -> Result<()> {
    for ddl in &t.adv.structure_ddl {
        conn.execute(ddl, [])?;
    }
    if let Err(why) = ownership(conn, t)? {
        return Err(Error::Schema(why));
    }
    conn.execute(RESERVATIONS_DDL, [])?;
    conn.execute(GENERATIONS_DDL, [])?;
    for ddl in INDEX_DDL {
        conn.execute(ddl, [])?;
    }
    Ok(())
}

/// Whether the structure tables exist and belong to this opener's pair (read-only).
pub(super) fn structure_status(conn: &Connection, t: &Tables) -> Result<StructureStatus> {
    let exists = |name: &str| -> Result<bool> {
        Ok(conn
            .prepare_cached(TABLE_NAME)?
            .query_row([name], |_| Ok(()))
            .optional()?
            .is_some())
    };
    if !exists("message_structure")? && !exists("turn_usage")? {
        return Ok(StructureStatus::Missing);
    }
    Ok(match ownership(conn, t)? {
        Ok(()) => StructureStatus::Owned,
        Err(why) => StructureStatus::Rejected(why),
    })
}

/// One foreign key as `PRAGMA foreign_key_list` reports it.
#[derive(Clone)]
struct ForeignKey {
    table: String,
    from: String,
    to: Option<String>,
}

fn foreign_keys(conn: &Connection, table: &str) -> Result<Vec<ForeignKey>> {
    let mut stmt = conn.prepare_cached(FOREIGN_KEYS)?;
    let rows = stmt.query_map([table], |r| {
        Ok(ForeignKey {
            table: text_of(r.get_ref(0)?).unwrap_or_default(),
            from: text_of(r.get_ref(1)?).unwrap_or_default(),
            to: text_of(r.get_ref(2)?),
        })
    })?;
    Ok(rows.collect::<rusqlite::Result<_>>()?)
}

/// SQLite's identifier comparison (`NOCASE`: ASCII case folding only).
fn same_ident(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// The structure tables that record their owner, and the columns that must reference it.
const OWNER_COLUMNS: [(&str, &[&str]); 2] = [
    ("message_structure", &["session_id", "message_id"]),
    ("turn_usage", &["session_id"]),
];

/// The ownership check of SPEC §5.3 (Python's `_claim_structure_tables`): `Ok(Err(why))` when
/// the structure tables are missing, malformed or owned by another pair.
fn ownership(conn: &Connection, t: &Tables) -> Result<std::result::Result<(), String>> {
    // 1. Each structure table records exactly one owner foreign key per required column.
    let mut owners: Vec<(&str, Vec<ForeignKey>)> = Vec::new();
    for (table, columns) in OWNER_COLUMNS {
        let fks = foreign_keys(conn, table)?;
        let mut found = Vec::new();
        for column in columns {
            let mut matching = fks.iter().filter(|fk| same_ident(&fk.from, column));
            match (matching.next(), matching.next()) {
                (Some(fk), None) => found.push(fk.clone()),
                _ => {
                    return Ok(Err(format!(
                        "the `{table}` table does not record exactly one owner foreign key for \
                         each required base-table column; open the store with \
                         create_structure_tables(true) (CLI: `init --advanced`) to create and \
                         claim the structure tables"
                    )))
                }
            }
        }
        owners.push((table, found));
    }
    // 2. The configured names, as SQLite resolves them (case-insensitively).
    let resolve = |ident: &Ident| -> Result<Option<String>> {
        Ok(conn
            .prepare_cached(TABLE_NAME)?
            .query_row([ident.name()], |r| r.get::<_, String>(0))
            .optional()?)
    };
    let (Some(sessions), Some(messages)) = (resolve(&t.sessions)?, resolve(&t.messages)?) else {
        return Ok(Err(format!(
            "the configured base tables {}/{} are missing; open the store with \
             create_structure_tables(true) (CLI: `init --advanced`) to create and claim them",
            t.sessions.sql(),
            t.messages.sql()
        )));
    };
    // 3. The messages table belongs to the sessions table.
    let base: Vec<ForeignKey> = foreign_keys(conn, &messages)?
        .into_iter()
        .filter(|fk| {
            same_ident(&fk.from, "session_id")
                && fk
                    .to
                    .as_deref()
                    .is_some_and(|to| same_ident(to, "session_id"))
        })
        .collect();
    if base.len() != 1 || !same_ident(&base[0].table, &sessions) {
        let owner = if base.len() == 1 {
            base[0].table.as_str()
        } else {
            "ambiguous ownership"
        };
        return Ok(Err(format!(
            "the configured messages table '{messages}' belongs to sessions table '{owner}', \
             not to the configured '{sessions}'; give each sessions/messages table pair its own \
             database file"
        )));
    }
    // 4. Every owner foreign key points at the configured pair.
    for (table, fks) in &owners {
        let points_home = |fk: &ForeignKey| {
            let (owner, column) = if same_ident(&fk.from, "message_id") {
                (&messages, "id")
            } else {
                (&sessions, "session_id")
            };
            same_ident(&fk.table, owner)
                && fk.to.as_deref().is_some_and(|to| same_ident(to, column))
        };
        if !fks.iter().all(points_home) {
            let found: Vec<String> = fks
                .iter()
                .map(|fk| format!("{}({})", fk.table, fk.to.as_deref().unwrap_or("")))
                .collect();
            let configured = if fks.len() == 2 {
                format!("{sessions}/{messages}")
            } else {
                sessions.clone()
            };
            return Ok(Err(format!(
                "the `{table}` table already belongs to '{}', not to the configured \
                 '{configured}'; structure tables are shared per database file, so give each \
                 sessions/messages table pair its own database file",
                found.join("/")
            )));
        }
    }
    Ok(Ok(()))
}

// ------------------------------------------------------------------------------------------
// Operations
// ------------------------------------------------------------------------------------------

/// Execute one Advanced operation. Writes run inside the writer's transaction (one savepoint
/// per request); reads inside one snapshot.
pub(super) fn execute(
    conn: &Connection,
    t: &Tables,
    session: &str,
    view: &HandleView,
    op: &AdvancedOp,
) -> Result<Outcome> {
    let run = Run {
        conn,
        t,
        s: session,
    };
    match run.op(view, op) {
        Ok((view, answer)) => Ok(Outcome::Advanced { view, answer }),
        Err(Error::Sqlite { message, .. })
            if message.contains("no such table: message_structure")
                || message.contains("no such table: turn_usage") =>
        {
            Err(errors::structure_missing().into())
        }
        Err(e) => Err(e),
    }
}

struct Run<'a> {
    conn: &'a Connection,
    t: &'a Tables,
    s: &'a str,
}

type Answered = (HandleView, AdvancedAnswer);

fn model_err(e: ModelError) -> Error {
    e.into()
}

impl Run<'_> {
    fn op(&self, view: &HandleView, op: &AdvancedOp) -> Result<Answered> {
        let s = self.s;
        match op {
            AdvancedOp::AddItems { items } => {
                if items.is_empty() {
                    return Ok((view.clone(), AdvancedAnswer::Done));
                }
                let view = self.refresh_for_write(view)?;
                let batch = items.iter().map(|item| {
                    let text = crate::json::to_python_json(item);
                    (text, classify(item), tool_name(item), is_user_item(item))
                });
                self.append(&view.branch, batch)?;
                Ok((view, AdvancedAnswer::Done))
            }
            AdvancedOp::PlantRaw { data } => {
                let view = self.refresh_for_write(view)?;
                let one = std::iter::once((data.clone(), "other".to_owned(), None, false));
                self.append(&view.branch, one)?;
                Ok((view, AdvancedAnswer::Done))
            }
            AdvancedOp::GetItems { limit, branch } => {
                let (view, branch) = self.read_branch(view, branch)?;
                let map = |r: &rusqlite::Row<'_>| Ok(text_of(r.get_ref(0)?));
                let items = limited_items(
                    *limit,
                    || {
                        let mut stmt = self.conn.prepare_cached(&self.t.adv.items_all)?;
                        let rows: rusqlite::Result<Vec<Option<String>>> =
                            stmt.query_map(params![s, branch], map)?.collect();
                        Ok(rows?)
                    },
                    |window| {
                        let mut stmt = self.conn.prepare_cached(&self.t.adv.items_newest)?;
                        let rows: rusqlite::Result<Vec<Option<String>>> =
                            stmt.query_map(params![s, branch, window], map)?.collect();
                        Ok(rows?)
                    },
                )?;
                Ok((view, AdvancedAnswer::Items(items)))
            }
            AdvancedOp::PopItem => {
                let view = self.refresh_for_write(view)?;
                let popped = self.pop(&view.branch)?;
                Ok((view, AdvancedAnswer::Popped(popped)))
            }
            AdvancedOp::Clear => {
                self.ensure_reservations()?;
                self.ensure_generation()?;
                let sql = &self.t.sql;
                self.exec(&sql.delete_messages, params![s])?;
                self.exec(&sql.delete_session, params![s])?;
                self.exec(STRUCT_CLEAR, params![s])?;
                self.exec(USAGE_CLEAR, params![s])?;
                self.exec(GEN_BUMP, params![s])?;
                let view = HandleView::at(agent_sessions_model::advanced::MAIN, self.generation()?);
                Ok((view, AdvancedAnswer::Done))
            }
            AdvancedOp::CreateBranchFromTurn {
                turn,
                name,
                now_unix,
            } => {
                if name.as_deref().is_some_and(is_blank) {
                    return Err(model_err(errors::blank_branch_name(s)));
                }
                let (view, id) = self.create_branch(view, *turn, name.as_deref(), *now_unix)?;
                Ok((view, AdvancedAnswer::BranchId(id)))
            }
            AdvancedOp::CreateBranchFromContent {
                term,
                name,
                now_unix,
            } => {
                let current = view.refreshed(self.read_generation()?);
                let turn = self
                    .find(&current.branch, term)?
                    .first()
                    .map(|t| t.turn)
                    .ok_or_else(|| model_err(errors::no_turn_matches(s, &current.branch, term)))?;
                if name.as_deref().is_some_and(is_blank) {
                    return Err(model_err(errors::blank_branch_name(s)));
                }
                let (view, id) = self.create_branch(view, turn, name.as_deref(), *now_unix)?;
                Ok((view, AdvancedAnswer::BranchId(id)))
            }
            AdvancedOp::SwitchToBranch { branch } => {
                self.ensure_generation()?;
                if self.count(BRANCH_COUNT, params![s, branch])? == 0 {
                    return Err(model_err(errors::branch_not_found(s, branch)));
                }
                let view = HandleView::at(branch, self.generation()?);
                Ok((view, AdvancedAnswer::Done))
            }
            AdvancedOp::DeleteBranch { branch, force } => {
                if is_blank(branch) {
                    return Err(model_err(errors::blank_branch_id(s)));
                }
                if branch == agent_sessions_model::advanced::MAIN {
                    return Err(model_err(errors::delete_main(s)));
                }
                let mut view = view.refreshed(self.read_generation()?);
                let current = view.branch == *branch;
                if current && !force {
                    return Err(model_err(errors::delete_current(s, branch)));
                }
                self.ensure_reservations()?;
                if self.count(BRANCH_COUNT, params![s, branch])? == 0 {
                    return Err(model_err(errors::branch_not_found(s, branch)));
                }
                self.exec(USAGE_DELETE_BRANCH, params![s, branch])?;
                self.exec(STRUCT_DELETE_BRANCH, params![s, branch])?;
                self.exec(&self.t.adv.orphans, params![s])?;
                if current {
                    view.branch = agent_sessions_model::advanced::MAIN.into();
                }
                Ok((view, AdvancedAnswer::Done))
            }
            AdvancedOp::ListBranches => {
                let view = view.refreshed(self.read_generation()?);
                let mut stmt = self.conn.prepare_cached(LIST_BRANCHES)?;
                let rows = stmt.query_map([s], |r| {
                    let branch_id = text_of(r.get_ref(0)?).unwrap_or_default();
                    Ok(BranchInfo {
                        is_current: branch_id == view.branch,
                        branch_id,
                        message_count: r.get(1)?,
                        user_turns: r.get(2)?,
                        created_at: text_of(r.get_ref(3)?).unwrap_or_default(),
                    })
                })?;
                let list = rows.collect::<rusqlite::Result<_>>()?;
                Ok((view, AdvancedAnswer::Branches(list)))
            }
            AdvancedOp::ConversationTurns { branch } => {
                let (view, branch) = self.read_branch(view, branch)?;
                let turns = self.turn_rows(&self.t.adv.turns, params![s, branch])?;
                Ok((view, AdvancedAnswer::Turns(turns)))
            }
            AdvancedOp::FindTurns { term, branch } => {
                let (view, branch) = self.read_branch(view, branch)?;
                Ok((view, AdvancedAnswer::Turns(self.find(&branch, term)?)))
            }
            AdvancedOp::ConversationByTurns { branch } => {
                let (view, branch) = self.read_branch(view, branch)?;
                let mut stmt = self.conn.prepare_cached(BY_TURNS)?;
                let rows = stmt.query_map(params![s, branch], |r| {
                    Ok((
                        int_of(r.get_ref(0)?).unwrap_or(0),
                        TurnItem {
                            message_type: text_of(r.get_ref(1)?).unwrap_or_default(),
                            tool_name: text_of(r.get_ref(2)?),
                        },
                    ))
                })?;
                let mut groups: Vec<TurnGroup> = Vec::new();
                for row in rows {
                    let (turn, item) = row?;
                    match groups.iter_mut().find(|g| g.turn == turn) {
                        Some(g) => g.items.push(item),
                        None => groups.push(TurnGroup {
                            turn,
                            items: vec![item],
                        }),
                    }
                }
                Ok((view, AdvancedAnswer::ByTurns(groups)))
            }
            AdvancedOp::ToolUsage { branch } => {
                let (view, branch) = self.read_branch(view, branch)?;
                let mut stmt = self.conn.prepare_cached(TOOL_USAGE)?;
                let rows = stmt.query_map(params![s, branch], |r| {
                    Ok(ToolUse {
                        tool_name: text_of(r.get_ref(0)?),
                        usage_count: int_of(r.get_ref(1)?).unwrap_or(0),
                        user_turn_number: int_of(r.get_ref(2)?).unwrap_or(0),
                    })
                })?;
                let tools = rows.collect::<rusqlite::Result<_>>()?;
                Ok((view, AdvancedAnswer::Tools(tools)))
            }
            AdvancedOp::CurrentTurn => {
                let view = view.refreshed(self.read_generation()?);
                let anchor = self.current_anchor(&view.branch)?;
                Ok((view, AdvancedAnswer::Anchor(anchor)))
            }
            AdvancedOp::RecordUsage { usage, anchor } => {
                usage.validate().map_err(model_err)?;
                let durable = self.read_generation()?;
                let refreshed = view.refreshed(durable);
                let target = match anchor {
                    // A clear the handle had not seen invalidates usage of the old history.
                    None if view.is_stale(durable) => None,
                    None => self.current_anchor(&view.branch)?,
                    Some(a) => {
                        let alive = self
                            .conn
                            .prepare_cached(USAGE_GUARD)?
                            .query_row(params![s, a.branch, a.turn, a.structure_id], |_| Ok(()))
                            .optional()?
                            .is_some();
                        alive.then(|| a.clone())
                    }
                };
                let recorded = target.is_some();
                if let Some(a) = target {
                    let details = |d: &Option<Value>| d.as_ref().map(crate::json::to_python_json);
                    self.exec(
                        USAGE_UPSERT,
                        params![
                            s,
                            a.branch,
                            a.turn,
                            usage.requests,
                            usage.input_tokens,
                            usage.output_tokens,
                            usage.total_tokens,
                            details(&usage.input_tokens_details),
                            details(&usage.output_tokens_details),
                        ],
                    )?;
                }
                Ok((refreshed, AdvancedAnswer::Recorded(recorded)))
            }
            AdvancedOp::SessionUsage { branch } => {
                let row = |r: &rusqlite::Row<'_>| {
                    let int =
                        |i| -> rusqlite::Result<i64> { Ok(int_of(r.get_ref(i)?).unwrap_or(0)) };
                    Ok(match int_of(r.get_ref(0)?) {
                        None => None,
                        Some(requests) => Some(UsageTotals {
                            requests,
                            input_tokens: int(1)?,
                            output_tokens: int(2)?,
                            total_tokens: int(3)?,
                            total_turns: int(4)?,
                        }),
                    })
                };
                let totals = match branch.as_deref().filter(|b| !b.is_empty()) {
                    Some(b) => self
                        .conn
                        .prepare_cached(USAGE_SUM_BRANCH)?
                        .query_row(params![s, b], row)?,
                    None => self
                        .conn
                        .prepare_cached(USAGE_SUM_ALL)?
                        .query_row(params![s], row)?,
                };
                Ok((view.clone(), AdvancedAnswer::SessionUsage(totals)))
            }
            AdvancedOp::TurnUsage { turn, branch } => {
                let (view, branch) = self.read_branch(view, branch)?;
                let answer = match turn {
                    Some(n) => {
                        let mut rows = self.usage_rows(TURN_USAGE_ONE, params![s, branch, n])?;
                        AdvancedAnswer::TurnUsage(rows.pop().map(|r| r.usage))
                    }
                    None => AdvancedAnswer::TurnUsages(
                        self.usage_rows(TURN_USAGE_ALL, params![s, branch])?,
                    ),
                };
                Ok((view, answer))
            }
        }
    }

    fn exec(&self, sql: &str, p: impl rusqlite::Params) -> Result<usize> {
        Ok(self.conn.prepare_cached(sql)?.execute(p)?)
    }

    fn count(&self, sql: &str, p: impl rusqlite::Params) -> Result<i64> {
        Ok(self.conn.prepare_cached(sql)?.query_row(p, |r| r.get(0))?)
    }

    /// A one-value aggregate (`MAX`/`MIN`): `None` over no rows.
    fn max(&self, sql: &str, p: impl rusqlite::Params) -> Result<Option<i64>> {
        Ok(self
            .conn
            .prepare_cached(sql)?
            .query_row(p, |r| Ok(int_of(r.get_ref(0)?)))?)
    }

    // -- generations and reservations ----------------------------------------------------------

    /// Create the generations table if needed (older files lack it) and this session's row.
    fn ensure_generation(&self) -> Result<()> {
        self.conn.prepare_cached(GENERATIONS_DDL)?.execute([])?;
        self.exec(GEN_INSERT, params![self.s])?;
        Ok(())
    }

    /// The durable generation (the row must exist).
    fn generation(&self) -> Result<i64> {
        self.count(GEN_SELECT, params![self.s])
    }

    /// The durable generation without creating anything: a missing table or row reads as 0.
    fn read_generation(&self) -> Result<i64> {
        let mut stmt = match self.conn.prepare_cached(GEN_SELECT) {
            Ok(stmt) => stmt,
            Err(e) if e.to_string().contains("no such table") => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        Ok(stmt
            .query_row(params![self.s], |r| r.get(0))
            .optional()?
            .unwrap_or(0))
    }

    /// The view a write proceeds with (SPEC §5.3 "Clear generation").
    fn refresh_for_write(&self, view: &HandleView) -> Result<HandleView> {
        self.ensure_generation()?;
        Ok(view.refreshed(self.generation()?))
    }

    /// An explicit branch as given; else the current branch after the generation check.
    fn read_branch(
        &self,
        view: &HandleView,
        branch: &Option<String>,
    ) -> Result<(HandleView, String)> {
        Ok(match branch {
            Some(b) => (view.clone(), b.clone()),
            None => {
                let v = view.refreshed(self.read_generation()?);
                let b = v.branch.clone();
                (v, b)
            }
        })
    }

    /// Reserve the ids of branches that have rows but no reservation (legacy files).
    fn ensure_reservations(&self) -> Result<()> {
        self.conn.prepare_cached(RESERVATIONS_DDL)?.execute([])?;
        let missing = self
            .conn
            .prepare_cached(RES_MISSING)?
            .query_row(params![self.s], |_| Ok(()))
            .optional()?;
        if missing.is_some() {
            self.exec(RES_BACKFILL, params![self.s])?;
        }
        Ok(())
    }

    // -- writes --------------------------------------------------------------------------------

    /// Insert a batch of `(message_data, type, tool_name, is_user)` on `branch`: the messages
    /// (and the session row), then one structure row each, numbered per SPEC §5.3.
    fn append(
        &self,
        branch: &str,
        batch: impl Iterator<Item = (String, String, Option<String>, bool)>,
    ) -> Result<()> {
        let (s, sql) = (self.s, &self.t.sql);
        self.exec(&sql.insert_session, params![s])?;
        let mut rows = Vec::new();
        {
            let mut insert = self.conn.prepare_cached(&sql.insert_message)?;
            for (data, message_type, tool, user) in batch {
                insert.execute(params![s, data])?;
                rows.push((self.conn.last_insert_rowid(), message_type, tool, user));
            }
        }
        self.exec(&sql.touch_session, params![s])?;
        let seq0 = self.max(SEQ_MAX, params![s])?.unwrap_or(0);
        let (t0, b0) = match self.max(TURN_MAX, params![s, branch])? {
            None => (0, 0),
            Some(t) => (
                t,
                self.max(BRANCH_TURN_MAX, params![s, branch, t])?
                    .unwrap_or(0),
            ),
        };
        let mut insert = self.conn.prepare_cached(STRUCT_INSERT)?;
        let mut users = 0;
        for (i, (message_id, message_type, tool, user)) in rows.into_iter().enumerate() {
            users += i64::from(user);
            insert.execute(params![
                s,
                message_id,
                branch,
                message_type,
                seq0 + i as i64 + 1,
                t0 + users,
                b0 + users,
                tool
            ])?;
        }
        Ok(())
    }

    fn pop(&self, branch: &str) -> Result<Option<Item>> {
        let s = self.s;
        self.ensure_reservations()?;
        loop {
            let claimed: Option<(i64, Option<i64>)> = self
                .conn
                .prepare_cached(POP_CLAIM)?
                .query_row(params![s, branch], |r| {
                    Ok((r.get(0)?, int_of(r.get_ref(1)?)))
                })
                .optional()?;
            let Some((message_id, turn)) = claimed else {
                return Ok(None);
            };
            let data: Option<Option<String>> = self
                .conn
                .prepare_cached(&self.t.adv.message_by_id)?
                .query_row(params![message_id], |r| Ok(text_of(r.get_ref(0)?)))
                .optional()?;
            self.exec(&self.t.adv.orphans, params![s])?;
            if let Some(turn) = turn {
                if self.count(TURN_COUNT, params![s, branch, turn])? == 0 {
                    self.exec(USAGE_DELETE_TURN, params![s, branch, turn])?;
                }
            }
            if let Some(item) = data.flatten().as_deref().and_then(parse_item) {
                return Ok(Some(item));
            }
        }
    }

    fn create_branch(
        &self,
        view: &HandleView,
        turn: i64,
        name: Option<&str>,
        now_unix: i64,
    ) -> Result<(HandleView, String)> {
        let s = self.s;
        self.ensure_reservations()?;
        let view = self.refresh_for_write(view)?;
        let source = view.branch.clone();
        let has_user_turn = self
            .conn
            .prepare_cached(&self.t.adv.turn_user_message)?
            .query_row(params![s, source, turn], |_| Ok(()))
            .optional()?
            .is_some();
        if !has_user_turn {
            return Err(model_err(errors::turn_not_found(s, &source, turn)));
        }
        let id = match name {
            Some(n) => {
                if self.exec(RES_INSERT, params![s, n])? == 0 {
                    return Err(model_err(errors::branch_id_used(s, n)));
                }
                n.to_owned()
            }
            None => {
                let base = format!("branch_from_turn_{turn}_{now_unix}");
                let mut candidate = base.clone();
                let mut suffix = 1;
                while self.exec(RES_INSERT, params![s, candidate])? == 0 {
                    suffix += 1;
                    candidate = format!("{base}_{suffix}");
                }
                candidate
            }
        };
        type Copied = (
            i64,
            Option<String>,
            Option<i64>,
            Option<i64>,
            Option<String>,
        );
        let copies: Vec<Copied> = {
            let mut stmt = self.conn.prepare_cached(COPY_SELECT)?;
            let rows = stmt.query_map(params![s, source, turn], |r| {
                Ok((
                    r.get(0)?,
                    text_of(r.get_ref(1)?),
                    int_of(r.get_ref(2)?),
                    int_of(r.get_ref(3)?),
                    text_of(r.get_ref(4)?),
                ))
            })?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        if !copies.is_empty() {
            let seq0 = self.max(SEQ_MAX, params![s])?.unwrap_or(0);
            let mut insert = self.conn.prepare_cached(STRUCT_INSERT)?;
            for (i, (message_id, message_type, user_turn, branch_turn, tool)) in
                copies.into_iter().enumerate()
            {
                insert.execute(params![
                    s,
                    message_id,
                    id,
                    message_type,
                    seq0 + i as i64 + 1,
                    user_turn,
                    branch_turn,
                    tool
                ])?;
            }
        }
        Ok((
            HandleView {
                branch: id.clone(),
                ..view
            },
            id,
        ))
    }

    // -- reads ---------------------------------------------------------------------------------

    fn turn_rows(&self, sql: &str, p: impl rusqlite::Params) -> Result<Vec<TurnRecord>> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let rows = stmt.query_map(p, |r| {
            Ok((
                int_of(r.get_ref(0)?).unwrap_or(0),
                text_of(r.get_ref(1)?),
                text_of(r.get_ref(2)?).unwrap_or_default(),
            ))
        })?;
        let mut turns = Vec::new();
        for row in rows {
            let (turn, data, timestamp) = row?;
            if let Some(full_content) = data.as_deref().and_then(user_content) {
                turns.push(TurnRecord {
                    turn,
                    full_content,
                    timestamp,
                });
            }
        }
        Ok(turns)
    }

    /// User turns containing `term`: SQL `LIKE` on the stored JSON text as a prefilter (the
    /// term encoded the way the text is), then the model's exact match on the decoded content.
    fn find(&self, branch: &str, term: &str) -> Result<Vec<TurnRecord>> {
        let encoded = crate::json::to_python_json(&Value::String(term.to_owned()));
        let inner = &encoded[1..encoded.len() - 1];
        let mut pattern = String::with_capacity(inner.len() + 2);
        pattern.push('%');
        for c in inner.chars() {
            if matches!(c, '\\' | '%' | '_') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push('%');
        let mut turns = self.turn_rows(&self.t.adv.find_turns, params![self.s, branch, pattern])?;
        turns.retain(|t| turn_matches(&t.full_content, term));
        Ok(turns)
    }

    fn current_anchor(&self, branch: &str) -> Result<Option<TurnAnchor>> {
        let turn = self.max(TURN_MAX, params![self.s, branch])?.unwrap_or(0);
        let first: Option<i64> = self
            .conn
            .prepare_cached(ANCHOR)?
            .query_row(params![self.s, branch, turn], |r| r.get(0))?;
        Ok(first.map(|structure_id| TurnAnchor {
            branch: branch.to_owned(),
            turn,
            structure_id,
        }))
    }

    fn usage_rows(&self, sql: &str, p: impl rusqlite::Params) -> Result<Vec<TurnUsage>> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let rows = stmt.query_map(p, |r| {
            let int = |i| -> rusqlite::Result<i64> { Ok(int_of(r.get_ref(i)?).unwrap_or(0)) };
            let details = |i| -> rusqlite::Result<Option<Value>> {
                Ok(text_of(r.get_ref(i)?)
                    .filter(|t| !t.is_empty())
                    .and_then(|t| serde_json::from_str(&t).ok()))
            };
            Ok(TurnUsage {
                user_turn_number: int(0)?,
                usage: Usage {
                    requests: int(1)?,
                    input_tokens: int(2)?,
                    output_tokens: int(3)?,
                    total_tokens: int(4)?,
                    input_tokens_details: details(5)?,
                    output_tokens_details: details(6)?,
                },
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

/// An integer column, whatever its storage class (rows written by other programs may hold
/// reals or text); `None` for NULL or text that is not a number.
fn int_of(v: ValueRef<'_>) -> Option<i64> {
    match v {
        ValueRef::Null | ValueRef::Blob(_) => None,
        ValueRef::Integer(i) => Some(i),
        ValueRef::Real(f) => Some(f as i64),
        ValueRef::Text(t) => std::str::from_utf8(t).ok()?.trim().parse().ok(),
    }
}

//! Creating the tables and claiming the Advanced structure tables (SPEC §5.3 "Opening"): the
//! base DDL, the structure DDL, and the ownership check that rejects structure tables whose
//! foreign keys name another table pair (Python's `_claim_structure_tables`).

use agent_sessions_model::StructureStatus;
use rusqlite::{Connection, OptionalExtension};

use super::sql::{Tables, FOREIGN_KEYS, GENERATIONS_DDL, INDEX_DDL, RESERVATIONS_DDL, TABLE_NAME};
use super::value::text_of;
use crate::engine::ident::Ident;
use crate::error::{Context, Error, Result};

/// Create the base tables if missing; with `structure`, also create and claim the structure
/// tables. Runs inside the writer's transaction, so a rejected claim leaves nothing behind.
pub(crate) fn init(conn: &Connection, t: &Tables, structure: bool) -> Result<()> {
    for ddl in &t.basic.ddl {
        conn.execute(ddl, []).context(format!(
            "creating tables {} / {}",
            t.sessions.sql(),
            t.messages.sql()
        ))?;
    }
    if structure {
        init_structure(conn, t)?;
    }
    Ok(())
}

/// Create the structure tables, check that they belong to this opener's table pair, then create
/// the helper tables and indexes (Python's order, so `sqlite_master` matches). Runs inside the
/// writer's transaction: a rejected claim rolls back with the request and leaves nothing.
fn init_structure(conn: &Connection, t: &Tables) -> Result<()> {
    for ddl in &t.advanced.structure_ddl {
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
pub(crate) fn structure_status(conn: &Connection, t: &Tables) -> Result<StructureStatus> {
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

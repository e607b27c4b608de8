//! `agent-sessions check`: SQLite's own integrity check plus the store's invariants, read-only.
//! Reports one JSON object and fails (exit 1) when anything is wrong: SQLite finds damage,
//! corrupt `message_data` rows (counted per session), structure rows whose message is gone or
//! messages of an Advanced session without structure (I10), duplicate sequence numbers (I9),
//! negative clear generations (I12).

use std::path::Path;
use std::process::ExitCode;

use agent_sessions::{Database, Store};
use agent_sessions_model::parse_item;
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use serde_json::{json, Value};

/// The bare name SQLite keeps in `sqlite_master` for a validated name as written in SQL
/// (`"my ""t"""` → `my "t"`).
fn bare(sql_name: &str) -> String {
    match sql_name.strip_prefix('"').and_then(|n| n.strip_suffix('"')) {
        Some(inner) => inner.replace("\"\"", "\""),
        None => sql_name.to_owned(),
    }
}

fn count(conn: &Connection, sql: &str) -> rusqlite::Result<i64> {
    conn.query_row(sql, [], |r| r.get(0))
}

fn table_exists(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1 COLLATE NOCASE",
            [bare(name)],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

pub fn run(
    db: &Path,
    sessions: &str,
    messages: &str,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    // Table names reach SQL only as the store validated them. The store that validates them is
    // an in-memory one: opening the file's own would create missing tables (check is read-only)
    // and would refuse a damaged file before SQLite's check could say what is wrong with it.
    let names = Store::builder(Database::Memory)
        .sessions_table(sessions)
        .messages_table(messages)
        .open()?;
    let (s, m) = (
        names.sessions_table().to_owned(),
        names.messages_table().to_owned(),
    );
    names.close();
    if !db.exists() {
        return Err(format!("{} does not exist", db.display()).into());
    }
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| format!("cannot open {}: {e}", db.display()))?;
    let mut problems: Vec<String> = Vec::new();
    let integrity: Vec<String> = conn
        .prepare("PRAGMA integrity_check")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(|e| format!("{} is not a readable SQLite database: {e}", db.display()))?;
    if integrity != ["ok"] {
        problems.push(format!("SQLite integrity check: {}", integrity.join("; ")));
    }
    if !table_exists(&conn, &m)? || !table_exists(&conn, &s)? {
        problems.push(format!("tables {sessions} / {messages} are missing"));
        return report(json!({"sqlite_integrity": integrity}), problems);
    }

    let mut corrupt: serde_json::Map<String, Value> = serde_json::Map::new();
    let mut total_messages = 0i64;
    {
        let mut stmt = conn.prepare(&format!(
            "SELECT session_id, message_data FROM {m} ORDER BY id"
        ))?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            total_messages += 1;
            let data: Option<String> = row.get_ref(1)?.as_str().ok().map(str::to_owned);
            if data.as_deref().and_then(parse_item).is_none() {
                let sid: String = row.get_ref(0)?.as_str().unwrap_or("<not text>").to_owned();
                let n = corrupt.entry(sid).or_insert(json!(0));
                *n = json!(n.as_i64().unwrap_or(0) + 1);
            }
        }
    }
    let corrupt_total: i64 = corrupt.values().filter_map(Value::as_i64).sum();
    if corrupt_total > 0 {
        problems.push(format!(
            "{corrupt_total} corrupt message rows (skipped by readers)"
        ));
    }
    let without_session = count(
        &conn,
        &format!("SELECT COUNT(*) FROM {m} WHERE session_id NOT IN (SELECT session_id FROM {s})"),
    )?;

    let mut structure = Value::Null;
    if table_exists(&conn, "message_structure")? {
        let orphans = count(
            &conn,
            &format!("SELECT COUNT(*) FROM message_structure ms WHERE NOT EXISTS (SELECT 1 FROM {m} WHERE id = ms.message_id)"),
        )?;
        let unstructured = count(
            &conn,
            &format!(
                "SELECT COUNT(*) FROM {m} am WHERE am.session_id IN (SELECT session_id FROM message_structure) \
                 AND NOT EXISTS (SELECT 1 FROM message_structure ms WHERE ms.message_id = am.id)"
            ),
        )?;
        let duplicate_seq = count(
            &conn,
            "SELECT COUNT(*) FROM (SELECT session_id, sequence_number FROM message_structure \
             GROUP BY session_id, sequence_number HAVING COUNT(*) > 1)",
        )?;
        let bad_generations = if table_exists(&conn, "session_clear_generations")? {
            count(
                &conn,
                "SELECT COUNT(*) FROM session_clear_generations WHERE generation < 0",
            )?
        } else {
            0
        };
        for (n, what) in [
            (orphans, "structure rows whose message is gone"),
            (
                unstructured,
                "messages of Advanced sessions without structure rows",
            ),
            (duplicate_seq, "duplicate sequence numbers"),
            (bad_generations, "negative clear generations"),
        ] {
            if n > 0 {
                problems.push(format!("{n} {what}"));
            }
        }
        structure = json!({"orphan_structure_rows": orphans, "messages_without_structure": unstructured,
                           "duplicate_sequence_numbers": duplicate_seq, "negative_generations": bad_generations});
    }
    report(
        json!({
            "sqlite_integrity": integrity,
            "messages": total_messages,
            "corrupt_rows": corrupt_total,
            "corrupt_rows_by_session": corrupt,
            "messages_without_session_row": without_session,
            "structure": structure,
        }),
        problems,
    )
}

fn report(
    mut summary: Value,
    problems: Vec<String>,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let ok = problems.is_empty();
    summary["ok"] = json!(ok);
    summary["problems"] = json!(problems);
    println!("{summary}");
    for p in &problems {
        eprintln!("agent-sessions: check: {p}");
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

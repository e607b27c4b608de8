//! `agent-sessions check`: SQLite's own integrity check (on a file) plus the store's invariants,
//! read-only, on SQLite or PostgreSQL.
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

/// The read-only queries the checks need, on either engine.
trait Db {
    fn count(&mut self, sql: &str) -> Result<i64, String>;
    fn table_exists(&mut self, name: &str) -> Result<bool, String>;
    /// `(session_id, message_data)` of every row of `sql`, to `f`.
    fn each_message(
        &mut self,
        sql: &str,
        f: &mut dyn FnMut(String, Option<String>),
    ) -> Result<(), String>;
}

impl Db for Connection {
    fn count(&mut self, sql: &str) -> Result<i64, String> {
        self.query_row(sql, [], |r| r.get(0))
            .map_err(|e| e.to_string())
    }

    fn table_exists(&mut self, name: &str) -> Result<bool, String> {
        Ok(self
            .query_row(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1 COLLATE NOCASE",
                [bare(name)],
                |_| Ok(()),
            )
            .optional()
            .map_err(|e| e.to_string())?
            .is_some())
    }

    fn each_message(
        &mut self,
        sql: &str,
        f: &mut dyn FnMut(String, Option<String>),
    ) -> Result<(), String> {
        let e = |e: rusqlite::Error| e.to_string();
        let mut stmt = self.prepare(sql).map_err(e)?;
        let mut rows = stmt.query([]).map_err(e)?;
        while let Some(row) = rows.next().map_err(e)? {
            let data = row.get_ref(1).map_err(e)?.as_str().ok().map(str::to_owned);
            let sid = row
                .get_ref(0)
                .map_err(e)?
                .as_str()
                .unwrap_or("<not text>")
                .to_owned();
            f(sid, data);
        }
        Ok(())
    }
}

#[cfg(feature = "postgres")]
impl Db for postgres::Client {
    fn count(&mut self, sql: &str) -> Result<i64, String> {
        self.query_one(sql, &[])
            .and_then(|r| r.try_get(0))
            .map_err(|e| e.to_string())
    }

    fn table_exists(&mut self, name: &str) -> Result<bool, String> {
        self.query_opt(
            "SELECT 1 FROM pg_class t JOIN pg_namespace n ON n.oid = t.relnamespace \
             WHERE n.nspname = current_schema() AND t.relname = $1",
            &[&bare(name)],
        )
        .map(|r| r.is_some())
        .map_err(|e| e.to_string())
    }

    fn each_message(
        &mut self,
        sql: &str,
        f: &mut dyn FnMut(String, Option<String>),
    ) -> Result<(), String> {
        let e = |e: postgres::Error| e.to_string();
        let mut rows = self.query_raw(sql, std::iter::empty::<i32>()).map_err(e)?;
        while let Some(row) =
            postgres::fallible_iterator::FallibleIterator::next(&mut rows).map_err(e)?
        {
            f(row.try_get(0).map_err(e)?, row.try_get(1).map_err(e)?);
        }
        Ok(())
    }
}

pub fn run(
    db: &Database,
    sessions: &str,
    messages: &str,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    // Table names reach SQL only as the store validated them. The store that validates them is
    // an in-memory one: opening the database's own would create missing tables (check is
    // read-only) and would refuse a damaged file before SQLite's check could say what is wrong.
    let names = Store::builder(Database::Memory)
        .sessions_table(sessions)
        .messages_table(messages)
        .open()?;
    let (s, m) = (
        names.sessions_table().to_owned(),
        names.messages_table().to_owned(),
    );
    names.close();
    match db {
        Database::File(path) => sqlite(path, &s, &m),
        #[cfg(feature = "postgres")]
        Database::Postgres(url) => {
            let quote = |n: &str| format!("\"{}\"", bare(n).replace('"', "\"\""));
            let mut client = postgres::Client::connect(url, postgres::NoTls)
                .map_err(|e| format!("cannot connect to {db}: {e}"))?;
            let summary = json!({"server_integrity": "not checked here (PostgreSQL has no \
                                 integrity_check; run pg_amcheck)"});
            invariants(&mut client, &quote(&s), &quote(&m), summary, Vec::new())
        }
        other => Err(format!("check needs a database file or server, not {other}").into()),
    }
}

fn sqlite(db: &Path, s: &str, m: &str) -> Result<ExitCode, Box<dyn std::error::Error>> {
    if !db.exists() {
        return Err(format!("{} does not exist", db.display()).into());
    }
    let mut conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| format!("cannot open {}: {e}", db.display()))?;
    let mut problems: Vec<String> = Vec::new();
    let integrity: Vec<String> = conn
        .prepare("PRAGMA integrity_check")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .map_err(|e| format!("{} is not a readable SQLite database: {e}", db.display()))?;
    if integrity != ["ok"] {
        problems.push(format!("SQLite integrity check: {}", integrity.join("; ")));
    }
    invariants(
        &mut conn,
        s,
        m,
        json!({"sqlite_integrity": integrity}),
        problems,
    )
}

/// The store's invariants over the tables `s` / `m` (names as written in SQL).
fn invariants(
    conn: &mut dyn Db,
    s: &str,
    m: &str,
    mut summary: Value,
    mut problems: Vec<String>,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    if !conn.table_exists(m)? || !conn.table_exists(s)? {
        problems.push(format!("tables {s} / {m} are missing"));
        return report(summary, problems);
    }

    let mut corrupt: serde_json::Map<String, Value> = serde_json::Map::new();
    let mut total_messages = 0i64;
    conn.each_message(
        &format!("SELECT session_id, message_data FROM {m} ORDER BY id"),
        &mut |sid, data| {
            total_messages += 1;
            if data.as_deref().and_then(parse_item).is_none() {
                let n = corrupt.entry(sid).or_insert(json!(0));
                *n = json!(n.as_i64().unwrap_or(0) + 1);
            }
        },
    )?;
    let corrupt_total: i64 = corrupt.values().filter_map(Value::as_i64).sum();
    if corrupt_total > 0 {
        problems.push(format!(
            "{corrupt_total} corrupt message rows (skipped by readers)"
        ));
    }
    let without_session = conn.count(&format!(
        "SELECT COUNT(*) FROM {m} WHERE session_id NOT IN (SELECT session_id FROM {s})"
    ))?;

    let mut structure = Value::Null;
    if conn.table_exists("message_structure")? {
        let orphans = conn.count(&format!(
            "SELECT COUNT(*) FROM message_structure ms WHERE NOT EXISTS \
             (SELECT 1 FROM {m} WHERE id = ms.message_id)"
        ))?;
        let unstructured = conn.count(&format!(
            "SELECT COUNT(*) FROM {m} am WHERE am.session_id IN \
             (SELECT session_id FROM message_structure) \
             AND NOT EXISTS (SELECT 1 FROM message_structure ms WHERE ms.message_id = am.id)"
        ))?;
        let duplicate_seq = conn.count(
            "SELECT COUNT(*) FROM (SELECT session_id, sequence_number FROM message_structure \
             GROUP BY session_id, sequence_number HAVING COUNT(*) > 1) AS d",
        )?;
        let bad_generations = if conn.table_exists("session_clear_generations")? {
            conn.count("SELECT COUNT(*) FROM session_clear_generations WHERE generation < 0")?
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
    summary["messages"] = json!(total_messages);
    summary["corrupt_rows"] = json!(corrupt_total);
    summary["corrupt_rows_by_session"] = json!(corrupt);
    summary["messages_without_session_row"] = json!(without_session);
    summary["structure"] = structure;
    report(summary, problems)
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

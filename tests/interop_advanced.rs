//! Interop of Advanced sessions with the real Python SDK (`openai-agents==0.24.0`,
//! `AdvancedSQLiteSession`) on shared files, both ways (SPEC §5.3):
//!
//! 1. Python writes a conversation (user and assistant messages, function calls and outputs, MCP
//!    calls, tool search, odd tool names, branches, a pop, a deleted branch, usage, a clear);
//!    every read of this crate on that file equals the Python SDK's read of it.
//! 2. This crate runs the same steps on a fresh file: the file holds the same rows as Python's
//!    (`sqlite_master`, messages byte for byte, structure rows with types, tool names and
//!    numbering, usage with its JSON details, reservations, generations, ids), and the Python
//!    SDK reads it exactly as it reads its own file.
//! 3. With no Python: the same steps here give the SDK's rows, step results and reads as
//!    `tests/python/make_known_answers.py` recorded them once (`tests/data/known_answers.json`),
//!    so a plain `cargo test` pins the structure and usage rows too.
//!
//! The Python side is `tests/python/advanced_interop.py`, run with `AGENT_SESSIONS_PYTHON`, or the venv `target/pyenv` the
//! tests make on first use (`agent_sessions_test_env::python`). Where neither can be had they do
//! not run (stderr says why and what to run), and under CI that fails them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use agent_sessions::{BlockingAdvancedSession, Store, Usage};
use serde_json::{json, Map, Value};

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/python/advanced_interop.py"
);
const SDK_VERSION: &str = "0.24.0";
/// The terms `advanced_interop.py read` searches for (same list there).
const SEARCH_TERMS: [&str; 9] = [
    "weather",
    "100%",
    "CAFÉ",
    "café",
    "role",
    "_bar",
    "ROME",
    "\"quoted\"",
    "😀",
];

/// The conversation both sides write, one step per call as the Python script reads them
/// (`tests/data/advanced_steps.json`: user and assistant messages, function calls and outputs,
/// MCP calls, tool search, odd tool names, usage with and without details, branches by turn and
/// by content, pops, a deleted branch, a clear).
fn steps() -> Vec<Value> {
    serde_json::from_str(include_str!("data/advanced_steps.json")).unwrap()
}

// ---------------------------------------------------------------------------------------------
// The Python side

struct Python {
    exe: PathBuf,
}

fn python(test: &str) -> Option<Python> {
    let Some(exe) = agent_sessions_test_env::python() else {
        agent_sessions_test_env::unavailable(
            test,
            "no Python with the SDK (AGENT_SESSIONS_PYTHON is not set and target/pyenv could not be made)",
            agent_sessions_test_env::MAKE_VENV,
        );
        return None;
    };
    let py = Python { exe };
    let v = py.run(&["version"]);
    assert_eq!(
        v,
        json!(SDK_VERSION),
        "{} has openai-agents {v}, these tests need {SDK_VERSION}",
        py.exe.display()
    );
    Some(py)
}

impl Python {
    /// Run one command of the script; its stdout parsed as JSON.
    fn run(&self, args: &[&str]) -> Value {
        let mut cmd = Command::new(&self.exe);
        cmd.arg(SCRIPT).args(args).current_dir(std::env::temp_dir());
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.exe.display()));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{cmd:?} failed ({}):\nstdout: {stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(stdout.trim_end())
            .unwrap_or_else(|e| panic!("{cmd:?} printed non-JSON {stdout:?}: {e}"))
    }

    fn run_steps(&self, db: &Path, steps: &[Value]) -> Value {
        let file = db.with_extension("steps.json");
        std::fs::write(&file, serde_json::to_string(steps).unwrap()).unwrap();
        self.run(&["run", path(db), path(&file)])
    }

    fn read(&self, db: &Path, session: &str, branches: &[Option<&str>]) -> Value {
        let branches = serde_json::to_string(branches).unwrap();
        self.run(&["read", path(db), session, &branches])
    }

    fn rows(&self, db: &Path) -> Value {
        self.run(&["rows", path(db)])
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}

// ---------------------------------------------------------------------------------------------
// This crate's side: the same steps and the same reads, in the script's JSON shapes

fn run_steps_here(db: &Path, steps: &[Value]) -> Value {
    let store = Store::builder(db)
        .create_structure_tables(true)
        .open()
        .unwrap();
    let mut sessions: BTreeMap<String, BlockingAdvancedSession> = BTreeMap::new();
    let mut results = Vec::new();
    for step in steps {
        let sid = step["session"].as_str().unwrap();
        let s = sessions
            .entry(sid.to_owned())
            .or_insert_with(|| store.advanced_session(sid).unwrap().blocking());
        let name = step.get("name").and_then(Value::as_str);
        let result = match step["op"].as_str().unwrap() {
            "add" => {
                s.add_items(step["items"].as_array().unwrap().clone())
                    .unwrap();
                Value::Null
            }
            "usage" => {
                let int = |k: &str| step[k].as_i64().unwrap();
                let details = |k: &str| Some(step[k].clone()).filter(|v| !v.is_null());
                s.record_usage(Usage {
                    requests: int("requests"),
                    input_tokens: int("input_tokens"),
                    output_tokens: int("output_tokens"),
                    total_tokens: int("total_tokens"),
                    input_tokens_details: details("input_details"),
                    output_tokens_details: details("output_details"),
                })
                .unwrap();
                Value::Null
            }
            "branch" => json!(s
                .create_branch_from_turn(step["turn"].as_i64().unwrap(), name)
                .unwrap()),
            "branch_content" => json!(s
                .create_branch_from_content(step["term"].as_str().unwrap(), name)
                .unwrap()),
            "switch" => {
                s.switch_to_branch(step["branch"].as_str().unwrap())
                    .unwrap();
                Value::Null
            }
            "delete" => {
                let force = step.get("force").and_then(Value::as_bool).unwrap_or(false);
                s.delete_branch(step["branch"].as_str().unwrap(), force)
                    .unwrap();
                Value::Null
            }
            "pop" => s.pop_item().unwrap().unwrap_or(Value::Null),
            "clear" => {
                s.clear_session().unwrap();
                Value::Null
            }
            other => panic!("unknown step {other}"),
        };
        results.push(result);
    }
    store.close();
    store.wait_closed_blocking();
    Value::Array(results)
}

fn usage_json(u: &Usage) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("requests".into(), json!(u.requests));
    m.insert("input_tokens".into(), json!(u.input_tokens));
    m.insert("output_tokens".into(), json!(u.output_tokens));
    m.insert("total_tokens".into(), json!(u.total_tokens));
    m.insert("input_tokens_details".into(), json!(u.input_tokens_details));
    m.insert(
        "output_tokens_details".into(),
        json!(u.output_tokens_details),
    );
    m
}

fn turns_json(turns: Vec<agent_sessions::ConversationTurn>) -> Value {
    turns
        .into_iter()
        .map(|t| {
            json!({"turn": t.turn, "content": t.content, "full_content": t.full_content,
                   "timestamp": t.timestamp, "can_branch": t.can_branch})
        })
        .collect()
}

/// What `advanced_interop.py read` prints, computed by this crate.
fn read_here(db: &Path, session: &str, branches: &[Option<&str>]) -> Value {
    let store = Store::open(db).unwrap();
    let s = store.advanced_session(session).unwrap().blocking();
    let totals = |t: Option<agent_sessions::UsageTotals>| {
        t.map(|t| {
            json!({"requests": t.requests, "input_tokens": t.input_tokens,
                   "output_tokens": t.output_tokens, "total_tokens": t.total_tokens,
                   "total_turns": t.total_turns})
        })
    };
    let list: Vec<Value> = s
        .list_branches()
        .unwrap()
        .into_iter()
        .map(|b| {
            json!({"branch_id": b.branch_id, "message_count": b.message_count,
                   "user_turns": b.user_turns, "is_current": b.is_current,
                   "created_at": b.created_at})
        })
        .collect();
    let mut per_branch = Vec::new();
    for &b in branches {
        let mut search = Map::new();
        for term in SEARCH_TERMS {
            search.insert(
                term.into(),
                turns_json(s.find_turns_by_content(term, b).unwrap()),
            );
        }
        let mut by_turns = Map::new();
        for g in s.get_conversation_by_turns(b).unwrap() {
            let items: Vec<Value> = g
                .items
                .iter()
                .map(|i| json!({"type": i.message_type, "tool_name": i.tool_name}))
                .collect();
            by_turns.insert(g.turn.to_string(), Value::Array(items));
        }
        let tools: Vec<Value> = s
            .get_tool_usage(b)
            .unwrap()
            .into_iter()
            .map(|t| json!([t.tool_name, t.usage_count, t.user_turn_number]))
            .collect();
        let all_usage: Vec<Value> = s
            .get_turn_usage(None, b)
            .unwrap()
            .iter()
            .map(|t| {
                let mut m = Map::new();
                m.insert("user_turn_number".into(), json!(t.user_turn_number));
                m.extend(usage_json(&t.usage));
                Value::Object(m)
            })
            .collect();
        let one = |turn: i64| -> Value {
            match s.get_turn_usage(Some(turn), b).unwrap().first() {
                Some(t) => Value::Object(usage_json(&t.usage)),
                None => json!({}),
            }
        };
        per_branch.push(json!({
            "branch": b,
            "items": s.get_branch_items(b, None).unwrap(),
            "items_limit_2": s.get_branch_items(b, Some(2)).unwrap(),
            "turns": turns_json(s.get_conversation_turns(b).unwrap()),
            "search": search,
            "by_turns": by_turns,
            "tools": tools,
            "turn_usage": all_usage,
            "turn_usage_1": one(1),
            "turn_usage_99": one(99),
            "session_usage": match b {
                Some(b) => totals(s.get_session_usage(Some(b)).unwrap()),
                None => None,
            },
        }));
    }
    let out = json!({
        "list_branches": list,
        "session_usage": totals(s.get_session_usage(None).unwrap()),
        "branches": per_branch,
    });
    store.close();
    store.wait_closed_blocking();
    out
}

// ---------------------------------------------------------------------------------------------

const CONV_BRANCHES: [Option<&str>; 5] = [
    None,
    Some("main"),
    Some("alt"),
    Some("third"),
    Some("empty"),
];

/// A value's text (key order included).
fn text(v: &Value) -> String {
    serde_json::to_string(v).expect("serialisable")
}

/// Order-sensitive comparison through the values' text, with the first differing path named.
fn assert_same(what: &str, got: &Value, want: &Value) {
    if text(got) == text(want) {
        return;
    }
    fn first_diff(path: String, a: &Value, b: &Value) -> String {
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                let kx: Vec<&String> = x.keys().collect();
                let ky: Vec<&String> = y.keys().collect();
                if kx != ky {
                    return format!("{path}: keys {kx:?} vs {ky:?}");
                }
                for (k, v) in x {
                    if text(v) != text(&y[k]) {
                        return first_diff(format!("{path}.{k}"), v, &y[k]);
                    }
                }
                path
            }
            (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
                for (i, (v, w)) in x.iter().zip(y).enumerate() {
                    if text(v) != text(w) {
                        return first_diff(format!("{path}[{i}]"), v, w);
                    }
                }
                path
            }
            _ => format!("{path}:\n  got:  {a}\n  want: {b}"),
        }
    }
    panic!("{what} differs at {}", first_diff(String::new(), got, want));
}

/// Blank what depends on the clock (timestamps; the listing order they decide).
fn without_times(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let blank = matches!(k.as_str(), "timestamp" | "created_at") && v.is_string();
                out.insert(k.clone(), if blank { json!("") } else { without_times(v) });
            }
            if let Some(Value::Array(list)) = out.get_mut("list_branches") {
                list.sort_by_key(|b| b["branch_id"].to_string());
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(without_times).collect()),
        other => other.clone(),
    }
}

#[test]
fn a_conversation_written_by_python_reads_identically_here() {
    let Some(py) = python("a_conversation_written_by_python_reads_identically_here") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("python.db");
    let results = py.run_steps(&db, &steps());
    assert_eq!(results[7], json!("alt"));
    for (session, branches) in [
        ("conv", &CONV_BRANCHES[..]),
        ("B", &[None, Some("main")][..]),
    ] {
        let theirs = py.read(&db, session, branches);
        let ours = read_here(&db, session, branches);
        assert_same(&format!("reads of session {session}"), &ours, &theirs);
    }
    // Sanity: the reads cover what they claim to.
    let theirs = py.read(&db, "conv", &CONV_BRANCHES);
    assert_eq!(theirs["list_branches"].as_array().unwrap().len(), 3);
    assert!(theirs["branches"][0]["tools"].as_array().unwrap().len() > 10);
    assert!(theirs["session_usage"]["total_turns"].as_i64().unwrap() >= 4);
}

#[test]
fn the_same_conversation_written_here_has_pythons_rows_and_reads() {
    let Some(py) = python("the_same_conversation_written_here_has_pythons_rows_and_reads") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let theirs_db = dir.path().join("python.db");
    let ours_db = dir.path().join("rust.db");
    let steps = steps();
    let their_results = py.run_steps(&theirs_db, &steps);
    let our_results = run_steps_here(&ours_db, &steps);
    assert_same("step results", &our_results, &their_results);
    // The files hold the same rows (ids, numbering, types, tool names, JSON bytes, usage).
    let (their_rows, our_rows) = (py.rows(&theirs_db), py.rows(&ours_db));
    for table in their_rows.as_object().unwrap().keys() {
        assert_same(
            &format!("table {table}"),
            &our_rows[table],
            &their_rows[table],
        );
    }
    // And Python reads our file as it reads its own.
    for (session, branches) in [("conv", &CONV_BRANCHES[..]), ("B", &[None][..])] {
        let theirs = without_times(&py.read(&theirs_db, session, branches));
        let ours = without_times(&py.read(&ours_db, session, branches));
        assert_same(
            &format!("Python's reads of session {session}"),
            &ours,
            &theirs,
        );
    }
}

#[test]
fn python_continues_a_conversation_started_here_and_vice_versa() {
    let Some(py) = python("python_continues_a_conversation_started_here_and_vice_versa") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("mixed.db");
    let steps = steps();
    let (first, second) = steps.split_at(11);
    // Rust starts (turns 1-3, usage, branch "alt" with a turn, back on main), Python continues.
    run_steps_here(&db, first);
    py.run_steps(&db, second);
    // The same steps all on one side give the same reads (time aside).
    let whole = dir.path().join("whole.db");
    py.run_steps(&whole, &steps);
    let mixed_reads = without_times(&py.read(&db, "conv", &CONV_BRANCHES));
    let whole_reads = without_times(&py.read(&whole, "conv", &CONV_BRANCHES));
    assert_same(
        "Python's reads of the mixed file",
        &mixed_reads,
        &whole_reads,
    );
    let ours = without_times(&read_here(&db, "conv", &CONV_BRANCHES));
    assert_same("our reads of the mixed file", &ours, &whole_reads);
    // Python started, this crate continues.
    let db2 = dir.path().join("mixed2.db");
    py.run_steps(&db2, first);
    run_steps_here(&db2, second);
    let reads = without_times(&py.read(&db2, "conv", &CONV_BRANCHES));
    assert_same(
        "Python's reads of the second mixed file",
        &reads,
        &whole_reads,
    );
}

#[test]
fn a_clear_by_python_sends_a_live_handle_here_back_to_main() {
    let Some(py) = python("a_clear_by_python_sends_a_live_handle_here_back_to_main") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("clear.db");
    let store = Store::builder(&db)
        .create_structure_tables(true)
        .open()
        .unwrap();
    let a = store.advanced_session("x").unwrap().blocking();
    a.add_items(vec![
        json!({"role": "user", "content": "u1"}),
        json!({"role": "assistant", "content": "a1"}),
        json!({"role": "user", "content": "u2"}),
    ])
    .unwrap();
    assert_eq!(a.create_branch_from_turn(2, Some("alt")).unwrap(), "alt");
    // Another process clears the session while this handle points at "alt".
    py.run_steps(&db, &[json!({"session": "x", "op": "clear"})]);
    a.add_items(vec![json!({"role": "user", "content": "after the clear"})])
        .unwrap();
    assert_eq!(a.current_branch_id(), "main");
    let theirs = py.read(&db, "x", &[None]);
    assert_eq!(
        theirs["branches"][0]["items"],
        json!([{"role": "user", "content": "after the clear"}])
    );
    assert_eq!(theirs["list_branches"][0]["branch_id"], "main");
    // The id "alt" stays reserved across the clear, for both SDKs.
    assert!(matches!(
        a.create_branch_from_turn(1, Some("alt")),
        Err(agent_sessions::Error::BranchIdUsed(_))
    ));
    store.close();
    store.wait_closed_blocking();
}

// ---------------------------------------------------------------------------------------------
// Known answers: what the SDK wrote and read for the same steps, committed as data

/// The SDK's `rows` of the steps' file, its step results and its reads (times blanked), made by
/// `tests/python/make_known_answers.py`.
fn known_answers() -> Value {
    let all: Value = serde_json::from_str(include_str!("data/known_answers.json")).unwrap();
    all["advanced"].clone()
}

/// `advanced_interop.py rows`, read here: the same queries, SQLite values as JSON.
fn rows_here(db: &Path) -> Value {
    let conn = rusqlite::Connection::open(db).unwrap();
    let query = |sql: &str| -> Value {
        let mut stmt = conn.prepare(sql).unwrap();
        let columns = stmt.column_count();
        let rows = stmt
            .query_map([], |row| {
                (0..columns)
                    .map(|i| {
                        Ok(match row.get_ref(i)? {
                            rusqlite::types::ValueRef::Null => Value::Null,
                            rusqlite::types::ValueRef::Integer(n) => json!(n),
                            rusqlite::types::ValueRef::Real(x) => json!(x),
                            rusqlite::types::ValueRef::Text(t) => {
                                json!(std::str::from_utf8(t).unwrap())
                            }
                            rusqlite::types::ValueRef::Blob(_) => panic!("a blob in {sql}"),
                        })
                    })
                    .collect::<rusqlite::Result<Vec<Value>>>()
                    .map(Value::Array)
            })
            .unwrap();
        Value::Array(rows.collect::<rusqlite::Result<_>>().unwrap())
    };
    json!({
        "sqlite_master": query("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY rowid"),
        "agent_sessions": query("SELECT session_id FROM agent_sessions ORDER BY rowid"),
        "agent_messages": query(
            "SELECT id, session_id, message_data, typeof(message_data) FROM agent_messages ORDER BY id"
        ),
        "message_structure": query(
            "SELECT id, session_id, message_id, branch_id, message_type, sequence_number, \
             user_turn_number, branch_turn_number, tool_name FROM message_structure ORDER BY id"
        ),
        "turn_usage": query(
            "SELECT id, session_id, branch_id, user_turn_number, requests, input_tokens, \
             output_tokens, total_tokens, input_tokens_details, output_tokens_details \
             FROM turn_usage ORDER BY id"
        ),
        "branch_reservations": query(
            "SELECT session_id, branch_id FROM branch_reservations ORDER BY rowid"
        ),
        "session_clear_generations": query(
            "SELECT session_id, generation FROM session_clear_generations ORDER BY session_id"
        ),
        "sqlite_sequence": query("SELECT name, seq FROM sqlite_sequence ORDER BY rowid"),
    })
}

/// With no Python: the steps run here write the SDK's rows (schema, message bytes, structure
/// rows with their types, tool names and numbering, usage rows with their JSON details,
/// reservations, generations, ids) and read back what the SDK read from its own file.
#[test]
fn the_same_conversation_written_here_has_the_sdks_known_rows_and_reads() {
    let known = known_answers();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("rust.db");
    let results = run_steps_here(&db, &steps());
    assert_same("step results", &results, &known["results"]);
    let rows = rows_here(&db);
    let tables = known["rows"].as_object().unwrap();
    assert_eq!(tables.len(), 8, "the known answers hold every table");
    for (table, theirs) in tables {
        assert_same(&format!("table {table}"), &rows[table], theirs);
    }
    // Each structure and usage table holds rows to compare (a table left empty pins nothing).
    for table in ["message_structure", "turn_usage", "branch_reservations"] {
        assert!(!tables[table].as_array().unwrap().is_empty(), "{table}");
    }
    let reads = known["reads"].as_object().unwrap();
    for (session, branches) in [
        ("conv", &CONV_BRANCHES[..]),
        ("B", &[None, Some("main")][..]),
    ] {
        assert_same(
            &format!("reads of session {session}"),
            &without_times(&read_here(&db, session, branches)),
            &reads[session],
        );
    }
}

//! Interop with the real Python SDK (`openai-agents==0.24.0`, `agents.SQLiteSession`) on shared
//! database files, in both directions (SPEC §5.1-5.2).
//!
//! The Python side is `tests/python/basic_interop.py`, run with `AGENT_SESSIONS_PYTHON`, or the venv `target/pyenv` the
//! tests make on first use (`agent_sessions_test_env::python`). Where neither can be had they do
//! not run (stderr says why and what to run), and under CI that fails them.
//!
//! Values are compared order-sensitively through their `serde_json` text (which also tells `1`
//! from `1.0` and `0.0` from `-0.0`); Python's answers are compared as the exact text of its
//! `json.dumps`; stored rows are compared byte for byte.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use agent_sessions::json::to_python_json;
use agent_sessions::Store;
use rusqlite::Connection;
use serde_json::Value;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/basic_interop.py");
const SDK_VERSION: &str = "0.24.0";

/// Items in JSON lines, one `add_items` batch per line. Both sides parse this very text.
const FIXTURE: &str = r#"[{"role": "user", "content": "héllo wörld — 中文 😀 naïve ☃"}, {"id": "msg_1", "type": "message", "role": "assistant", "status": "completed", "content": [{"type": "output_text", "text": "quote \" backslash \\ slash / newline \n tab \t cr \r bs \b ff \f nul \u0000 soh \u0001 us \u001f del \u007f nbsp \u00a0", "annotations": []}]}]
[{"zeta": 1, "alpha": {"y": [1, {"b": 2, "a": []}], "x": {}}, "mid": "v", "Ä": {"中": "😀", "\ud83d\ude00": "escaped pair"}}, {"floats": [0.1, 1e16, 1e-7, 2.5, -0.0, 0.0, 1.0, 1e15, 1e22, 0.0001, 1e-5, 123456789.123, 1.7976931348623157e308, 5e-324, 594751044993643.25, 1e100, -1.5, 100.0, 1E2, 0.5e-10]}]
[{"ints": [0, 1, -1, 9007199254740993, 9223372036854775807, -9223372036854775808, 18446744073709551615]}, {"empty_list": [], "empty_dict": {}, "empty_str": "", "null": null, "t": true, "f": false, "nested_empty": [[], {}, [[]], {"": {}}]}, {"unicode": "\u2028\u2029\ufeff\uffff\udbff\udfff \ud7ff \ue000 ÿ", "keys with spaces": " leading and trailing "}]
[null, true, false, "bare string ✓", 42, -7.25, [1, [2, [3, []]]], {}]
"#;

/// The fixture's batches as this crate parses them.
fn batches() -> Vec<Vec<Value>> {
    FIXTURE
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad fixture line {l}: {e}")))
        .collect()
}

fn flat(batches: &[Vec<Value>]) -> Vec<Value> {
    batches.iter().flatten().cloned().collect()
}

/// Order-sensitive text of a value.
fn text(v: &Value) -> String {
    serde_json::to_string(v).expect("serialisable")
}

/// Order-sensitive text of a list of values.
fn list(items: &[Value]) -> String {
    serde_json::to_string(items).expect("serialisable")
}

/// What Python's `json.dumps(items)` prints for these items.
fn py_dumps(items: &[Value]) -> String {
    to_python_json(&Value::Array(items.to_vec()))
}

/// Same items in the same order, item by item, with the item named when one differs.
fn assert_items(what: &str, got: &[Value], want: &[Value]) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(
            text(g),
            text(w),
            "{what}: item {i} differs (left: got, right: expected)"
        );
    }
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: {} items, expected {}\n got: {}\nwant: {}",
        got.len(),
        want.len(),
        list(got),
        list(want)
    );
}

// ---------------------------------------------------------------------------------------------
// The Python side

struct Python {
    exe: PathBuf,
    /// `--sessions-table S --messages-table M`, when not the defaults.
    tables: Vec<String>,
}

static BATCH_FILES: AtomicUsize = AtomicUsize::new(0);
static VERSION_CHECKED: OnceLock<()> = OnceLock::new();

/// The Python interpreter to test against, or `None` (the test does not run) outside CI.
fn python(test: &str) -> Option<Python> {
    let Some(exe) = agent_sessions_test_env::python() else {
        agent_sessions_test_env::unavailable(
            test,
            "no Python with the SDK (AGENT_SESSIONS_PYTHON is not set and target/pyenv could not be made)",
            agent_sessions_test_env::MAKE_VENV,
        );
        return None;
    };
    let py = Python {
        exe,
        tables: Vec::new(),
    };
    VERSION_CHECKED.get_or_init(|| {
        let v = py.run(&["version"]);
        assert_eq!(
            v,
            format!("\"{SDK_VERSION}\""),
            "{} has openai-agents {v}, the interop tests need {SDK_VERSION}",
            py.exe.display()
        );
    });
    Some(py)
}

impl Python {
    fn with_tables(&self, sessions: &str, messages: &str) -> Python {
        Python {
            exe: self.exe.clone(),
            tables: vec![
                "--sessions-table".into(),
                sessions.into(),
                "--messages-table".into(),
                messages.into(),
            ],
        }
    }

    /// Run one command; its stdout, trimmed.
    fn run<S: AsRef<OsStr>>(&self, args: &[S]) -> String {
        let mut cmd = Command::new(&self.exe);
        cmd.arg(SCRIPT).args(&self.tables).args(args);
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.exe.display()));
        let stdout = String::from_utf8(out.stdout).expect("the script prints ASCII JSON");
        assert!(
            out.status.success(),
            "{cmd:?} failed ({}):\nstdout: {stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout.trim_end().to_owned()
    }

    /// `add_items` once per line of `jsonl`.
    fn add_text(&self, db: &Path, session: &str, jsonl: &str) {
        let n = BATCH_FILES.fetch_add(1, Ordering::Relaxed);
        let file = db.with_file_name(format!("batches-{n}.jsonl"));
        std::fs::write(&file, jsonl).expect("write batch file");
        self.run(&[
            OsStr::new("add"),
            db.as_os_str(),
            OsStr::new(session),
            file.as_os_str(),
        ]);
    }

    fn add(&self, db: &Path, session: &str, batches: &[Vec<Value>]) {
        let jsonl: String = batches.iter().map(|b| list(b) + "\n").collect();
        self.add_text(db, session, &jsonl);
    }

    /// `get_items(limit)`: the exact text Python printed, and the items parsed from it.
    fn get(&self, db: &Path, session: &str, limit: Option<i64>) -> (String, Vec<Value>) {
        let mut args = vec![
            OsStr::new("get").to_owned(),
            db.as_os_str().to_owned(),
            session.into(),
        ];
        if let Some(n) = limit {
            args.push("--limit".into());
            args.push(n.to_string().into());
        }
        let out = self.run(&args);
        let items = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("Python get_items printed {out}: {e}"));
        (out, items)
    }

    /// `pop_item()` `count` times; `null` for `None`.
    fn pop(&self, db: &Path, session: &str, count: usize) -> Vec<Value> {
        let count = count.to_string();
        let out = self.run(&[
            OsStr::new("pop"),
            db.as_os_str(),
            OsStr::new(session),
            OsStr::new("--count"),
            OsStr::new(&count),
        ]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("Python pop printed {out}: {e}"))
    }

    fn clear(&self, db: &Path, session: &str) {
        self.run(&[OsStr::new("clear"), db.as_os_str(), OsStr::new(session)]);
    }

    /// Open a `SQLiteSession` on `db` (creating its tables) and close it.
    fn init(&self, db: &Path) {
        self.run(&[OsStr::new("init"), db.as_os_str()]);
    }

    /// The file as Python's `sqlite3` sees it: `{"schema", "sessions", "messages"}`.
    fn dump(&self, db: &Path) -> Value {
        let out = self.run(&[OsStr::new("dump"), db.as_os_str()]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("Python dump printed {out}: {e}"))
    }
}

// ---------------------------------------------------------------------------------------------
// The file, read directly

/// `(message_data bytes, typeof(message_data))` of a session's rows, in id order.
fn rows(db: &Path, messages_table: &str, session: &str) -> Vec<(Vec<u8>, String)> {
    let conn = Connection::open(db).expect("open db with rusqlite");
    let mut stmt = conn
        .prepare(&format!(
            "SELECT message_data, typeof(message_data) FROM {messages_table} \
             WHERE session_id = ?1 ORDER BY id"
        ))
        .expect("prepare");
    let rows = stmt
        .query_map([session], |r| {
            Ok((r.get_ref(0)?.as_bytes()?.to_vec(), r.get::<_, String>(1)?))
        })
        .expect("query")
        .collect::<rusqlite::Result<Vec<_>>>()
        .expect("read rows");
    rows
}

type MasterRow = (String, String, String, Option<String>);

fn schema(db: &Path) -> Vec<MasterRow> {
    let conn = Connection::open(db).expect("open db with rusqlite");
    let mut stmt = conn
        .prepare("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name")
        .expect("prepare");
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .expect("query")
        .collect::<rusqlite::Result<Vec<MasterRow>>>()
        .expect("read sqlite_master");
    rows
}

fn journal_mode(db: &Path) -> String {
    let conn = Connection::open(db).expect("open db with rusqlite");
    conn.query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .expect("journal_mode")
}

fn assert_same_schema(what: &str, py: &[MasterRow], rs: &[MasterRow]) {
    let names = |s: &[MasterRow]| s.iter().map(|r| r.1.clone()).collect::<Vec<_>>();
    assert_eq!(
        names(py),
        names(rs),
        "{what}: sqlite_master objects differ (left: Python, right: Rust)"
    );
    for (p, r) in py.iter().zip(rs) {
        assert_eq!(
            p, r,
            "{what}: sqlite_master row for {} differs (left: Python, right: Rust)",
            p.1
        );
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Tests

/// Python writes (several `add_items` calls); this crate reads the same values, with a limit and
/// through `pop_item`, and Python sees the pops.
#[test]
fn python_writes_rust_reads() {
    let Some(py) = python("python_writes_rust_reads") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("py_writes.db");
    let want = flat(&batches());

    py.add_text(&db, "conv", FIXTURE);

    let store = Store::open(&db).expect("open the Python-written file");
    let s = store.session("conv").blocking();
    let got = s.get_items(None).expect("get_items(None)");
    assert_items("Rust get_items(None) of Python's items", &got, &want);

    let (py_text, py_items) = py.get(&db, "conv", None);
    assert_items("Python get_items(None) of its own items", &py_items, &want);
    assert_eq!(
        py_text,
        py_dumps(&got),
        "json.dumps of Python's get_items() differs from this crate's encoding of its read"
    );

    let n = want.len();
    let last2 = s.get_items(Some(2)).expect("get_items(Some(2))");
    assert_items("Rust get_items(Some(2))", &last2, &want[n - 2..]);
    let (_, py_last2) = py.get(&db, "conv", Some(2));
    assert_items(
        "Python get_items(2) vs Rust get_items(Some(2))",
        &py_last2,
        &last2,
    );
    assert!(
        s.get_items(Some(0)).unwrap().is_empty(),
        "limit 0 not empty"
    );
    assert_items(
        "Rust get_items(Some(-1))",
        &s.get_items(Some(-1)).unwrap(),
        &want,
    );

    // Pop three from Rust, newest first; Python sees them gone.
    for (k, expected) in want.iter().rev().take(3).enumerate() {
        let popped = s.pop_item().expect("pop_item");
        assert_eq!(
            popped.as_ref().map(text),
            Some(text(expected)),
            "Rust pop #{k} of Python's items"
        );
    }
    let (_, py_rest) = py.get(&db, "conv", None);
    assert_items(
        "Python get_items after 3 Rust pops",
        &py_rest,
        &want[..n - 3],
    );

    // Pop the rest, then the empty session.
    for (k, expected) in want[..n - 3].iter().rev().enumerate() {
        let popped = s.pop_item().expect("pop_item");
        assert_eq!(
            popped.as_ref().map(text),
            Some(text(expected)),
            "Rust pop #{} of Python's items",
            k + 3
        );
    }
    assert_eq!(s.pop_item().unwrap(), None, "pop on the emptied session");
    assert!(s.get_items(None).unwrap().is_empty());
    let (_, py_after) = py.get(&db, "conv", None);
    assert!(py_after.is_empty(), "Python still sees {py_after:?}");
    store.close();
    store.wait_closed_blocking();
}

/// This crate writes; Python reads identical values, and the stored `message_data` bytes equal
/// those Python writes for the same items.
#[test]
fn rust_writes_python_reads_same_bytes() {
    let Some(py) = python("rust_writes_python_reads_same_bytes") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("rust_writes.db");
    let batches = batches();
    let want = flat(&batches);

    let store = Store::open(&db).expect("open");
    let s = store.session("from_rust").blocking();
    for b in &batches {
        s.add_items(b.clone()).expect("add_items");
    }
    store.close();
    store.wait_closed_blocking();

    py.add_text(&db, "from_python", FIXTURE);

    let (rust_text, rust_items) = py.get(&db, "from_rust", None);
    let (python_text, _) = py.get(&db, "from_python", None);
    assert_items("Python get_items of Rust's items", &rust_items, &want);
    assert_eq!(
        rust_text, python_text,
        "Python reads Rust's items (left) differently from its own (right)"
    );
    assert_eq!(rust_text, py_dumps(&want), "json.dumps of Python's read");

    let from_rust = rows(&db, "agent_messages", "from_rust");
    let from_python = rows(&db, "agent_messages", "from_python");
    assert_eq!(from_rust.len(), want.len(), "rows written by Rust");
    assert_eq!(from_python.len(), want.len(), "rows written by Python");
    for (i, ((r, rt), (p, pt))) in from_rust.iter().zip(&from_python).enumerate() {
        assert_eq!(
            lossy(r),
            lossy(p),
            "message_data of item {i} differs (left: written by Rust, right: by Python)"
        );
        assert!(
            r == p,
            "message_data bytes of item {i} differ: {r:?} vs {p:?}"
        );
        assert_eq!(
            rt, pt,
            "typeof(message_data) of item {i}: Rust {rt}, Python {pt}"
        );
    }

    // Python's sqlite3 sees the same text in the rows.
    let dump = py.dump(&db);
    let dumped: Vec<&str> = dump["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter(|m| m[1] == "from_rust")
        .map(|m| m[2].as_str().expect("message_data text"))
        .collect();
    let ours: Vec<String> = from_rust.iter().map(|(b, _)| lossy(b)).collect();
    assert_eq!(
        dumped, ours,
        "Python's sqlite3 vs rusqlite view of Rust's rows"
    );

    // Python pops Rust's items newest first.
    let popped = py.pop(&db, "from_rust", 2);
    assert_items(
        "Python pops of Rust's items",
        &popped,
        &[want[want.len() - 1].clone(), want[want.len() - 2].clone()],
    );
}

/// Python and this crate alternately append to one session while the Rust store stays open;
/// both read the same history, and each side's `pop_item` takes what the other wrote last.
#[test]
fn mixed_writers_one_session() {
    let Some(py) = python("mixed_writers_one_session") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("mixed.db");
    let b = batches();
    let rust_last = vec![serde_json::json!({"role": "user", "content": "rust last ☃", "n": 0.1})];
    let python_last =
        vec![serde_json::json!({"role": "assistant", "content": "python last ✓", "n": 1e-7})];

    let store = Store::open(&db).expect("open");
    let s = store.session("mixed").blocking();
    py.add(&db, "mixed", &b[..1]);
    s.add_items(b[1].clone()).expect("Rust add");
    py.add(&db, "mixed", &b[2..3]);
    s.add_items(b[3].clone()).expect("Rust add");
    s.add_items(rust_last.clone()).expect("Rust add");

    let mut want = flat(&b);
    want.extend(rust_last.iter().cloned());
    let got = s.get_items(None).unwrap();
    assert_items("Rust read of the mixed history", &got, &want);
    let (py_text, py_items) = py.get(&db, "mixed", None);
    assert_items("Python read of the mixed history", &py_items, &want);
    assert_eq!(
        py_text,
        py_dumps(&got),
        "Python's json.dumps vs Rust's read"
    );
    let (_, py_last2) = py.get(&db, "mixed", Some(2));
    assert_items(
        "Python get_items(2) vs Rust get_items(Some(2))",
        &py_last2,
        &s.get_items(Some(2)).unwrap(),
    );

    // Every row, whoever wrote it, holds json.dumps(item).
    let stored = rows(&db, "agent_messages", "mixed");
    assert_eq!(stored.len(), want.len(), "row count");
    for (i, ((bytes, ty), item)) in stored.iter().zip(&want).enumerate() {
        assert_eq!(
            lossy(bytes),
            to_python_json(item),
            "row {i}: stored bytes vs json.dumps(item)"
        );
        assert_eq!(ty, "text", "row {i}: typeof(message_data)");
    }

    // Python pops what Rust wrote last.
    let popped = py.pop(&db, "mixed", 1);
    assert_items("Python pop after Rust's last write", &popped, &rust_last);
    want.pop();
    assert_items(
        "Rust read after Python's pop",
        &s.get_items(None).unwrap(),
        &want,
    );

    // Rust pops what Python wrote last.
    py.add(&db, "mixed", std::slice::from_ref(&python_last));
    let popped = s.pop_item().expect("Rust pop");
    assert_eq!(
        popped.as_ref().map(text),
        Some(text(&python_last[0])),
        "Rust pop after Python's last write"
    );
    let (_, py_items) = py.get(&db, "mixed", None);
    assert_items("Python read after Rust's pop", &py_items, &want);
    assert_items(
        "Rust read after Rust's pop",
        &s.get_items(None).unwrap(),
        &want,
    );
    store.close();
    store.wait_closed_blocking();
}

/// A file initialised by Python and one initialised by this crate have the same
/// `sqlite_master`, for default and custom table names; opening one with the other side adds
/// nothing.
#[test]
fn schema_matches_python() {
    let Some(py) = python("schema_matches_python") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for (sessions, messages) in [
        ("agent_sessions", "agent_messages"),
        ("my_sessions", "my_messages"),
    ] {
        let what = format!("tables {sessions}/{messages}");
        let py_db = dir.path().join(format!("py_{sessions}.db"));
        let rs_db = dir.path().join(format!("rs_{sessions}.db"));
        let pyt = py.with_tables(sessions, messages);
        pyt.init(&py_db);
        let open = |db: &Path| {
            if sessions == "agent_sessions" {
                Store::open(db)
            } else {
                Store::builder(db)
                    .sessions_table(sessions)
                    .messages_table(messages)
                    .open()
            }
            .expect("open")
        };
        open(&rs_db).close();

        let py_schema = schema(&py_db);
        assert!(
            py_schema.iter().any(|r| r.1 == messages),
            "{what}: Python created no {messages} table: {py_schema:?}"
        );
        assert_same_schema(&what, &py_schema, &schema(&rs_db));
        assert_eq!(
            journal_mode(&py_db),
            journal_mode(&rs_db),
            "{what}: journal_mode (left: Python, right: Rust)"
        );

        // Each side opening the other's file changes nothing.
        open(&py_db).close();
        pyt.init(&rs_db);
        assert_same_schema(
            &format!("{what}, each file reopened by the other side"),
            &schema(&py_db),
            &schema(&rs_db),
        );
        assert_same_schema(
            &format!("{what}, Python's file after Rust opened it"),
            &py_schema,
            &schema(&py_db),
        );
    }
}

/// Custom table names: each side sees the other's items in `s2`/`m2`, and nothing lands in the
/// default tables.
#[test]
fn custom_table_names_shared() {
    let Some(default_py) = python("custom_table_names_shared") else {
        return;
    };
    let py = default_py.with_tables("s2", "m2");
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("custom.db");
    let b = batches();

    let store = Store::builder(&db)
        .sessions_table("s2")
        .messages_table("m2")
        .open()
        .expect("open with s2/m2");
    let s = store.session("c").blocking();
    s.add_items(b[0].clone()).expect("Rust add");
    let (_, seen) = py.get(&db, "c", None);
    assert_items("Python (s2/m2) read of Rust's items", &seen, &b[0]);

    py.add(&db, "c", &b[1..]);
    let want = flat(&b);
    assert_items(
        "Rust (s2/m2) read of the shared history",
        &s.get_items(None).unwrap(),
        &want,
    );
    let (_, seen) = py.get(&db, "c", None);
    assert_items("Python (s2/m2) read of the shared history", &seen, &want);

    let names: Vec<String> = schema(&db).into_iter().map(|r| r.1).collect();
    assert!(
        !names.iter().any(|n| n.starts_with("agent_")),
        "default tables were created next to s2/m2: {names:?}"
    );
    assert_eq!(rows(&db, "m2", "c").len(), want.len(), "rows in m2");

    // The default tables of the same file hold none of it, on either side.
    let default_store = Store::open(&db).expect("open with default tables");
    assert!(
        default_store
            .session("c")
            .blocking()
            .get_items(None)
            .unwrap()
            .is_empty(),
        "Rust with default tables sees s2/m2 items"
    );
    default_store.close();
    let (_, seen) = default_py.get(&db, "c", None);
    assert!(
        seen.is_empty(),
        "Python with default tables sees s2/m2 items: {seen:?}"
    );
    store.close();
    store.wait_closed_blocking();
}

/// `clear_session` from Python is seen by this crate and the other way round; other sessions
/// are untouched and a cleared session can be written again.
#[test]
fn clear_session_both_ways() {
    let Some(py) = python("clear_session_both_ways") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("clear.db");
    let b = batches();

    let store = Store::open(&db).expect("open");
    let (a, bb, keep) = (
        store.session("a").blocking(),
        store.session("b").blocking(),
        store.session("keep").blocking(),
    );
    for name in ["a", "b", "keep"] {
        py.add(&db, name, &b[..1]);
    }
    for s in [&a, &bb, &keep] {
        s.add_items(b[1].clone()).expect("Rust add");
    }
    let want = flat(&b[..2]);

    // Python clears "a".
    py.clear(&db, "a");
    assert!(
        a.get_items(None).unwrap().is_empty(),
        "Rust still sees items of a session Python cleared"
    );
    assert_eq!(a.pop_item().unwrap(), None, "Rust pop on a cleared session");
    let listed: Vec<String> = store
        .list_sessions_blocking()
        .unwrap()
        .into_iter()
        .map(|i| i.session_id)
        .collect();
    assert_eq!(
        listed,
        ["b", "keep"],
        "sessions listed by Rust after Python cleared a"
    );
    assert_items("Rust read of b", &bb.get_items(None).unwrap(), &want);

    // Rust clears "b".
    bb.clear_session().expect("Rust clear");
    let (_, seen) = py.get(&db, "b", None);
    assert!(
        seen.is_empty(),
        "Python still sees items of a session Rust cleared: {seen:?}"
    );
    let (_, seen) = py.get(&db, "keep", None);
    assert_items("Python read of the untouched session", &seen, &want);
    let dump = py.dump(&db);
    let session_rows: Vec<&Value> = dump["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r[0])
        .collect();
    assert_eq!(
        session_rows,
        ["keep"],
        "session rows Python sees after both clears"
    );
    let message_sessions: Vec<&Value> = dump["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r[1])
        .filter(|s| *s != "keep")
        .collect();
    assert!(
        message_sessions.is_empty(),
        "message rows of cleared sessions remain: {message_sessions:?}"
    );

    // Cleared sessions can be written again, by either side, with no stale items.
    py.add(&db, "b", &b[2..3]);
    assert_items(
        "Rust read of b rewritten by Python",
        &bb.get_items(None).unwrap(),
        &b[2],
    );
    a.add_items(b[3].clone()).expect("Rust add");
    let (_, seen) = py.get(&db, "a", None);
    assert_items("Python read of a rewritten by Rust", &seen, &b[3]);
    store.close();
    store.wait_closed_blocking();
}

/// Known divergence: Python keeps integers of any size; this crate's items are `serde_json`
/// values (no `arbitrary_precision`), so an integer outside `i64`/`u64` written by Python is read
/// back as a float (`1180591620717411303424` → `1.1805916207174113e+21`) and re-stored so.
#[test]
#[ignore = "known divergence: integers beyond 64 bits written by Python are read as floats"]
fn python_ints_beyond_64_bits() {
    let Some(py) = python("python_ints_beyond_64_bits") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bigint.db");
    let jsonl = "[{\"big\": 1180591620717411303424, \"neg\": -9223372036854775809}]\n";
    py.add_text(&db, "big", jsonl);
    let (py_text, _) = py.get(&db, "big", None);
    let stored = rows(&db, "agent_messages", "big");
    let store = Store::open(&db).expect("open");
    let got = store.session("big").blocking().get_items(None).unwrap();
    assert_eq!(
        py_dumps(&got),
        py_text,
        "Rust read (left) of Python's row {:?} differs from Python's read (right)",
        lossy(&stored[0].0)
    );
    store.close();
    store.wait_closed_blocking();
}

/// Python strings may hold lone surrogates and `json.dumps` writes them as `"\ud800"`, which no
/// Rust string can hold: such a row is read with U+FFFD in place of the lone surrogate (lossy,
/// but not lost — before that repair it was skipped as corrupt, and `pop_item` deleted it).
#[test]
fn python_lone_surrogates() {
    let Some(py) = python("python_lone_surrogates") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("surrogate.db");
    py.add_text(&db, "s", "[{\"ok\": 1}, {\"lone\": \"x\\ud800y\"}]\n");
    // serde_json cannot parse Python's answer either, so check its text.
    let py_text = py.run(&[OsStr::new("get"), db.as_os_str(), OsStr::new("s")]);
    assert_eq!(
        py_text, r#"[{"ok": 1}, {"lone": "x\ud800y"}]"#,
        "Python's read"
    );
    let store = Store::open(&db).expect("open");
    let s = store.session("s").blocking();
    let got = s.get_items(None).unwrap();
    assert_eq!(
        got.len(),
        2,
        "Rust read {} of the 2 items Python reads ({py_text}); stored rows: {:?}",
        list(&got),
        rows(&db, "agent_messages", "s")
            .iter()
            .map(|r| lossy(&r.0))
            .collect::<Vec<_>>()
    );
    // Read, with the lone surrogate replaced by U+FFFD rather than the row lost.
    assert_eq!(got[1], serde_json::json!({"lone": "x\u{fffd}y"}));
    store.close();
    store.wait_closed_blocking();
}

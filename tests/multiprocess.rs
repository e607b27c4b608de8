//! Several processes on one file at once (SPEC §10): two processes of this crate and one Python
//! SDK process write concurrently, each to its own session and to one shared session. Nothing may
//! be lost and no "database is locked" may surface (every writer waits up to its busy timeout).
//! The Python writer needs the interop Python (`agent_sessions_test_env::python`; not run
//! without one, which fails under CI).

use std::process::{Command, Stdio};

use agent_sessions::Store;
use serde_json::json;

const CHILD_ENV: &str = "AGENT_SESSIONS_MP_CHILD";
const N: usize = 300;

/// Child mode: write N items to its own session and N to the shared one, interleaved.
/// (The child process's entry point, not a test: ignored in normal runs, run by the parent with
/// `--ignored --exact mp_child`.)
#[test]
#[ignore = "child-process entry point of the multi-process tests"]
fn mp_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (path, name) = spec.split_once('|').unwrap();
    if let Some(name) = name.strip_prefix("advanced:") {
        return advanced_child(path, name);
    }
    let store = Store::open(path).unwrap();
    let own = store.session(name).blocking();
    let shared = store.session("shared").blocking();
    for i in 0..N {
        own.add_items(vec![json!({"writer": name, "i": i})])
            .unwrap();
        shared
            .add_items(vec![json!({"writer": name, "i": i})])
            .unwrap();
    }
}

/// Start two child processes of this test binary (`mode` selects basic or Advanced writing) and,
/// when a Python SDK is available, the Python `script`, all on `path` at once; wait for all of
/// them and return the writer names.
fn run_writers(path: &std::path::Path, mode: &str, script: &str) -> Vec<&'static str> {
    let exe = std::env::current_exe().unwrap();
    let mut children = Vec::new();
    let mut writers = Vec::new();
    for name in ["rust-a", "rust-b"] {
        children.push(
            Command::new(&exe)
                .args([
                    "mp_child",
                    "--exact",
                    "--ignored",
                    "--nocapture",
                    "--test-threads",
                    "1",
                ])
                .env(CHILD_ENV, format!("{}|{mode}{name}", path.display()))
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        );
        writers.push(name);
    }
    if let Some(py) = python() {
        let script = format!("{}/tests/python/{script}", env!("CARGO_MANIFEST_DIR"));
        children.push(
            Command::new(py)
                .arg(script)
                .arg(path)
                .args(["python", &N.to_string()])
                .spawn()
                .unwrap(),
        );
        writers.push("python");
    }
    for mut c in children {
        let status = c.wait().unwrap();
        assert!(status.success(), "a writer process failed: {status}");
    }
    writers
}

fn python() -> Option<String> {
    let found = agent_sessions_test_env::python();
    if found.is_none() {
        agent_sessions_test_env::unavailable(
            module_path!(),
            "no Python with the SDK (AGENT_SESSIONS_PYTHON is not set and target/pyenv could not be made)",
            agent_sessions_test_env::MAKE_VENV,
        );
    }
    found.map(|p| p.display().to_string())
}

#[test]
fn two_rust_processes_and_python_write_one_file_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mp.db");
    // Create the tables first so every writer starts on an initialised file.
    Store::open(&path).unwrap().close();
    let writers = run_writers(&path, "", "mp_writer.py");
    let store = Store::open(&path).unwrap();
    let shared = store.session("shared").blocking().get_items(None).unwrap();
    assert_eq!(
        shared.len(),
        N * writers.len(),
        "shared session lost writes"
    );
    for w in &writers {
        let own = store.session(*w).blocking().get_items(None).unwrap();
        let expected: Vec<_> = (0..N).map(|i| json!({"writer": w, "i": i})).collect();
        assert_eq!(own, expected, "session {w}: lost or reordered writes");
        let in_shared: Vec<_> = shared
            .iter()
            .filter(|v| v["writer"] == json!(w))
            .cloned()
            .collect();
        assert_eq!(
            in_shared, expected,
            "shared session: {w}'s writes lost or reordered"
        );
    }
}

fn advanced_child(path: &str, name: &str) {
    let store = Store::builder(path)
        .create_structure_tables(true)
        .open()
        .unwrap();
    let own = store.advanced_session(name).unwrap().blocking();
    let shared = store.advanced_session("shared").unwrap().blocking();
    for i in 0..N {
        let item = json!({"role": "user", "content": format!("{name} {i}")});
        own.add_items(vec![item.clone()]).unwrap();
        shared.add_items(vec![item]).unwrap();
    }
}

/// Advanced sessions too: two Rust processes and a Python `AdvancedSQLiteSession` process number
/// their turns in one shared session at once; every item is there once, each writer's in order,
/// and sequence and turn numbers stay unique and gap-free (I9 across processes).
#[test]
fn advanced_writers_in_three_processes_keep_numbering_consistent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mp-adv.db");
    Store::builder(&path)
        .create_structure_tables(true)
        .open()
        .unwrap()
        .close();
    let writers = run_writers(&path, "advanced:", "mp_advanced_writer.py");
    let store = Store::open(&path).unwrap();
    let shared = store.advanced_session("shared").unwrap().blocking();
    let items = shared.get_items(None).unwrap();
    assert_eq!(items.len(), N * writers.len(), "shared session lost writes");
    for w in &writers {
        let mine: Vec<_> = items
            .iter()
            .filter(|v| v["content"].as_str().unwrap().starts_with(&format!("{w} ")))
            .cloned()
            .collect();
        let expected: Vec<_> = (0..N)
            .map(|i| json!({"role": "user", "content": format!("{w} {i}")}))
            .collect();
        assert_eq!(mine, expected, "{w}'s writes lost or reordered");
    }
    // One user item per turn: turns 1..=total, in sequence order, no gaps, no duplicates.
    let turns = shared.get_conversation_turns(None).unwrap();
    let numbers: Vec<i64> = turns.iter().map(|t| t.turn).collect();
    let want: Vec<i64> = (1..=(N * writers.len()) as i64).collect();
    assert_eq!(numbers, want, "turn numbers across processes");
    let conn = rusqlite::Connection::open(&path).unwrap();
    let (count, distinct, max): (i64, i64, i64) = conn
        .query_row(
            "SELECT COUNT(*), COUNT(DISTINCT sequence_number), MAX(sequence_number) \
             FROM message_structure WHERE session_id = 'shared'",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    assert_eq!(
        (count, distinct, max),
        (want.len() as i64, want.len() as i64, want.len() as i64)
    );
}

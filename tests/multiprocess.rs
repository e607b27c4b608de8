//! Several processes on one file at once (SPEC §10): two processes of this crate and one Python
//! SDK process write concurrently, each to its own session and to one shared session. Nothing may
//! be lost and no "database is locked" may surface (every writer waits up to its busy timeout).
//! The Python writer needs `AGENT_SESSIONS_PYTHON` (skipped without it, except in CI).

use std::process::{Command, Stdio};

use agent_sessions::Store;
use serde_json::json;

const CHILD_ENV: &str = "AGENT_SESSIONS_MP_CHILD";
const N: usize = 300;

/// Child mode: write N items to its own session and N to the shared one, interleaved.
#[test]
fn mp_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (path, name) = spec.split_once('|').unwrap();
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

fn python() -> Option<String> {
    match std::env::var("AGENT_SESSIONS_PYTHON") {
        Ok(p) => Some(p),
        Err(_) if std::env::var_os("CI").is_some() => {
            panic!("AGENT_SESSIONS_PYTHON must name a python with openai-agents in CI")
        }
        Err(_) => {
            eprintln!("multiprocess: Python writer skipped (AGENT_SESSIONS_PYTHON not set)");
            None
        }
    }
}

#[test]
fn two_rust_processes_and_python_write_one_file_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mp.db");
    // Create the tables first so every writer starts on an initialised file.
    Store::open(&path).unwrap().close();
    let exe = std::env::current_exe().unwrap();
    let mut children = Vec::new();
    let mut writers = Vec::new();
    for name in ["rust-a", "rust-b"] {
        children.push(
            Command::new(&exe)
                .args(["mp_child", "--exact", "--nocapture", "--test-threads", "1"])
                .env(CHILD_ENV, format!("{}|{name}", path.display()))
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        );
        writers.push(name);
    }
    if let Some(py) = python() {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/mp_writer.py");
        children.push(
            Command::new(py)
                .args([
                    script,
                    &path.display().to_string(),
                    "python",
                    &N.to_string(),
                ])
                .spawn()
                .unwrap(),
        );
        writers.push("python");
    }
    for mut c in children {
        let status = c.wait().unwrap();
        assert!(status.success(), "a writer process failed: {status}");
    }
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

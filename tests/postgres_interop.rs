//! Interop with the real Python SDK's `SQLAlchemySession` (`openai-agents[sqlalchemy]==0.24.0`)
//! on one PostgreSQL database, through both of its drivers (asyncpg, psycopg): Python writes,
//! Rust reads, pops and continues, and the reverse; Python and Rust writers and poppers racing
//! on one session lose nothing and pop nothing twice, and our writes are read in commit order.
//!
//! The Python side is `tests/python/pg_interop.py`, run with `AGENT_SESSIONS_PYTHON`, or the venv `target/pyenv` the
//! tests make on first use (`agent_sessions_test_env::python`). Where neither can be had they do
//! not run (stderr says why and what to run), and under CI that fails them.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use agent_sessions::Store;
use serde_json::{json, Value};

mod pg;
use pg::server;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/pg_interop.py");

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

/// A fresh table pair in the public schema (the SDK's tables are configurable by name).
fn tables(tag: &str) -> (String, String) {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let p = std::process::id();
    (format!("s_{tag}_{p}_{n}"), format!("m_{tag}_{p}_{n}"))
}

fn store(t: &(String, String)) -> Store {
    Store::builder(server().as_str())
        .sessions_table(&t.0)
        .messages_table(&t.1)
        .open()
        .unwrap()
}

/// Run the Python side; its stdout lines.
fn py(py: &str, driver: &str, t: &(String, String), args: &[&str], stdin: &str) -> Vec<String> {
    let mut child = Command::new(py)
        .arg(SCRIPT)
        .args([driver, &server(), &format!("{},{}", t.0, t.1)])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start python");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "python {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn parse(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("bad json from python {line}: {e}"))
}

#[test]
#[cfg_attr(
    agent_sessions_no_pg,
    ignore = "no PostgreSQL server: install postgresql (its binaries start a throwaway cluster) or set AGENT_SESSIONS_PG_URL"
)]
fn python_and_rust_continue_each_others_sessions_with_both_drivers() {
    let Some(p) = python() else { return };
    for driver in ["asyncpg", "psycopg"] {
        let t = tables(driver);
        let batches = [
            json!([{"role": "user", "content": "héllo 😀 \u{0} \"q\""}, {"n": [1, 2.5, -0.0, 1e16]}]),
            json!([{"role": "assistant", "content": [{"type": "output_text", "text": "ok"}]}]),
        ];
        let lines: String = batches.iter().map(|b| format!("{b}\n")).collect();
        assert_eq!(py(&p, driver, &t, &["add", "u"], &lines), ["ok", "ok"]);
        // Rust reads what Python wrote, pops the newest and continues.
        let s = store(&t);
        let session = s.session("u").blocking();
        let mut want: Vec<Value> = batches
            .iter()
            .flat_map(|b| b.as_array().unwrap().clone())
            .collect();
        assert_eq!(session.get_items(None).unwrap(), want, "{driver}");
        assert_eq!(session.pop_item().unwrap(), want.pop());
        session
            .add_items(vec![json!({"from": "rust", "text": "ünï"})])
            .unwrap();
        want.push(json!({"from": "rust", "text": "ünï"}));
        // Python reads what Rust wrote, and pops Rust's item.
        assert_eq!(
            parse(&py(&p, driver, &t, &["get", "u"], "")[0]),
            Value::Array(want.clone())
        );
        assert_eq!(
            parse(&py(&p, driver, &t, &["pop", "u"], "")[0]),
            want.pop().unwrap()
        );
        assert_eq!(session.get_items(None).unwrap(), want, "{driver}");
        s.close();
    }
}

#[test]
#[cfg_attr(
    agent_sessions_no_pg,
    ignore = "no PostgreSQL server: install postgresql (its binaries start a throwaway cluster) or set AGENT_SESSIONS_PG_URL"
)]
fn racing_python_and_rust_writers_and_poppers_lose_nothing_and_pop_nothing_twice() {
    let Some(p) = python() else { return };
    let t = tables("race");
    const N: usize = 150;
    let s = store(&t);
    let session = s.session("r").blocking();
    session.add_items(vec![json!("seed")]).unwrap();
    let (pp, tt) = (p.clone(), t.clone());
    let python_writer = std::thread::spawn(move || {
        py(
            &pp,
            "asyncpg",
            &tt,
            &["race", "r", &N.to_string(), "py"],
            "",
        )
    });
    for i in 0..N {
        session
            .add_items(vec![json!({"w": "rust", "i": i})])
            .unwrap();
    }
    let py_acked = python_writer.join().unwrap();
    assert_eq!(py_acked.len(), N);
    let all = session.get_items(None).unwrap();
    assert_eq!(all.len(), 2 * N + 1, "an item was lost or doubled");
    // Our writes are read in the order they were acknowledged (commit order); so are Python's
    // here, as one Python writer commits one add at a time.
    for w in ["rust", "py"] {
        let seq: Vec<u64> = all
            .iter()
            .filter(|v| v["w"] == w)
            .map(|v| v["i"].as_u64().unwrap())
            .collect();
        assert_eq!(
            seq,
            (0..N as u64).collect::<Vec<_>>(),
            "{w}'s items out of order"
        );
    }
    // Now pop from both sides at once: every item popped at most once, nothing else lost.
    let (pp, tt) = (p.clone(), t.clone());
    let python_popper =
        std::thread::spawn(move || py(&pp, "psycopg", &tt, &["popn", "r", "100"], ""));
    let mut popped: Vec<Value> = (0..100)
        .filter_map(|_| session.pop_item().unwrap())
        .collect();
    popped.extend(
        python_popper
            .join()
            .unwrap()
            .iter()
            .map(|l| parse(l))
            .filter(|v| !v.is_null()),
    );
    let left = session.get_items(None).unwrap();
    let mut seen: Vec<String> = popped.iter().chain(&left).map(Value::to_string).collect();
    assert_eq!(
        seen.len(),
        2 * N + 1,
        "popped {} + left {}",
        popped.len(),
        left.len()
    );
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 2 * N + 1, "an item was popped twice");
    // What is left is a prefix of the history (pops take the newest).
    assert_eq!(left[..], all[..left.len()]);
    s.close();
}

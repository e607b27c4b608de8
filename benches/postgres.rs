//! The PostgreSQL workload side by side, in one run (`harness = false`):
//!
//! ```text
//! AGENT_SESSIONS_PG_URL=postgresql://… [AGENT_SESSIONS_PYTHON=venv/bin/python] \
//!   cargo bench --features postgres --bench postgres
//! ```
//!
//! 1. the ceiling: one hand-written connection running group commits of 30 requests (a
//!    savepoint and a one-row insert each) — the shape the pool uses, without anything else;
//! 2. the store: 30 writers `add_items([one item])`, one session each, and 10 readers
//!    `get_items(limit=20)`, through one process's pool;
//! 3. with `AGENT_SESSIONS_PYTHON` (a venv with `openai-agents[sqlalchemy]` and asyncpg): the
//!    SDK's `SQLAlchemySession` under the same workload (`benches/python/sqlalchemy_load.py`).
//!
//! `BENCH_WRITERS` (default 1) and `BENCH_POOL_READERS` (default 2) set the store's writer
//! connections and its readers (shared by the writers).
//!
//! The server's own settings apply (`synchronous_commit` on: the store runs at `Full`). Compare
//! the ratios printed at the end: the machine is shared, absolute figures are noise.
//! `BENCH_SECONDS` (default 10) sets the time per phase.

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_sessions::{Durability, Store};
use serde_json::{json, Value};

const WRITERS: usize = 30;
const READERS: usize = 10;

fn rounds() -> usize {
    std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn seconds() -> f64 {
    std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10.0)
}

fn server() -> String {
    std::env::var("AGENT_SESSIONS_PG_URL").expect(
        "AGENT_SESSIONS_PG_URL names the server to benchmark (scripts/pg-cluster.sh starts one)",
    )
}

fn fresh_schema(client: &mut postgres::Client, name: &str) -> String {
    client
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}"
        ))
        .unwrap();
    format!("{}?options=-csearch_path%3D{name}", server())
}

/// One connection, group commits of `per_tx` requests, each a savepoint and an insert.
fn ceiling(admin: &mut postgres::Client, per_tx: usize) -> f64 {
    let url = fresh_schema(admin, "bench_raw");
    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    c.batch_execute(
        "CREATE TABLE m (id SERIAL PRIMARY KEY, session_id VARCHAR NOT NULL, \
         message_data TEXT NOT NULL, created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP)",
    )
    .unwrap();
    let insert = c
        .prepare("INSERT INTO m (session_id, message_data) VALUES ($1, $2)")
        .unwrap();
    let (start, mut done) = (Instant::now(), 0u64);
    while start.elapsed().as_secs_f64() < seconds() {
        c.batch_execute("BEGIN").unwrap();
        for i in 0..per_tx {
            c.batch_execute("SAVEPOINT r").unwrap();
            let data = format!("{{\"role\":\"user\",\"content\":\"message {done} {i}\"}}");
            c.execute(&insert, &[&format!("w{i}"), &data]).unwrap();
            c.batch_execute("RELEASE SAVEPOINT r").unwrap();
        }
        c.batch_execute("COMMIT").unwrap();
        done += per_tx as u64;
    }
    done as f64 / start.elapsed().as_secs_f64()
}

/// The store under the workload: (writes/s, reads/s, most server connections seen).
fn store(admin: &mut postgres::Client, readers: usize) -> (f64, f64, i64) {
    let url = fresh_schema(admin, "bench_store");
    let pool_readers = std::env::var("BENCH_POOL_READERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let writers = std::env::var("BENCH_WRITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let store = Store::builder(url.as_str())
        .durability(Durability::Full)
        .writers(writers)
        .readers(pool_readers)
        .open()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let (writes, reads) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut threads = Vec::new();
    for w in 0..WRITERS {
        let (s, stop, writes) = (
            store.session(format!("w{w}")).blocking(),
            stop.clone(),
            writes.clone(),
        );
        threads.push(std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                s.add_items(vec![
                    json!({"role": "user", "content": format!("writer {w} message {i}")}),
                ])
                .unwrap();
                writes.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        }));
    }
    for r in 0..readers {
        let (s, stop, reads) = (
            store.session(format!("w{r}")).blocking(),
            stop.clone(),
            reads.clone(),
        );
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                s.get_items(Some(20)).unwrap();
                reads.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let start = Instant::now();
    let mut peak = 0i64;
    while start.elapsed().as_secs_f64() < seconds() {
        std::thread::sleep(Duration::from_millis(250));
        let n: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'agent-sessions'",
                &[],
            )
            .unwrap()
            .get(0);
        peak = peak.max(n);
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let elapsed = start.elapsed().as_secs_f64();
    let stats = store.pool_stats();
    eprintln!(
        "  (store: {} groups, {:.1} requests each on average)",
        stats.write_batches,
        stats.write_requests as f64 / stats.write_batches.max(1) as f64
    );
    store.close();
    (
        writes.load(Ordering::Relaxed) as f64 / elapsed,
        reads.load(Ordering::Relaxed) as f64 / elapsed,
        peak,
    )
}

/// The SDK's `SQLAlchemySession` (asyncpg) under the same workload, in a Python process.
fn sdk(python: &str) -> Option<Value> {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/benches/python/sqlalchemy_load.py"
    );
    let out = Command::new(python)
        .args([script, &server(), &seconds().to_string()])
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!("SDK run failed: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    serde_json::from_slice(&out.stdout).ok()
}

fn main() {
    let mut admin = postgres::Client::connect(&server(), postgres::NoTls).unwrap();
    let sync: String = admin
        .query_one("SHOW synchronous_commit", &[])
        .unwrap()
        .get(0);
    let fsync: String = admin.query_one("SHOW fsync", &[]).unwrap().get(0);
    println!(
        "PostgreSQL, fsync={fsync}, synchronous_commit={sync}; {WRITERS} writers (+ {READERS} \
         readers), {} s per phase, {} alternating rounds, medians",
        seconds(),
        rounds()
    );
    let (mut raw, mut alone, mut mixed, mut reads) = (vec![], vec![], vec![], vec![]);
    let mut conns = 0;
    for _ in 0..rounds() {
        raw.push(ceiling(&mut admin, WRITERS));
        alone.push(store(&mut admin, 0).0);
        let (w, r, c) = store(&mut admin, READERS);
        mixed.push(w);
        reads.push(r);
        conns = conns.max(c);
    }
    let (raw, alone, w) = (median(raw), median(alone), median(mixed));
    println!("ceiling (1 connection, {WRITERS} requests/transaction): {raw:8.0} requests/s");
    println!(
        "agent-sessions (Full), writers only:          {alone:8.0} writes/s   store / ceiling: {:.2}",
        alone / raw
    );
    println!(
        "agent-sessions (Full), with {READERS} readers:        {w:8.0} writes/s, {:.0} reads/s, \
         at most {conns} server connections",
        median(reads)
    );
    if let Ok(python) = std::env::var("AGENT_SESSIONS_PYTHON") {
        if let Some(v) = sdk(&python) {
            let sdk_w = v["writes_per_sec"].as_f64().unwrap_or(0.0);
            println!(
                "SDK SQLAlchemySession (asyncpg):              {sdk_w:8.0} writes/s, {:.0} reads/s, {} errors",
                v["reads_per_sec"].as_f64().unwrap_or(0.0),
                v["errors"]
            );
            println!("  store / SDK: {:.1}x", w / sdk_w.max(1e-9));
        }
    }
}

//! The store against SQLite's own ceiling, side by side in one process run (`harness = false`):
//!
//! - **raw**: one thread, no readers, a plain rusqlite loop with group commit in the shape the
//!   pool uses — `BEGIN IMMEDIATE`, then 30 single-item add requests each in its own savepoint
//!   (the SDK's three statements: session-row upsert, message insert, `updated_at` touch), then
//!   `COMMIT` — on the SDK's tables, at `synchronous=NORMAL` and `FULL`;
//! - **store**: the `agent-sessions stress` workload (30 writer tasks looping
//!   `add_items([one item])`, 10 reader tasks looping `get_items(limit=20)`, one shared session,
//!   a multi-threaded tokio runtime) at Normal and Full, and with Advanced sessions at Normal;
//!   and, to show what the readers take from the writer on a small machine, the writers alone.
//!
//! Each round runs every configuration once, on a fresh file; rounds repeat, and the medians
//! give the ratios the performance issue targets. The machine is shared and noisy: only ratios
//! within one run mean anything.
//!
//! `cargo bench --bench ceiling` (env: `CEILING_SECONDS`, default 10; `CEILING_ROUNDS`,
//! default 2). `cargo bench --bench ceiling -- count raw|store|advanced N` runs exactly `N`
//! acknowledged adds and exits (what `scripts/callgrind.sh` counts instructions of).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_sessions::{Durability, Session, Store};
use rusqlite::{params, Connection};
use serde_json::json;

const WRITERS: usize = 30;
const READERS: usize = 10;
const LIMIT: i64 = 20;
/// Requests per raw transaction: one per writer, as the pool's groups are at best.
const GROUP: usize = 30;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn item(w: usize, i: u64) -> serde_json::Value {
    json!({"role": "user", "content": format!("writer {w} message {i}")})
}

// ------------------------------------------------------------------------------------------
// The raw loop
// ------------------------------------------------------------------------------------------

/// The SDK's tables (SPEC §5.1), as `SQLiteSession` creates them.
const RAW_DDL: &str = "
    CREATE TABLE IF NOT EXISTS agent_sessions (
        session_id TEXT PRIMARY KEY,
        created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
        updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP
    );
    CREATE TABLE IF NOT EXISTS agent_messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id TEXT NOT NULL,
        message_data TEXT NOT NULL,
        created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
        FOREIGN KEY (session_id) REFERENCES agent_sessions (session_id) ON DELETE CASCADE
    );
    CREATE INDEX IF NOT EXISTS idx_agent_messages_session_id ON agent_messages (session_id, id);
";

struct Raw {
    conn: Connection,
    text: String,
    done: u64,
}

impl Raw {
    fn open(path: &std::path::Path, durability: Durability) -> Raw {
        let conn = Connection::open(path).unwrap();
        conn.pragma_update(None, "foreign_keys", "OFF").unwrap();
        conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))
            .unwrap();
        let sync = match durability {
            Durability::Full => "FULL",
            _ => "NORMAL",
        };
        conn.pragma_update(None, "synchronous", sync).unwrap();
        conn.execute_batch(RAW_DDL).unwrap();
        Raw {
            conn,
            text: String::new(),
            done: 0,
        }
    }

    /// One group: `BEGIN IMMEDIATE`, `n` requests in savepoints, `COMMIT`.
    fn group(&mut self, session: &str, n: usize) {
        let c = &self.conn;
        c.prepare_cached("BEGIN IMMEDIATE")
            .unwrap()
            .execute([])
            .unwrap();
        for _ in 0..n {
            let it = item((self.done % WRITERS as u64) as usize, self.done);
            c.prepare_cached("SAVEPOINT request")
                .unwrap()
                .execute([])
                .unwrap();
            c.prepare_cached("INSERT OR IGNORE INTO agent_sessions (session_id) VALUES (?1)")
                .unwrap()
                .execute([session])
                .unwrap();
            self.text.clear();
            agent_sessions::json::write_python_json(&mut self.text, &it);
            c.prepare_cached(
                "INSERT INTO agent_messages (session_id, message_data) VALUES (?1, ?2)",
            )
            .unwrap()
            .execute(params![session, self.text])
            .unwrap();
            c.prepare_cached(
                "UPDATE agent_sessions SET updated_at = CURRENT_TIMESTAMP WHERE session_id = ?1",
            )
            .unwrap()
            .execute([session])
            .unwrap();
            c.prepare_cached("RELEASE request")
                .unwrap()
                .execute([])
                .unwrap();
            self.done += 1;
        }
        c.prepare_cached("COMMIT").unwrap().execute([]).unwrap();
    }
}

/// Requests per second of the raw loop for `secs`.
fn raw_rate(durability: Durability, secs: Duration) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let mut raw = Raw::open(&dir.path().join("raw.db"), durability);
    let start = Instant::now();
    while start.elapsed() < secs {
        raw.group("ceiling", GROUP);
    }
    raw.done as f64 / start.elapsed().as_secs_f64()
}

// ------------------------------------------------------------------------------------------
// The store
// ------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Basic,
    Advanced,
}

fn open_store(path: &std::path::Path, durability: Durability, kind: Kind) -> Store {
    Store::builder(path)
        .durability(durability)
        .create_structure_tables(kind == Kind::Advanced)
        .open()
        .unwrap()
}

fn session_of(store: &Store, kind: Kind) -> Arc<dyn Session> {
    match kind {
        Kind::Basic => Arc::new(store.session("ceiling")),
        Kind::Advanced => Arc::new(store.advanced_session("ceiling").unwrap()),
    }
}

struct StoreRun {
    writes_per_sec: f64,
    reads_per_sec: f64,
    max_add_ms: f64,
    mean_group: f64,
}

/// The stress workload for `secs` (with `readers` reader tasks): writes/s, reads/s, the slowest
/// add, the mean group size.
fn store_rate(durability: Durability, kind: Kind, readers: usize, secs: Duration) -> StoreRun {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir.path().join("store.db"), durability, kind);
    let session = session_of(&store, kind);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_time()
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let reads = Arc::new(AtomicU64::new(0));
    let max_us = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let (s, stop, writes, max_us) = (
                session.clone(),
                stop.clone(),
                writes.clone(),
                max_us.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    s.add_items(vec![item(w, i)]).await.unwrap();
                    max_us.fetch_max(t.elapsed().as_micros() as u64, Ordering::Relaxed);
                    writes.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            }));
        }
        for _ in 0..readers {
            let (s, stop, reads) = (session.clone(), stop.clone(), reads.clone());
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    s.get_items(Some(LIMIT)).await.unwrap();
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        tokio::time::sleep(secs).await;
        stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.unwrap();
        }
    });
    let elapsed = start.elapsed().as_secs_f64();
    let stats = store.pool_stats();
    drop(session);
    store.close();
    store.wait_closed_blocking();
    StoreRun {
        writes_per_sec: writes.load(Ordering::Relaxed) as f64 / elapsed,
        reads_per_sec: reads.load(Ordering::Relaxed) as f64 / elapsed,
        max_add_ms: max_us.load(Ordering::Relaxed) as f64 / 1000.0,
        mean_group: stats.write_requests as f64 / stats.write_batches.max(1) as f64,
    }
}

// ------------------------------------------------------------------------------------------
// Exactly N acknowledged adds (for instruction counts)
// ------------------------------------------------------------------------------------------

fn count(what: &str, n: u64) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("count.db");
    match what {
        "raw" => {
            let mut raw = Raw::open(&path, Durability::Normal);
            while raw.done < n {
                let left = (n - raw.done).min(GROUP as u64) as usize;
                raw.group("ceiling", left);
            }
            println!("raw: {} adds", raw.done);
        }
        "store" | "advanced" => {
            let kind = if what == "store" {
                Kind::Basic
            } else {
                Kind::Advanced
            };
            let store = open_store(&path, Durability::Normal, kind);
            let session = session_of(&store, kind);
            let runtime = tokio::runtime::Builder::new_multi_thread().build().unwrap();
            let per_writer = n / WRITERS as u64;
            runtime.block_on(async {
                let tasks: Vec<_> = (0..WRITERS)
                    .map(|w| {
                        let s = session.clone();
                        tokio::spawn(async move {
                            for i in 0..per_writer {
                                s.add_items(vec![item(w, i)]).await.unwrap();
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
            });
            let stats = store.pool_stats();
            println!(
                "{what}: {} adds in {} groups ({:.1} each)",
                per_writer * WRITERS as u64,
                stats.write_batches,
                stats.write_requests as f64 / stats.write_batches.max(1) as f64
            );
            drop(session);
            store.close();
            store.wait_closed_blocking();
        }
        other => panic!("count raw|store|advanced N, not {other}"),
    }
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    if args.first().map(String::as_str) == Some("count") {
        let n = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(3000);
        return count(args.get(1).map_or("store", String::as_str), n);
    }
    let secs = Duration::from_secs_f64(env_or("CEILING_SECONDS", 10.0));
    let rounds: usize = env_or("CEILING_ROUNDS", 2);
    let (mut raw_n, mut raw_f, mut st_n, mut st_w, mut st_f, mut adv) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    println!(
        "{:<8} {:<26} {:>10} {:>10} {:>9} {:>7}",
        "round", "workload", "writes/s", "reads/s", "max ms", "group"
    );
    for round in 1..=rounds {
        let line = |name: &str, w: f64, r: Option<&StoreRun>| match r {
            Some(r) => println!(
                "{round:<8} {name:<26} {w:>10.0} {:>10.0} {:>9.1} {:>7.1}",
                r.reads_per_sec, r.max_add_ms, r.mean_group
            ),
            None => println!("{round:<8} {name:<26} {w:>10.0}"),
        };
        let r = raw_rate(Durability::Normal, secs);
        line("raw, normal", r, None);
        raw_n.push(r);
        let s = store_rate(Durability::Normal, Kind::Basic, READERS, secs);
        line("store, normal", s.writes_per_sec, Some(&s));
        st_n.push(s.writes_per_sec);
        let s = store_rate(Durability::Normal, Kind::Basic, 0, secs);
        line("store, normal, no readers", s.writes_per_sec, Some(&s));
        st_w.push(s.writes_per_sec);
        let r = raw_rate(Durability::Full, secs);
        line("raw, full", r, None);
        raw_f.push(r);
        let s = store_rate(Durability::Full, Kind::Basic, READERS, secs);
        line("store, full", s.writes_per_sec, Some(&s));
        st_f.push(s.writes_per_sec);
        let s = store_rate(Durability::Normal, Kind::Advanced, READERS, secs);
        line("store, advanced, normal", s.writes_per_sec, Some(&s));
        adv.push(s.writes_per_sec);
    }
    let (raw_n, raw_f, st_n, st_w, st_f, adv) = (
        median(&mut raw_n),
        median(&mut raw_f),
        median(&mut st_n),
        median(&mut st_w),
        median(&mut st_f),
        median(&mut adv),
    );
    println!();
    println!(
        "medians of {rounds} round(s), {:.0} s each:",
        secs.as_secs_f64()
    );
    println!("  raw normal {raw_n:.0}/s, raw full {raw_f:.0}/s");
    println!("  store normal {st_n:.0}/s, store full {st_f:.0}/s, advanced {adv:.0}/s");
    println!(
        "  store normal / raw normal  {:.2}   (target >= 0.75)",
        st_n / raw_n
    );
    println!(
        "  store full / store normal  {:.2}   (target >= 0.85)",
        st_f / st_n
    );
    println!(
        "  advanced / basic (normal)  {:.2}   (target >= 0.50)",
        adv / st_n
    );
    println!("  store full / raw full      {:.2}", st_f / raw_f);
    println!(
        "  store normal without readers / raw normal  {:.2}   (no reader load: {st_w:.0}/s)",
        st_w / raw_n
    );
}

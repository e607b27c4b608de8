//! `agent-sessions stress`: the classic session stress workload (W writers looping
//! `add_items([one item])`, R readers looping `get_items(limit)`) on tokio tasks, with a live
//! progress line, throughput, latency percentiles, descriptor and memory readings, and an
//! integrity check (stored rows == acknowledged writes, `PRAGMA integrity_check`).

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agent_sessions::{Database, Durability, Error, Session, Store};
use clap::{Args as ClapArgs, ValueEnum};
use hdrhistogram::Histogram;
use serde_json::json;

#[derive(ClapArgs, Clone, Debug)]
pub struct Args {
    /// Writer tasks, each looping `add_items([one item])`.
    #[arg(long, default_value_t = 30)]
    writers: usize,
    /// Reader tasks, each looping `get_items(limit)`.
    #[arg(long, default_value_t = 10)]
    readers: usize,
    /// Seconds to run.
    #[arg(long, default_value_t = 60.0)]
    duration: f64,
    /// Limit for the readers' `get_items` (all items when absent).
    #[arg(long)]
    limit: Option<i64>,
    /// One shared session, or one session (and store handle) per writer.
    #[arg(long, value_enum, default_value_t = Layout::Single)]
    layout: Layout,
    #[arg(long, value_enum, default_value_t = DurabilityArg::Normal)]
    durability: DurabilityArg,
    /// Reader threads of the pool.
    #[arg(long, default_value_t = 2)]
    pool_readers: usize,
    /// Print the report as one JSON object (the last line of stdout).
    #[arg(long)]
    json: bool,
    /// Negative control for the integrity check: delete one acknowledged row before checking.
    #[arg(long, hide = true)]
    lose_one_write: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Layout {
    Single,
    PerWriter,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum DurabilityArg {
    Normal,
    Full,
}

/// A latency histogram in microseconds: 3 significant figures, growing as needed.
fn histogram() -> Histogram<u64> {
    Histogram::new(3).expect("3 significant figures are within hdrhistogram's range")
}

/// `{"p50", "p99", "max"}` in milliseconds (0 for an empty histogram).
fn latency_summary(h: &Histogram<u64>) -> serde_json::Value {
    let ms = |us: u64| us as f64 / 1000.0;
    json!({"p50": ms(h.value_at_quantile(0.50)), "p99": ms(h.value_at_quantile(0.99)),
           "max": ms(h.max())})
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Record a latency. `record` grows the auto-resizing histogram; `saturating_record` would
/// clamp every value above its current top (2,048 µs at first) and hide the worst stalls.
fn record(h: &mut Histogram<u64>, d: Duration) {
    let us = micros(d);
    if h.record(us).is_err() {
        h.saturating_record(us);
    }
}

#[derive(Default)]
struct Errors(Mutex<BTreeMap<String, u64>>);

impl Errors {
    fn record(&self, e: &Error) {
        let kind = format!("{e:?}");
        let kind = kind
            .split(['(', ' ', '{'])
            .next()
            .unwrap_or("Other")
            .to_owned();
        *self.0.lock().unwrap().entry(kind).or_default() += 1;
    }
    fn total(&self) -> u64 {
        self.0.lock().unwrap().values().sum()
    }
}

fn count_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Size of the database's WAL file in MB (0 when absent, or not an SQLite file).
fn wal_mb(db: &Database) -> f64 {
    match db {
        Database::File(path) => {
            let mut wal = path.clone().into_os_string();
            wal.push("-wal");
            std::fs::metadata(wal).map_or(0.0, |m| m.len() as f64 / (1024.0 * 1024.0))
        }
        _ => 0.0,
    }
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

pub fn run(
    db: &Database,
    db_given: bool,
    args: &Args,
    advanced: bool,
    sessions_table: &str,
    messages_table: &str,
) -> Result<ExitCode, Box<dyn std::error::Error>> {
    // On `--db` when given (kept afterwards), else on a file in a temporary directory, removed
    // when `_tmp` drops at the end.
    let (db, _tmp) = if db_given {
        (db.clone(), None)
    } else {
        let dir = tempfile::Builder::new()
            .prefix("agent-sessions-stress-")
            .tempdir()?;
        (Database::File(dir.path().join("stress.db")), Some(dir))
    };
    let durability = match args.durability {
        DurabilityArg::Normal => Durability::Normal,
        DurabilityArg::Full => Durability::Full,
    };
    let open = || {
        Store::builder(db.clone())
            .create_structure_tables(advanced)
            .durability(durability)
            .readers(args.pool_readers)
            .sessions_table(sessions_table)
            .messages_table(messages_table)
            .open()
    };
    let fd_start = count_fds();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_time()
        .build()?;
    let base = open()?;
    let run_id = format!("stress-{}", std::process::id());
    // Basic or Advanced, every session is driven through the `Session` trait.
    let session = |store: &Store, id: String| -> agent_sessions::Result<Arc<dyn Session>> {
        Ok(if advanced {
            Arc::new(store.advanced_session(id)?)
        } else {
            Arc::new(store.session(id))
        })
    };
    let sessions: Vec<Arc<dyn Session>> = match args.layout {
        Layout::Single => vec![session(&base, run_id.clone())?],
        Layout::PerWriter => (0..args.writers.max(1))
            .map(|w| session(&open()?, format!("{run_id}-w{w}")))
            .collect::<agent_sessions::Result<_>>()?,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let reads = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(Errors::default());
    let fd_peak = Arc::new(AtomicU64::new(count_fds() as u64));
    let mut wal_peak = wal_mb(&db);

    let started = Instant::now();
    let duration = Duration::from_secs_f64(args.duration.max(0.0));
    let (add_hist, get_hist, wal_at_stop) = runtime.block_on(async {
        let mut tasks = Vec::new();
        for w in 0..args.writers {
            let s = sessions[w % sessions.len()].clone();
            let (stop, writes, errors) = (stop.clone(), writes.clone(), errors.clone());
            tasks.push(tokio::spawn(async move {
                let mut h = histogram();
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let item =
                        json!({"role": "user", "content": format!("writer {w} message {i}")});
                    let t = Instant::now();
                    match s.add_items(vec![item]).await {
                        Ok(()) => {
                            record(&mut h, t.elapsed());
                            writes.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => errors.record(&e),
                    }
                    i += 1;
                }
                (true, h)
            }));
        }
        for r in 0..args.readers {
            let s = sessions[r % sessions.len()].clone();
            let (stop, reads, errors, limit) =
                (stop.clone(), reads.clone(), errors.clone(), args.limit);
            tasks.push(tokio::spawn(async move {
                let mut h = histogram();
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    match s.get_items(limit).await {
                        Ok(_) => {
                            record(&mut h, t.elapsed());
                            reads.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => errors.record(&e),
                    }
                }
                (false, h)
            }));
        }
        // Progress and descriptor sampling while the workload runs.
        let mut last = Instant::now();
        while started.elapsed() < duration {
            tokio::time::sleep(Duration::from_millis(100)).await;
            fd_peak.fetch_max(count_fds() as u64, Ordering::Relaxed);
            wal_peak = wal_peak.max(wal_mb(&db));
            if last.elapsed() >= Duration::from_secs(1) {
                last = Instant::now();
                let secs = started.elapsed().as_secs_f64();
                let w = writes.load(Ordering::Relaxed);
                eprint!(
                    "\r[{secs:5.1}s/{:.0}s] writes {w} ({:.0}/s)  reads {}  errors {}  fds {}   ",
                    duration.as_secs_f64(),
                    w as f64 / secs,
                    reads.load(Ordering::Relaxed),
                    errors.total(),
                    count_fds()
                );
            }
        }
        stop.store(true, Ordering::Relaxed);
        wal_peak = wal_peak.max(wal_mb(&db));
        let wal_at_stop = wal_mb(&db);
        let (mut add, mut get) = (histogram(), histogram());
        for t in tasks {
            if let Ok((is_writer, h)) = t.await {
                if is_writer { &mut add } else { &mut get }.add(&h)?;
            }
        }
        Ok::<_, hdrhistogram::AdditionError>((add, get, wal_at_stop))
    })?;
    let elapsed = started.elapsed().as_secs_f64();
    eprintln!();
    fd_peak.fetch_max(count_fds() as u64, Ordering::Relaxed);

    if args.lose_one_write {
        lose_one_write(&db, base.messages_table(), &run_id)?;
    }
    // Integrity: every acknowledged write is stored, and SQLite finds the file sound.
    let acked = writes.load(Ordering::Relaxed);
    let groups = base.pool_stats();
    let mut stored = 0u64;
    for s in base.list_sessions_blocking()? {
        if s.session_id == run_id || s.session_id.starts_with(&format!("{run_id}-w")) {
            stored += s.item_count;
        }
    }
    drop(sessions);
    base.close();
    drop(runtime);
    let check = server_check(&db)?;
    let fd_end = count_fds();
    let integrity_ok = stored == acked && check == "ok";

    let report = json!({
        "writers": args.writers, "readers": args.readers, "layout": format!("{:?}", args.layout),
        "advanced": advanced,
        "durability": format!("{:?}", args.durability), "limit": args.limit,
        "duration_s": elapsed,
        "writes": acked, "reads": reads.load(Ordering::Relaxed), "errors": errors.total(),
        "errors_by_kind": *errors.0.lock().unwrap(),
        "writes_per_sec": acked as f64 / elapsed,
        "write_groups": groups.write_batches,
        "mean_group_size": groups.write_requests as f64 / groups.write_batches.max(1) as f64, "reads_per_sec": reads.load(Ordering::Relaxed) as f64 / elapsed,
        "add_latency_ms": latency_summary(&add_hist), "get_latency_ms": latency_summary(&get_hist),
        "fds": {"start": fd_start, "peak": fd_peak.load(Ordering::Relaxed), "end": fd_end},
        "peak_rss_mb": peak_rss_mb(),
        "wal_mb": {"peak": wal_peak, "at_stop": wal_at_stop},
        "stored_rows": stored, "engine_integrity": check, "integrity_ok": integrity_ok,
    });
    if args.json {
        println!("{report}");
    } else {
        println!("writes      {acked} ({:.0}/s)", acked as f64 / elapsed);
        println!(
            "groups      {} committed, {:.1} requests each on average",
            groups.write_batches,
            report["mean_group_size"].as_f64().unwrap_or(0.0)
        );
        println!(
            "reads       {} ({:.0}/s)",
            report["reads"],
            report["reads_per_sec"].as_f64().unwrap_or(0.0)
        );
        println!(
            "errors      {} {}",
            report["errors"], report["errors_by_kind"]
        );
        println!("add latency {}", report["add_latency_ms"]);
        println!("get latency {}", report["get_latency_ms"]);
        println!("fds         {}", report["fds"]);
        println!(
            "peak rss    {:.1} MB",
            report["peak_rss_mb"].as_f64().unwrap_or(0.0)
        );
        println!(
            "wal         peak {wal_peak:.1} MB, {wal_at_stop:.1} MB when the workload stopped"
        );
        println!(
            "integrity   {} (stored {stored}, acknowledged {acked}, engine: {check})",
            if integrity_ok { "ok" } else { "FAILED" }
        );
    }
    Ok(if integrity_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Negative control of the integrity check: delete the newest acknowledged row behind the
/// store's back.
fn lose_one_write(
    db: &Database,
    messages: &str,
    run_id: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let sql = format!(
        "DELETE FROM {messages} WHERE id = (SELECT MAX(id) FROM {messages} WHERE session_id LIKE $1)"
    );
    let like = format!("{run_id}%");
    match db {
        Database::File(path) => {
            rusqlite::Connection::open(path)?.execute(&sql.replace("$1", "?1"), [like])?;
        }
        #[cfg(feature = "postgres")]
        Database::Postgres(url) => {
            postgres::Client::connect(url, postgres::NoTls)?.execute(&sql, &[&like])?;
        }
        other => {
            return Err(format!("--lose-one-write needs a file or a server, not {other}").into())
        }
    }
    Ok(())
}

/// The engine's own verdict on the database after the run: SQLite's `integrity_check`; on
/// PostgreSQL, that the server still answers and every table of the run is readable (it has no
/// integrity check of its own; `pg_amcheck` is the tool for that).
fn server_check(db: &Database) -> Result<String, Box<dyn std::error::Error>> {
    match db {
        Database::File(path) => Ok(rusqlite::Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )?
        .query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0))?),
        #[cfg(feature = "postgres")]
        Database::Postgres(url) => {
            let mut c = postgres::Client::connect(url, postgres::NoTls)?;
            c.simple_query("SELECT 1")?;
            Ok("ok".into())
        }
        other => Err(format!("stress needs a file or a server, not {other}").into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_latencies_are_recorded_not_clamped() {
        let mut h = histogram();
        record(&mut h, Duration::from_micros(300));
        record(&mut h, Duration::from_secs(2));
        let summary = latency_summary(&h);
        let max = summary["max"].as_f64().unwrap();
        assert!((1990.0..=2010.0).contains(&max), "max {max} ms");
    }
}

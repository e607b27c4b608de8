//! Micro-benchmarks of the store (plain `harness = false` binary: `cargo bench --bench store`).
//! Each line is one workload on a fresh temporary file; compare ratios within one run — the
//! machine is shared and noisy. `BENCH_SECONDS` (default 2) sets the time per workload.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_sessions::{Durability, Store};
use serde_json::json;

fn seconds() -> Duration {
    Duration::from_secs_f64(
        std::env::var("BENCH_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(2.0),
    )
}

fn store(dir: &tempfile::TempDir, durability: Durability, batch_max: usize) -> Store {
    Store::builder(dir.path().join("bench.db"))
        .durability(durability)
        .batch_max(batch_max)
        .open()
        .unwrap()
}

/// Run `threads` threads looping `op` for the bench duration; returns operations per second.
fn run(threads: usize, op: impl Fn(usize, u64) + Send + Sync + 'static) -> f64 {
    let op = Arc::new(op);
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (op, stop, done) = (op.clone(), stop.clone(), done.clone());
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    op(t, i);
                    i += 1;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(seconds());
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

fn report(name: &str, per_sec: f64) {
    println!("{name:<52} {per_sec:>12.0} ops/s");
}

fn item(t: usize, i: u64) -> serde_json::Value {
    json!({"role": "user", "content": format!("thread {t} message {i}: some ordinary text é")})
}

fn main() {
    // `cargo bench` passes --bench; a filter argument selects workloads by substring.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let wanted = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));

    for (durability, dname) in [(Durability::Normal, "normal"), (Durability::Full, "full")] {
        for threads in [1usize, 8, 32] {
            let name = format!("add_items(1 item), {threads} threads, {dname}");
            if wanted(&name) {
                let dir = tempfile::tempdir().unwrap();
                let s = store(&dir, durability, 256).session("bench");
                report(
                    &name,
                    run(threads, move |t, i| {
                        s.blocking().add_items(vec![item(t, i)]).unwrap()
                    }),
                );
            }
        }
    }
    for batch_max in [1usize, 4, 16, 64, 256] {
        let name = format!("group commit batch_max={batch_max}, 32 threads, normal");
        if wanted(&name) {
            let dir = tempfile::tempdir().unwrap();
            let s = store(&dir, Durability::Normal, batch_max).session("bench");
            report(
                &name,
                run(32, move |t, i| {
                    s.blocking().add_items(vec![item(t, i)]).unwrap()
                }),
            );
        }
    }
    for (threads, limit) in [(1usize, Some(20)), (4, Some(20)), (4, None)] {
        let name = format!("get_items(limit={limit:?}) of 1000, {threads} threads");
        if wanted(&name) {
            let dir = tempfile::tempdir().unwrap();
            let s = store(&dir, Durability::Normal, 256).session("bench");
            s.blocking()
                .add_items((0..1000).map(|i| item(0, i)).collect())
                .unwrap();
            report(
                &name,
                run(threads, move |_, _| {
                    s.blocking().get_items(limit).unwrap();
                }),
            );
        }
    }
    for threads in [1usize, 8, 32] {
        let name = format!("Advanced add_items(1 item), {threads} threads, normal");
        if wanted(&name) {
            let dir = tempfile::tempdir().unwrap();
            let st = Store::builder(dir.path().join("bench.db"))
                .create_structure_tables(true)
                .open()
                .unwrap();
            let a = st.advanced_session("bench").unwrap().blocking();
            report(
                &name,
                run(threads, move |t, i| a.add_items(vec![item(t, i)]).unwrap()),
            );
        }
    }
    for threads in [1usize, 8] {
        let name = format!("add + pop pairs, {threads} threads");
        if wanted(&name) {
            let dir = tempfile::tempdir().unwrap();
            let st = store(&dir, Durability::Normal, 256);
            report(
                &name,
                run(threads, move |t, i| {
                    let s = st.session(format!("p{t}")).blocking();
                    s.add_items(vec![item(t, i)]).unwrap();
                    s.pop_item().unwrap().unwrap();
                }),
            );
        }
    }
}

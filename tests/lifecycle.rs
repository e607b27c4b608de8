//! Process-level resource invariants, measured from /proc (one test per binary, so nothing else
//! in this process opens files or threads meanwhile):
//! - I2: 1,000 tasks over 100 handles on one file never hold more than baseline + 3 × (1 + R)
//!   descriptors, and every acknowledged write is stored;
//! - I3/I14: once the last handle of a file is closed, no pool thread and no connection of it is
//!   left, and reopening starts a fresh pool.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use agent_sessions::{Error, Store};
use serde_json::json;

const READERS: usize = 2;

fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Descriptors pointing at the database, its WAL or its shared-memory file.
fn db_fds(db: &Path) -> usize {
    let db = db.to_string_lossy().to_string();
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with(&db))
        .count()
}

/// Threads of this process whose name marks them as pool threads.
fn pool_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("agent-sessions"))
        .count()
}

/// Pool threads once the closer has finished: closing returns at once and the drain runs on a
/// closer thread, which exits right after it has joined the pool's threads. Bounded wait (a
/// liveness check, not a timing assertion): ten seconds is far beyond any drain here.
fn pool_threads_after_close() -> usize {
    for _ in 0..2000 {
        if pool_threads() == 0 {
            return 0;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    pool_threads()
}

#[test]
fn descriptors_stay_flat_and_close_releases_everything() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().canonicalize().unwrap().join("smoke.db");
    let baseline = fds();
    assert_eq!(pool_threads(), 0);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let handles: Vec<Store> = (0..100)
        .map(|_| Store::builder(&db).readers(READERS).open().unwrap())
        .collect();
    assert_eq!(pool_threads(), 1 + READERS, "100 handles share one pool");
    let limit = baseline + 3 * (1 + READERS) + 2; // +2: tokio's own epoll/eventfd
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(fds()));

    let acknowledged: Vec<(String, usize)> = runtime.block_on(async {
        let mut tasks = Vec::new();
        for t in 0..1000usize {
            let session = handles[t % 100].session(format!("s{}", t % 37));
            let peak = peak.clone();
            tasks.push(tokio::spawn(async move {
                let mut acked = 0;
                for i in 0..5 {
                    match (t + i) % 4 {
                        0 | 1 => {
                            session
                                .add_items(vec![json!({"t": t, "i": i})])
                                .await
                                .unwrap();
                            acked += 1;
                        }
                        2 => {
                            session.get_items(Some(3)).await.unwrap();
                        }
                        _ => {
                            session.get_items(None).await.unwrap();
                        }
                    }
                    peak.fetch_max(fds(), std::sync::atomic::Ordering::Relaxed);
                }
                (session.session_id().to_owned(), acked)
            }));
        }
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        peak <= limit,
        "descriptors peaked at {peak}, bound {limit} (baseline {baseline})"
    );
    assert!(db_fds(&db) <= 3 * (1 + READERS));

    let mut expected = std::collections::HashMap::<String, usize>::new();
    for (s, n) in acknowledged {
        *expected.entry(s).or_default() += n;
    }
    for (s, n) in &expected {
        let stored = handles[0]
            .session(s.clone())
            .blocking()
            .get_items(None)
            .unwrap();
        assert_eq!(stored.len(), *n, "session {s}: stored != acknowledged");
        let distinct: HashSet<String> = stored.iter().map(|v| v.to_string()).collect();
        assert_eq!(distinct.len(), stored.len(), "duplicate rows in {s}");
    }

    // Close all but one: the pool stays; close the last: threads and connections go.
    for h in &handles[1..] {
        h.close();
    }
    assert_eq!(pool_threads(), 1 + READERS);
    assert!(handles[0]
        .session("s0")
        .blocking()
        .get_items(Some(1))
        .is_ok());
    handles[0].close();
    handles[0].wait_closed_blocking();
    assert_eq!(
        db_fds(&db),
        0,
        "database descriptors left once wait_closed returned"
    );
    assert_eq!(
        pool_threads_after_close(),
        0,
        "pool threads left after the last close"
    );
    assert_eq!(
        db_fds(&db),
        0,
        "database descriptors left after the last close"
    );
    assert_eq!(
        handles[0].session("s0").blocking().get_items(None),
        Err(Error::Closed)
    );
    assert!(matches!(
        handles[0].advanced_session("a"),
        Err(Error::Closed)
    ));
    drop(handles);

    // Dropping (not closing) the last handle releases the pool too.
    let again = Store::open(&db).unwrap();
    assert_eq!(pool_threads(), 1 + READERS);
    assert_eq!(
        again
            .session("s0")
            .blocking()
            .get_items(None)
            .unwrap()
            .len(),
        expected["s0"]
    );
    drop(again);
    assert_eq!(pool_threads_after_close(), 0);
    assert_eq!(db_fds(&db), 0);
    drop(runtime);
    std::thread::sleep(Duration::from_millis(50));
    assert!(
        fds() <= baseline + 1,
        "descriptors leaked: {} > {baseline}",
        fds()
    );
}

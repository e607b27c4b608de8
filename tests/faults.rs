//! Faults that are not bad data (SPEC §10): another connection holding the write lock (wait up
//! to the busy timeout, then `Busy`), a request that panics (fails alone, I15), a writer
//! thread that dies (its callers get `Closed` instead of hanging, I4), a pool open that panics
//! (the file stays free, I14) and a COMMIT that fails with its transaction open (rolled back).

use std::path::PathBuf;

use agent_sessions::hooks::sync::Arc;
use std::time::{Duration, Instant};

use agent_sessions::hooks::handle::{Handle, Owner};
use agent_sessions::hooks::model_engine::{panicking_item, ModelEngine};
use agent_sessions::hooks::pool::{Pool, PoolConfig};
use agent_sessions::{Error, Op, Store};
use serde_json::json;

fn add(item: serde_json::Value) -> Op {
    Op::AddItems {
        session: "s".into(),
        items: vec![item],
    }
}

#[test]
fn a_held_write_lock_is_waited_for_then_reported_as_busy() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("busy.db");
    let store = Store::builder(&path)
        .busy_timeout(Duration::from_millis(300))
        .open()
        .unwrap();
    let s = store.session("s").blocking();
    s.add_items(vec![json!(0)]).unwrap();

    // Another connection (as another process would) takes the write lock and keeps it.
    let other = rusqlite::Connection::open(&path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let started = Instant::now();
    let err = s.add_items(vec![json!(1)]).unwrap_err();
    assert!(matches!(err, Error::Busy { .. }), "{err:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "gave up before the busy timeout"
    );
    // Reads are not blocked by a writer in WAL mode.
    assert_eq!(s.get_items(None).unwrap(), vec![json!(0)]);
    other.execute_batch("COMMIT").unwrap();
    // The lock is gone: the store writes again, and nothing of the failed write landed.
    s.add_items(vec![json!(2)]).unwrap();
    assert_eq!(s.get_items(None).unwrap(), vec![json!(0), json!(2)]);

    // A lock released within the timeout is simply waited for.
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        other.execute_batch("COMMIT").unwrap();
    });
    s.add_items(vec![json!(3)]).unwrap();
    releaser.join().unwrap();
    assert_eq!(s.get_items(Some(1)).unwrap(), vec![json!(3)]);
}

fn model_handle(engine: &ModelEngine) -> Handle<PathBuf, ModelEngine> {
    let pool = Pool::open(
        engine.clone(),
        PoolConfig {
            readers: 1,
            ..PoolConfig::default()
        },
    )
    .unwrap();
    Handle::new(Arc::new(pool), Owner::Private, ())
}

#[test]
fn a_panicking_request_fails_alone_and_the_store_goes_on() {
    let engine = ModelEngine::new();
    let h = model_handle(&engine);
    h.call_blocking(add(json!("before"))).unwrap();
    let err = h.call_blocking(add(panicking_item())).unwrap_err();
    assert!(
        matches!(&err, Error::Internal(m) if m.contains("panicked")),
        "{err:?}"
    );
    h.call_blocking(add(json!("after"))).unwrap();
    assert_eq!(
        engine.snapshot().rows("s"),
        vec![Some(json!("before")), Some(json!("after"))]
    );
}

#[test]
fn a_dying_writer_fails_its_callers_instead_of_hanging() {
    let engine = ModelEngine::new();
    let h = Arc::new(model_handle(&engine));
    h.call_blocking(add(json!("kept"))).unwrap();
    engine
        .stats
        .panic_commits
        .store(1, std::sync::atomic::Ordering::SeqCst);
    // Several writers queue up; the writer dies at its next commit.
    let callers: Vec<_> = (0..4)
        .map(|i| {
            let h = h.clone();
            std::thread::spawn(move || h.call_blocking(add(json!(i))))
        })
        .collect();
    for c in callers {
        assert_eq!(c.join().unwrap(), Err(Error::Closed));
    }
    assert_eq!(h.call_blocking(add(json!("later"))), Err(Error::Closed));
    // The store reports itself closed, reads included: no half-working state.
    assert!(h.is_closed());
    assert_eq!(
        h.call_blocking(Op::GetItems {
            session: "s".into(),
            limit: None
        }),
        Err(Error::Closed)
    );
    h.close();
    h.wait_closed();
    assert_eq!(engine.stats.open_now(), 0);
}

/// A request that takes the whole transaction with it (SQLite's rollback on a full disk or an I/O
/// error), in a group whose next BEGIN also fails: the requests before it are undone and told
/// so, it reports its own failure, and every request after it gets the BEGIN's error — five
/// requests, five replies, none lost, nothing stored (I4, I6).
#[test]
fn a_rolled_back_group_whose_next_begin_fails_answers_every_request() {
    use agent_sessions::hooks::model_engine::aborting_item;
    use std::sync::atomic::Ordering;
    let engine = ModelEngine::new();
    let h = model_handle(&engine);
    h.pool().hold_writer(true);
    let items = [json!(1), aborting_item(), json!(3), json!(4), json!(5)];
    let replies: Vec<_> = items
        .iter()
        .map(|i| h.submit(add(i.clone())).unwrap())
        .collect();
    engine
        .stats
        .abort_fails_next_begin
        .store(true, Ordering::SeqCst);
    h.pool().hold_writer(false);
    let results: Vec<String> = replies
        .into_iter()
        .map(|rx| format!("{:?}", rx.wait().unwrap_err()))
        .collect();
    assert!(
        results[0].contains("rolled the transaction back"),
        "{results:?}"
    );
    assert!(
        results[1].contains("rolled the transaction back"),
        "{results:?}"
    );
    for r in &results[2..] {
        assert!(r.contains("injected BEGIN failure"), "{results:?}");
    }
    assert_eq!(
        engine.snapshot().rows("s"),
        Vec::<Option<serde_json::Value>>::new()
    );
    // The writer goes on.
    h.call_blocking(add(json!("after"))).unwrap();
    assert_eq!(engine.snapshot().rows("s"), vec![Some(json!("after"))]);
    assert_eq!(
        engine.stats.open_now(),
        2,
        "a writer and a reader connection"
    );
    h.close();
    h.wait_closed();
    assert_eq!(engine.stats.open_now(), 0);
}

/// A pool whose reader cannot open fails to open and leaves nothing behind (the writer it had
/// started is closed and joined); a pool dropped without a close shuts down all the same (I3).
#[test]
fn a_pool_that_fails_to_open_or_is_dropped_leaves_no_connection_open() {
    use std::sync::atomic::Ordering;
    let engine = ModelEngine::new();
    engine.stats.fail_reader_opens.store(true, Ordering::SeqCst);
    let config = PoolConfig {
        readers: 1,
        ..PoolConfig::default()
    };
    let Err(err) = Pool::open(engine.clone(), config) else {
        panic!("a pool whose reader cannot open opened");
    };
    assert!(
        format!("{err:?}").contains("injected open failure"),
        "{err:?}"
    );
    assert_eq!(
        engine.stats.opened.load(Ordering::SeqCst),
        1,
        "the writer opened"
    );
    assert_eq!(
        engine.stats.open_now(),
        0,
        "the writer of a failed open was left open"
    );

    engine
        .stats
        .fail_reader_opens
        .store(false, Ordering::SeqCst);
    let pool = Pool::open(engine.clone(), config).unwrap();
    assert_eq!(engine.stats.open_now(), 2);
    drop(pool);
    assert_eq!(
        engine.stats.open_now(),
        0,
        "a dropped pool left connections open"
    );
}

/// A writer that dies with requests still queued behind its group: every one of them is told
/// `Closed` (the queue is abandoned), none hangs; the registry then refuses the dead pool with
/// an error that says so, and counts it until its last handle is gone (I4, I14).
#[test]
fn a_dead_writer_abandons_its_queue_and_the_registry_refuses_its_pool() {
    use agent_sessions::hooks::registry::Registry;
    use std::sync::atomic::Ordering;
    let engine = ModelEngine::new();
    let registry = Arc::new(Registry::new());
    let key = PathBuf::from("dead.db");
    let open = || {
        let engine = engine.clone();
        move || {
            Pool::open(
                engine,
                PoolConfig {
                    readers: 0,
                    batch_max: 1,
                    ..PoolConfig::default()
                },
            )
        }
    };
    let h = Handle::acquire(&registry, key.clone(), (), open(), |_| Ok(())).unwrap();
    assert_eq!((registry.len(), registry.is_empty()), (1, false));
    h.pool().hold_writer(true);
    let replies: Vec<_> = (0..4).map(|i| h.submit(add(json!(i))).unwrap()).collect();
    engine.stats.panic_commits.store(1, Ordering::SeqCst);
    h.pool().hold_writer(false);
    for rx in replies {
        assert_eq!(rx.wait(), Err(Error::Closed));
    }
    let refused = Handle::acquire(&registry, key.clone(), (), open(), |_| Ok(()));
    match refused {
        Err(e) => assert!(format!("{e}").contains("died"), "{e}"),
        Ok(_) => panic!("the registry handed out a dead pool"),
    }
    assert_eq!(
        registry.len(),
        1,
        "the dead pool is counted until its handle goes"
    );
    h.close();
}

/// An open that panics (a bug in an engine's open, say) leaves the file free rather than
/// `Opening` forever: the panic reaches its caller, the registry counts nothing, and the next
/// opener of the file opens a pool (I14).
#[test]
fn a_panicking_open_leaves_the_file_free_for_the_next_opener() {
    use agent_sessions::hooks::registry::Registry;
    let engine = ModelEngine::new();
    let registry = Arc::new(Registry::new());
    let key = PathBuf::from("panics.db");
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        registry.acquire(&key, || panic!("open panicked"), |_| Ok(()))
    }));
    assert!(
        panicked.is_err(),
        "the open's panic did not reach its caller"
    );
    assert!(
        registry.is_empty(),
        "a panicking open left the file registered"
    );
    let pool = registry
        .acquire(
            &key,
            || Pool::open(engine.clone(), PoolConfig::default()),
            |_| Ok(()),
        )
        .unwrap();
    assert_eq!(registry.len(), 1);
    let closed = pool.closed_latch();
    Registry::release(&registry, &key);
    closed.wait();
    assert_eq!(engine.stats.open_now(), 0);
}

/// A group whose COMMIT fails with its transaction still open (here the deferred `updated_at`
/// touch, refused by a trigger the way a full disk or a constraint would refuse it) is rolled
/// back: its callers get the error, nothing of it is stored, the write lock is given up (another
/// connection takes it at once) and the next group commits.
#[test]
fn a_group_whose_commit_fails_is_rolled_back_and_the_next_one_commits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("commit.db");
    let store = Store::open(&path).unwrap();
    let ok = store.session("ok").blocking();
    ok.add_items(vec![json!(0)]).unwrap();
    let other = rusqlite::Connection::open(&path).unwrap();
    other
        .execute_batch(
            "CREATE TRIGGER refuse_touch BEFORE UPDATE ON agent_sessions \
             WHEN OLD.session_id = 'doomed' BEGIN SELECT RAISE(ABORT, 'touch refused'); END",
        )
        .unwrap();

    let doomed = store.session("doomed").blocking();
    let err = doomed.add_items(vec![json!("lost")]).unwrap_err();
    assert!(err.to_string().contains("touch refused"), "{err}");
    // The writer holds no transaction: the lock is free without waiting.
    other.busy_timeout(Duration::ZERO).unwrap();
    other.execute_batch("BEGIN IMMEDIATE; COMMIT").unwrap();

    ok.add_items(vec![json!(1)]).unwrap();
    assert_eq!(ok.get_items(None).unwrap(), vec![json!(0), json!(1)]);
    assert_eq!(
        doomed.get_items(None).unwrap(),
        Vec::<serde_json::Value>::new()
    );
    let sessions: i64 = other
        .query_row(
            "SELECT count(*) FROM agent_sessions WHERE session_id = 'doomed'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(sessions, 0, "the failed group's session row was kept");
}

//! Basic-session semantics (SPEC §5.2) on real SQLite files, each answer compared with the
//! reference model running the same operations.

use agent_sessions::testing::Model;
use agent_sessions::{Error, Op, Outcome, SessionSettings, Store};
use serde_json::{json, Value};

/// Runs every op on the store and on the model and asserts identical outcomes.
struct Twin {
    store: Store,
    model: Model,
}

impl Twin {
    fn new(store: Store) -> Self {
        Twin {
            store,
            model: Model::new(),
        }
    }

    fn run(&mut self, op: Op) -> Outcome {
        let want = self.model.apply(&op).map_err(Error::from);
        let got = self.store.execute_blocking(op.clone());
        let strip = |r: agent_sessions::Result<Outcome>| r.map(Outcome::without_timestamps);
        assert_eq!(
            strip(got.clone()),
            strip(want),
            "store and model differ on {op:?}"
        );
        got.unwrap()
    }

    fn add(&mut self, session: &str, items: Vec<Value>) {
        self.run(Op::AddItems {
            session: session.into(),
            items,
        });
    }

    fn get(&mut self, session: &str, limit: Option<i64>) -> Vec<Value> {
        match self.run(Op::GetItems {
            session: session.into(),
            limit,
        }) {
            Outcome::Items(v) => v,
            other => panic!("{other:?}"),
        }
    }

    fn pop(&mut self, session: &str) -> Option<Value> {
        match self.run(Op::PopItem {
            session: session.into(),
        }) {
            Outcome::Popped(v) => v,
            other => panic!("{other:?}"),
        }
    }

    fn plant(&mut self, session: &str, data: &str) {
        self.run(Op::PlantRaw {
            session: session.into(),
            data: data.into(),
        });
    }
}

fn file_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("s.db")).unwrap();
    (dir, store)
}

#[test]
fn limit_rules_none_positive_zero_negative() {
    let (_d, store) = file_store();
    let mut t = Twin::new(store);
    t.add("s", (1..=5).map(|i| json!({"n": i})).collect());
    assert_eq!(t.get("s", None).len(), 5);
    assert_eq!(t.get("s", Some(2)), vec![json!({"n": 4}), json!({"n": 5})]);
    assert_eq!(t.get("s", Some(0)), Vec::<Value>::new());
    assert_eq!(t.get("s", Some(-1)).len(), 5);
    assert_eq!(t.get("s", Some(100)).len(), 5);
    assert_eq!(t.get("s", Some(i64::MAX)).len(), 5);
    assert_eq!(t.get("s", Some(i64::MIN)).len(), 5);
    assert_eq!(t.get("nobody", Some(3)), Vec::<Value>::new());
}

#[test]
fn settings_limit_applies_when_the_call_gives_none() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::builder(dir.path().join("s.db"))
        .session_settings(SessionSettings::with_limit(Some(2)))
        .open()
        .unwrap();
    let s = store.session("a").blocking();
    s.add_items((0..4).map(|i| json!(i)).collect()).unwrap();
    assert_eq!(s.get_items(None).unwrap(), vec![json!(2), json!(3)]);
    assert_eq!(
        s.get_items(Some(3)).unwrap(),
        vec![json!(1), json!(2), json!(3)]
    );
}

#[test]
fn corrupt_newest_rows_do_not_shorten_a_limited_read() {
    let (_d, store) = file_store();
    let mut t = Twin::new(store);
    t.add("s", vec![json!("a"), json!("b"), json!("c")]);
    for bad in ["{broken", "NaN", "Infinity", "", "[1,]"] {
        t.plant("s", bad);
    }
    assert_eq!(t.get("s", Some(2)), vec![json!("b"), json!("c")]);
    assert_eq!(
        t.get("s", Some(3)),
        vec![json!("a"), json!("b"), json!("c")]
    );
    assert_eq!(t.get("s", None).len(), 3);
    assert_eq!(t.get("s", Some(-5)).len(), 3);
}

#[test]
fn pop_returns_newest_first_and_drops_corrupt_rows() {
    let (_d, store) = file_store();
    let mut t = Twin::new(store);
    t.add("s", vec![json!(1), json!(2)]);
    t.plant("s", "not json");
    assert_eq!(t.pop("s"), Some(json!(2)));
    assert_eq!(t.pop("s"), Some(json!(1)));
    assert_eq!(t.pop("s"), None);
    t.plant("s", "{");
    t.plant("s", "}");
    assert_eq!(
        t.pop("s"),
        None,
        "a session of only corrupt rows pops nothing"
    );
    assert_eq!(t.get("s", None), Vec::<Value>::new());
    t.run(Op::ListSessions);
}

#[test]
fn clear_and_isolation_between_sessions() {
    let (_d, store) = file_store();
    let mut t = Twin::new(store);
    t.add("a", vec![json!("a1")]);
    t.add("b", vec![json!("b1"), json!("b2")]);
    t.run(Op::ClearSession {
        session: "a".into(),
    });
    assert_eq!(t.get("a", None), Vec::<Value>::new());
    assert_eq!(t.get("b", None).len(), 2);
    t.run(Op::ListSessions);
    t.add("a", vec![json!("again")]);
    assert_eq!(t.get("a", None), vec![json!("again")]);
    t.run(Op::ListSessions);
}

#[test]
fn unicode_and_sql_metacharacters_in_ids_and_content() {
    let (_d, store) = file_store();
    let mut t = Twin::new(store);
    let ids = [
        "",
        "'; DROP TABLE agent_messages; --",
        "\"quoted\"",
        "ünïcødé 中文 😀",
        "%_like_%",
        "a\0b",
    ];
    for id in ids {
        t.add(
            id,
            vec![json!({"content": "' OR 1=1 -- %_ \\ \" \u{0} 😀 é", "id": id})],
        );
    }
    for id in ids {
        assert_eq!(t.get(id, None).len(), 1, "session {id:?}");
    }
    t.run(Op::ListSessions);
}

#[test]
fn custom_and_quoted_table_names() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let custom = Store::builder(&path)
        .sessions_table("my_sessions")
        .messages_table("my_messages")
        .open()
        .unwrap();
    let quoted = Store::builder(&path)
        .sessions_table("\"odd \"\"sessions\"\"\"")
        .messages_table("\"odd messages\"")
        .open()
        .unwrap();
    let default = Store::open(&path).unwrap();
    custom
        .session("x")
        .blocking()
        .add_items(vec![json!(1)])
        .unwrap();
    quoted
        .session("x")
        .blocking()
        .add_items(vec![json!(2)])
        .unwrap();
    default
        .session("x")
        .blocking()
        .add_items(vec![json!(3)])
        .unwrap();
    assert_eq!(
        custom.session("x").blocking().get_items(None).unwrap(),
        vec![json!(1)]
    );
    assert_eq!(
        quoted.session("x").blocking().get_items(None).unwrap(),
        vec![json!(2)]
    );
    assert_eq!(
        default.session("x").blocking().get_items(None).unwrap(),
        vec![json!(3)]
    );
}

#[test]
fn invalid_table_names_are_rejected_before_anything_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    for bad in ["x; DROP TABLE y", "1x", "a-b", "", "\"unclosed", "sqlite_x"] {
        let err = Store::builder(&path).messages_table(bad).open().err();
        assert!(
            matches!(&err, Some(Error::InvalidArgument(m)) if m.contains("messages table")),
            "{bad:?}: {err:?}"
        );
    }
    assert!(!path.exists(), "a rejected open created the file");
}

#[test]
fn in_memory_store_has_the_same_semantics() {
    let store = Store::open_in_memory().unwrap();
    let mut t = Twin::new(store);
    t.add("s", vec![json!(1), json!(2), json!(3)]);
    t.plant("s", "{");
    assert_eq!(t.get("s", Some(2)), vec![json!(2), json!(3)]);
    assert_eq!(t.pop("s"), Some(json!(3)));
    t.run(Op::ListSessions);
    // Two in-memory stores are private to themselves.
    let other = Store::open_in_memory().unwrap();
    assert!(other
        .session("s")
        .blocking()
        .get_items(None)
        .unwrap()
        .is_empty());
}

#[test]
fn export_import_round_trip_is_lossless() {
    let (_d, store) = file_store();
    let s = store.session("exp").blocking();
    s.add_items(vec![json!({"k": "é", "z": 1, "a": [1.5, null]})])
        .unwrap();
    store
        .execute_blocking(Op::PlantRaw {
            session: "exp".into(),
            data: "{\"compact\":true}".into(),
        })
        .unwrap();
    let Outcome::Dump(dump) = store
        .execute_blocking(Op::Export {
            session: "exp".into(),
        })
        .unwrap()
    else {
        panic!()
    };
    let (_d2, other) = file_store();
    other.execute_blocking(Op::Import(dump.clone())).unwrap();
    let Outcome::Dump(again) = other
        .execute_blocking(Op::Export {
            session: "exp".into(),
        })
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(again, dump, "export → import → export changed something");
    assert_eq!(
        dump.messages[0].message_data,
        "{\"k\": \"\\u00e9\", \"z\": 1, \"a\": [1.5, null]}"
    );
}

#[test]
fn closed_store_refuses_everything_including_empty_adds() {
    let (_d, store) = file_store();
    let s = store.session("a").blocking();
    s.add_items(vec![json!(1)]).unwrap();
    store.close();
    store.close(); // idempotent
    assert_eq!(s.add_items(vec![]), Err(Error::Closed));
    assert_eq!(s.add_items(vec![json!(2)]), Err(Error::Closed));
    assert_eq!(s.get_items(None), Err(Error::Closed));
    assert_eq!(s.pop_item(), Err(Error::Closed));
    assert_eq!(s.clear_session(), Err(Error::Closed));
    assert_eq!(store.list_sessions_blocking(), Err(Error::Closed));
}

#[test]
fn second_opener_with_other_connection_settings_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let _first = Store::builder(&path).readers(1).open().unwrap();
    let err = Store::builder(&path).readers(3).open().err();
    assert!(matches!(err, Some(Error::InvalidArgument(_))), "{err:?}");
    // Same settings, spelled through another path to the same file: shares the pool.
    let again = Store::builder(dir.path().join(".").join("s.db"))
        .readers(1)
        .open();
    assert!(again.is_ok());
}

#[test]
fn a_file_that_is_not_a_database_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("junk.db");
    std::fs::write(&path, vec![b'x'; 4096]).unwrap();
    match Store::open(&path) {
        Err(Error::Schema(m)) => assert!(m.contains("not an SQLite database"), "{m}"),
        Err(other) => panic!("unexpected error {other:?}"),
        Ok(_) => panic!("opened a junk file"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_api_matches_blocking_api() {
    let (_d, store) = file_store();
    let s = store.session("async");
    s.add_items(vec![json!({"role": "user", "content": "hi"})])
        .await
        .unwrap();
    s.add_items(vec![]).await.unwrap();
    assert_eq!(s.get_items(None).await.unwrap().len(), 1);
    assert_eq!(s.blocking().get_items(None).unwrap().len(), 1);
    assert!(s.pop_item().await.unwrap().is_some());
    s.clear_session().await.unwrap();
    let sessions: Vec<Box<dyn agent_sessions::Session>> = vec![
        Box::new(s.clone()),
        Box::new(agent_sessions::testing::ModelSession::new("model")),
    ];
    for session in &sessions {
        session.add_items(vec![json!(1), json!(2)]).await.unwrap();
        assert_eq!(session.get_items(Some(1)).await.unwrap(), vec![json!(2)]);
        assert_eq!(session.pop_item().await.unwrap(), Some(json!(2)));
    }
}

#[test]
fn a_dangling_symlink_and_its_target_share_one_pool() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("link.db");
    std::os::unix::fs::symlink("target.db", &link).unwrap();
    let first = Store::builder(&link).readers(2).open().unwrap();
    assert!(dir.path().join("target.db").exists());
    // Same file (now existing) through the link and directly: same pool, so other
    // connection settings are refused rather than given a second writer.
    for path in [link.clone(), dir.path().join("target.db")] {
        let err = Store::builder(&path).readers(1).open().err();
        assert!(
            matches!(err, Some(Error::InvalidArgument(_))),
            "{path:?}: {err:?}"
        );
    }
    first.close();
}

/// I3 per session value: `session.close()` ends that session (and its clones) only; the other
/// sessions of the store, and new sessions of it, go on. `Store::close()` ends them all.
#[test]
fn closing_a_session_leaves_the_store_and_its_other_sessions_working() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("close.db")).unwrap();
    let a = store.session("a");
    let a_clone = a.clone();
    let b = store.session("b").blocking();
    a.blocking().add_items(vec![json!(1)]).unwrap();
    a.close();
    assert!(a.is_closed());
    assert_eq!(a.blocking().get_items(None), Err(Error::Closed));
    assert_eq!(a_clone.blocking().add_items(vec![]), Err(Error::Closed));
    b.add_items(vec![json!(2)]).unwrap();
    assert_eq!(b.get_items(None).unwrap(), vec![json!(2)]);
    // The closed value's data is untouched; a new session value on the same id works.
    assert_eq!(
        store.session("a").blocking().get_items(None).unwrap(),
        vec![json!(1)]
    );
    assert!(!store.is_closed());

    let adv_store = Store::builder(dir.path().join("adv.db"))
        .create_structure_tables(true)
        .open()
        .unwrap();
    let x = adv_store.advanced_session("x").unwrap();
    let y = adv_store.advanced_session("y").unwrap().blocking();
    x.close();
    assert_eq!(x.blocking().get_items(None), Err(Error::Closed));
    y.add_items(vec![json!({"role": "user", "content": "hi"})])
        .unwrap();
    assert_eq!(y.get_items(None).unwrap().len(), 1);

    store.close();
    assert_eq!(b.get_items(None), Err(Error::Closed));
    assert_eq!(
        store.session("c").blocking().get_items(None),
        Err(Error::Closed)
    );
}

/// Closing returns at once, also inside an async task, and `wait_closed` resolves once the
/// pool has drained: every write accepted before the close is stored.
#[tokio::test(flavor = "current_thread")]
async fn close_returns_at_once_and_wait_closed_sees_accepted_writes_stored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("drain.db");
    let store = Store::open_async(&path).await.unwrap();
    let s = store.session("s");
    let pending: Vec<_> = (0..200)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move { s.add_items(vec![json!(i)]).await })
        })
        .collect();
    tokio::task::yield_now().await;
    store.close();
    store.wait_closed().await;
    // Fully closed means the writer closed last: it checkpointed the WAL and removed it.
    assert!(
        !path.with_extension("db-wal").exists(),
        "wait_closed returned before the pool had closed its connections"
    );
    let mut acknowledged = 0;
    for p in pending {
        match p.await.unwrap() {
            Ok(()) => acknowledged += 1,
            Err(e) => assert_eq!(e, Error::Closed),
        }
    }
    let reopened = Store::open_async(&path).await.unwrap();
    let stored = reopened.session("s").get_items(None).await.unwrap();
    assert_eq!(stored.len(), acknowledged, "stored != acknowledged");
}

/// A store reports the tables it uses as written in SQL: the defaults, and custom names as
/// given (a quoted name keeps its quotes).
#[test]
fn a_store_names_its_tables_as_written_in_sql() {
    let dir = tempfile::tempdir().unwrap();
    let plain = Store::open(dir.path().join("a.db")).unwrap();
    assert_eq!(
        (plain.sessions_table(), plain.messages_table()),
        ("agent_sessions", "agent_messages")
    );
    let custom = Store::builder(dir.path().join("b.db"))
        .sessions_table("my_sessions")
        .messages_table("\"My Messages\"")
        .open()
        .unwrap();
    assert_eq!(
        (custom.sessions_table(), custom.messages_table()),
        ("my_sessions", "\"My Messages\"")
    );
}

/// The WAL is checkpointed into the database as it grows (the store turns SQLite's
/// auto-checkpoint off and checkpoints between groups itself): after 4,000 one-item adds of
/// 1 KB each, most of the data is in the database file and the WAL stays within its limit.
#[test]
fn the_wal_is_checkpointed_into_the_database_as_it_grows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wal.db");
    let store = Store::open(&path).unwrap();
    let s = store.session("s").blocking();
    let item = json!("x".repeat(1024));
    for _ in 0..4_000 {
        s.add_items(vec![item.clone()]).unwrap();
    }
    let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let db = size(&path);
    let wal = size(&dir.path().join("wal.db-wal"));
    assert!(
        db >= 2 << 20,
        "only {db} bytes checkpointed into the database (WAL {wal})"
    );
    assert!(wal <= 24 << 20, "the WAL grew to {wal} bytes");
    assert_eq!(s.get_items(None).unwrap().len(), 4_000);
}

/// Pruning by cut-off (SPEC §5.4) in both forms: a dry run lists the idle sessions and deletes
/// nothing; a real one deletes them in batches of `PRUNE_BATCH` (more sessions than one batch
/// here), lists each once, and leaves sessions updated after the cut-off alone.
#[tokio::test(flavor = "current_thread")]
async fn pruning_lists_then_deletes_every_idle_session_batch_by_batch() {
    use agent_sessions::hooks::PRUNE_BATCH;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prune.db");
    let store = Store::open(&path).unwrap();
    let idle = PRUNE_BATCH as usize + 5;
    for i in 0..idle {
        store
            .session(format!("idle{i:03}"))
            .add_items(vec![json!(i)])
            .await
            .unwrap();
    }
    // Behind the store's back, as time would: every session so far was last updated in 2001.
    rusqlite::Connection::open(&path)
        .unwrap()
        .execute_batch("UPDATE agent_sessions SET updated_at = '2001-01-01 00:00:00'")
        .unwrap();
    store
        .session("fresh")
        .add_items(vec![json!("kept")])
        .await
        .unwrap();
    let cut = "2002-01-01 00:00:00";
    let ids = |v: Vec<agent_sessions::SessionInfo>| -> Vec<String> {
        let mut ids: Vec<String> = v.into_iter().map(|s| s.session_id).collect();
        ids.sort();
        ids
    };
    let want: Vec<String> = (0..idle).map(|i| format!("idle{i:03}")).collect();

    assert_eq!(ids(store.prune_before(cut, true).await.unwrap()), want);
    assert_eq!(
        store.list_sessions().await.unwrap().len(),
        idle + 1,
        "a dry run deleted"
    );
    let blocking = |dry_run: bool| {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.prune_before_blocking(cut, dry_run))
    };
    let pruned = blocking(true).await.unwrap().unwrap();
    assert_eq!(ids(pruned), want, "the blocking dry run");

    let pruned = blocking(false).await.unwrap().unwrap();
    assert_eq!(ids(pruned), want);
    let left = store.list_sessions().await.unwrap();
    assert_eq!(ids(left), vec!["fresh".to_string()]);
    assert!(store.prune_before(cut, false).await.unwrap().is_empty());
    assert_eq!(
        store.session("fresh").get_items(None).await.unwrap(),
        vec![json!("kept")]
    );
}

/// A session over the model that counts its clears: `Forwarding` hands `replace_items` to the
/// model (one operation), `Defaulting` leaves it to the trait's default (clear, then add).
macro_rules! counting_session {
    ($name:ident $(, $replace:item)?) => {
        struct $name {
            inner: agent_sessions::testing::ModelSession,
            clears: std::sync::Arc<std::sync::atomic::AtomicUsize>,
        }
        impl agent_sessions::Session for $name {
            fn session_id(&self) -> &str {
                self.inner.session_id()
            }
            fn get_items(&self, limit: Option<i64>) -> BoxFuture<'_, Result<Vec<Value>, Error>> {
                self.inner.get_items(limit)
            }
            fn add_items(&self, items: Vec<Value>) -> BoxFuture<'_, Result<(), Error>> {
                self.inner.add_items(items)
            }
            fn pop_item(&self) -> BoxFuture<'_, Result<Option<Value>, Error>> {
                self.inner.pop_item()
            }
            fn clear_session(&self) -> BoxFuture<'_, Result<(), Error>> {
                self.clears.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.inner.clear_session()
            }
            $($replace)?
        }
    };
}
use agent_sessions::BoxFuture;
counting_session!(Defaulting);
counting_session!(
    Forwarding,
    fn replace_items(&self, items: Vec<Value>) -> BoxFuture<'_, Result<(), Error>> {
        self.inner.replace_items(items)
    }
);

/// `Session::replace_items` through the trait: every session type of the crate replaces the
/// history (an encrypted one stores envelopes), a `Box<dyn Session>` forwards to the type's own
/// replace rather than the default, and the default is clear then add.
#[tokio::test(flavor = "current_thread")]
async fn replace_items_through_the_session_trait() {
    use agent_sessions::testing::ModelSession;
    use agent_sessions::{EncryptedSession, EncryptionKey, Session};
    let store = Store::builder(":memory:")
        .create_structure_tables(true)
        .open()
        .unwrap();
    let key = EncryptionKey::new("k").unwrap();
    let sessions: Vec<Box<dyn Session>> = vec![
        Box::new(store.session("basic")),
        Box::new(store.advanced_session("advanced").unwrap()),
        Box::new(EncryptedSession::new(store.session("encrypted"), &key)),
        Box::new(ModelSession::new("model")),
    ];
    for s in &sessions {
        s.add_items(vec![json!(1), json!(2)]).await.unwrap();
        s.replace_items(vec![json!("summary"), json!(3)])
            .await
            .unwrap();
        assert_eq!(
            s.get_items(None).await.unwrap(),
            vec![json!("summary"), json!(3)],
            "{}",
            s.session_id()
        );
    }
    let stored = store.session("encrypted").get_items(None).await.unwrap();
    assert_eq!(stored.len(), 2);
    assert!(
        stored.iter().all(|row| row["__enc__"] == json!(1)),
        "{stored:?}"
    );

    let forwarding_clears = std::sync::Arc::default();
    let defaulting_clears = std::sync::Arc::default();
    let counted: [(
        Box<dyn Session>,
        &std::sync::Arc<std::sync::atomic::AtomicUsize>,
        usize,
    ); 2] = [
        (
            Box::new(Forwarding {
                inner: ModelSession::new("f"),
                clears: std::sync::Arc::clone(&forwarding_clears),
            }),
            &forwarding_clears,
            0,
        ),
        (
            Box::new(Defaulting {
                inner: ModelSession::new("d"),
                clears: std::sync::Arc::clone(&defaulting_clears),
            }),
            &defaulting_clears,
            1,
        ),
    ];
    for (s, clears, expected) in counted {
        s.add_items(vec![json!(1)]).await.unwrap();
        s.replace_items(vec![json!(2)]).await.unwrap();
        assert_eq!(s.get_items(None).await.unwrap(), vec![json!(2)]);
        assert_eq!(
            clears.load(std::sync::atomic::Ordering::Relaxed),
            expected,
            "{}",
            s.session_id()
        );
    }
}

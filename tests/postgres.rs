//! The PostgreSQL engine against a real server (`AGENT_SESSIONS_PG_URL`; `scripts/test.sh`
//! starts a throwaway cluster). Each test works in a schema of its own.
//!
//! What is checked here, beyond the shared state machines of `proptests/`: the SDK's bytes and
//! order, DDL from many openers at once, bad input and bad URLs, lock timeouts as `Busy`, a
//! connection killed while idle and during COMMIT (nothing lost, nothing doubled, the store
//! reconnects), the session advisory lock held before the rows, the structure tables' status
//! and a branch delete as the server sees them, one pool for every opener of a URL. The server
//! crash is in `postgres_crash.rs` (its own binary: it restarts the server under every other
//! test).

use std::sync::Arc;
use std::time::{Duration, Instant};

use agent_sessions::{Error, ErrorKind, Store};
use serde_json::{json, Value};

mod pg;
use pg::{client, connections, hold_session_row, rows, schema, server};

#[test]
#[cfg_attr(
    agent_sessions_no_pg,
    ignore = "no PostgreSQL server: install postgresql (its binaries start a throwaway cluster) or set AGENT_SESSIONS_PG_URL"
)]
fn rows_are_the_sdk_bytes_in_commit_order() {
    let (s, url) = schema("bytes");
    let store = Store::open(url.as_str()).unwrap();
    let session = store.session("u1").blocking();
    session
        .add_items(vec![
            json!({"role": "user", "content": "héllo 😀"}),
            json!({"n": [1, 2.5, null]}),
        ])
        .unwrap();
    let got: Vec<String> = rows(
        &s,
        "SELECT message_data FROM agent_messages ORDER BY created_at, id",
    )
    .iter()
    .map(|r| r.get(0))
    .collect();
    assert_eq!(
        got,
        [
            r#"{"role":"user","content":"h\u00e9llo \ud83d\ude00"}"#,
            r#"{"n":[1,2.5,null]}"#
        ]
    );
    // ensure_ascii off writes the characters themselves (a second URL: its own settings).
    let raw = Store::builder(format!("{url}&application_name=raw"))
        .ensure_ascii(false)
        .open()
        .unwrap();
    raw.session("u2")
        .blocking()
        .add_items(vec![json!("é")])
        .unwrap();
    let got: String = rows(
        &s,
        "SELECT message_data FROM agent_messages WHERE session_id = 'u2'",
    )[0]
    .get(0);
    assert_eq!(got, "\"é\"");
    // Stamps never go backwards within a session, so (created_at, id) is commit order.
    let bad: i64 = rows(
        &s,
        "SELECT count(*) FROM agent_messages a JOIN agent_messages b \
         ON a.session_id = b.session_id AND a.id < b.id AND a.created_at > b.created_at",
    )[0]
    .get(0);
    assert_eq!(bad, 0);
    assert_eq!(
        session.get_items(Some(1)).unwrap(),
        [json!({"n": [1, 2.5, null]})]
    );
}

#[test]
#[cfg_attr(
    agent_sessions_no_pg,
    ignore = "no PostgreSQL server: install postgresql (its binaries start a throwaway cluster) or set AGENT_SESSIONS_PG_URL"
)]
fn many_openers_create_the_tables_at_once_without_failing() {
    let (s, url) = schema("ddl");
    let go = Arc::new(std::sync::Barrier::new(8));
    let openers: Vec<_> = (0..8)
        .map(|i| {
            let (url, go) = (format!("{url}&application_name=opener{i}"), go.clone());
            std::thread::spawn(move || {
                go.wait();
                let store = Store::builder(url).create_structure_tables(true).open()?;
                store
                    .session(format!("s{i}"))
                    .blocking()
                    .add_items(vec![json!(i)])?;
                store.close();
                Ok::<_, Error>(())
            })
        })
        .collect();
    for o in openers {
        o.join().unwrap().expect("an opener failed");
    }
    let n: i64 = rows(&s, "SELECT count(*) FROM agent_messages")[0].get(0);
    assert_eq!(n, 8);
}

#[test]
#[cfg_attr(
    agent_sessions_no_pg,
    ignore = "no PostgreSQL server: install postgresql (its binaries start a throwaway cluster) or set AGENT_SESSIONS_PG_URL"
)]
fn bad_urls_and_servers_fail_clearly_at_open() {
    let cases = [
        "postgres://127.0.0.1:1/x?connect_timeout=2".to_owned(),
        "postgresql://u@127.0.0.1:5432/db?sslmode=bogus".to_owned(),
    ];
    for url in &cases {
        let e = Store::open(url.as_str()).unwrap_err();
        assert!(
            matches!(
                e.kind(),
                ErrorKind::Io | ErrorKind::InvalidArgument | ErrorKind::Database
            ),
            "{url}: {e:?}"
        );
        assert!(
            e.to_string().contains("127.0.0.1"),
            "{url}: the error should name the server: {e}"
        );
    }
    // Something that is not PostgreSQL listening on the port.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            use std::io::Write;
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        }
    });
    let e = Store::open(format!("postgres://u@127.0.0.1:{port}/db?connect_timeout=2").as_str())
        .unwrap_err();
    assert!(e.to_string().contains("connecting to"), "{e}");
    // A password in the URL never appears in the error.
    let e = Store::open("postgres://me:s3cret@127.0.0.1:1/x?connect_timeout=2").unwrap_err();
    assert!(!e.to_string().contains("s3cret"), "{e}");
}

#[test]
#[cfg_attr(
    agent_sessions_no_pg,
    ignore = "no PostgreSQL server: install postgresql (its binaries start a throwaway cluster) or set AGENT_SESSIONS_PG_URL"
)]
fn bad_input_gets_a_clear_error_and_loses_nothing() {
    let (s, url) = schema("bad");
    let store = Store::builder(url.as_str())
        .sessions_table("\"My \"\"Sessions\"\"\"")
        .messages_table("Messages")
        .open()
        .unwrap();
    let ok = store.session("ok").blocking();
    ok.add_items(vec![json!("kept")]).unwrap();
    // PostgreSQL text cannot hold U+0000: refused, nothing written.
    let e = store
        .session("a\0b")
        .blocking()
        .add_items(vec![json!(1)])
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    // Inside items it is escaped JSON, so it round-trips.
    ok.add_items(vec![json!("nul\u{0}inside")]).unwrap();
    // Huge and deeply nested items.
    let huge = json!("x".repeat(8 << 20));
    ok.add_items(vec![huge.clone()]).unwrap();
    let mut deep = json!(1);
    for _ in 0..100 {
        deep = json!([deep]);
    }
    ok.add_items(vec![deep.clone()]).unwrap();
    let mut too_deep = json!(1);
    for _ in 0..200 {
        too_deep = json!([too_deep]);
    }
    let e = ok.add_items(vec![too_deep]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert_eq!(
        ok.get_items(None).unwrap(),
        [json!("kept"), json!("nul\u{0}inside"), huge, deep]
    );
    // The quoted names are the tables SQLAlchemy would name: case and quotes kept.
    let n: i64 = rows(&s, "SELECT count(*) FROM \"Messages\"")[0].get(0);
    assert_eq!(n, 4);
    let n: i64 = rows(&s, "SELECT count(*) FROM \"My \"\"Sessions\"\"\"")[0].get(0);
    assert_eq!(n, 1);
    // get_items(-1) is all (SQLite's rule), not the SDK's PostgreSQL error.
    assert_eq!(ok.get_items(Some(-1)).unwrap().len(), 4);
}

#[test]
#[cfg_attr(
    agent_sessions_no_pg,
    ignore = "no PostgreSQL server: install postgresql (its binaries start a throwaway cluster) or set AGENT_SESSIONS_PG_URL"
)]
fn a_held_session_lock_is_busy_after_the_busy_timeout_and_nothing_is_written() {
    let (s, url) = schema("busy");
    let store = Store::builder(url.as_str())
        .busy_timeout(Duration::from_millis(300))
        .open()
        .unwrap();
    let session = store.session("held").blocking();
    session.add_items(vec![json!(1)]).unwrap();
    // A Python-style writer holds the session row.
    let mut holder = hold_session_row(&s, "held");
    let e = session.add_items(vec![json!(2)]).unwrap_err();
    assert!(e.is_retryable(), "{e:?}");
    // Other sessions are not blocked by it.
    store
        .session("free")
        .blocking()
        .add_items(vec![json!(3)])
        .unwrap();
    holder.batch_execute("COMMIT").unwrap();
    session.add_items(vec![json!(4)]).unwrap();
    assert_eq!(session.get_items(None).unwrap(), [json!(1), json!(4)]);
}

#[test]
#[cfg_attr(
    agent_sessions_no_pg,
    ignore = "no PostgreSQL server: install postgresql (its binaries start a throwaway cluster) or set AGENT_SESSIONS_PG_URL"
)]
fn a_connection_killed_while_idle_is_replaced_without_an_error() {
    let (_s, url) = schema("idle");
    let store = Store::open(format!("{url}&application_name=idlekill").as_str()).unwrap();
    let session = store.session("s").blocking();
    session.add_items(vec![json!(1)]).unwrap();
    let mut c = client();
    let killed = c
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = 'idlekill'",
            &[],
        )
        .unwrap()
        .len();
    assert!(
        killed >= 2,
        "expected the writer and a reader to be killed, got {killed}"
    );
    std::thread::sleep(Duration::from_millis(100));
    session.add_items(vec![json!(2)]).unwrap();
    assert_eq!(session.get_items(None).unwrap(), [json!(1), json!(2)]);
}

/// A deferred constraint trigger that sleeps makes COMMIT itself slow, so the backend can be
/// killed while the COMMIT is in flight: the answer is lost, the store must learn from the
/// server that the group was rolled back and say so — no success, no duplicate on retry.
#[test]
#[cfg_attr(
    agent_sessions_no_pg,
    ignore = "no PostgreSQL server: install postgresql (its binaries start a throwaway cluster) or set AGENT_SESSIONS_PG_URL"
)]
fn a_connection_killed_during_commit_is_settled_with_the_server() {
    let (s, url) = schema("commit");
    let store = Store::open(url.as_str()).unwrap();
    let session = store.session("s").blocking();
    session.add_items(vec![json!("before")]).unwrap();
    let mut c = client();
    c.batch_execute(&format!(
        "SET search_path = {s};
         CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN IF NEW.message_data LIKE '%slow%' THEN PERFORM pg_sleep(2); END IF; RETURN NULL; END $$;
         CREATE CONSTRAINT TRIGGER slow AFTER INSERT ON agent_messages
           DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION slow_commit();"
    ))
    .unwrap();
    let killer = std::thread::spawn(move || {
        let mut c = client();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let n = c
                .query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE query = 'COMMIT' AND wait_event = 'PgSleep'",
                    &[],
                )
                .unwrap()
                .len();
            if n > 0 || Instant::now() > deadline {
                return n;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let e = session.add_items(vec![json!("slow")]).unwrap_err();
    assert_eq!(
        killer.join().unwrap(),
        1,
        "the COMMIT was never caught in flight"
    );
    assert!(e.is_retryable(), "{e:?}");
    assert!(e.to_string().contains("rolled the group back"), "{e}");
    // The store reconnected by itself; nothing of the lost group is stored.
    session.add_items(vec![json!("after")]).unwrap();
    assert_eq!(
        session.get_items(None).unwrap(),
        [json!("before"), json!("after")]
    );
}

#[test]
#[cfg_attr(
    agent_sessions_no_pg,
    ignore = "no PostgreSQL server: install postgresql (its binaries start a throwaway cluster) or set AGENT_SESSIONS_PG_URL"
)]
fn a_unix_socket_url_opens_the_same_database() {
    let Some(cluster) = agent_sessions_test_env::pg::server()
        .ok()
        .and_then(|s| s.cluster.as_ref())
    else {
        agent_sessions_test_env::unavailable(
            "a_unix_socket_url_opens_the_same_database",
            "the server was named from outside (AGENT_SESSIONS_PG_URL without PG_CLUSTER_DIR): \
             no socket directory known",
            "unset AGENT_SESSIONS_PG_URL (the test starts its own cluster)",
        );
        return;
    };
    let dir = cluster.dir.display();
    let (s, tcp) = schema("socket");
    let port = server()
        .rsplit(':')
        .next()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    let url = format!(
        "postgresql://postgres@/postgres?host={dir}&port={port}&options=-csearch_path%3D{s}"
    );
    let store = Store::open(url.as_str()).unwrap();
    store
        .session("u")
        .blocking()
        .add_items(vec![json!("over the socket")])
        .unwrap();
    let over_tcp = Store::open(tcp.as_str()).unwrap();
    assert_eq!(
        over_tcp.session("u").blocking().get_items(None).unwrap(),
        [json!("over the socket")]
    );
}

#[test]
#[cfg_attr(
    agent_sessions_no_pg,
    ignore = "no PostgreSQL server: install postgresql (its binaries start a throwaway cluster) or set AGENT_SESSIONS_PG_URL"
)]
fn several_writers_keep_each_sessions_order_and_lose_nothing() {
    let (_s, url) = schema("writers");
    let url = format!("{url}&application_name=four-writers");
    let store = Store::builder(url.as_str())
        .writers(4)
        .readers(1)
        .open()
        .unwrap();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let (own, shared) = (
                store.session(format!("own{t}")).blocking(),
                store.session("shared").blocking(),
            );
            std::thread::spawn(move || {
                for i in 0..100 {
                    own.add_items(vec![json!(i)]).unwrap();
                    shared.add_items(vec![json!({"t": t, "i": i})]).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(
        store.pool_stats().write_requests,
        1 + 8 * 200,
        "the requests of every writer"
    );
    for t in 0..8 {
        let items = store
            .session(format!("own{t}"))
            .blocking()
            .get_items(None)
            .unwrap();
        assert_eq!(
            items,
            (0..100).map(|i| json!(i)).collect::<Vec<_>>(),
            "own{t}"
        );
    }
    let shared = store.session("shared").blocking().get_items(None).unwrap();
    assert_eq!(shared.len(), 800);
    // Four writers share one reader: five server connections, whatever the load.
    assert_eq!(
        connections("four-writers"),
        5,
        "writers + readers connections"
    );
    for t in 0..8 {
        let mine: Vec<&Value> = shared
            .iter()
            .filter(|v| v["t"] == t)
            .map(|v| &v["i"])
            .collect();
        assert_eq!(
            mine,
            (0..100)
                .map(|i| json!(i))
                .collect::<Vec<_>>()
                .iter()
                .collect::<Vec<_>>()
        );
    }
    store.close();
    store.wait_closed_blocking();
    // A single-writer store on the same URL reads the same rows.
    let one = Store::open(url.as_str()).unwrap();
    assert_eq!(
        one.session("shared")
            .blocking()
            .get_items(None)
            .unwrap()
            .len(),
        800
    );
}

/// A group takes its session's exclusive advisory lock (the one every writer of this crate
/// honours, so groups of different hosts serialise per session) before it touches the session's
/// rows: seen on the server while the group waits behind a Python-style writer holding the
/// session row.
#[test]
#[cfg_attr(
    agent_sessions_no_pg,
    ignore = "no PostgreSQL server: install postgresql (its binaries start a throwaway cluster) or set AGENT_SESSIONS_PG_URL"
)]
fn a_group_holds_its_sessions_advisory_lock_before_its_rows() {
    let (s, url) = schema("advisory");
    let app = format!("advisory_{s}");
    let store = Store::builder(format!("{url}&application_name={app}"))
        .busy_timeout(Duration::from_secs(60))
        .open()
        .unwrap();
    let session = store.session("held").blocking();
    session.add_items(vec![json!(1)]).unwrap();
    let mut holder = hold_session_row(&s, "held");
    let writer = {
        let session = session.clone();
        std::thread::spawn(move || session.add_items(vec![json!(2)]))
    };
    let mut watcher = client();
    let mut count = |granted: bool, extra: &str| -> i64 {
        watcher
            .query_one(
                &format!(
                    "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) \
                     WHERE a.application_name = $1 AND l.granted = $2 {extra}"
                ),
                &[&app, &granted],
            )
            .unwrap()
            .get(0)
    };
    // Bounded only so that a regression fails instead of hanging; no time is asserted.
    let deadline = Instant::now() + Duration::from_secs(50);
    while count(false, "") == 0 {
        assert!(
            Instant::now() < deadline,
            "the group never waited for the held row"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let advisory = count(
        true,
        "AND l.locktype = 'advisory' AND l.mode = 'ExclusiveLock'",
    );
    holder.batch_execute("COMMIT").unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        advisory >= 1,
        "the group waited for the session row without holding the session's advisory lock"
    );
    assert_eq!(session.get_items(None).unwrap(), [json!(1), json!(2)]);
}

/// The structure tables as an opener finds them (missing, then owned once created), and a
/// deleted branch: its structure rows are gone from the server, the main branch's are kept.
#[test]
#[cfg_attr(
    agent_sessions_no_pg,
    ignore = "no PostgreSQL server: install postgresql (its binaries start a throwaway cluster) or set AGENT_SESSIONS_PG_URL"
)]
fn structure_status_and_branch_deletes_on_the_server() {
    use agent_sessions::StructureStatus;
    let (s, url) = schema("structure");
    let plain = Store::builder(url.as_str()).open().unwrap();
    plain
        .session("a")
        .blocking()
        .add_items(vec![json!(0)])
        .unwrap();
    assert_eq!(plain.structure_status().unwrap(), StructureStatus::Missing);
    plain.close();
    let store = Store::builder(url.as_str())
        .create_structure_tables(true)
        .open()
        .unwrap();
    assert_eq!(store.structure_status().unwrap(), StructureStatus::Owned);
    let adv = store.advanced_session("b").unwrap().blocking();
    let user = |text: &str| json!({"role": "user", "content": text});
    adv.add_items(vec![user("one"), user("two")]).unwrap();
    adv.create_branch_from_turn(2, Some("side")).unwrap();
    adv.add_items(vec![user("side question")]).unwrap();
    let on = |branch: &str| -> i64 {
        rows(
            &s,
            &format!("SELECT count(*) FROM message_structure WHERE branch_id = '{branch}'"),
        )[0]
        .get(0)
    };
    assert_eq!((on("main"), on("side")), (2, 2));
    adv.delete_branch("side", true).unwrap();
    assert_eq!(adv.current_branch_id(), "main");
    assert_eq!(
        (on("main"), on("side")),
        (2, 0),
        "the deleted branch's rows"
    );
    // One table of the pair left is not "missing": rejected, with its reason.
    rows(&s, "DROP TABLE turn_usage");
    let status = store.structure_status().unwrap();
    assert!(
        matches!(&status, StructureStatus::Rejected(why) if why.contains("turn_usage")),
        "{status:?}"
    );
}

/// Every opener of one URL in a process joins one pool (as every opener of one SQLite file
/// does): two stores, one writer and its readers on the server; an opener asking for other
/// settings is refused; closing one store leaves the other working.
#[test]
#[cfg_attr(
    agent_sessions_no_pg,
    ignore = "no PostgreSQL server: install postgresql (its binaries start a throwaway cluster) or set AGENT_SESSIONS_PG_URL"
)]
fn openers_of_one_url_share_one_pool() {
    let (_s, url) = schema("shared");
    let app = format!("shared_{}", std::process::id());
    let url = format!("{url}&application_name={app}");
    let a = Store::open(url.as_str()).unwrap();
    let b = Store::open(url.as_str()).unwrap();
    a.session("s").blocking().add_items(vec![json!(1)]).unwrap();
    b.session("s").blocking().add_items(vec![json!(2)]).unwrap();
    assert_eq!(
        connections(&app),
        3,
        "one writer and two readers for both stores"
    );
    // A third opener asking for other settings is refused, and changes nothing.
    let e = Store::builder(url.as_str()).readers(1).open().unwrap_err();
    assert!(
        matches!(&e, Error::InvalidArgument(m) if m.contains("same settings")),
        "{e:?}"
    );
    a.close();
    assert_eq!(
        b.session("s").blocking().get_items(None).unwrap(),
        [json!(1), json!(2)]
    );
}

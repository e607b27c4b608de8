//! A PostgreSQL server crash (`pg_ctl restart -m immediate`) under load, in a test binary of
//! its own because it restarts the shared throwaway server (cargo runs test binaries one at a
//! time; the tests in it take turns).

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agent_sessions::Store;
use serde_json::{json, Value};

mod pg;
use pg::{client, rows, schema};

/// The tests here restart the server or kill clients: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

#[test]
#[cfg_attr(
    agent_sessions_no_pg,
    ignore = "no PostgreSQL server: install postgresql (its binaries start a throwaway cluster) or set AGENT_SESSIONS_PG_URL"
)]
/// `pg_ctl restart -m immediate` (a server crash) while writers run: every acknowledged write
/// is stored exactly once, failures in the window are clear errors, and writes succeed again
/// afterwards without reopening the store.
fn a_server_crash_under_load_loses_no_acknowledged_write() {
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    // It restarts the server: only a throwaway cluster, never a server given from outside.
    let Some(cluster) = agent_sessions_test_env::pg::server()
        .ok()
        .and_then(|s| s.cluster.as_ref())
    else {
        agent_sessions_test_env::unavailable(
            "a_server_crash_under_load_loses_no_acknowledged_write",
            "the server was named from outside (AGENT_SESSIONS_PG_URL without PG_BIN and \
             PG_CLUSTER_DIR), and the test restarts only a throwaway cluster",
            "unset AGENT_SESSIONS_PG_URL (the test starts its own cluster)",
        );
        return;
    };
    let dir = cluster.dir.display();
    let (s, url) = schema("crash");
    let store = Store::builder(url.as_str())
        .durability(agent_sessions::Durability::Full)
        .open()
        .unwrap();
    let acked = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (session, acked, errors, stop) = (
                store.session(format!("w{w}")).blocking(),
                acked.clone(),
                errors.clone(),
                stop.clone(),
            );
            std::thread::spawn(move || {
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let item = json!(format!("{w}-{i}"));
                    match session.add_items(vec![item.clone()]) {
                        Ok(()) => acked.lock().unwrap().push(item),
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            std::thread::sleep(Duration::from_millis(20));
                        }
                    }
                    i += 1;
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let started = |c: &mut postgres::Client| -> String {
        c.query_one("SELECT pg_postmaster_start_time()::text", &[])
            .unwrap()
            .get(0)
    };
    let before_restart = started(&mut client());
    let as_postgres = |args: &[&str]| {
        let out = cluster.pg_ctl().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "pg_ctl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    as_postgres(&[
        "-D",
        &format!("{dir}/data"),
        "-m",
        "immediate",
        "-w",
        "-t",
        // Crash recovery on a loaded 2-core machine can take a while.
        "180",
        "restart",
        "-l",
        &format!("{dir}/log"),
    ]);
    assert_ne!(
        started(&mut client()),
        before_restart,
        "the server did not restart"
    );
    let at_restart = acked.lock().unwrap().len();
    std::thread::sleep(Duration::from_millis(1500));
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.join().unwrap();
    }
    let before = acked.lock().unwrap().len();
    store
        .session("w0")
        .blocking()
        .add_items(vec![json!("after restart")])
        .unwrap();
    let stored: Vec<Value> = rows(
        &s,
        "SELECT message_data FROM agent_messages WHERE message_data <> '\"after restart\"'",
    )
    .iter()
    .map(|r| serde_json::from_str(r.get::<_, &str>(0)).unwrap())
    .collect();
    let mut want = acked.lock().unwrap().clone();
    let mut got = stored.clone();
    let key = |v: &Value| v.to_string();
    want.sort_by_key(key);
    got.sort_by_key(key);
    got.dedup();
    assert_eq!(got.len(), stored.len(), "a write is stored twice");
    // Every acknowledged write is stored (writes that failed in the crash window may or may
    // not be: the error said so).
    for w in &want {
        assert!(
            got.binary_search_by_key(&key(w), key).is_ok(),
            "acknowledged {w} is lost"
        );
    }
    eprintln!(
        "crash under load: {before} acknowledged, {} stored, {} errors in the window",
        got.len(),
        errors.load(Ordering::Relaxed)
    );
    // The pool reconnected by itself: writes went on after the restart.
    assert!(before > at_restart, "no write succeeded after the restart");
}

/// A client process killed (SIGKILL) while its groups are in flight: the server rolls back what
/// was not committed, so every acknowledged write is stored, each writer's stored items are a
/// gap-free prefix of what it sent (no group visible in part), and nothing is doubled.
#[test]
#[cfg_attr(
    agent_sessions_no_pg,
    ignore = "no PostgreSQL server: install postgresql (its binaries start a throwaway cluster) or set AGENT_SESSIONS_PG_URL"
)]
fn a_client_killed_mid_batch_leaves_whole_groups_only() {
    let _one_at_a_time = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (s, url) = schema("killed");
    for round in 0..3 {
        let session = format!("k{round}");
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--ignored", "--exact", "killed_client_child", "--nocapture"])
            .env("KILLED_URL", &url)
            .env("KILLED_SESSION", &session)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(700 + 200 * round));
        child.kill().unwrap();
        let out = child.wait_with_output().unwrap();
        let acked: Vec<(u64, u64)> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let mut p = l.strip_prefix("ACK ")?.split(' ');
                Some((p.next()?.parse().ok()?, p.next()?.parse().ok()?))
            })
            .collect();
        assert!(
            !acked.is_empty(),
            "the child acknowledged nothing before it was killed"
        );
        let stored: Vec<(u64, u64)> = rows(
            &s,
            &format!("SELECT message_data FROM agent_messages WHERE session_id = '{session}' ORDER BY created_at, id"),
        )
        .iter()
        .map(|r| {
            let v: Value = serde_json::from_str(r.get::<_, &str>(0)).unwrap();
            (v["t"].as_u64().unwrap(), v["i"].as_u64().unwrap())
        })
        .collect();
        for a in &acked {
            assert!(stored.contains(a), "acknowledged {a:?} is lost");
        }
        for t in 0..8 {
            let mine: Vec<u64> = stored
                .iter()
                .filter(|(w, _)| *w == t)
                .map(|(_, i)| *i)
                .collect();
            assert_eq!(
                mine,
                (0..mine.len() as u64).collect::<Vec<_>>(),
                "writer {t}: {mine:?}"
            );
        }
        eprintln!(
            "killed client, round {round}: {} acknowledged, {} stored",
            acked.len(),
            stored.len()
        );
    }
}

/// The client of the test above: 8 threads adding to one session until killed.
#[test]
#[cfg_attr(
    agent_sessions_no_pg,
    ignore = "no PostgreSQL server: install postgresql (its binaries start a throwaway cluster) or set AGENT_SESSIONS_PG_URL"
)]
#[ignore]
fn killed_client_child() {
    let (Ok(url), Ok(session)) = (std::env::var("KILLED_URL"), std::env::var("KILLED_SESSION"))
    else {
        return;
    };
    let store = Store::open(url.as_str()).unwrap();
    let threads: Vec<_> = (0..8u64)
        .map(|t| {
            let s = store.session(session.clone()).blocking();
            std::thread::spawn(move || {
                for i in 0.. {
                    s.add_items(vec![json!({"t": t, "i": i})]).unwrap();
                    use std::io::Write;
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ACK {t} {i}").unwrap();
                    out.flush().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

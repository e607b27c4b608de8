//! What the PostgreSQL test binaries share: the server (`AGENT_SESSIONS_PG_URL`, or a throwaway
//! cluster the test binary starts: `agent_sessions_test_env::pg`), a schema of its own per
//! test, and raw reads.
// Each test binary uses its own subset.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};

pub fn server() -> String {
    agent_sessions_test_env::pg::url().to_owned()
}

/// A raw client; waits (up to 180 s) for a server that is still starting up or recovering (the
/// crash tests restart it).
pub fn client() -> postgres::Client {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    loop {
        match postgres::Client::connect(&server(), postgres::NoTls) {
            Ok(c) => return c,
            Err(e) if std::time::Instant::now() < deadline => {
                eprintln!("waiting for the test server: {e}");
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            Err(e) => panic!("connect to the test server: {e}"),
        }
    }
}

/// A fresh schema; the URL whose connections use it.
pub fn schema(tag: &str) -> (String, String) {
    static N: AtomicUsize = AtomicUsize::new(0);
    let name = format!(
        "it_{tag}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    client()
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}"
        ))
        .unwrap();
    let url = format!("{}?options=-csearch_path%3D{name}", server());
    (name, url)
}

/// The rows of `sql` in `schema`, read behind the store's back.
pub fn rows(schema: &str, sql: &str) -> Vec<postgres::Row> {
    let mut c = client();
    c.batch_execute(&format!("SET search_path = {schema}"))
        .unwrap();
    c.query(sql, &[]).unwrap()
}

/// A client that holds `session`'s row in `schema` as the SDK's writers do (`FOR UPDATE`, in an
/// open transaction) until it runs `COMMIT` or is dropped.
pub fn hold_session_row(schema: &str, session: &str) -> postgres::Client {
    let mut holder = client();
    holder
        .batch_execute(&format!("SET search_path = {schema}; BEGIN"))
        .unwrap();
    holder
        .execute(
            "SELECT 1 FROM agent_sessions WHERE session_id = $1 FOR UPDATE",
            &[&session],
        )
        .unwrap();
    holder
}

/// How many server connections carry `application_name` `app` (a store's writers and readers,
/// when its URL names it).
pub fn connections(app: &str) -> i64 {
    client()
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1",
            &[&app],
        )
        .unwrap()
        .get(0)
}

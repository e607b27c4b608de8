//! The PostgreSQL targets: every case gets a schema of its own on the server named by
//! `AGENT_SESSIONS_PG_URL` (the test script starts a throwaway cluster), and its two handles
//! are two pools — two writers, as two hosts would be — so the cross-host lock protocol is
//! what orders their writes.

use std::sync::atomic::{AtomicUsize, Ordering};

use agent_sessions::{Error, Op, Outcome, Store};

use crate::{group_on, Target};

/// The server URL; a test of the `postgres` feature cannot run without one, and must not pass.
pub fn server_url() -> String {
    std::env::var("AGENT_SESSIONS_PG_URL").unwrap_or_else(|_| {
        panic!(
            "AGENT_SESSIONS_PG_URL is not set: the PostgreSQL tests need a server \
             (scripts/test.sh starts a throwaway one; or `source scripts/pg-cluster.sh; \
             pg_cluster_start`)"
        )
    })
}

/// A fresh, empty schema on the test server; the URL whose connections use it.
pub fn fresh_schema(tag: &str) -> (String, String) {
    static N: AtomicUsize = AtomicUsize::new(0);
    let base = server_url();
    let schema = format!(
        "t_{tag}_{}_{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let mut client =
        postgres::Client::connect(&base, postgres::NoTls).expect("connect to the test server");
    client
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
        ))
        .expect("create a schema");
    let sep = if base.contains('?') { '&' } else { '?' };
    (
        schema.clone(),
        format!("{base}{sep}options=-csearch_path%3D{schema}"),
    )
}

/// Two handles (two pools, two writers) on one schema.
pub struct PgTarget {
    urls: [String; 2],
    handles: Vec<Store>,
}

impl PgTarget {
    pub fn new() -> Self {
        let (_, url) = fresh_schema("prop");
        // Distinct URLs for one database: the registry gives each its own pool.
        let urls = [url.clone(), format!("{url}&application_name=host2")];
        let mut t = PgTarget {
            urls,
            handles: Vec::new(),
        };
        t.open();
        t
    }

    fn open(&mut self) {
        self.handles = self
            .urls
            .iter()
            .map(|u| {
                Store::builder(u.as_str())
                    .create_structure_tables(true)
                    .readers(1)
                    .open()
                    .expect("open the PostgreSQL store")
            })
            .collect();
    }
}

impl Default for PgTarget {
    fn default() -> Self {
        PgTarget::new()
    }
}

impl Drop for PgTarget {
    fn drop(&mut self) {
        for h in self.handles.drain(..) {
            h.close();
            h.wait_closed_blocking();
        }
    }
}

impl Target for PgTarget {
    fn exec(&mut self, h: usize, op: Op) -> Result<Outcome, Error> {
        self.handles[h % 2].execute_blocking(op)
    }

    fn group(&mut self, h: usize, ops: Vec<Op>) -> Vec<Result<Outcome, Error>> {
        group_on(&self.handles[h % 2], ops)
    }

    fn reopen(&mut self) {
        for h in self.handles.drain(..) {
            h.close();
            h.wait_closed_blocking();
        }
        self.open();
    }
}

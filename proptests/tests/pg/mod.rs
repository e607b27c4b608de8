//! The PostgreSQL targets: every case gets a schema of its own on the test server
//! (`AGENT_SESSIONS_PG_URL`, or a throwaway cluster: `agent_sessions_test_env::pg`), and its two handles
//! are two pools — two writers, as two hosts would be — so the cross-host lock protocol is
//! what orders their writes. Shared by the test binaries (each uses its own subset); here
//! rather than in the library so the test-only crates it needs stay dev-dependencies.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};

use agent_sessions::{Error, Op, Outcome, Store};

use proptests::advanced::{
    decode, Rows, GENERATION_ROWS, MESSAGE_ROWS, RESERVATION_ROWS, SESSION_ROWS, STRUCTURE_ROWS,
    USAGE_ROWS,
};
use proptests::{group_on, Target};

/// The server URL; a test of the `postgres` feature cannot run without one, and must not pass.
pub fn server_url() -> String {
    agent_sessions_test_env::pg::url().to_owned()
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
    schema: String,
    urls: [String; 2],
    handles: Vec<Store>,
}

impl PgTarget {
    pub fn new() -> Self {
        let (schema, url) = fresh_schema("prop");
        // Distinct URLs for one database: the registry gives each its own pool.
        let urls = [url.clone(), format!("{url}&application_name=host2")];
        let mut t = PgTarget {
            schema,
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

    fn store(&self, h: usize) -> Option<&Store> {
        Some(&self.handles[h % 2])
    }

    fn rows(&mut self) -> Option<Result<Rows, String>> {
        Some(rows_of(&self.schema))
    }

    fn model(&self) -> agent_sessions_model::Model {
        agent_sessions_model::Model::with_foreign_keys()
    }

    fn reopen(&mut self) {
        for h in self.handles.drain(..) {
            h.close();
            h.wait_closed_blocking();
        }
        self.open();
    }
}

/// Every row of the Advanced and basic tables of `schema`, ids renumbered by rank (sequences
/// skip the values of rolled-back inserts).
pub fn rows_of(schema: &str) -> Result<Rows, String> {
    let mut c =
        postgres::Client::connect(&server_url(), postgres::NoTls).map_err(|e| e.to_string())?;
    let q = |e: postgres::Error| e.to_string();
    c.batch_execute(&format!("SET search_path = {schema}"))
        .map_err(q)?;
    let cast = |sql: &str| {
        sql.replace("SELECT id,", "SELECT id::int8,")
            .replace("message_id,", "message_id::int8,")
    };
    let structure = c
        .query(&cast(STRUCTURE_ROWS), &[])
        .map_err(q)?
        .iter()
        .map(|r| agent_sessions_model::advanced::StructureRow {
            id: r.get(0),
            session_id: r.get(1),
            message_id: r.get(2),
            branch_id: r.get(3),
            message_type: r.get(4),
            sequence_number: r.get(5),
            user_turn_number: r.get(6),
            branch_turn_number: r.get(7),
            tool_name: r.get(8),
            created_at: String::new(),
        })
        .collect();
    let messages = c
        .query(&cast(MESSAGE_ROWS), &[])
        .map_err(q)?
        .iter()
        .map(|r| (r.get(0), r.get(1), decode(r.get(2))))
        .collect();
    let details = |t: Option<String>| t.map(|t| decode(&t));
    let usage = c
        .query(USAGE_ROWS, &[])
        .map_err(q)?
        .iter()
        .map(|r| {
            (
                r.get(0),
                r.get(1),
                r.get(2),
                agent_sessions_model::Usage {
                    requests: r.get(3),
                    input_tokens: r.get(4),
                    output_tokens: r.get(5),
                    total_tokens: r.get(6),
                    input_tokens_details: details(r.get(7)),
                    output_tokens_details: details(r.get(8)),
                },
            )
        })
        .collect();
    let sessions = c
        .query(SESSION_ROWS, &[])
        .map_err(q)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    fn pairs<T: for<'a> postgres::types::FromSql<'a>>(
        c: &mut postgres::Client,
        sql: &str,
    ) -> Result<Vec<(String, T)>, postgres::Error> {
        Ok(c.query(sql, &[])?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect())
    }
    let reservations = pairs(&mut c, RESERVATION_ROWS).map_err(q)?;
    let generations = pairs(&mut c, GENERATION_ROWS).map_err(q)?;
    Ok(Rows {
        structure,
        messages,
        usage,
        sessions,
        reservations,
        generations,
    }
    .renumbered())
}

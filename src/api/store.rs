//! `Store`: the public, engine-neutral handle on one database — a type-erased [`Backend`] (the
//! database's shared pool, whatever the engine) plus this opener's table names and settings.
//!
//! Upholds I3 (every call on a closed store fails with `Closed`) and I14 through the backend
//! (same database, same pool; a second opener asking for different connection settings is
//! refused rather than silently given the first opener's). Opening lives in
//! [`builder`](super::builder); sessions are made in [`session`](super::session) and
//! [`advanced`](super::advanced).

use agent_sessions_model::{Op, Outcome, SessionInfo, StructureStatus};

use crate::error::{Error, Result};
use crate::protocol::handle::Backend;
use crate::protocol::latch::Latch;
use crate::protocol::pool::PoolStats;
use crate::protocol::sync::{Arc, OnceLock};

/// Session-level defaults, as in the Python SDK.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionSettings {
    /// The `get_items` limit used when a call passes `None` (`None` here: everything).
    pub limit: Option<i64>,
}

impl SessionSettings {
    /// Settings with this default `get_items` limit (`None`: everything).
    pub fn with_limit(limit: Option<i64>) -> SessionSettings {
        SessionSettings { limit }
    }
}

/// A handle on one database: the database's shared pool plus this opener's table names and
/// settings.
///
/// Cloning a `Store` clones the handle (clones share one `close`); opening the same database
/// again gives a new handle on the same pool.
///
/// ```
/// # fn main() -> agent_sessions::Result<()> {
/// use agent_sessions::Store;
/// use serde_json::json;
///
/// let dir = tempfile::tempdir().unwrap();
/// let store = Store::open(dir.path().join("agent_sessions.db"))?;
/// let session = store.session("user-42").blocking();
/// session.add_items(vec![json!({"role": "user", "content": "hi"})])?;
/// assert_eq!(session.get_items(None)?.len(), 1);
/// store.close();                       // returns at once
/// assert_eq!(session.get_items(None), Err(agent_sessions::Error::Closed));
/// store.wait_closed_blocking();        // the pool has drained and closed every connection
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
    settings: SessionSettings,
    tables: Arc<(String, String)>,
    /// Set once the structure tables are known to belong to this handle's table pair (at open
    /// with `create_structure_tables(true)`, or by the first successful check).
    structure_owned: Arc<OnceLock<()>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("sessions_table", &self.tables.0)
            .field("messages_table", &self.tables.1)
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

impl Store {
    pub(crate) fn new(
        backend: Arc<dyn Backend>,
        settings: SessionSettings,
        tables: (String, String),
    ) -> Store {
        Store {
            backend,
            settings,
            tables: Arc::new(tables),
            structure_owned: Arc::new(OnceLock::new()),
        }
    }

    /// The default settings of this handle's sessions.
    pub fn settings(&self) -> SessionSettings {
        self.settings
    }

    pub(crate) fn mark_structure_owned(&self) {
        let _ = self.structure_owned.set(());
    }

    /// Ok if the structure tables belong to this store's pair, checked once per handle.
    pub(crate) fn structure_checked(&self, status: StructureStatus) -> Result<()> {
        match status {
            StructureStatus::Owned => {
                self.mark_structure_owned();
                Ok(())
            }
            StructureStatus::Missing => Err(Error::from(
                agent_sessions_model::advanced::errors::structure_missing(),
            )),
            StructureStatus::Rejected(why) => Err(Error::Schema(why)),
            other => Err(Error::Internal(format!(
                "unknown structure status {other:?}"
            ))),
        }
    }

    pub(crate) fn structure_known(&self) -> bool {
        self.structure_owned.get().is_some()
    }

    /// Whether the database's structure tables exist and belong to this store's table pair
    /// (what [`Store::advanced_session`] requires). One short read.
    pub async fn structure_status_async(&self) -> Result<StructureStatus> {
        structure(self.execute(Op::StructureStatus).await?)
    }

    /// Blocking form of [`Store::structure_status_async`].
    pub fn structure_status(&self) -> Result<StructureStatus> {
        structure(self.execute_blocking(Op::StructureStatus)?)
    }

    /// Every session with its item count, ordered by id.
    pub async fn list_sessions(&self) -> Result<Vec<SessionInfo>> {
        match self.execute(Op::ListSessions).await? {
            Outcome::Sessions(list) => Ok(list),
            other => Err(unexpected(&other)),
        }
    }

    /// Blocking form of [`Store::list_sessions`].
    pub fn list_sessions_blocking(&self) -> Result<Vec<SessionInfo>> {
        match self.execute_blocking(Op::ListSessions)? {
            Outcome::Sessions(list) => Ok(list),
            other => Err(unexpected(&other)),
        }
    }

    /// Run any operation of the shared vocabulary (what the CLI and the property tests use).
    pub async fn execute(&self, op: Op) -> Result<Outcome> {
        self.backend.call(op).await
    }

    /// Blocking form of [`Store::execute`].
    pub fn execute_blocking(&self, op: Op) -> Result<Outcome> {
        self.backend.call_blocking(op)
    }

    /// Close this handle (and its clones and the sessions made from them); idempotent, and
    /// returns at once. Every later call through it fails with [`Error::Closed`]; other handles
    /// on the same database go on. The database's pool — threads and connections — goes away
    /// once its last handle is closed or dropped and the requests it accepted have been served;
    /// that drain runs on a closer thread, not on the caller's (so closing or dropping a store
    /// inside an async task blocks nothing) — unless the operating system refuses to start a
    /// thread, in which case the drain runs on the calling thread rather than not at all.
    /// [`Store::wait_closed`] waits for it.
    pub fn close(&self) {
        self.backend.close();
    }

    /// Whether this handle is closed (or its pool died).
    pub fn is_closed(&self) -> bool {
        self.backend.is_closed()
    }

    /// Wait until the pool behind this handle has fully shut down: every accepted request
    /// served, every connection closed, every pool thread joined (the closer thread that did
    /// it exits right after). Returns only once *every* handle on the database is closed; use
    /// it for graceful shutdown and in tests.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> agent_sessions::Result<()> {
    /// let store = agent_sessions::Store::open_in_memory_async().await?;
    /// store.close();
    /// store.wait_closed().await;
    /// # Ok(()) }
    /// ```
    pub async fn wait_closed(&self) {
        for latch in self.backend.closed_latches() {
            Latch::wait_async(&latch).await
        }
    }

    /// Blocking form of [`Store::wait_closed`].
    pub fn wait_closed_blocking(&self) {
        for latch in self.backend.closed_latches() {
            latch.wait()
        }
    }

    /// Test hook: while held, the pool's writer starts no new group, so requests submitted
    /// meanwhile are committed as one group once released.
    #[cfg(feature = "test-hooks")]
    #[doc(hidden)]
    pub fn hold_writer(&self, held: bool) {
        self.backend.hold_writer(held)
    }

    /// Group-commit statistics of the database's pool (shared by every handle on it).
    pub fn pool_stats(&self) -> PoolStats {
        self.backend.stats()
    }

    /// The sessions table this handle reads and writes, as written in SQL (a validated plain
    /// or double-quoted identifier).
    pub fn sessions_table(&self) -> &str {
        &self.tables.0
    }

    /// The messages table this handle reads and writes, as written in SQL.
    pub fn messages_table(&self) -> &str {
        &self.tables.1
    }
}

fn structure(o: Outcome) -> Result<StructureStatus> {
    match o {
        Outcome::Structure(status) => Ok(status),
        other => Err(unexpected(&other)),
    }
}

pub(crate) fn unexpected(o: &Outcome) -> Error {
    Error::Internal(format!("unexpected outcome {o:?}"))
}

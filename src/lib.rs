//! # agent-sessions
//!
//! Conversation history for AI agents, stored in SQLite files that the OpenAI Agents SDK's
//! `SQLiteSession` and `AdvancedSQLiteSession` read and write too (same tables, same JSON bytes,
//! same semantics), behind a pool whose concurrency protocol is model-checked with loom and
//! property-tested against a reference model.
//!
//! ```
//! # fn main() -> agent_sessions::Result<()> {
//! use agent_sessions::Store;
//! use serde_json::json;
//!
//! let dir = tempfile::tempdir().unwrap();
//! let store = Store::open(dir.path().join("agent_sessions.db"))?;
//! let s = store.session("user-42").blocking();
//! s.add_items(vec![json!({"role": "user", "content": "héllo"})])?;
//! assert_eq!(s.pop_item()?, Some(json!({"role": "user", "content": "héllo"})));
//! # Ok(()) }
//! ```
//!
//! In async code, open with [`Store::open_async`] (or [`StoreBuilder::open_async`]) and make
//! Advanced sessions with [`Store::advanced_session_async`]: requests, closing and dropping
//! never block an executor thread. What blocks is named for it or documented so: `Store::open`
//! and the other synchronous openers, `Store::advanced_session` (one short read unless the
//! store claimed the structure tables), `structure_status`, the `*_blocking` forms and
//! [`BlockingSession`] / [`BlockingAdvancedSession`].
//! Advanced sessions (turns, branches and per-turn usage, in the SDK's structure tables) come
//! from a store opened with [`StoreBuilder::create_structure_tables`]; see
//! [`AdvancedSession`].
//!
//! ## Layout
//!
//! The crate is three floors, each depending only on the ones below: the **protocol** (sync
//! shim, one-shot replies, queues, the pool with group commit, the per-database registry,
//! handles, the Advanced branch pointer — engine-neutral, loom-checked), the **engines** (SQLite;
//! the reference model behind the same traits for tests), and the **API** ([`Store`], its
//! builder, sessions, errors — engine-neutral types over a type-erased backend). [`json`] is
//! the Python-exact JSON encoding the engines write. The operation vocabulary and the reference
//! model are the [`agent_sessions_model`] crate, re-exported as [`model`].
//!
//! ## Features
//!
//! - `bundled` (default): compile SQLite in. Without it the system `libsqlite3` is linked.
//! - `serde`: `Serialize`/`Deserialize` on the result types.
//! - `tracing`: spans and events for group commits, busy waits, slow requests and the pool's
//!   lifecycle.
//! - `test-hooks`: internals for this workspace's loom and property suites. Never in
//!   production.
#![warn(missing_docs)]
#![deny(clippy::disallowed_types, clippy::disallowed_methods)]

mod api;
mod engine;
mod error;
pub mod json;
mod protocol;
mod trace;

pub use agent_sessions_model as model;
pub use agent_sessions_model::{
    AdvancedAnswer, AdvancedOp, BranchInfo, HandleView, Item, Op, Outcome, SessionDump,
    SessionInfo, StructureStatus, ToolUse, TurnAnchor, TurnGroup, TurnItem, TurnUsage, Usage,
    UsageTotals,
};
pub use api::advanced::{AdvancedSession, BlockingAdvancedSession, ConversationTurn};
pub use api::builder::{Database, StoreBuilder};
pub use api::encrypted::{EncryptedSession, EncryptionKey, EncryptionOptions, PopRule};
pub use api::session::{BasicSession, BlockingSession, Session};
pub use api::store::{SessionSettings, Store};
pub use engine::Durability;
pub use error::{Error, ErrorKind, Result, Source};
pub use protocol::handle::BoxFuture;
pub use protocol::pool::PoolStats;

pub mod testing {
    //! The reference model, for testing code that works with sessions: [`Model`], the semantics
    //! every engine of this crate is checked against, and [`ModelSession`], a [`Session`] over
    //! it that needs no store (what a wrapper such as [`EncryptedSession`] can be tested on).
    //!
    //! [`Session`]: crate::Session
    //! [`EncryptedSession`]: crate::EncryptedSession
    pub use crate::api::session::ModelSession;
    pub use agent_sessions_model::Model;
}

// Names of 0.1, kept deprecated for one release (CHANGELOG: 0.2.0, migration).
/// Renamed [`BasicSession`].
#[deprecated(
    since = "0.2.0",
    note = "renamed `BasicSession`: the same handle on every engine"
)]
pub type SqliteSession = BasicSession;
/// Renamed [`AdvancedSession`].
#[deprecated(
    since = "0.2.0",
    note = "renamed `AdvancedSession`: the same handle on every engine"
)]
pub type AdvancedSqliteSession = AdvancedSession;
/// Moved to [`testing::ModelSession`].
#[deprecated(
    since = "0.2.0",
    note = "moved to `agent_sessions::testing::ModelSession`"
)]
pub type ModelSession = testing::ModelSession;
/// Moved to [`testing::Model`].
#[deprecated(since = "0.2.0", note = "moved to `agent_sessions::testing::Model`")]
pub type Model = testing::Model;
/// The number of sessions one prune transaction deletes: an implementation detail.
#[deprecated(
    since = "0.2.0",
    note = "an implementation detail of `Store::prune`, no longer public"
)]
pub const PRUNE_BATCH: u64 = api::prune::PRUNE_BATCH;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// The examples of `docs/`, compiled and run as doctests like the README's.
#[cfg(doctest)]
pub mod docs_doctests {
    #[doc = include_str!("../docs/library.md")]
    pub struct Library;
    #[doc = include_str!("../docs/postgres.md")]
    pub struct Postgres;
    #[doc = include_str!("../docs/design.md")]
    pub struct Design;
    #[doc = include_str!("../docs/verification.md")]
    pub struct Verification;
    #[doc = include_str!("../docs/performance.md")]
    pub struct Performance;
    #[doc = include_str!("../docs/cli.md")]
    pub struct Cli;
}

/// Internals for this workspace's loom and property suites (feature `test-hooks`): the protocol
/// modules, the model engine and the fault switches. Not part of the public API; never enable
/// the feature in production.
#[cfg(feature = "test-hooks")]
#[doc(hidden)]
pub mod hooks {
    #![allow(missing_docs)]
    pub use crate::api::prune::PRUNE_BATCH;
    pub use crate::engine::model as model_engine;
    pub use crate::engine::pg_decide;
    pub use crate::protocol::{engine, handle, latch, pointer, pool, queue, registry, reply, sync};
}

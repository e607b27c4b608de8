//! # agent-sessions
//!
//! Conversation history for AI agents, stored in SQLite files that the OpenAI Agents SDK's
//! `SQLiteSession` reads and writes too (same tables, same JSON bytes, same semantics), behind a
//! pool whose concurrency protocol is model-checked with loom and property-tested against a
//! reference model.
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
//! Advanced sessions (the SDK's `AdvancedSQLiteSession`: turns, branches and per-turn usage,
//! in the SDK's structure tables) come from a store opened with
//! [`StoreBuilder::create_structure_tables`]; see [`AdvancedSqliteSession`].
//!
//! Layers, bottom up: [`sync`] (the shim every primitive comes from), [`reply`] (one-shot
//! answers), [`pool`] (writer + readers, group commit), [`registry`] (one pool per file),
//! [`handle`] (closable handles), [`pointer`](mod@pointer) (an Advanced handle's branch pointer), engines
//! ([`sqlite`], [`model_engine`]), and the public [`Store`] and sessions ([`session`],
//! [`advanced`]).

pub mod advanced;
pub mod error;
pub mod handle;
pub mod model_engine;
pub mod pointer;
pub mod pool;
pub mod pyjson;
pub mod registry;
pub mod reply;
pub mod session;
pub mod sqlite;
pub mod store;
pub mod sync;

pub use advanced::{
    AdvancedSqliteSession, BlockingAdvancedSession, BranchInfo, ConversationTurn, HandleView,
    ToolUse, TurnAnchor, TurnGroup, TurnItem, TurnUsage, Usage, UsageTotals,
};
pub use error::{Error, Result};
pub use session::{BlockingSession, ModelSession, Session, SessionSettings, SqliteSession};
pub use session_model::{
    AdvancedAnswer, AdvancedOp, Item, Model, Op, Outcome, SessionDump, SessionInfo, StructureStatus,
};
pub use sqlite::Durability;
pub use store::{Store, StoreBuilder};

//! The concurrency protocol, engine-neutral: every lock, condvar, atomic and thread of the
//! library comes from [`sync`], so loom can explore all of it (`--cfg agent_sessions_loom`).
//!
//! Bottom up: [`sync`] (the shim), [`reply`] (one-shot answers, I4), [`queue`] (bounded queues,
//! I4), [`latch`] (closed signals), [`engine`] (what the pool asks of an engine, I1), [`pool`] (writer with group commit and
//! readers, I1-I7), [`registry`] (one pool per database per process, I14), [`handle`] (one
//! opener's closable view of a pool, I3), [`pointer`] (an Advanced handle's branch pointer, I12,
//! I15). Nothing here knows SQL.

pub mod engine;
pub mod handle;
pub mod latch;
pub mod pointer;
pub mod pool;
pub mod queue;
pub mod registry;
pub mod reply;
pub mod sync;

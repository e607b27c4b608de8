//! The PostgreSQL engine (feature `postgres`): the same operations, rules and pool protocol as
//! SQLite, on a server that several hosts share — basic sessions on the tables of the SDK's
//! `SQLAlchemySession` (so Python and Rust services share one history), Advanced sessions on
//! our own tables beside them.
//!
//! With several hosts there is no longer one writer per database, only one per process; the
//! SPEC's invariants are kept **per session** by locks every writer honours:
//! - I5: a session has one writing transaction at a time: ours take the session's advisory
//!   lock (all of a group's, in key order, so our groups cannot deadlock) and its row lock;
//!   the SDK's writers take the row lock.
//! - I6: a group's replies go out after its COMMIT; a COMMIT whose answer was lost is settled
//!   with `pg_xact_status` before anything is replied (see [`conn`]).
//! - I8: our writes of a session are read in commit order: messages are stamped after the
//!   session is locked, never earlier than the session's newest (the SDK orders by
//!   `(created_at, id)` and stamps the transaction's start, which can invert commit order).
//! - I9, I11, I12, I13: the Advanced rules run under the session's lock, inside the request's
//!   savepoint, exactly as on SQLite; unique constraints back up sequence numbers per session
//!   and branch reservations.
//!
//! Layout, as on SQLite: [`open`] (one pool per URL per process), `decide` (the multi-host
//! decisions as a pure state machine, which the model checker explores), [`conn`] (connections, the
//! lock protocol, reconnection, dispatch), [`basic`], [`rows`] (the Advanced primitives),
//! [`schema`] (DDL under an advisory lock, the ownership check), [`sql`] (every SQL text) and
//! [`db`] (prepared statements, panic-free column reads).

mod basic;
mod conn;
mod db;
mod open;
mod rows;
mod schema;
mod sql;

pub(crate) use open::open;

//! The SQLite engine: the exact tables, SQL and JSON bytes of the Python SDK (SPEC §5) behind
//! the protocol's [`Engine`](crate::protocol::engine::Engine) traits.
//!
//! Dependencies flow one way, from the connection down to the statements:
//! - [`open`]: one pool per file per process, through the registry.
//! - [`conn`]: the engine and its connections (settings, transactions), and the routing of each
//!   operation to one of:
//!   - [`basic`]: basic sessions (SPEC §5.2);
//!   - [`rows`]: the Advanced row primitives under the engine-neutral rules of
//!     [`crate::engine::advanced`] (SPEC §5.3);
//!   - [`schema`]: creating the tables and claiming the structure tables.
//! - [`sql`]: every SQL text of the engine, built over validated [`Ident`](crate::engine::ident::Ident)s; [`value`]: lenient
//!   column readers; [`wal_hook`]: the writer's WAL frame count (the engine's only `unsafe`).

mod basic;
mod conn;
mod open;
mod rows;
mod schema;
mod sql;
mod value;
mod wal_hook;

pub(crate) use open::{open_file, open_memory};

//! The public, engine-neutral API: [`Store`] and its builder, basic and Advanced sessions, the
//! [`Session`] trait. Every method turns into one operation of the shared vocabulary
//! ([`Op`](agent_sessions_model::Op)) submitted to the store's backend.

pub(crate) mod advanced;
pub(crate) mod builder;
pub(crate) mod encrypted;
pub(crate) mod prune;
pub(crate) mod session;
pub(crate) mod store;

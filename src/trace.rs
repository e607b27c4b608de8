//! Diagnostics: with the `tracing` feature, events through the `tracing` crate (target
//! `agent_sessions`); without it, nothing is compiled in. Events: pool started and stopped,
//! each group commit (size, outcome), requests slower than [`SLOW`], and waits for another
//! connection's lock.

/// A request (or group) that takes longer than this is reported at `warn` level.
#[cfg(feature = "tracing")]
pub(crate) const SLOW: std::time::Duration = std::time::Duration::from_secs(1);

/// `event!(level, fields..., "message")`, forwarded to `tracing` when the feature is on.
#[allow(unused_macros)]
macro_rules! event {
    ($level:ident, $($arg:tt)+) => {
        #[cfg(feature = "tracing")]
        {
            tracing::$level!(target: "agent_sessions", $($arg)+);
        }
    };
}

#[allow(unused_imports)]
pub(crate) use event;

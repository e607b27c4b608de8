//! The writer's WAL frame counter, registered with SQLite's C `sqlite3_wal_hook` directly.
//!
//! rusqlite's safe `Connection::wal_hook` keeps its closure with `sqlite3_set_clientdata`, which
//! SQLite has only since 3.44; a build against the system's SQLite (the Python extension runs
//! on the interpreter's, down to 3.35) must not reference it. The C hook itself is in every
//! SQLite with WAL (3.7). This is the crate's only `unsafe`.
//!
//! Invariant: the pointer SQLite holds as the hook's argument stays valid for as long as the
//! hook is registered — it points into an `Arc` that [`FrameHook`] owns, and [`FrameHook`]'s
//! owner unregisters the hook (with [`FrameHook::unregister`]) before dropping it.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_void};

use rusqlite::{ffi, Connection};

use crate::protocol::sync::{Arc, AtomicUsize, Ordering};

/// Frames in the WAL after the writer's last commit, kept by a registered WAL hook.
pub(super) struct FrameHook {
    frames: Arc<AtomicUsize>,
}

impl FrameHook {
    /// Register the hook on `conn` (replacing any other WAL hook, SQLite's auto-checkpoint
    /// included).
    pub(super) fn register(conn: &Connection) -> FrameHook {
        let frames = Arc::new(AtomicUsize::new(0));
        let arg = (&*frames as *const AtomicUsize).cast_mut().cast::<c_void>();
        // SAFETY: `conn.handle()` is the open connection; `arg` stays valid until
        // `unregister` (module invariant), and `on_commit` only reads it as an `AtomicUsize`.
        unsafe { ffi::sqlite3_wal_hook(conn.handle(), Some(on_commit), arg) };
        FrameHook { frames }
    }

    /// Frames in the WAL after the last commit (a restarted WAL counts anew).
    pub(super) fn frames(&self) -> usize {
        self.frames.load(Ordering::Relaxed)
    }

    /// Remove the hook from `conn`, the connection it was registered on.
    pub(super) fn unregister(self, conn: &Connection) {
        // SAFETY: no hook, no argument: SQLite forgets the pointer before `self` drops it.
        unsafe { ffi::sqlite3_wal_hook(conn.handle(), None, std::ptr::null_mut()) };
    }
}

/// SQLite calls this after each commit on the connection, with the frames now in the WAL.
unsafe extern "C" fn on_commit(
    arg: *mut c_void,
    _db: *mut ffi::sqlite3,
    _schema: *const c_char,
    pages: c_int,
) -> c_int {
    // SAFETY: `arg` is the `AtomicUsize` `register` passed, alive while registered.
    let frames = unsafe { &*arg.cast::<AtomicUsize>() };
    frames.store(usize::try_from(pages).unwrap_or(0), Ordering::Relaxed);
    ffi::SQLITE_OK
}

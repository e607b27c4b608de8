//! How the extension meets SQLite: it carries none and links none. Its `sqlite3_*` references
//! stay undefined (the build links an empty stand-in, `link-stub/`), and the dynamic loader
//! binds them to the SQLite the interpreter already has — the `libsqlite3` that Python's
//! `sqlite3` module loaded, which the package makes global before importing this module
//! (`agent_sessions/_sqlite.py`). One SQLite per process, so POSIX locks on a shared file stay
//! coherent; [`sqlite_entry`] lets the package check it.
//!
//! rusqlite calls two functions newer than the oldest SQLite the package supports (3.35.0,
//! the first with `RETURNING`): `sqlite3_changes64` (3.37) and `sqlite3_error_offset` (3.38).
//! This module defines both. They are exported and so preemptible: when the process's SQLite
//! has them, the loader binds every call to SQLite's own (a global definition comes before the
//! extension's), and only an older SQLite leaves these in use.
#![allow(unsafe_code)]

use std::ffi::{c_char, c_int, c_void};

extern "C" {
    fn sqlite3_changes(db: *mut c_void) -> c_int;
    fn sqlite3_libversion() -> *const c_char;
}

/// `sqlite3_changes64` for SQLite before 3.37: the same count, as 32 bits (exact below 2^31
/// rows changed by one statement, far beyond any statement of this store).
///
/// # Safety
/// `db` is an open connection (SQLite's own contract for this function).
#[no_mangle]
pub unsafe extern "C" fn sqlite3_changes64(db: *mut c_void) -> i64 {
    // SAFETY: the caller's contract, passed on.
    i64::from(unsafe { sqlite3_changes(db) })
}

/// `sqlite3_error_offset` for SQLite before 3.38: -1, "no offset known", what SQLite itself
/// returns for an error without a position.
///
/// # Safety
/// Nothing is read; the signature is SQLite's.
#[no_mangle]
pub unsafe extern "C" fn sqlite3_error_offset(_db: *mut c_void) -> c_int {
    -1
}

/// The address this extension's calls to `sqlite3_libversion` reach: equal to the address of
/// the interpreter's `sqlite3_libversion` if and only if both use one copy of SQLite.
pub(crate) fn sqlite_entry() -> usize {
    sqlite3_libversion as *const () as usize
}

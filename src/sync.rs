//! The sync-primitive shim: every `Mutex`, `Condvar`, atomic, `Arc` and thread the library uses
//! comes from this module, and nothing else in library code may name `std::sync`, `parking_lot`
//! or `std::thread` (a test enforces it).
//!
//! In normal builds the primitives are `parking_lot`'s (never poisoned) and `std`'s; under
//! `--cfg loom` they are loom's, so `loom` can explore every interleaving of the pool, the reply
//! one-shot and the registry (invariants I1-I4, I7, I14). Both variants expose one API: `lock()`
//! returns the guard directly, and a panic in one caller never poisons a lock for the others.

#[cfg(not(loom))]
mod imp {
    pub use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
    pub use std::sync::{Arc, OnceLock};

    /// A non-poisoning mutex.
    #[derive(Debug, Default)]
    pub struct Mutex<T>(parking_lot::Mutex<T>);
    pub type MutexGuard<'a, T> = parking_lot::MutexGuard<'a, T>;

    impl<T> Mutex<T> {
        pub fn new(value: T) -> Self {
            Mutex(parking_lot::Mutex::new(value))
        }
        pub fn lock(&self) -> MutexGuard<'_, T> {
            self.0.lock()
        }
    }

    /// A condition variable paired with [`Mutex`].
    #[derive(Debug, Default)]
    pub struct Condvar(parking_lot::Condvar);

    impl Condvar {
        pub fn new() -> Self {
            Condvar(parking_lot::Condvar::new())
        }
        pub fn wait<'a, T>(&self, mut guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
            self.0.wait(&mut guard);
            guard
        }
        pub fn notify_one(&self) {
            self.0.notify_one();
        }
        pub fn notify_all(&self) {
            self.0.notify_all();
        }
    }

    pub mod thread {
        pub use std::thread::{panicking, sleep, yield_now, JoinHandle};

        /// Spawn a named thread; fails (rather than panicking) when the OS refuses one.
        pub fn spawn<F, T>(name: String, f: F) -> std::io::Result<JoinHandle<T>>
        where
            F: FnOnce() -> T + Send + 'static,
            T: Send + 'static,
        {
            std::thread::Builder::new().name(name).spawn(f)
        }

        /// Whether `t` is the calling thread (joining it would deadlock).
        pub fn is_current<T>(t: &JoinHandle<T>) -> bool {
            t.thread().id() == std::thread::current().id()
        }
    }
}

#[cfg(loom)]
mod imp {
    pub use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
    pub use loom::sync::Arc;
    // The process-wide registry of real SQLite pools lives in a `OnceLock`; loom scenarios never
    // touch it (they build their own registry inside each model run), so std's is fine here.
    pub use std::sync::OnceLock;

    /// A mutex that loom can schedule; `lock()` never reports poisoning.
    #[derive(Debug, Default)]
    pub struct Mutex<T>(loom::sync::Mutex<T>);
    pub type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

    impl<T> Mutex<T> {
        pub fn new(value: T) -> Self {
            Mutex(loom::sync::Mutex::new(value))
        }
        pub fn lock(&self) -> MutexGuard<'_, T> {
            self.0.lock().unwrap_or_else(|e| e.into_inner())
        }
    }

    #[derive(Debug, Default)]
    pub struct Condvar(loom::sync::Condvar);

    impl Condvar {
        pub fn new() -> Self {
            Condvar(loom::sync::Condvar::new())
        }
        pub fn wait<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
            self.0.wait(guard).unwrap_or_else(|e| e.into_inner())
        }
        pub fn notify_one(&self) {
            self.0.notify_one();
        }
        pub fn notify_all(&self) {
            self.0.notify_all();
        }
    }

    pub mod thread {
        pub use loom::thread::{yield_now, JoinHandle};
        // Only the SQLite engine sleeps (between WAL retries); loom scenarios never reach it.
        pub use std::thread::{panicking, sleep};

        pub fn spawn<F, T>(name: String, f: F) -> std::io::Result<JoinHandle<T>>
        where
            F: FnOnce() -> T + Send + 'static,
            T: Send + 'static,
        {
            loom::thread::Builder::new().name(name).spawn(f)
        }

        /// Pool threads never drop their own pool in loom scenarios.
        pub fn is_current<T>(_t: &JoinHandle<T>) -> bool {
            false
        }
    }
}

pub use imp::*;

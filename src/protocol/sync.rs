//! The sync-primitive shim: every `Mutex`, `Condvar`, atomic, `Arc`, once-cell and thread the
//! library uses comes from this module, and nothing else in library code may name `std::sync`,
//! `parking_lot` or `std::thread` — clippy's `disallowed_types` / `disallowed_methods`
//! (`clippy.toml`, turned into errors in `lib.rs`) enforce it. That is why every primitive here is
//! a newtype rather than a re-export: a re-export would be the banned type itself.
//!
//! In normal builds the primitives are `parking_lot`'s (never poisoned) and `std`'s; under
//! `--cfg agent_sessions_loom` they are loom's, so `loom` can explore every interleaving of the
//! pool, the reply one-shot, the queues and the registry (invariants I1-I4, I7, I14). Both
//! variants expose one API: `lock()` returns the guard directly, and a panic in one caller never
//! poisons a lock for the others.

// The shim mirrors std's and loom's APIs; their documentation applies. Not every method is
// used by every build (the model engine and the loom suites use more than production does).
#![allow(missing_docs, dead_code)]
#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::fmt;
use std::ops::Deref;

#[cfg(not(agent_sessions_loom))]
use std::sync as base;
#[cfg(not(agent_sessions_loom))]
use std::thread as base_thread;

#[cfg(agent_sessions_loom)]
use loom::sync as base;
#[cfg(agent_sessions_loom)]
use loom::thread as base_thread;

pub use std::sync::atomic::Ordering;

/// A shared pointer (std's `Arc`, or loom's under loom).
pub struct Arc<T: ?Sized>(base::Arc<T>);

impl<T> Arc<T> {
    pub fn new(value: T) -> Self {
        Arc(base::Arc::new(value))
    }
}

impl<T: ?Sized> Arc<T> {
    /// An `Arc` of an unsized value (`dyn Trait`), which `Arc::new` cannot make through the
    /// newtype (unsizing coercion needs the unstable `CoerceUnsized`): from a box, as
    /// `Arc::from(Box<T>)` does, or loom's `Arc::from_std` under loom.
    pub fn from_box(value: Box<T>) -> Self {
        #[cfg(not(agent_sessions_loom))]
        return Arc(base::Arc::from(value));
        #[cfg(agent_sessions_loom)]
        return Arc(base::Arc::from_std(std::sync::Arc::from(value)));
    }

    pub fn ptr_eq(a: &Self, b: &Self) -> bool {
        base::Arc::ptr_eq(&a.0, &b.0)
    }
}

impl<T: ?Sized> Clone for Arc<T> {
    fn clone(&self) -> Self {
        Arc(self.0.clone())
    }
}

impl<T: ?Sized> Deref for Arc<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for Arc<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

impl<T: Default> Default for Arc<T> {
    fn default() -> Self {
        Arc::new(T::default())
    }
}

macro_rules! atomic {
    ($name:ident, $t:ty) => {
        #[derive(Debug, Default)]
        pub struct $name(base::atomic::$name);

        impl $name {
            pub fn new(v: $t) -> Self {
                $name(base::atomic::$name::new(v))
            }
            pub fn load(&self, o: Ordering) -> $t {
                self.0.load(o)
            }
            pub fn store(&self, v: $t, o: Ordering) {
                self.0.store(v, o)
            }
            pub fn swap(&self, v: $t, o: Ordering) -> $t {
                self.0.swap(v, o)
            }
        }
    };
}

atomic!(AtomicBool, bool);
atomic!(AtomicUsize, usize);

impl AtomicUsize {
    pub fn fetch_add(&self, v: usize, o: Ordering) -> usize {
        self.0.fetch_add(v, o)
    }
    pub fn fetch_max(&self, v: usize, o: Ordering) -> usize {
        self.0.fetch_max(v, o)
    }
    pub fn fetch_update(
        &self,
        set: Ordering,
        fetch: Ordering,
        f: impl FnMut(usize) -> Option<usize>,
    ) -> Result<usize, usize> {
        self.0.fetch_update(set, fetch, f)
    }
}

/// A cell written once. Always std's: the only once-cells are the process-wide registry of
/// real pools (loom scenarios build their own registries) and a handle's "structure tables
/// checked" flag (a cache of an idempotent check, not part of the protocol).
#[derive(Debug, Default)]
pub struct OnceLock<T>(std::sync::OnceLock<T>);

impl<T> OnceLock<T> {
    pub const fn new() -> Self {
        OnceLock(std::sync::OnceLock::new())
    }
    pub fn get(&self) -> Option<&T> {
        self.0.get()
    }
    pub fn set(&self, value: T) -> Result<(), T> {
        self.0.set(value)
    }
    pub fn get_or_init(&self, f: impl FnOnce() -> T) -> &T {
        self.0.get_or_init(f)
    }
}

#[cfg(not(agent_sessions_loom))]
mod lock {
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
}

#[cfg(agent_sessions_loom)]
mod lock {
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
}

pub use lock::{Condvar, Mutex};

pub mod thread {
    use super::base_thread;

    /// A pool thread's handle.
    #[derive(Debug)]
    pub struct JoinHandle<T>(base_thread::JoinHandle<T>);

    impl<T> JoinHandle<T> {
        /// Wait for the thread; `Err` if it panicked.
        pub fn join(self) -> std::thread::Result<T> {
            self.0.join()
        }
    }

    /// Spawn a named thread; fails (rather than panicking) when the OS refuses one.
    pub fn spawn<F, T>(name: String, f: F) -> std::io::Result<JoinHandle<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        base_thread::Builder::new()
            .name(name)
            .spawn(f)
            .map(JoinHandle)
    }

    /// Whether the calling thread is unwinding.
    pub fn panicking() -> bool {
        std::thread::panicking()
    }

    /// Sleep the calling thread. Only the SQLite engine sleeps (between WAL retries), which loom
    /// scenarios never reach, so it is std's in both builds.
    pub fn sleep(d: std::time::Duration) {
        std::thread::sleep(d)
    }

    pub fn yield_now() {
        base_thread::yield_now()
    }

    /// Whether `t` is the calling thread (joining it would deadlock).
    #[cfg(not(agent_sessions_loom))]
    pub fn is_current<T>(t: &JoinHandle<T>) -> bool {
        t.0.thread().id() == std::thread::current().id()
    }

    /// Pool threads never drop their own pool in loom scenarios.
    #[cfg(agent_sessions_loom)]
    pub fn is_current<T>(_t: &JoinHandle<T>) -> bool {
        false
    }
}

/// Test support: a waker that counts how often it was woken (the queue's fairness tests count
/// wake-ups, which loom does not measure). std's `Wake` needs std's `Arc`, so it lives here.
#[cfg(all(test, not(agent_sessions_loom)))]
#[derive(Clone, Default)]
pub(crate) struct WakeCount(std::sync::Arc<WakeCounter>);

#[cfg(all(test, not(agent_sessions_loom)))]
#[derive(Default)]
pub(crate) struct WakeCounter(std::sync::atomic::AtomicUsize);

#[cfg(all(test, not(agent_sessions_loom)))]
impl std::task::Wake for WakeCounter {
    fn wake(self: std::sync::Arc<Self>) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

#[cfg(all(test, not(agent_sessions_loom)))]
impl WakeCount {
    pub(crate) fn waker(&self) -> std::task::Waker {
        std::task::Waker::from(self.0.clone())
    }

    pub(crate) fn woken(&self) -> usize {
        self.0 .0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

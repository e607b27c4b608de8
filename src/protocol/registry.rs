//! The per-file registry: every opener of one file in a process shares one pool, so the process
//! never has two writers on one file fighting for SQLite's lock.
//!
//! Invariant I14: the registry never hands out a pool that is shutting down, and releases a pool
//! exactly when its last handle is released. A key moves through `Opening → Live → Closing →
//! (absent)`; an opener that finds `Opening` or `Closing` waits until the transition ends, so a new
//! pool for a file is started only after the old one has closed every connection. The last
//! release returns at once: the key stays `Closing` while a closer thread drains the pool and
//! joins its threads, and only then becomes free.

use std::collections::HashMap;
use std::hash::Hash;

use super::engine::Engine;
use super::pool::Pool;
use super::sync::{Arc, Condvar, Mutex};
use crate::error::{Error, Result};

/// What a registry can be keyed by (a canonical path, a connection URL).
pub trait Key: Eq + Hash + Clone + Send + Sync + 'static {}
impl<T: Eq + Hash + Clone + Send + Sync + 'static> Key for T {}

enum Slot<E: Engine> {
    Opening,
    Live { pool: Arc<Pool<E>>, handles: usize },
    Closing(Arc<Pool<E>>),
}

/// Pools keyed by file, counted by handle.
pub struct Registry<K: Key, E: Engine> {
    slots: Mutex<HashMap<K, Slot<E>>>,
    changed: Condvar,
    #[doc(hidden)]
    /// Negative control: hand out pools that are closing (breaks I14).
    pub fault_hand_out_closing: bool,
}

impl<K: Key, E: Engine> Default for Registry<K, E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Key, E: Engine> Registry<K, E> {
    /// An empty registry.
    pub fn new() -> Self {
        Registry {
            slots: Mutex::new(HashMap::new()),
            changed: Condvar::new(),
            fault_hand_out_closing: false,
        }
    }

    /// Take a handle on the pool of `key`, opening it with `open` if there is none. `check` vets
    /// a live pool for this opener (settings that must match) before a handle is counted.
    pub fn acquire(
        &self,
        key: &K,
        open: impl FnOnce() -> Result<Pool<E>>,
        check: impl FnOnce(&Pool<E>) -> Result<()>,
    ) -> Result<Arc<Pool<E>>> {
        let mut slots = self.slots.lock();
        loop {
            match slots.get_mut(key) {
                Some(Slot::Live { pool, .. }) if pool.is_dead() => {
                    return Err(Error::Internal(
                        "the pool of this file died (one of its threads panicked); close every \
                         handle on the file, then open it again"
                            .into(),
                    ))
                }
                Some(Slot::Live { pool, handles }) => {
                    check(pool)?;
                    *handles += 1;
                    return Ok(pool.clone());
                }
                Some(Slot::Closing(pool)) if self.fault_hand_out_closing => return Ok(pool.clone()),
                Some(Slot::Opening | Slot::Closing(_)) => slots = self.changed.wait(slots),
                None => break,
            }
        }
        slots.insert(key.clone(), Slot::Opening);
        drop(slots);
        // Opened without the registry lock: opening may wait on SQLite's busy timeout, and other
        // files must not wait behind it.
        let vacate = Vacate(self, key);
        let opened = open().map(Arc::new);
        std::mem::forget(vacate);
        let mut slots = self.slots.lock();
        let result = match opened {
            Ok(pool) => {
                slots.insert(
                    key.clone(),
                    Slot::Live {
                        pool: pool.clone(),
                        handles: 1,
                    },
                );
                Ok(pool)
            }
            Err(e) => {
                slots.remove(key);
                Err(e)
            }
        };
        drop(slots);
        self.changed.notify_all();
        result
    }

    /// Give back one handle. The last one starts the pool's shutdown on a closer thread and
    /// returns at once; the key stays `Closing` (openers wait) until the shutdown has closed
    /// every connection and joined every thread.
    pub fn release(registry: &Arc<Self>, key: &K) {
        let closing = {
            let mut slots = registry.slots.lock();
            let Some(Slot::Live { pool, handles }) = slots.get_mut(key) else {
                return;
            };
            *handles -= 1;
            if *handles > 0 {
                return;
            }
            let pool = pool.clone();
            slots.insert(key.clone(), Slot::Closing(pool.clone()));
            pool
        };
        let (registry, key) = (registry.clone(), key.clone());
        Pool::close_in_background(&closing, move || {
            registry.slots.lock().remove(&key);
            registry.changed.notify_all();
        });
    }

    /// Number of files with a pool (open, opening or closing).
    #[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
    pub fn len(&self) -> usize {
        self.slots.lock().len()
    }

    /// Whether no file has a pool.
    #[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Frees a key left `Opening` by an open that unwinds, and wakes its waiters (a panicking open
/// must not leave them blocked forever); forgotten once the open returns.
struct Vacate<'a, K: Key, E: Engine>(&'a Registry<K, E>, &'a K);

impl<K: Key, E: Engine> Drop for Vacate<'_, K, E> {
    fn drop(&mut self) {
        self.0.slots.lock().remove(self.1);
        self.0.changed.notify_all();
    }
}

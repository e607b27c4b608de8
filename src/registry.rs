//! The per-file registry: every opener of one file in a process shares one pool, so the process
//! never has two writers on one file fighting for SQLite's lock.
//!
//! Invariant I14: the registry never hands out a pool that is shutting down, and releases a pool
//! exactly when its last handle is released. A key moves through `Opening → Live → Closing →
//! (absent)`; an opener that finds `Opening` or `Closing` waits until the transition ends, so a new
//! pool for a file is started only after the old one has closed every connection.

use std::collections::HashMap;
use std::hash::Hash;

use crate::error::{Error, Result};
use crate::pool::{Engine, Pool};
use crate::sync::{Arc, Condvar, Mutex};

enum Slot<E: Engine> {
    Opening,
    Live { pool: Arc<Pool<E>>, handles: usize },
    Closing(Arc<Pool<E>>),
}

/// Pools keyed by file, counted by handle.
pub struct Registry<K, E: Engine> {
    slots: Mutex<HashMap<K, Slot<E>>>,
    changed: Condvar,
    #[doc(hidden)]
    /// Negative control: hand out pools that are closing (breaks I14).
    pub fault_hand_out_closing: bool,
}

impl<K: Eq + Hash + Clone, E: Engine> Default for Registry<K, E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Eq + Hash + Clone, E: Engine> Registry<K, E> {
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

    /// Give back one handle; the last one shuts the pool down (outside the registry lock) before
    /// the key becomes free again.
    pub fn release(&self, key: &K) {
        let closing = {
            let mut slots = self.slots.lock();
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
        let vacate = Vacate(self, key);
        closing.shutdown();
        drop(closing);
        drop(vacate);
    }

    /// Number of files with a pool (open, opening or closing).
    pub fn len(&self) -> usize {
        self.slots.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Frees a key that is `Opening` or `Closing` and wakes its waiters: when the transition ends,
/// and also if it unwinds (a panicking open or shutdown must not leave waiters blocked forever).
struct Vacate<'a, K: Eq + Hash, E: Engine>(&'a Registry<K, E>, &'a K);

impl<K: Eq + Hash, E: Engine> Drop for Vacate<'_, K, E> {
    fn drop(&mut self) {
        self.0.slots.lock().remove(self.1);
        self.0.changed.notify_all();
    }
}

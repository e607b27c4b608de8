//! A one-way latch: set once, waited for by any number of threads (blocking) and tasks (async).
//! The pool sets its latch when its shutdown has closed every connection and joined every thread,
//! so "the file is fully closed" can be awaited without joining anything on the caller's thread.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use super::sync::{Arc, Condvar, Mutex};

#[derive(Default)]
struct State {
    set: bool,
    wakers: Vec<Waker>,
}

/// Set once; never reset.
#[derive(Default)]
pub struct Latch {
    state: Mutex<State>,
    changed: Condvar,
}

impl Latch {
    /// An unset latch.
    pub fn new() -> Latch {
        Latch::default()
    }

    /// Set the latch and wake every waiter (idempotent).
    pub fn set(&self) {
        let wakers = {
            let mut st = self.state.lock();
            st.set = true;
            std::mem::take(&mut st.wakers)
        };
        self.changed.notify_all();
        for w in wakers {
            w.wake();
        }
    }

    /// Block the calling thread until the latch is set.
    pub fn wait(&self) {
        let mut st = self.state.lock();
        while !st.set {
            st = self.changed.wait(st);
        }
    }

    /// Suspend until the latch is set.
    pub fn wait_async(latch: &Arc<Latch>) -> LatchWait {
        LatchWait(latch.clone())
    }
}

/// The future of [`Latch::wait_async`].
pub struct LatchWait(Arc<Latch>);

impl Future for LatchWait {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut st = self.0.state.lock();
        if st.set {
            return Poll::Ready(());
        }
        // Registered under the lock `set` takes, so the wake-up cannot be missed.
        if !st.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            st.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

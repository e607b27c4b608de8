//! The one-shot reply through which every request gets its answer, awaited by async callers
//! (as a `Future`) and blocking callers (on a condvar) alike.
//!
//! Invariant I4 lives here: a sender either sends exactly once or, when dropped unsent (a pool
//! thread died, a queue was torn down), completes the receiver with [`Error::Closed`], so no caller
//! waits forever. Dropping the receiver does not cancel anything: the request runs to completion
//! and its answer is discarded (I7).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use super::sync::{Arc, Condvar, Mutex};
use crate::error::{Error, Result};

struct Slot<T> {
    value: Option<Result<T>>,
    /// Set once the sender is gone (after sending or without sending).
    done: bool,
    waker: Option<Waker>,
}

struct Shared<T> {
    slot: Mutex<Slot<T>>,
    ready: Condvar,
}

/// The sending half, carried by a queued request.
pub struct ReplySender<T> {
    shared: Option<Arc<Shared<T>>>,
}

/// The receiving half: `.wait()` blocks, `.await` suspends.
pub struct ReplyReceiver<T> {
    shared: Arc<Shared<T>>,
}

/// A connected pair.
pub fn channel<T>() -> (ReplySender<T>, ReplyReceiver<T>) {
    let shared = Arc::new(Shared {
        slot: Mutex::new(Slot {
            value: None,
            done: false,
            waker: None,
        }),
        ready: Condvar::new(),
    });
    (
        ReplySender {
            shared: Some(shared.clone()),
        },
        ReplyReceiver { shared },
    )
}

impl<T> ReplySender<T> {
    /// Deliver the answer. Consumes the sender, so a reply is sent at most once.
    pub fn send(mut self, value: Result<T>) {
        self.complete(Some(value));
    }

    fn complete(&mut self, value: Option<Result<T>>) {
        let Some(shared) = self.shared.take() else {
            return;
        };
        let waker = {
            let mut slot = shared.slot.lock();
            slot.value = Some(value.unwrap_or(Err(Error::Closed)));
            slot.done = true;
            slot.waker.take()
        };
        shared.ready.notify_all();
        // Woken outside the lock: a waker may run the task inline and poll straight back in.
        // A panicking waker is the executor's bug; it must not kill the pool thread sending.
        if let Some(w) = waker {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.wake()));
        }
    }
}

impl<T> Drop for ReplySender<T> {
    fn drop(&mut self) {
        self.complete(None);
    }
}

impl<T> ReplyReceiver<T> {
    /// Block the calling thread until the answer arrives.
    pub fn wait(self) -> Result<T> {
        let mut slot = self.shared.slot.lock();
        while !slot.done {
            slot = self.shared.ready.wait(slot);
        }
        slot.value.take().unwrap_or(Err(Error::Closed))
    }
}

impl<T> Drop for ReplyReceiver<T> {
    fn drop(&mut self) {
        // A caller that gave up: release its waker now (it may keep a whole task alive), and
        // drop it outside the lock.
        let waker = self.shared.slot.lock().waker.take();
        drop(waker);
    }
}

impl<T> Future for ReplyReceiver<T> {
    type Output = Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<T>> {
        let mut slot = self.shared.slot.lock();
        if slot.done {
            return Poll::Ready(slot.value.take().unwrap_or(Err(Error::Closed)));
        }
        match &slot.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => slot.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

//! The bounded request queue between callers and one pool thread (or the readers sharing one
//! queue): blocking submitters wait on a condvar for space, async ones register a waker under the
//! same lock, so no wake-up is lost (I4); closing wakes everyone, and a queue abandoned by a dying
//! thread fails what it still holds with `Closed`.

use std::collections::VecDeque;
use std::task::{Context as TaskContext, Poll, Waker};

use agent_sessions_model::{Op, Outcome};

use super::reply::ReplySender;
use super::sync::{thread, Arc, AtomicBool, Condvar, Mutex, Ordering};
use crate::error::{Error, Result};

pub(crate) struct Request<C> {
    pub(crate) ctx: Arc<C>,
    pub(crate) op: Op,
    pub(crate) reply: ReplySender<Outcome>,
    /// The request's estimated size, counted against the queue's byte bound.
    pub(crate) bytes: usize,
}

impl<C> Request<C> {
    /// A request for `op`, weighed once here.
    pub(crate) fn new(ctx: Arc<C>, op: Op, reply: ReplySender<Outcome>) -> Self {
        let bytes = weight(&op);
        Request {
            ctx,
            op,
            reply,
            bytes,
        }
    }
}

/// Roughly the bytes a request holds: its items' strings plus a few bytes per JSON node.
fn weight(op: &Op) -> usize {
    fn value(v: &serde_json::Value) -> usize {
        use serde_json::Value as V;
        16 + match v {
            V::String(s) => s.len(),
            V::Array(a) => a.iter().map(value).sum(),
            V::Object(o) => o.iter().map(|(k, v)| k.len() + value(v)).sum(),
            _ => 0,
        }
    }
    use agent_sessions_model::AdvancedOp as A;
    let items = match op {
        Op::AddItems { items, .. } | Op::ReplaceItems { items, .. } => items.as_slice(),
        Op::Advanced {
            op: A::AddItems { items } | A::ReplaceItems { items },
            ..
        } => items.as_slice(),
        _ => &[],
    };
    let imported = match op {
        Op::Import(dump) => dump
            .messages
            .iter()
            .map(|m| 16 + m.message_data.len() + m.created_at.len())
            .sum(),
        _ => 0,
    };
    64 + op.session().map_or(0, str::len) + imported + items.iter().map(value).sum::<usize>()
}

pub(crate) struct QueueState<C> {
    items: VecDeque<Request<C>>,
    open: bool,
    /// Sum of the queued requests' `bytes`.
    bytes: usize,
    /// Test hook: the consumer takes nothing while set (unless the queue is closed), so a test
    /// can queue several requests and know they form one group.
    held: bool,
    /// Async submitters waiting for space (blocking ones wait on the `space` condvar).
    space_waiters: Vec<Waker>,
    /// Batches taken and requests in them, for [`PoolStats`].
    pub(crate) batches: u64,
    pub(crate) taken: u64,
}

pub(crate) struct Queue<C> {
    pub(crate) state: Mutex<QueueState<C>>,
    available: Condvar,
    space: Condvar,
    cap: usize,
    byte_cap: usize,
}

impl<C> QueueState<C> {
    /// Whether a request of `bytes` fits: always into an empty queue, else within both bounds.
    fn fits(&self, bytes: usize, cap: usize, byte_cap: usize) -> bool {
        self.items.is_empty()
            || (self.items.len() < cap && self.bytes.saturating_add(bytes) <= byte_cap)
    }
}

impl<C> Queue<C> {
    pub(crate) fn new(cap: usize, byte_cap: usize) -> Self {
        Queue {
            state: Mutex::new(QueueState {
                items: VecDeque::new(),
                open: true,
                bytes: 0,
                held: false,
                space_waiters: Vec::new(),
                batches: 0,
                taken: 0,
            }),
            available: Condvar::new(),
            space: Condvar::new(),
            cap: cap.max(1),
            byte_cap: byte_cap.max(1),
        }
    }

    pub(crate) fn push(&self, req: Request<C>) -> Result<()> {
        let mut st = self.state.lock();
        loop {
            if !st.open {
                return Err(Error::Closed);
            }
            if st.fits(req.bytes, self.cap, self.byte_cap) {
                break;
            }
            st = self.space.wait(st);
        }
        st.bytes += req.bytes;
        st.items.push_back(req);
        drop(st);
        self.available.notify_one();
        Ok(())
    }

    /// The async form of [`Queue::push`]: `Ready` once queued (or closed), else `Pending` with
    /// the waker registered — under the same lock that `free_space` takes, so no wake-up is lost.
    pub(crate) fn poll_push(
        &self,
        req: &mut Option<Request<C>>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Result<()>> {
        let mut st = self.state.lock();
        if !st.open {
            return Poll::Ready(Err(Error::Closed));
        }
        let bytes = req.as_ref().map_or(0, |r| r.bytes);
        if !st.fits(bytes, self.cap, self.byte_cap) {
            // A task polled again (e.g. in a `select!` loop) must not pile up copies.
            if !st.space_waiters.iter().any(|w| w.will_wake(cx.waker())) {
                st.space_waiters.push(cx.waker().clone());
            }
            return Poll::Pending;
        }
        if let Some(req) = req.take() {
            st.bytes += req.bytes;
            st.items.push_back(req);
        }
        drop(st);
        self.available.notify_one();
        Poll::Ready(Ok(()))
    }

    /// Wake every submitter waiting for space (call without the lock held).
    fn free_space(&self, waiters: Vec<Waker>) {
        self.space.notify_all();
        for w in waiters {
            w.wake();
        }
    }

    /// Move up to `max` requests into `out`; `false` once the queue is closed and empty.
    pub(crate) fn pop_batch(&self, max: usize, out: &mut Vec<Request<C>>) -> bool {
        let mut st = self.state.lock();
        loop {
            // A held queue still drains once closed.
            let held = st.held && st.open;
            if !held && !st.items.is_empty() {
                let n = st.items.len().min(max);
                let start = out.len();
                out.extend(st.items.drain(..n));
                st.bytes -= out[start..].iter().map(|r| r.bytes).sum::<usize>();
                st.batches += 1;
                st.taken += n as u64;
                let waiters = std::mem::take(&mut st.space_waiters);
                drop(st);
                self.free_space(waiters);
                return true;
            }
            if !st.open {
                return false;
            }
            st = self.available.wait(st);
        }
    }

    /// Whether no request is waiting.
    pub(crate) fn is_empty(&self) -> bool {
        self.state.lock().items.is_empty()
    }

    /// Hold or release the consumer (see `QueueState::held`).
    #[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
    pub(crate) fn hold(&self, held: bool) {
        self.state.lock().held = held;
        self.available.notify_all();
    }

    pub(crate) fn close(&self) {
        let waiters = {
            let mut st = self.state.lock();
            st.open = false;
            std::mem::take(&mut st.space_waiters)
        };
        self.available.notify_all();
        self.free_space(waiters);
    }

    /// Close and fail everything still queued (used when a pool thread dies).
    pub(crate) fn abandon(&self) {
        let (left, waiters): (Vec<Request<C>>, _) = {
            let mut st = self.state.lock();
            st.open = false;
            st.bytes = 0;
            (
                st.items.drain(..).collect(),
                std::mem::take(&mut st.space_waiters),
            )
        };
        self.available.notify_all();
        self.free_space(waiters);
        drop(left); // each sender completes its receiver with `Closed`
    }
}

/// Closes a queue and fails what it holds if its consumer thread unwinds; marks the pool dead.
pub(crate) struct AbandonOnUnwind<C>(pub(crate) Arc<Queue<C>>, pub(crate) Arc<AtomicBool>);

impl<C> Drop for AbandonOnUnwind<C> {
    fn drop(&mut self) {
        if thread::panicking() {
            self.1.store(true, Ordering::Release);
            self.0.abandon();
        }
    }
}

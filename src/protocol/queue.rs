//! The bounded request queue between callers and one pool thread (or the readers sharing one
//! queue): submitters waiting for space (blocking ones on a condvar of their own, async ones by
//! their waker) line up in one FIFO under the queue's lock, so no wake-up is lost (I4); each
//! freed slot wakes the next one in line (not every waiter: O(N) wake-ups under overload, not
//! O(N²)), an async waiter cancelled after its wake-up passes it on, closing wakes everyone, and
//! a queue abandoned by a dying thread fails what it still holds with `Closed`.

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
    /// Submitters waiting for space, oldest first.
    space_waiters: VecDeque<Waiter>,
    /// The next async submitter's ticket.
    next_ticket: u64,
    /// Batches taken and requests in them, for [`PoolStats`].
    pub(crate) batches: u64,
    pub(crate) taken: u64,
}

/// One submitter waiting for space.
enum Waiter {
    /// An async submitter: its future's ticket and its task's latest waker.
    Async(u64, Waker),
    /// A blocking submitter, parked on its own condvar (under the queue's lock).
    Blocking(Arc<Condvar>),
}

impl Waiter {
    fn wake(self) {
        match self {
            Waiter::Async(_, w) => w.wake(),
            Waiter::Blocking(cv) => cv.notify_one(),
        }
    }
}

pub(crate) struct Queue<C> {
    pub(crate) state: Mutex<QueueState<C>>,
    available: Condvar,
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
                space_waiters: VecDeque::new(),
                next_ticket: 0,
                batches: 0,
                taken: 0,
            }),
            available: Condvar::new(),
            cap: cap.max(1),
            byte_cap: byte_cap.max(1),
        }
    }

    pub(crate) fn push(&self, req: Request<C>) -> Result<()> {
        let mut st = self.state.lock();
        let mut parked: Option<Arc<Condvar>> = None;
        loop {
            if !st.open {
                return Err(Error::Closed);
            }
            if st.fits(req.bytes, self.cap, self.byte_cap) {
                break;
            }
            let cv = parked
                .get_or_insert_with(|| Arc::new(Condvar::new()))
                .clone();
            // Woken (taken out of the line) but beaten to the slot, or first time: line up.
            // Every wake-up takes the waiter out of the line first, and neither parking_lot's
            // condvar nor loom's wakes spuriously, so today this always lines up; the check
            // keeps a condvar that may wake spuriously (std's) from lining one submitter up
            // twice, which would spend a freed slot's wake-up on nobody.
            let in_line = st
                .space_waiters
                .iter()
                .any(|w| matches!(w, Waiter::Blocking(c) if Arc::ptr_eq(c, &cv)));
            if !in_line {
                st.space_waiters.push_back(Waiter::Blocking(cv.clone()));
            }
            st = cv.wait(st);
        }
        st.bytes += req.bytes;
        st.items.push_back(req);
        drop(st);
        self.available.notify_one();
        Ok(())
    }

    /// The async form of [`Queue::push`]: `Ready` once queued (or closed), else `Pending` with
    /// the waker registered — under the same lock that `free_space` takes, so no wake-up is lost.
    /// `ticket` identifies the submitting future in the line (set at its first wait).
    pub(crate) fn poll_push(
        &self,
        req: &mut Option<Request<C>>,
        ticket: &mut Option<u64>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Result<()>> {
        let mut st = self.state.lock();
        if !st.open {
            return Poll::Ready(Err(Error::Closed));
        }
        let bytes = req.as_ref().map_or(0, |r| r.bytes);
        if !st.fits(bytes, self.cap, self.byte_cap) {
            // A future polled again (e.g. in a `select!` loop) keeps its place, with the
            // task's current waker; one woken but beaten to the slot lines up again.
            let id = match *ticket {
                Some(id) => id,
                None => {
                    let id = st.next_ticket;
                    st.next_ticket += 1;
                    *ticket = Some(id);
                    id
                }
            };
            let place = st
                .space_waiters
                .iter_mut()
                .find(|w| matches!(w, Waiter::Async(t, _) if *t == id));
            match place {
                Some(Waiter::Async(_, w)) => {
                    if !w.will_wake(cx.waker()) {
                        *w = cx.waker().clone();
                    }
                }
                _ => st
                    .space_waiters
                    .push_back(Waiter::Async(id, cx.waker().clone())),
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

    /// An async submitter that waited for space (with `ticket`) gave up before it got in: out
    /// of the line if still in it, else it was woken for a slot it will not take, and the
    /// wake-up goes to the next in line.
    pub(crate) fn cancel_wait(&self, ticket: u64) {
        let next = {
            let mut st = self.state.lock();
            let before = st.space_waiters.len();
            st.space_waiters
                .retain(|w| !matches!(w, Waiter::Async(t, _) if *t == ticket));
            if st.space_waiters.len() == before {
                st.space_waiters.pop_front()
            } else {
                None
            }
        };
        if let Some(w) = next {
            w.wake();
        }
    }

    /// Wake the given submitters (call without the lock held).
    fn free_space(&self, waiters: impl IntoIterator<Item = Waiter>) {
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
                // One wake-up per freed slot, oldest waiter first.
                let woken = n.min(st.space_waiters.len());
                let waiters: Vec<Waiter> = st.space_waiters.drain(..woken).collect();
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

// Not under `--cfg agent_sessions_loom` (the loom scenarios cover the interleavings); here the
// count of wake-ups, which loom does not measure.
#[cfg(all(test, not(agent_sessions_loom)))]
mod tests {
    use super::*;
    use crate::protocol::reply;
    use crate::protocol::sync::WakeCount;

    fn request() -> Request<()> {
        let (tx, _rx) = reply::channel();
        let op = Op::AddItems {
            session: "s".into(),
            items: vec![serde_json::json!(1)],
        };
        Request::new(Arc::new(()), op, tx)
    }

    struct Waiting {
        req: Option<Request<()>>,
        ticket: Option<u64>,
        count: WakeCount,
    }

    impl Waiting {
        fn new() -> Self {
            Waiting {
                req: Some(request()),
                ticket: None,
                count: Default::default(),
            }
        }
        fn poll(&mut self, q: &Queue<()>) -> Poll<Result<()>> {
            let waker = self.count.waker();
            q.poll_push(
                &mut self.req,
                &mut self.ticket,
                &mut TaskContext::from_waker(&waker),
            )
        }
        fn woken(&self) -> usize {
            self.count.woken()
        }
    }

    #[test]
    fn a_freed_slot_wakes_one_waiter_oldest_first_and_a_cancelled_one_passes_it_on() {
        let q = Queue::<()>::new(1, usize::MAX);
        q.push(request()).unwrap();
        let mut waiting: Vec<Waiting> = (0..4).map(|_| Waiting::new()).collect();
        for w in &mut waiting {
            assert!(w.poll(&q).is_pending());
            // Polled again while waiting: keeps its one place in line.
            assert!(w.poll(&q).is_pending());
        }
        let mut out = Vec::new();
        assert!(q.pop_batch(8, &mut out));
        let woken: Vec<usize> = waiting.iter().map(Waiting::woken).collect();
        assert_eq!(
            woken,
            [1, 0, 0, 0],
            "one slot freed, one (the oldest) woken"
        );
        assert!(waiting[0].poll(&q).is_ready());

        out.clear();
        assert!(q.pop_batch(8, &mut out));
        assert_eq!(waiting[1].woken(), 1);
        // The second gives up after its wake-up: the third gets it.
        q.cancel_wait(waiting[1].ticket.unwrap());
        let woken: Vec<usize> = waiting.iter().map(Waiting::woken).collect();
        assert_eq!(woken, [1, 1, 1, 0]);
        // The fourth, cancelled while still in line, leaves it without waking anyone.
        q.cancel_wait(waiting[3].ticket.unwrap());
        assert_eq!(waiting[2].woken() + waiting[3].woken(), 1);
        assert!(waiting[2].poll(&q).is_ready());
        // Closing wakes whoever still waits (nobody here) and refuses new requests.
        q.close();
        assert!(matches!(q.push(request()), Err(Error::Closed)));
    }

    /// Closing, and abandoning (a dead consumer), wake every waiter — more of them than a drain
    /// frees slots — and each then hears `Closed`; abandoning also fails what was queued.
    #[test]
    fn close_and_abandon_wake_every_waiter() {
        for abandon in [false, true] {
            let q = Queue::<()>::new(1, usize::MAX);
            let (tx, queued) = reply::channel();
            let op = Op::AddItems {
                session: "s".into(),
                items: vec![serde_json::json!(1)],
            };
            q.push(Request::new(Arc::new(()), op, tx)).unwrap();
            let mut waiting: Vec<Waiting> = (0..4).map(|_| Waiting::new()).collect();
            for w in &mut waiting {
                assert!(w.poll(&q).is_pending());
            }
            if abandon {
                q.abandon();
                assert_eq!(queued.wait(), Err(Error::Closed));
            } else {
                q.close();
            }
            let woken: Vec<usize> = waiting.iter().map(Waiting::woken).collect();
            assert_eq!(woken, [1, 1, 1, 1], "abandon = {abandon}");
            for w in &mut waiting {
                assert!(matches!(w.poll(&q), Poll::Ready(Err(Error::Closed))));
            }
        }
    }

    /// A waiter polled again by a task with another waker (a future moved between tasks) is
    /// woken through the newest one; and a request that got in through `poll_push` counts
    /// against the byte bound as a blocking push's does.
    #[test]
    fn an_async_waiter_is_woken_through_its_latest_waker_and_its_bytes_count() {
        let q = Queue::<()>::new(1, usize::MAX);
        q.push(request()).unwrap();
        let mut w = Waiting::new();
        assert!(w.poll(&q).is_pending());
        let old = std::mem::take(&mut w.count);
        assert!(w.poll(&q).is_pending());
        let mut out = Vec::new();
        assert!(q.pop_batch(8, &mut out));
        assert_eq!(
            (old.woken(), w.woken()),
            (0, 1),
            "woken through the old waker"
        );

        // One request fits the byte bound, two do not (an empty queue takes any one).
        let one = request().bytes;
        let q = Queue::<()>::new(8, one + one / 2);
        let mut first = Waiting::new();
        assert!(first.poll(&q).is_ready());
        let mut second = Waiting::new();
        assert!(
            second.poll(&q).is_pending(),
            "the first request's bytes were not counted"
        );
        // Taking a request frees its bytes, no more and no less: room for exactly one more.
        let q = Queue::<()>::new(8, 2 * one + one / 2);
        q.push(request()).unwrap();
        q.push(request()).unwrap();
        let mut out = Vec::new();
        assert!(q.pop_batch(1, &mut out));
        let mut third = Waiting::new();
        assert!(
            third.poll(&q).is_ready(),
            "a taken request's bytes were not freed"
        );
        let mut fourth = Waiting::new();
        assert!(fourth.poll(&q).is_pending(), "more bytes freed than taken");
        // The same after a blocking push.
        let q = Queue::<()>::new(8, one + one / 2);
        q.push(request()).unwrap();
        assert!(
            second.poll(&q).is_pending(),
            "a blocking push's bytes were not counted"
        );
    }

    /// The byte bound's contract: a request weighs at least the bytes of every string it holds
    /// (keys and values, however deeply nested; imported message data and timestamps), and at
    /// most that plus 16 bytes per JSON node and 64 + the session id per request.
    #[test]
    fn a_request_weighs_its_strings_plus_a_little_per_node() {
        use agent_sessions_model::{AdvancedOp, HandleView, RawMessage, SessionDump};
        use serde_json::{json, Value};
        fn strings_and_nodes(v: &Value) -> (usize, usize) {
            match v {
                Value::String(s) => (s.len(), 1),
                Value::Array(a) => a.iter().map(strings_and_nodes).fold((0, 1), add),
                Value::Object(o) => o
                    .iter()
                    .map(|(k, v)| {
                        let (b, n) = strings_and_nodes(v);
                        (b + k.len(), n)
                    })
                    .fold((0, 1), add),
                _ => (0, 1),
            }
        }
        fn add(a: (usize, usize), b: (usize, usize)) -> (usize, usize) {
            (a.0 + b.0, a.1 + b.1)
        }
        let big = "x".repeat(10_000);
        let items = vec![
            json!(big),
            json!([big, [big], 7]),
            json!({"k": big, "nested": {big.clone(): [big, null, true]}}),
            json!(1.5),
        ];
        let (bytes, nodes) = items.iter().map(strings_and_nodes).fold((0, 0), add);
        let session = "session-1";
        let ops = [
            Op::AddItems {
                session: session.into(),
                items: items.clone(),
            },
            Op::ReplaceItems {
                session: session.into(),
                items: items.clone(),
            },
            Op::Advanced {
                session: session.into(),
                view: HandleView::main(),
                op: AdvancedOp::AddItems {
                    items: items.clone(),
                },
            },
            Op::Advanced {
                session: session.into(),
                view: HandleView::main(),
                op: AdvancedOp::ReplaceItems { items },
            },
        ];
        let base = 64 + session.len();
        for op in &ops {
            let w = weight(op);
            assert!(
                (base + bytes..=base + bytes + 16 * nodes).contains(&w),
                "{w} for {bytes} string bytes in {nodes} nodes"
            );
        }
        let import = Op::Import(SessionDump {
            session_id: session.into(),
            created_at: None,
            updated_at: None,
            messages: vec![RawMessage {
                message_data: big.clone(),
                created_at: "2020-01-01 00:00:00".into(),
            }],
        });
        let w = weight(&import);
        assert!(
            (base + big.len() + 19..=base + big.len() + 19 + 16).contains(&w),
            "{w}"
        );
        // Requests without items weigh their session id and a constant.
        assert_eq!(
            weight(&Op::PopItem {
                session: session.into()
            }),
            base
        );
    }
}

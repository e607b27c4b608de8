//! The completion thread: drives the store's futures to completion and hands each outcome to
//! its asyncio loop, without a thread per call and without the GIL on the pool's threads.
//!
//! A request's future is polled first on the caller's thread (so it is submitted to the pool
//! at once, before the coroutine even yields). Its waker, called by a pool thread when the
//! reply is ready, only pushes the task onto a channel: the pool's writer never waits for the
//! GIL, so one busy interpreter cannot stall group commit for every other session. One
//! completion thread drains the channel, polls the task again and, once it is ready, takes the
//! GIL to convert the outcome and schedule it on the task's loop with
//! `loop.call_soon_threadsafe`. A task does not depend on anybody awaiting it: a cancelled
//! `await` leaves it running, so a write the pool accepted always completes.

use std::future::Future;
use std::pin::Pin;
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Wake, Waker};

use pyo3::prelude::*;

/// What a request yields once done: the Python conversion runs on the completion thread with
/// the GIL, the request itself never needs it.
pub type Outcome = Box<dyn FnOnce(Python<'_>) -> PyResult<Py<PyAny>> + Send>;

type Request = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// One request in flight: its future (until it is ready) and where its outcome goes.
struct Task {
    future: Mutex<Option<Request>>,
    reply: Reply,
}

/// The asyncio loop, the future it awaits, and the package's resolver
/// (`resolve(future, exception, value)`, which ignores a future cancelled meanwhile).
struct Reply {
    event_loop: Py<PyAny>,
    future: Py<PyAny>,
    resolver: Py<PyAny>,
}

impl Wake for Task {
    fn wake(self: Arc<Self>) {
        // Never blocks and never takes the GIL: called from the pool's threads.
        if let Some(queue) = queue() {
            let _ = queue.send(self);
        }
    }
}

static QUEUE: OnceLock<Sender<Arc<Task>>> = OnceLock::new();

fn queue() -> Option<&'static Sender<Arc<Task>>> {
    QUEUE.get()
}

/// Start the completion thread (at import, so that no request can exist without it).
pub fn start() -> std::io::Result<()> {
    if QUEUE.get().is_some() {
        return Ok(());
    }
    let (tx, rx) = channel::<Arc<Task>>();
    std::thread::Builder::new()
        .name("agent-sessions-completion".into())
        .spawn(move || {
            for task in rx {
                poll(&task);
            }
        })?;
    let _ = QUEUE.set(tx);
    Ok(())
}

/// Poll `task` once; if it is ready, deliver its outcome.
fn poll(task: &Arc<Task>) {
    let ready = {
        let mut slot = task.future.lock().unwrap_or_else(|p| p.into_inner());
        let Some(future) = slot.as_mut() else {
            return; // already delivered (a late, spurious wake)
        };
        let waker = Waker::from(task.clone());
        match future.as_mut().poll(&mut Context::from_waker(&waker)) {
            Poll::Ready(outcome) => {
                *slot = None;
                Some(outcome)
            }
            Poll::Pending => None,
        }
    };
    if let Some(outcome) = ready {
        Python::attach(|py| deliver(py, &task.reply, outcome));
    }
}

fn deliver(py: Python<'_>, reply: &Reply, outcome: Outcome) {
    let (exception, value) = match outcome(py) {
        Ok(value) => (py.None(), value),
        Err(e) => (e.into_value(py).into_any(), py.None()),
    };
    let scheduled = reply.event_loop.call_method1(
        py,
        "call_soon_threadsafe",
        (&reply.resolver, &reply.future, exception, value),
    );
    // A loop closed before the reply arrived has nobody left to tell; the request itself is
    // done (written or failed) either way.
    drop(scheduled);
}

/// Start `request`: poll it once here (submitting it to the pool), then let the completion
/// thread finish it and resolve `future` on `event_loop`.
pub fn spawn(
    event_loop: Py<PyAny>,
    future: Py<PyAny>,
    resolver: Py<PyAny>,
    request: impl Future<Output = Outcome> + Send + 'static,
) {
    let task = Arc::new(Task {
        future: Mutex::new(Some(Box::pin(request))),
        reply: Reply {
            event_loop,
            future,
            resolver,
        },
    });
    poll(&task);
}

//! The completion thread: drives the store's futures to completion and hands each outcome to
//! its asyncio loop, without a thread per call and without the GIL on the pool's threads.
//!
//! A request's future is polled first on the caller's thread (so it is submitted to the pool
//! at once, before the coroutine even yields). Its waker, called by a pool thread when the
//! reply is ready, only pushes the task onto a channel: the pool's writer never waits for the
//! GIL, so one busy interpreter cannot stall group commit for every other session. One
//! completion thread drains the channel and polls each woken task; for every batch of ready
//! tasks it takes the GIL once, converts their outcomes and schedules them on their loops with
//! one `loop.call_soon_threadsafe` per loop. (A `Task` dropped on a pool thread only queues its
//! Python references for release — pyo3 defers those decrefs until it next holds the GIL.)
//! A task does not depend on anybody awaiting it: a cancelled `await` leaves it running, so a
//! write the pool accepted always completes.

use std::future::Future;
use std::pin::Pin;
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Wake, Waker};

use pyo3::prelude::*;

/// What a request yields once done: the Python conversion runs on the completion thread with
/// the GIL, the request itself never needs it.
pub type Outcome = Box<dyn FnOnce(Python<'_>) -> PyResult<Py<PyAny>> + Send>;

/// `(future, exception or None, value or None)`, as the resolver takes them.
type Settlement = (Py<PyAny>, Py<PyAny>, Py<PyAny>);

type Request = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// One request in flight: its future (until it is ready) and where its outcome goes.
struct Task {
    future: Mutex<Option<Request>>,
    reply: Reply,
}

/// The asyncio loop, the future it awaits, and the package's resolver
/// (`resolve([(future, exception, value), ...])`, which skips futures cancelled meanwhile).
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
            // Drain everything woken meanwhile, then deliver it under one GIL acquisition:
            // with many requests in flight, each GIL handoff (up to the interpreter's switch
            // interval) is paid once per batch instead of once per request.
            while let Ok(first) = rx.recv() {
                let ready: Vec<_> = std::iter::once(first)
                    .chain(rx.try_iter())
                    .filter_map(|task| poll_once(&task).map(|outcome| (task, outcome)))
                    .collect();
                if !ready.is_empty() {
                    Python::attach(|py| deliver_all(py, ready));
                }
            }
        })?;
    let _ = QUEUE.set(tx);
    Ok(())
}

/// Poll `task` once: its outcome if it is ready (and not delivered before).
fn poll_once(task: &Arc<Task>) -> Option<Outcome> {
    let mut slot = task.future.lock().unwrap_or_else(|p| p.into_inner());
    let future = slot.as_mut()?; // None: already delivered (a late, spurious wake)
    let waker = Waker::from(task.clone());
    match future.as_mut().poll(&mut Context::from_waker(&waker)) {
        Poll::Ready(outcome) => {
            *slot = None;
            Some(outcome)
        }
        Poll::Pending => None,
    }
}

/// Convert the outcomes and schedule them: one `call_soon_threadsafe` per loop and batch (the
/// resolver takes a list of `(future, exception, value)`).
fn deliver_all(py: Python<'_>, ready: Vec<(Arc<Task>, Outcome)>) {
    let mut by_loop: Vec<(&Reply, Vec<Settlement>)> = Vec::new();
    let mut outcomes = Vec::with_capacity(ready.len());
    for (task, outcome) in ready {
        outcomes.push((task, outcome(py)));
    }
    for (task, result) in &outcomes {
        let (exception, value) = match result {
            Ok(value) => (py.None(), value.clone_ref(py)),
            Err(e) => (e.clone_ref(py).into_value(py).into_any(), py.None()),
        };
        let triple = (task.reply.future.clone_ref(py), exception, value);
        match by_loop
            .iter_mut()
            .find(|(r, _)| r.event_loop.is(&task.reply.event_loop))
        {
            Some((_, batch)) => batch.push(triple),
            None => by_loop.push((&task.reply, vec![triple])),
        }
    }
    for (reply, batch) in by_loop {
        // A loop closed before the reply arrived has nobody left to tell; the requests
        // themselves are done (written or failed) either way.
        let _ = reply
            .event_loop
            .call_method1(py, "call_soon_threadsafe", (&reply.resolver, batch));
    }
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
    if let Some(outcome) = poll_once(&task) {
        Python::attach(|py| deliver_all(py, vec![(task, outcome)]));
    }
}

//! `agent_sessions._native`: the store's sessions for Python. Two classes, `Basic` and
//! `Advanced`, each one Python session object's own handle on the file's shared pool (the
//! library keeps one pool per file per process, so a thousand session objects on one file use
//! the same few connections). The public classes, with the SDK's signatures, are Python code in
//! `agent_sessions/` around these.
//!
//! Every async operation takes the asyncio loop and a future of it, starts the request at once
//! and returns; the completion thread ([`executor`]) resolves the future. Opening blocks (as
//! the SDK's constructors do) but releases the GIL meanwhile.

mod convert;
mod executor;
mod sqlite_link;

use std::future::Future;
use std::sync::OnceLock;

use agent_sessions::{AdvancedSession, BasicSession, Store, Usage};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use serde_json::Value;

use convert::{items_from_json, to_py, to_py_err};

/// The Python function that settles a future (`resolve(future, exception, value)`), set once
/// at import by the package.
static RESOLVER: OnceLock<Py<PyAny>> = OnceLock::new();

#[pyfunction]
fn init(resolver: Py<PyAny>) -> PyResult<()> {
    executor::start()
        .map_err(|e| PyRuntimeError::new_err(format!("cannot start the completion thread: {e}")))?;
    let _ = RESOLVER.set(resolver);
    Ok(())
}

/// Start `request` and have the completion thread settle `future` with `convert(outcome)`.
fn submit<T: Send + 'static>(
    py: Python<'_>,
    event_loop: Py<PyAny>,
    future: Py<PyAny>,
    request: impl Future<Output = agent_sessions::Result<T>> + Send + 'static,
    convert: fn(Python<'_>, T) -> PyResult<Py<PyAny>>,
) -> PyResult<()> {
    let resolver = RESOLVER
        .get()
        .ok_or_else(|| PyRuntimeError::new_err("agent_sessions._native.init was not called"))?
        .clone_ref(py);
    executor::spawn(event_loop, future, resolver, async move {
        let result = request.await;
        Box::new(move |py: Python<'_>| match result {
            Ok(v) => convert(py, v),
            Err(e) => Err(to_py_err(e)),
        }) as executor::Outcome
    });
    Ok(())
}

fn unit(py: Python<'_>, (): ()) -> PyResult<Py<PyAny>> {
    Ok(py.None())
}

fn items(py: Python<'_>, items: Vec<Value>) -> PyResult<Py<PyAny>> {
    to_py(py, &Value::Array(items))
}

fn item(py: Python<'_>, item: Option<Value>) -> PyResult<Py<PyAny>> {
    item.map_or_else(|| Ok(py.None()), |v| to_py(py, &v))
}

/// Any serializable result (branch lists, turns, usage) as its JSON shape, whose field names
/// are the SDK's dict keys.
fn json<T: serde::Serialize>(py: Python<'_>, v: T) -> PyResult<Py<PyAny>> {
    let value = serde_json::to_value(v)
        .map_err(|e| PyRuntimeError::new_err(format!("result not serializable: {e}")))?;
    to_py(py, &value)
}

fn open(
    py: Python<'_>,
    db_path: String,
    sessions_table: String,
    messages_table: String,
    structure: bool,
) -> PyResult<Store> {
    py.detach(|| {
        Store::builder(db_path.as_str())
            .sessions_table(sessions_table)
            .messages_table(messages_table)
            .create_structure_tables(structure)
            .open()
    })
    .map_err(to_py_err)
}

/// A basic session (the SDK's `SQLiteSession`) on its own store handle.
#[pyclass(frozen, module = "agent_sessions._native")]
struct Basic {
    store: Store,
    session: BasicSession,
}

#[pymethods]
impl Basic {
    #[new]
    fn new(
        py: Python<'_>,
        session_id: String,
        db_path: String,
        sessions_table: String,
        messages_table: String,
    ) -> PyResult<Basic> {
        let store = open(py, db_path, sessions_table, messages_table, false)?;
        let session = store.session(session_id);
        Ok(Basic { store, session })
    }

    /// `items`: each item's `json.dumps` text.
    fn add_items(
        &self,
        py: Python<'_>,
        event_loop: Py<PyAny>,
        future: Py<PyAny>,
        items: Vec<String>,
    ) -> PyResult<()> {
        let batch = items_from_json(items)?;
        let s = self.session.clone();
        submit(
            py,
            event_loop,
            future,
            async move { s.add_items(batch).await },
            unit,
        )
    }

    /// `limit`: already resolved against the session settings (`None`: everything).
    #[pyo3(signature = (event_loop, future, limit))]
    fn get_items(
        &self,
        py: Python<'_>,
        event_loop: Py<PyAny>,
        future: Py<PyAny>,
        limit: Option<i64>,
    ) -> PyResult<()> {
        let s = self.session.clone();
        let f = async move { s.get_items(Some(limit.unwrap_or(-1))).await };
        submit(py, event_loop, future, f, self::items)
    }

    fn pop_item(&self, py: Python<'_>, event_loop: Py<PyAny>, future: Py<PyAny>) -> PyResult<()> {
        let s = self.session.clone();
        submit(
            py,
            event_loop,
            future,
            async move { s.pop_item().await },
            item,
        )
    }

    fn clear_session(
        &self,
        py: Python<'_>,
        event_loop: Py<PyAny>,
        future: Py<PyAny>,
    ) -> PyResult<()> {
        let s = self.session.clone();
        submit(
            py,
            event_loop,
            future,
            async move { s.clear_session().await },
            unit,
        )
    }

    /// Close this handle; the pool closes once no handle on the file is left.
    fn close(&self) {
        self.session.close();
        self.store.close();
    }

    fn is_closed(&self) -> bool {
        self.session.is_closed()
    }
}

/// An Advanced session (the SDK's `AdvancedSQLiteSession`) on its own store handle.
#[pyclass(frozen, module = "agent_sessions._native")]
struct Advanced {
    store: Store,
    session: AdvancedSession,
}

/// The boilerplate of one async Advanced method: clone the handle into the request.
macro_rules! advanced {
    ($self:ident, $py:ident, $loop:ident, $fut:ident, |$s:ident| $call:expr, $convert:expr) => {{
        let $s = $self.session.clone();
        submit($py, $loop, $fut, async move { $call.await }, $convert)
    }};
}

#[pymethods]
impl Advanced {
    #[new]
    fn new(
        py: Python<'_>,
        session_id: String,
        db_path: String,
        sessions_table: String,
        messages_table: String,
        create_tables: bool,
    ) -> PyResult<Advanced> {
        let store = open(py, db_path, sessions_table, messages_table, create_tables)?;
        let session = py
            .detach(|| store.advanced_session(session_id))
            .map_err(to_py_err)?;
        Ok(Advanced { store, session })
    }

    fn close(&self) {
        self.session.close();
        self.store.close();
    }

    fn is_closed(&self) -> bool {
        self.session.is_closed()
    }

    fn current_branch_id(&self) -> String {
        self.session.current_branch_id()
    }

    fn add_items(
        &self,
        py: Python<'_>,
        event_loop: Py<PyAny>,
        future: Py<PyAny>,
        items: Vec<String>,
    ) -> PyResult<()> {
        let batch = items_from_json(items)?;
        advanced!(self, py, event_loop, future, |s| s.add_items(batch), unit)
    }

    #[pyo3(signature = (event_loop, future, limit, branch))]
    fn get_items(
        &self,
        py: Python<'_>,
        event_loop: Py<PyAny>,
        future: Py<PyAny>,
        limit: Option<i64>,
        branch: Option<String>,
    ) -> PyResult<()> {
        let limit = Some(limit.unwrap_or(-1));
        advanced!(
            self,
            py,
            event_loop,
            future,
            |s| s.get_branch_items(branch.as_deref(), limit),
            self::items
        )
    }

    fn pop_item(&self, py: Python<'_>, event_loop: Py<PyAny>, future: Py<PyAny>) -> PyResult<()> {
        advanced!(self, py, event_loop, future, |s| s.pop_item(), item)
    }

    fn clear_session(
        &self,
        py: Python<'_>,
        event_loop: Py<PyAny>,
        future: Py<PyAny>,
    ) -> PyResult<()> {
        advanced!(self, py, event_loop, future, |s| s.clear_session(), unit)
    }

    #[pyo3(signature = (event_loop, future, turn, name))]
    fn create_branch_from_turn(
        &self,
        py: Python<'_>,
        event_loop: Py<PyAny>,
        future: Py<PyAny>,
        turn: i64,
        name: Option<String>,
    ) -> PyResult<()> {
        advanced!(
            self,
            py,
            event_loop,
            future,
            |s| s.create_branch_from_turn(turn, name.as_deref()),
            json
        )
    }

    #[pyo3(signature = (event_loop, future, term, name))]
    fn create_branch_from_content(
        &self,
        py: Python<'_>,
        event_loop: Py<PyAny>,
        future: Py<PyAny>,
        term: String,
        name: Option<String>,
    ) -> PyResult<()> {
        advanced!(
            self,
            py,
            event_loop,
            future,
            |s| s.create_branch_from_content(&term, name.as_deref()),
            json
        )
    }

    fn switch_to_branch(
        &self,
        py: Python<'_>,
        event_loop: Py<PyAny>,
        future: Py<PyAny>,
        branch: String,
    ) -> PyResult<()> {
        advanced!(
            self,
            py,
            event_loop,
            future,
            |s| s.switch_to_branch(&branch),
            unit
        )
    }

    fn delete_branch(
        &self,
        py: Python<'_>,
        event_loop: Py<PyAny>,
        future: Py<PyAny>,
        branch: String,
        force: bool,
    ) -> PyResult<()> {
        advanced!(
            self,
            py,
            event_loop,
            future,
            |s| s.delete_branch(&branch, force),
            unit
        )
    }

    fn list_branches(
        &self,
        py: Python<'_>,
        event_loop: Py<PyAny>,
        future: Py<PyAny>,
    ) -> PyResult<()> {
        advanced!(self, py, event_loop, future, |s| s.list_branches(), json)
    }

    #[pyo3(signature = (event_loop, future, branch))]
    fn get_conversation_turns(
        &self,
        py: Python<'_>,
        event_loop: Py<PyAny>,
        future: Py<PyAny>,
        branch: Option<String>,
    ) -> PyResult<()> {
        advanced!(
            self,
            py,
            event_loop,
            future,
            |s| s.get_conversation_turns(branch.as_deref()),
            json
        )
    }

    #[pyo3(signature = (event_loop, future, term, branch))]
    fn find_turns_by_content(
        &self,
        py: Python<'_>,
        event_loop: Py<PyAny>,
        future: Py<PyAny>,
        term: String,
        branch: Option<String>,
    ) -> PyResult<()> {
        advanced!(
            self,
            py,
            event_loop,
            future,
            |s| s.find_turns_by_content(&term, branch.as_deref()),
            json
        )
    }

    #[pyo3(signature = (event_loop, future, branch))]
    fn get_conversation_by_turns(
        &self,
        py: Python<'_>,
        event_loop: Py<PyAny>,
        future: Py<PyAny>,
        branch: Option<String>,
    ) -> PyResult<()> {
        advanced!(
            self,
            py,
            event_loop,
            future,
            |s| s.get_conversation_by_turns(branch.as_deref()),
            json
        )
    }

    #[pyo3(signature = (event_loop, future, branch))]
    fn get_tool_usage(
        &self,
        py: Python<'_>,
        event_loop: Py<PyAny>,
        future: Py<PyAny>,
        branch: Option<String>,
    ) -> PyResult<()> {
        advanced!(
            self,
            py,
            event_loop,
            future,
            |s| s.get_tool_usage(branch.as_deref()),
            json
        )
    }

    /// Record a run's usage on the current turn. The details: `json.dumps` texts or `None`.
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (event_loop, future, requests, input_tokens, output_tokens, total_tokens,
                        input_details, output_details))]
    fn record_usage(
        &self,
        py: Python<'_>,
        event_loop: Py<PyAny>,
        future: Py<PyAny>,
        requests: i64,
        input_tokens: i64,
        output_tokens: i64,
        total_tokens: i64,
        input_details: Option<String>,
        output_details: Option<String>,
    ) -> PyResult<()> {
        let details = |text: Option<String>| -> PyResult<Option<Value>> {
            text.map(|t| Ok(items_from_json(vec![t])?.remove(0)))
                .transpose()
        };
        let usage = Usage {
            requests,
            input_tokens,
            output_tokens,
            total_tokens,
            input_tokens_details: details(input_details)?,
            output_tokens_details: details(output_details)?,
        };
        advanced!(
            self,
            py,
            event_loop,
            future,
            |s| s.record_usage(usage),
            json
        )
    }

    #[pyo3(signature = (event_loop, future, branch))]
    fn get_session_usage(
        &self,
        py: Python<'_>,
        event_loop: Py<PyAny>,
        future: Py<PyAny>,
        branch: Option<String>,
    ) -> PyResult<()> {
        advanced!(
            self,
            py,
            event_loop,
            future,
            |s| s.get_session_usage(branch.as_deref()),
            json
        )
    }

    #[pyo3(signature = (event_loop, future, turn, branch))]
    fn get_turn_usage(
        &self,
        py: Python<'_>,
        event_loop: Py<PyAny>,
        future: Py<PyAny>,
        turn: Option<i64>,
        branch: Option<String>,
    ) -> PyResult<()> {
        advanced!(
            self,
            py,
            event_loop,
            future,
            |s| s.get_turn_usage(turn, branch.as_deref()),
            json
        )
    }
}

/// The address the extension's `sqlite3_libversion` calls reach (see [`sqlite_link`]).
#[pyfunction]
fn sqlite_entry() -> usize {
    sqlite_link::sqlite_entry()
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(init, m)?)?;
    m.add_function(wrap_pyfunction!(sqlite_entry, m)?)?;
    m.add_class::<Basic>()?;
    m.add_class::<Advanced>()?;
    Ok(())
}

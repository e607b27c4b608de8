//! Conversions at the boundary: items in (the `json.dumps` text the SDK would store, checked
//! to be stored byte for byte), results out (JSON values to Python objects), and the store's
//! errors as the exceptions the SDK raises.

use agent_sessions::{Error, Item};
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use serde_json::Value;

/// Parse the `json.dumps` texts of a batch. The store re-encodes items as Python would; an item
/// whose text would not come back identical (a NaN, an integer beyond 64 bits, a float that
/// does not round-trip) is refused here rather than silently stored differently.
pub fn items_from_json(texts: Vec<String>) -> PyResult<Vec<Item>> {
    texts
        .into_iter()
        .enumerate()
        .map(|(i, text)| {
            let value: Value = serde_json::from_str(&text).map_err(|e| {
                PyValueError::new_err(format!("item {i} cannot be stored as JSON: {e}"))
            })?;
            if agent_sessions::json::to_python_json(&value) != text {
                return Err(PyValueError::new_err(format!(
                    "item {i} cannot be stored exactly (its json.dumps text does not round-trip \
                     through JSON: NaN, infinities or integers beyond 64 bits?)"
                )));
            }
            Ok(value)
        })
        .collect()
}

/// A JSON value as the Python object `json.loads` would give.
pub fn to_py(py: Python<'_>, value: &Value) -> PyResult<Py<PyAny>> {
    Ok(match value {
        Value::Null => py.None(),
        Value::Bool(b) => b.into_pyobject(py)?.to_owned().into_any().unbind(),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                i.into_pyobject(py)?.into_any().unbind()
            } else if let Some(u) = n.as_u64() {
                u.into_pyobject(py)?.into_any().unbind()
            } else {
                n.as_f64()
                    .unwrap_or(f64::NAN)
                    .into_pyobject(py)?
                    .into_any()
                    .unbind()
            }
        }
        Value::String(s) => s.into_pyobject(py)?.into_any().unbind(),
        Value::Array(xs) => {
            let list = PyList::empty(py);
            for x in xs {
                list.append(to_py(py, x)?)?;
            }
            list.into_any().unbind()
        }
        Value::Object(map) => {
            let dict = PyDict::new(py);
            for (k, v) in map {
                dict.set_item(k, to_py(py, v)?)?;
            }
            dict.into_any().unbind()
        }
    })
}

/// The store's error as the SDK's exception: `RuntimeError` for a closed session (the SDK's
/// message), `ValueError` for rejected arguments and missing branches or turns (its messages are
/// restored by the Python layer where its tests check them), `sqlite3.OperationalError` /
/// `sqlite3.DatabaseError` for the engine's failures, as Python's `sqlite3` would raise them.
pub fn to_py_err(e: Error) -> PyErr {
    let message = e.to_string();
    match e {
        Error::Closed => PyRuntimeError::new_err("SQLiteSession is closed"),
        Error::InvalidArgument(m)
        | Error::BranchNotFound(m)
        | Error::BranchIdUsed(m)
        | Error::TurnNotFound(m)
        | Error::Schema(m) => PyValueError::new_err(sentence(&m)),
        Error::Io(m) => PyOSError::new_err(m),
        Error::Busy { .. } => sqlite_err("OperationalError", message),
        Error::Sqlite { code, .. } => sqlite_err(sqlite3_class(code), message),
        _ => PyRuntimeError::new_err(message),
    }
}

/// The library's messages start in lower case ("branch 'x' does not exist in session ...");
/// the SDK's, which its tests match, are sentences ("Branch 'x' does not exist").
fn sentence(m: &str) -> String {
    let mut chars = m.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The class Python's `sqlite3` raises for an SQLite primary result code.
fn sqlite3_class(code: Option<i32>) -> &'static str {
    match code {
        Some(2) => "InternalError",        // SQLITE_INTERNAL
        Some(11 | 26) => "DatabaseError",  // SQLITE_CORRUPT, SQLITE_NOTADB
        Some(18) => "DataError",           // SQLITE_TOOBIG
        Some(19 | 20) => "IntegrityError", // SQLITE_CONSTRAINT, SQLITE_MISMATCH
        Some(21 | 25) => "InterfaceError", // SQLITE_MISUSE, SQLITE_RANGE
        Some(_) => "OperationalError",     // ERROR, BUSY, LOCKED, IOERR, FULL, ...
        None => "DatabaseError",
    }
}

fn sqlite_err(class: &str, message: String) -> PyErr {
    Python::attach(|py| {
        match py
            .import("sqlite3")
            .and_then(|m| m.getattr(class))
            .and_then(|cls| cls.call1((message.clone(),)))
        {
            Ok(exc) => PyErr::from_value(exc),
            Err(_) => PyRuntimeError::new_err(message),
        }
    })
}

//! Column readers shared by the engine's statements. Other programs write these tables too, so a
//! column may hold any storage class; a surprising one is read leniently (as text, a number or
//! nothing) instead of failing the whole read.

use rusqlite::types::ValueRef;

/// Stored text of a column, whatever its storage class (other programs may store BLOBs or
/// numbers); `None` for NULL or bytes that are not UTF-8.
pub(crate) fn text_of(v: ValueRef<'_>) -> Option<String> {
    match v {
        ValueRef::Null => None,
        ValueRef::Integer(i) => Some(i.to_string()),
        ValueRef::Real(f) => Some(f.to_string()),
        ValueRef::Text(b) | ValueRef::Blob(b) => std::str::from_utf8(b).ok().map(str::to_owned),
    }
}

/// An integer column, whatever its storage class (rows written by other programs may hold
/// reals or text); `None` for NULL or text that is not a number.
pub(crate) fn int_of(v: ValueRef<'_>) -> Option<i64> {
    match v {
        ValueRef::Null | ValueRef::Blob(_) => None,
        ValueRef::Integer(i) => Some(i),
        ValueRef::Real(f) => Some(f as i64),
        ValueRef::Text(t) => std::str::from_utf8(t).ok()?.trim().parse().ok(),
    }
}

//! Table names, for every engine. They are validated once, when a store is opened, and only
//! validated names are ever spliced into SQL (SPEC §5.1); user data always goes through bound
//! parameters.

use crate::error::{Error, Result};

/// A validated SQL identifier: plain (`[A-Za-z_][A-Za-z0-9_]*`) or double-quoted (`"any text"`,
/// with inner quotes doubled).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Ident {
    /// As written in SQL (quotes included for a quoted name).
    sql: String,
    /// The name itself (quotes removed, doubled quotes undone).
    name: String,
    quoted: bool,
}

impl Ident {
    /// Validate `text` as a table name. `what` names the setting in the error message.
    pub(crate) fn parse(text: &str, what: &str) -> Result<Ident> {
        let bad = |why: &str| {
            Err(Error::InvalidArgument(format!(
                "{what} {text:?} is not a valid table name: {why}; use a plain identifier \
                 (letters, digits, '_', not starting with a digit) or a double-quoted name"
            )))
        };
        if text.is_empty() {
            return bad("it is empty");
        }
        if text.contains('\0') {
            return bad("it contains a NUL character");
        }
        if let Some(inner) = text
            .strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
            .filter(|_| text.len() >= 2)
        {
            if inner.is_empty() {
                return bad("the quoted name is empty");
            }
            if inner.replace("\"\"", "").contains('"') {
                return bad("a double quote inside a quoted name must be doubled");
            }
            return Ok(Ident {
                sql: text.to_owned(),
                name: inner.replace("\"\"", "\""),
                quoted: true,
            });
        }
        let mut chars = text.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        if !first_ok || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return bad("it has characters outside [A-Za-z0-9_] or starts with a digit");
        }
        if text.len() >= 7 && text[..7].eq_ignore_ascii_case("sqlite_") {
            return bad("names starting with 'sqlite_' are reserved by SQLite");
        }
        Ok(Ident {
            sql: text.to_owned(),
            name: text.to_owned(),
            quoted: false,
        })
    }

    /// The identifier as written in SQL.
    pub(crate) fn sql(&self) -> &str {
        &self.sql
    }

    /// The bare name, as SQLite stores it in `sqlite_master`.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The name always double-quoted (inner quotes doubled), so case is kept: how SQLAlchemy
    /// names a table on PostgreSQL whenever the name is not all lowercase (and the same table
    /// when it is).
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn always_quoted(&self) -> String {
        format!("\"{}\"", self.name.replace('"', "\"\""))
    }

    /// `idx_{name}_session_id`, quoted the same way as the table (Python's index name for plain
    /// names).
    pub(crate) fn index_name(&self) -> String {
        if self.quoted {
            format!("\"idx_{}_session_id\"", self.name.replace('"', "\"\""))
        } else {
            format!("idx_{}_session_id", self.name)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_quoted_names_are_accepted() {
        assert_eq!(
            Ident::parse("agent_sessions", "t").unwrap().sql(),
            "agent_sessions"
        );
        assert_eq!(Ident::parse("_T9", "t").unwrap().name(), "_T9");
        let q = Ident::parse("\"my \"\"odd\"\" table\"", "t").unwrap();
        assert_eq!(q.name(), "my \"odd\" table");
        assert_eq!(q.index_name(), "\"idx_my \"\"odd\"\" table_session_id\"");
        assert_eq!(q.always_quoted(), q.sql());
        assert_eq!(
            Ident::parse("Agent", "t").unwrap().always_quoted(),
            "\"Agent\""
        );
    }

    #[test]
    fn hostile_names_are_rejected_with_the_setting_named() {
        for bad in [
            "",
            "1abc",
            "a b",
            "x; DROP TABLE y",
            "t--",
            "\"",
            "\"\"",
            "\"a\"b\"",
            "sqlite_master",
            "naïve",
            "a\0b",
        ] {
            let err = Ident::parse(bad, "messages table").unwrap_err();
            match err {
                Error::InvalidArgument(m) => assert!(m.contains("messages table"), "{m}"),
                other => panic!("{bad:?}: {other:?}"),
            }
        }
    }
}

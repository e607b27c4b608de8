//! Table names and the SQL text built from them. Names are validated once, when a store is
//! opened, and only validated names are ever spliced into SQL (SPEC §5.1); user data always goes
//! through bound parameters.

use crate::error::{Error, Result};

/// A validated SQL identifier: plain (`[A-Za-z_][A-Za-z0-9_]*`) or double-quoted (`"any text"`,
/// with inner quotes doubled).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ident {
    /// As written in SQL (quotes included for a quoted name).
    sql: String,
    /// The name itself (quotes removed, doubled quotes undone).
    name: String,
    quoted: bool,
}

impl Ident {
    /// Validate `text` as a table name. `what` names the setting in the error message.
    pub fn parse(text: &str, what: &str) -> Result<Ident> {
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
    pub fn sql(&self) -> &str {
        &self.sql
    }

    /// The bare name, as SQLite stores it in `sqlite_master`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `idx_{name}_session_id`, quoted the same way as the table (Python's index name for plain
    /// names).
    fn index_name(&self) -> String {
        if self.quoted {
            format!("\"idx_{}_session_id\"", self.name.replace('"', "\"\""))
        } else {
            format!("idx_{}_session_id", self.name)
        }
    }
}

/// One opener's pair of tables and every statement that names them.
#[derive(Debug)]
pub struct Tables {
    pub sessions: Ident,
    pub messages: Ident,
    pub sql: Sql,
    /// The Advanced statements (structure tables, branches, usage).
    pub(crate) adv: super::advanced::AdvSql,
}

/// Statement texts, built once per opener so the per-connection statement cache can key on them.
#[derive(Debug)]
pub struct Sql {
    pub ddl: Vec<String>,
    pub insert_session: String,
    pub insert_message: String,
    pub touch_session: String,
    pub select_all: String,
    pub select_newest: String,
    pub pop_newest: String,
    pub delete_messages: String,
    pub delete_session: String,
    pub list_sessions: String,
    pub session_row: String,
    pub export_messages: String,
    pub import_session: String,
    pub import_message: String,
}

impl Tables {
    pub fn new(sessions: &str, messages: &str) -> Result<Tables> {
        let s = Ident::parse(sessions, "sessions table")?;
        let m = Ident::parse(messages, "messages table")?;
        if s.name.eq_ignore_ascii_case(&m.name) {
            return Err(Error::InvalidArgument(format!(
                "the sessions and messages tables must differ (both are {:?})",
                s.name
            )));
        }
        let (st, mt) = (s.sql(), m.sql());
        // The DDL text is Python's, byte for byte, so `sqlite_master` reads the same whichever
        // side created the tables.
        let ddl = vec![
            format!(
                "\n            CREATE TABLE IF NOT EXISTS {st} (\n                session_id TEXT PRIMARY KEY,\n                created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,\n                updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP\n            )\n        "
            ),
            format!(
                "\n            CREATE TABLE IF NOT EXISTS {mt} (\n                id INTEGER PRIMARY KEY AUTOINCREMENT,\n                session_id TEXT NOT NULL,\n                message_data TEXT NOT NULL,\n                created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,\n                FOREIGN KEY (session_id) REFERENCES {st} (session_id)\n                    ON DELETE CASCADE\n            )\n        "
            ),
            format!(
                "\n            CREATE INDEX IF NOT EXISTS {}\n            ON {mt} (session_id, id)\n        ",
                m.index_name()
            ),
        ];
        let sql = Sql {
            ddl,
            insert_session: format!("INSERT OR IGNORE INTO {st} (session_id) VALUES (?1)"),
            insert_message: format!("INSERT INTO {mt} (session_id, message_data) VALUES (?1, ?2)"),
            touch_session: format!(
                "UPDATE {st} SET updated_at = CURRENT_TIMESTAMP WHERE session_id = ?1"
            ),
            select_all: format!(
                "SELECT message_data FROM {mt} WHERE session_id = ?1 ORDER BY id ASC"
            ),
            select_newest: format!(
                "SELECT message_data FROM {mt} WHERE session_id = ?1 ORDER BY id DESC LIMIT ?2"
            ),
            pop_newest: format!(
                "DELETE FROM {mt} WHERE id = (SELECT id FROM {mt} WHERE session_id = ?1 \
                 ORDER BY id DESC LIMIT 1) RETURNING message_data"
            ),
            delete_messages: format!("DELETE FROM {mt} WHERE session_id = ?1"),
            delete_session: format!("DELETE FROM {st} WHERE session_id = ?1"),
            list_sessions: format!(
                "SELECT s.session_id, s.created_at, s.updated_at, \
                 (SELECT COUNT(*) FROM {mt} m WHERE m.session_id = s.session_id) \
                 FROM {st} s ORDER BY s.session_id"
            ),
            session_row: format!("SELECT created_at, updated_at FROM {st} WHERE session_id = ?1"),
            export_messages: format!(
                "SELECT message_data, created_at FROM {mt} WHERE session_id = ?1 ORDER BY id ASC"
            ),
            import_session: format!(
                "INSERT OR IGNORE INTO {st} (session_id, created_at, updated_at) \
                 VALUES (?1, COALESCE(?2, CURRENT_TIMESTAMP), COALESCE(?3, CURRENT_TIMESTAMP))"
            ),
            import_message: format!(
                "INSERT INTO {mt} (session_id, message_data, created_at) \
                 VALUES (?1, ?2, COALESCE(?3, CURRENT_TIMESTAMP))"
            ),
        };
        let adv = super::advanced::AdvSql::new(&s, &m);
        Ok(Tables {
            sessions: s,
            messages: m,
            sql,
            adv,
        })
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
        assert!(matches!(
            Tables::new("same", "SAME"),
            Err(Error::InvalidArgument(_))
        ));
    }
}

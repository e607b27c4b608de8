//! The Advanced row primitives on SQLite: each method of the [`AdvancedRows`] traits runs one
//! or two statements of [`super::sql`] (the Python SDK's, except where that file says why not)
//! through the connection's statement cache. The rules that combine them are engine-neutral
//! ([`crate::engine::advanced`]).

use agent_sessions_model::{ToolUse, TurnAnchor, TurnItem, TurnUsage, Usage, UsageTotals};
use rusqlite::{params, Connection, OptionalExtension, Params, Row};
use serde_json::Value;

use super::conn::GroupSessions;
use super::sql::{self, Tables};
use super::value::{int_of, text_of};
use crate::engine::advanced::{
    AdvancedRows, BranchRow, BranchRows, ClaimedRow, GenerationRows, MessageRows, NewStructureRow,
    StructureFields, StructureRows, TurnRows, UsageRows, UserTurnRow,
};
use crate::error::{Error, Result};

/// One connection's Advanced rows, for the tables of one opener.
pub(crate) struct SqliteRows<'a> {
    conn: &'a Connection,
    t: &'a Tables,
    /// The writer's group state, for an add: its session row is upserted once per group and
    /// touched at the group's end (see [`GroupSessions`]).
    group: Option<&'a mut GroupSessions>,
}

impl<'a> SqliteRows<'a> {
    pub(crate) fn new(conn: &'a Connection, t: &'a Tables) -> Self {
        SqliteRows {
            conn,
            t,
            group: None,
        }
    }

    pub(super) fn in_group(
        conn: &'a Connection,
        t: &'a Tables,
        group: &'a mut GroupSessions,
    ) -> Self {
        SqliteRows {
            conn,
            t,
            group: Some(group),
        }
    }

    fn exec(&self, sql: &str, p: impl Params) -> Result<usize> {
        Ok(self.conn.prepare_cached(sql)?.execute(p)?)
    }

    fn count(&self, sql: &str, p: impl Params) -> Result<i64> {
        Ok(self.conn.prepare_cached(sql)?.query_row(p, |r| r.get(0))?)
    }

    /// A one-value aggregate (`MAX`/`MIN`): `None` over no rows.
    fn max(&self, sql: &str, p: impl Params) -> Result<Option<i64>> {
        Ok(self
            .conn
            .prepare_cached(sql)?
            .query_row(p, |r| Ok(int_of(r.get_ref(0)?)))?)
    }

    /// Whether the query returns a row.
    fn exists(&self, sql: &str, p: impl Params) -> Result<bool> {
        Ok(self
            .conn
            .prepare_cached(sql)?
            .query_row(p, |_| Ok(()))
            .optional()?
            .is_some())
    }

    fn rows<T>(
        &self,
        sql: &str,
        p: impl Params,
        map: impl FnMut(&Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let rows = stmt.query_map(p, map)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }
}

impl GenerationRows for SqliteRows<'_> {
    fn ensure_generation(&mut self, session: &str) -> Result<()> {
        self.exec(sql::GENERATIONS_DDL, [])?;
        self.exec(sql::GEN_INSERT, params![session])?;
        Ok(())
    }

    fn generation(&mut self, session: &str) -> Result<i64> {
        self.count(sql::GEN_SELECT, params![session])
    }

    fn read_generation(&mut self, session: &str) -> Result<i64> {
        let mut stmt = match self.conn.prepare_cached(sql::GEN_SELECT) {
            Ok(stmt) => stmt,
            // SQLite also says "no such table" when the re-check of a stale schema meets an I/O
            // error (found by the fault-injecting VFS): believe it only if the schema agrees,
            // or a failed read would pass for "never cleared" and read the wrong branch.
            Err(e) if e.to_string().contains("no such table") => {
                return match self.exists(sql::TABLE_NAME, params!["session_clear_generations"])? {
                    false => Ok(0),
                    true => Err(Error::from(e).within(
                        "SQLite reports session_clear_generations missing although the schema \
                         lists it (its re-check of the schema failed, usually an I/O error)",
                    )),
                };
            }
            Err(e) => return Err(e.into()),
        };
        Ok(stmt
            .query_row(params![session], |r| r.get(0))
            .optional()?
            .unwrap_or(0))
    }

    fn bump_generation(&mut self, session: &str) -> Result<()> {
        self.exec(sql::GEN_BUMP, params![session])?;
        Ok(())
    }
}

impl BranchRows for SqliteRows<'_> {
    fn ensure_reservations(&mut self, session: &str) -> Result<()> {
        self.exec(sql::RESERVATIONS_DDL, [])?;
        // Probing first keeps the common case (nothing to backfill) a read.
        if self.exists(sql::RES_MISSING, params![session])? {
            self.exec(sql::RES_BACKFILL, params![session])?;
        }
        Ok(())
    }

    fn reserve_branch(&mut self, session: &str, branch: &str) -> Result<bool> {
        Ok(self.exec(sql::RES_INSERT, params![session, branch])? != 0)
    }

    fn branch_has_rows(&mut self, session: &str, branch: &str) -> Result<bool> {
        Ok(self.count(sql::BRANCH_COUNT, params![session, branch])? != 0)
    }

    fn branches(&mut self, session: &str) -> Result<Vec<BranchRow>> {
        self.rows(sql::LIST_BRANCHES, [session], |r| {
            Ok(BranchRow {
                branch_id: text_of(r.get_ref(0)?).unwrap_or_default(),
                message_count: r.get(1)?,
                user_turns: r.get(2)?,
                created_at: text_of(r.get_ref(3)?).unwrap_or_default(),
            })
        })
    }

    fn delete_branch_rows(&mut self, session: &str, branch: &str) -> Result<()> {
        self.exec(sql::USAGE_DELETE_BRANCH, params![session, branch])?;
        self.exec(sql::STRUCT_DELETE_BRANCH, params![session, branch])?;
        Ok(())
    }
}

impl StructureRows for SqliteRows<'_> {
    fn max_sequence(&mut self, session: &str) -> Result<Option<i64>> {
        self.max(sql::SEQ_MAX, params![session])
    }

    fn max_user_turn(&mut self, session: &str, branch: &str) -> Result<Option<i64>> {
        self.max(sql::TURN_MAX, params![session, branch])
    }

    fn max_branch_turn(
        &mut self,
        session: &str,
        branch: &str,
        user_turn: i64,
    ) -> Result<Option<i64>> {
        self.max(sql::BRANCH_TURN_MAX, params![session, branch, user_turn])
    }

    fn insert_structure(
        &mut self,
        session: &str,
        branch: &str,
        rows: &[NewStructureRow],
    ) -> Result<()> {
        let mut insert = self.conn.prepare_cached(sql::STRUCT_INSERT)?;
        for row in rows {
            let f = &row.fields;
            insert.execute(params![
                session,
                f.message_id,
                branch,
                f.message_type,
                row.sequence_number,
                f.user_turn_number,
                f.branch_turn_number,
                f.tool_name
            ])?;
        }
        Ok(())
    }

    fn claim_newest(&mut self, session: &str, branch: &str) -> Result<Option<ClaimedRow>> {
        Ok(self
            .conn
            .prepare_cached(sql::POP_CLAIM)?
            .query_row(params![session, branch], |r| {
                Ok(ClaimedRow {
                    message_id: r.get(0)?,
                    user_turn_number: int_of(r.get_ref(1)?),
                })
            })
            .optional()?)
    }

    fn copy_source(
        &mut self,
        session: &str,
        branch: &str,
        branch_turn: i64,
    ) -> Result<Vec<StructureFields>> {
        self.rows(
            sql::COPY_SELECT,
            params![session, branch, branch_turn],
            |r| {
                Ok(StructureFields {
                    message_id: r.get(0)?,
                    message_type: text_of(r.get_ref(1)?),
                    user_turn_number: int_of(r.get_ref(2)?),
                    branch_turn_number: int_of(r.get_ref(3)?),
                    tool_name: text_of(r.get_ref(4)?),
                })
            },
        )
    }
}

impl TurnRows for SqliteRows<'_> {
    fn has_user_turn(&mut self, session: &str, branch: &str, branch_turn: i64) -> Result<bool> {
        self.exists(
            &self.t.advanced.turn_user_message,
            params![session, branch, branch_turn],
        )
    }

    fn turn_has_rows(&mut self, session: &str, branch: &str, user_turn: i64) -> Result<bool> {
        Ok(self.count(sql::TURN_COUNT, params![session, branch, user_turn])? != 0)
    }

    fn first_structure_id(
        &mut self,
        session: &str,
        branch: &str,
        user_turn: i64,
    ) -> Result<Option<i64>> {
        Ok(self
            .conn
            .prepare_cached(sql::ANCHOR)?
            .query_row(params![session, branch, user_turn], |r| r.get(0))?)
    }

    fn anchor_exists(&mut self, session: &str, anchor: &TurnAnchor) -> Result<bool> {
        self.exists(
            sql::USAGE_GUARD,
            params![session, anchor.branch, anchor.turn, anchor.structure_id],
        )
    }

    fn user_turns(
        &mut self,
        session: &str,
        branch: &str,
        containing: Option<&str>,
    ) -> Result<Vec<UserTurnRow>> {
        let row = |r: &Row<'_>| {
            Ok(UserTurnRow {
                branch_turn: int_of(r.get_ref(0)?).unwrap_or(0),
                message_data: text_of(r.get_ref(1)?),
                created_at: text_of(r.get_ref(2)?).unwrap_or_default(),
            })
        };
        let adv = &self.t.advanced;
        match containing {
            None => self.rows(&adv.turns, params![session, branch], row),
            Some(needle) => self.rows(
                &adv.find_turns,
                params![
                    session,
                    branch,
                    crate::engine::advanced::like_pattern(needle)
                ],
                row,
            ),
        }
    }

    fn turn_items(&mut self, session: &str, branch: &str) -> Result<Vec<(i64, TurnItem)>> {
        self.rows(sql::BY_TURNS, params![session, branch], |r| {
            Ok((
                int_of(r.get_ref(0)?).unwrap_or(0),
                TurnItem {
                    message_type: text_of(r.get_ref(1)?).unwrap_or_default(),
                    tool_name: text_of(r.get_ref(2)?),
                },
            ))
        })
    }

    fn tool_usage(&mut self, session: &str, branch: &str) -> Result<Vec<ToolUse>> {
        self.rows(sql::TOOL_USAGE, params![session, branch], |r| {
            Ok(ToolUse {
                tool_name: text_of(r.get_ref(0)?),
                usage_count: int_of(r.get_ref(1)?).unwrap_or(0),
                user_turn_number: int_of(r.get_ref(2)?).unwrap_or(0),
            })
        })
    }
}

impl MessageRows for SqliteRows<'_> {
    fn insert_messages(
        &mut self,
        session: &str,
        data: impl IntoIterator<Item = String>,
    ) -> Result<Vec<i64>> {
        let sql = &self.t.basic;
        let known = self
            .group
            .as_ref()
            .is_some_and(|g| g.knows(self.t, session));
        if !known {
            self.exec(&sql.insert_session, params![session])?;
        }
        let mut ids = Vec::new();
        {
            let mut insert = self.conn.prepare_cached(&sql.insert_message)?;
            for text in data {
                insert.execute(params![session, text])?;
                ids.push(self.conn.last_insert_rowid());
            }
        }
        match &mut self.group {
            Some(g) if !known => g.upserted(self.t, session),
            Some(_) => {}
            None => {
                self.exec(&sql.touch_session, params![session])?;
            }
        }
        Ok(ids)
    }

    fn message_data(&mut self, message_id: i64) -> Result<Option<String>> {
        let data: Option<Option<String>> = self
            .conn
            .prepare_cached(&self.t.advanced.message_by_id)?
            .query_row(params![message_id], |r| Ok(text_of(r.get_ref(0)?)))
            .optional()?;
        Ok(data.flatten())
    }

    fn branch_items(
        &mut self,
        session: &str,
        branch: &str,
        newest: Option<i64>,
    ) -> Result<Vec<Option<String>>> {
        let data = |r: &Row<'_>| Ok(text_of(r.get_ref(0)?));
        let adv = &self.t.advanced;
        match newest {
            None => self.rows(&adv.items_all, params![session, branch], data),
            Some(n) => self.rows(&adv.items_newest, params![session, branch, n], data),
        }
    }

    fn delete_orphans(&mut self, session: &str) -> Result<()> {
        self.exec(&self.t.advanced.orphans, params![session])?;
        Ok(())
    }
}

impl UsageRows for SqliteRows<'_> {
    fn upsert_usage(
        &mut self,
        session: &str,
        branch: &str,
        turn: i64,
        usage: &Usage,
    ) -> Result<()> {
        // The details are stored as Python's `json.dumps` text, as the SDK writes them.
        let details = |d: &Option<Value>| d.as_ref().map(crate::json::to_python_json);
        self.exec(
            sql::USAGE_UPSERT,
            params![
                session,
                branch,
                turn,
                usage.requests,
                usage.input_tokens,
                usage.output_tokens,
                usage.total_tokens,
                details(&usage.input_tokens_details),
                details(&usage.output_tokens_details),
            ],
        )?;
        Ok(())
    }

    fn delete_turn_usage(&mut self, session: &str, branch: &str, turn: i64) -> Result<()> {
        self.exec(sql::USAGE_DELETE_TURN, params![session, branch, turn])?;
        Ok(())
    }

    fn usage_totals(&mut self, session: &str, branch: Option<&str>) -> Result<Option<UsageTotals>> {
        let row = |r: &Row<'_>| {
            let int = |i| -> rusqlite::Result<i64> { Ok(int_of(r.get_ref(i)?).unwrap_or(0)) };
            Ok(match int_of(r.get_ref(0)?) {
                None => None,
                Some(requests) => Some(UsageTotals {
                    requests,
                    input_tokens: int(1)?,
                    output_tokens: int(2)?,
                    total_tokens: int(3)?,
                    total_turns: int(4)?,
                }),
            })
        };
        Ok(match branch {
            Some(b) => self
                .conn
                .prepare_cached(sql::USAGE_SUM_BRANCH)?
                .query_row(params![session, b], row)?,
            None => self
                .conn
                .prepare_cached(sql::USAGE_SUM_ALL)?
                .query_row(params![session], row)?,
        })
    }

    fn turn_usage(
        &mut self,
        session: &str,
        branch: &str,
        turn: Option<i64>,
    ) -> Result<Vec<TurnUsage>> {
        let row = |r: &Row<'_>| {
            let int = |i| -> rusqlite::Result<i64> { Ok(int_of(r.get_ref(i)?).unwrap_or(0)) };
            // Details another program stored as something other than JSON read as absent.
            let details = |i| -> rusqlite::Result<Option<Value>> {
                Ok(text_of(r.get_ref(i)?)
                    .filter(|t| !t.is_empty())
                    .and_then(|t| serde_json::from_str(&t).ok()))
            };
            Ok(TurnUsage {
                user_turn_number: int(0)?,
                usage: Usage {
                    requests: int(1)?,
                    input_tokens: int(2)?,
                    output_tokens: int(3)?,
                    total_tokens: int(4)?,
                    input_tokens_details: details(5)?,
                    output_tokens_details: details(6)?,
                },
            })
        };
        match turn {
            Some(n) => self.rows(sql::TURN_USAGE_ONE, params![session, branch, n], row),
            None => self.rows(sql::TURN_USAGE_ALL, params![session, branch], row),
        }
    }
}

impl AdvancedRows for SqliteRows<'_> {
    fn delete_session(&mut self, session: &str) -> Result<()> {
        self.exec(&self.t.basic.delete_messages, params![session])?;
        self.exec(&self.t.basic.delete_session, params![session])?;
        self.exec(sql::STRUCT_CLEAR, params![session])?;
        self.exec(sql::USAGE_CLEAR, params![session])?;
        Ok(())
    }

    fn is_missing_structure(&self, e: &Error) -> bool {
        matches!(e, Error::Sqlite { message, .. }
            if message.contains("no such table: message_structure")
                || message.contains("no such table: turn_usage"))
    }
}

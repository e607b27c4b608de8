//! The Advanced row primitives on PostgreSQL: each method of the [`AdvancedRows`] traits runs
//! one or two statements of [`super::sql`]. The rules that combine them are engine-neutral
//! ([`crate::engine::advanced`]); constraints back them up where PostgreSQL enforces them
//! (unique sequence numbers per session, reservations as a primary key, foreign keys).

use agent_sessions_model::{ToolUse, TurnAnchor, TurnItem, TurnUsage, Usage, UsageTotals};
use postgres::Row;
use serde_json::Value;

use super::basic;
use super::db::{get, Db};
use super::sql::{self, Tables};
use crate::engine::advanced::{
    AdvancedRows, BranchRow, BranchRows, ClaimedRow, GenerationRows, MessageRows, NewStructureRow,
    StructureFields, StructureRows, TurnRows, UsageRows, UserTurnRow,
};
use crate::error::{Error, Result};

/// One connection's Advanced rows, for the tables of one opener.
pub(crate) struct PgRows<'a> {
    pub(crate) db: &'a mut Db,
    pub(crate) t: &'a Tables,
    pub(crate) ensure_ascii: bool,
}

impl PgRows<'_> {
    fn max(&mut self, sql: &str, p: super::db::Params<'_>) -> Result<Option<i64>> {
        self.db.value(sql, p)
    }
}

impl GenerationRows for PgRows<'_> {
    fn ensure_generation(&mut self, session: &str) -> Result<()> {
        self.db.exec(sql::GEN_INSERT, &[&session])?;
        Ok(())
    }

    fn generation(&mut self, session: &str) -> Result<i64> {
        self.db.value(sql::GEN_SELECT, &[&session])
    }

    fn read_generation(&mut self, session: &str) -> Result<i64> {
        match self.db.opt(sql::GEN_SELECT, &[&session])? {
            Some(row) => get(&row, 0),
            None => Ok(0),
        }
    }

    fn bump_generation(&mut self, session: &str) -> Result<()> {
        self.db.exec(sql::GEN_BUMP, &[&session])?;
        Ok(())
    }
}

impl BranchRows for PgRows<'_> {
    fn ensure_reservations(&mut self, session: &str) -> Result<()> {
        self.db.exec(sql::RES_BACKFILL, &[&session])?;
        Ok(())
    }

    fn reserve_branch(&mut self, session: &str, branch: &str) -> Result<bool> {
        Ok(self.db.exec(sql::RES_INSERT, &[&session, &branch])? != 0)
    }

    fn branch_has_rows(&mut self, session: &str, branch: &str) -> Result<bool> {
        Ok(self
            .db
            .value::<i64>(sql::BRANCH_COUNT, &[&session, &branch])?
            != 0)
    }

    fn branches(&mut self, session: &str) -> Result<Vec<BranchRow>> {
        let rows = self.db.rows(sql::LIST_BRANCHES, &[&session])?;
        rows.iter()
            .map(|r| {
                Ok(BranchRow {
                    branch_id: get(r, 0)?,
                    message_count: get(r, 1)?,
                    user_turns: get(r, 2)?,
                    created_at: get(r, 3)?,
                })
            })
            .collect()
    }

    fn delete_branch_rows(&mut self, session: &str, branch: &str) -> Result<()> {
        self.db
            .exec(sql::USAGE_DELETE_BRANCH, &[&session, &branch])?;
        self.db
            .exec(sql::STRUCT_DELETE_BRANCH, &[&session, &branch])?;
        Ok(())
    }
}

impl StructureRows for PgRows<'_> {
    fn max_sequence(&mut self, session: &str) -> Result<Option<i64>> {
        self.max(sql::SEQ_MAX, &[&session])
    }

    fn max_user_turn(&mut self, session: &str, branch: &str) -> Result<Option<i64>> {
        self.max(sql::TURN_MAX, &[&session, &branch])
    }

    fn max_branch_turn(
        &mut self,
        session: &str,
        branch: &str,
        user_turn: i64,
    ) -> Result<Option<i64>> {
        self.max(sql::BRANCH_TURN_MAX, &[&session, &branch, &user_turn])
    }

    fn insert_structure(
        &mut self,
        session: &str,
        branch: &str,
        rows: &[NewStructureRow],
    ) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let column = |f: fn(&NewStructureRow) -> Option<i64>| rows.iter().map(f).collect();
        let messages: Vec<Option<i64>> = column(|r| Some(r.fields.message_id));
        let sequence: Vec<Option<i64>> = column(|r| Some(r.sequence_number));
        let user_turn: Vec<Option<i64>> = column(|r| r.fields.user_turn_number);
        let branch_turn: Vec<Option<i64>> = column(|r| r.fields.branch_turn_number);
        let types: Vec<Option<&str>> = rows
            .iter()
            .map(|r| r.fields.message_type.as_deref())
            .collect();
        let tools: Vec<Option<&str>> = rows.iter().map(|r| r.fields.tool_name.as_deref()).collect();
        self.db.exec(
            sql::STRUCT_INSERT,
            &[
                &session,
                &branch,
                &messages,
                &types,
                &sequence,
                &user_turn,
                &branch_turn,
                &tools,
            ],
        )?;
        Ok(())
    }

    fn claim_newest(&mut self, session: &str, branch: &str) -> Result<Option<ClaimedRow>> {
        match self.db.opt(sql::POP_CLAIM, &[&session, &branch])? {
            None => Ok(None),
            Some(r) => Ok(Some(ClaimedRow {
                message_id: get(&r, 0)?,
                user_turn_number: get(&r, 1)?,
            })),
        }
    }

    fn copy_source(
        &mut self,
        session: &str,
        branch: &str,
        branch_turn: i64,
    ) -> Result<Vec<StructureFields>> {
        let rows = self
            .db
            .rows(sql::COPY_SELECT, &[&session, &branch, &branch_turn])?;
        rows.iter()
            .map(|r| {
                Ok(StructureFields {
                    message_id: get(r, 0)?,
                    message_type: get(r, 1)?,
                    user_turn_number: get(r, 2)?,
                    branch_turn_number: get(r, 3)?,
                    tool_name: get(r, 4)?,
                })
            })
            .collect()
    }
}

impl TurnRows for PgRows<'_> {
    fn has_user_turn(&mut self, session: &str, branch: &str, branch_turn: i64) -> Result<bool> {
        self.db.exists(
            &self.t.turn_user_message,
            &[&session, &branch, &branch_turn],
        )
    }

    fn turn_has_rows(&mut self, session: &str, branch: &str, user_turn: i64) -> Result<bool> {
        Ok(self
            .db
            .value::<i64>(sql::TURN_COUNT, &[&session, &branch, &user_turn])?
            != 0)
    }

    fn first_structure_id(
        &mut self,
        session: &str,
        branch: &str,
        user_turn: i64,
    ) -> Result<Option<i64>> {
        self.max(sql::ANCHOR, &[&session, &branch, &user_turn])
    }

    fn anchor_exists(&mut self, session: &str, anchor: &TurnAnchor) -> Result<bool> {
        self.db.exists(
            sql::USAGE_GUARD,
            &[&session, &anchor.branch, &anchor.turn, &anchor.structure_id],
        )
    }

    fn user_turns(
        &mut self,
        session: &str,
        branch: &str,
        containing: Option<&str>,
    ) -> Result<Vec<UserTurnRow>> {
        let rows = match containing {
            None => self.db.rows(&self.t.turns, &[&session, &branch])?,
            Some(needle) => self.db.rows(
                &self.t.find_turns,
                &[
                    &session,
                    &branch,
                    &crate::engine::advanced::like_pattern(needle),
                ],
            )?,
        };
        rows.iter()
            .map(|r| {
                Ok(UserTurnRow {
                    branch_turn: get::<Option<i64>>(r, 0)?.unwrap_or(0),
                    message_data: get(r, 1)?,
                    created_at: get(r, 2)?,
                })
            })
            .collect()
    }

    fn turn_items(&mut self, session: &str, branch: &str) -> Result<Vec<(i64, TurnItem)>> {
        let rows = self.db.rows(sql::BY_TURNS, &[&session, &branch])?;
        rows.iter()
            .map(|r| {
                Ok((
                    get::<Option<i64>>(r, 0)?.unwrap_or(0),
                    TurnItem {
                        message_type: get(r, 1)?,
                        tool_name: get(r, 2)?,
                    },
                ))
            })
            .collect()
    }

    fn tool_usage(&mut self, session: &str, branch: &str) -> Result<Vec<ToolUse>> {
        let rows = self.db.rows(sql::TOOL_USAGE, &[&session, &branch])?;
        rows.iter()
            .map(|r| {
                Ok(ToolUse {
                    tool_name: get(r, 0)?,
                    usage_count: get::<Option<i64>>(r, 1)?.unwrap_or(0),
                    user_turn_number: get::<Option<i64>>(r, 2)?.unwrap_or(0),
                })
            })
            .collect()
    }
}

impl MessageRows for PgRows<'_> {
    fn encode(&self, item: &Value) -> String {
        basic::encode_one(item, self.ensure_ascii)
    }

    fn insert_messages(
        &mut self,
        session: &str,
        data: impl IntoIterator<Item = String>,
    ) -> Result<Vec<i64>> {
        let data: Vec<String> = data.into_iter().collect();
        basic::insert(self.db, self.t, session, &data)
    }

    fn message_data(&mut self, message_id: i64) -> Result<Option<String>> {
        match self.db.opt(&self.t.message_by_id, &[&message_id])? {
            Some(r) => get(&r, 0),
            None => Ok(None),
        }
    }

    fn branch_items(
        &mut self,
        session: &str,
        branch: &str,
        newest: Option<i64>,
    ) -> Result<Vec<Option<String>>> {
        let rows = match newest {
            None => self.db.rows(&self.t.items_all, &[&session, &branch])?,
            Some(n) => self.db.rows(
                &self.t.items_newest,
                &[&session, &branch, &(n >= 0).then_some(n)],
            )?,
        };
        rows.iter().map(|r| get(r, 0)).collect()
    }

    fn delete_orphans(&mut self, session: &str) -> Result<()> {
        self.db.exec(&self.t.orphans, &[&session])?;
        Ok(())
    }
}

impl UsageRows for PgRows<'_> {
    fn upsert_usage(
        &mut self,
        session: &str,
        branch: &str,
        turn: i64,
        usage: &Usage,
    ) -> Result<()> {
        let details = |d: &Option<Value>| d.as_ref().map(crate::json::to_python_json);
        let (input, output) = (
            details(&usage.input_tokens_details),
            details(&usage.output_tokens_details),
        );
        self.db.exec(
            sql::USAGE_UPSERT,
            &[
                &session,
                &branch,
                &turn,
                &usage.requests,
                &usage.input_tokens,
                &usage.output_tokens,
                &usage.total_tokens,
                &input,
                &output,
            ],
        )?;
        Ok(())
    }

    fn delete_turn_usage(&mut self, session: &str, branch: &str, turn: i64) -> Result<()> {
        self.db
            .exec(sql::USAGE_DELETE_TURN, &[&session, &branch, &turn])?;
        Ok(())
    }

    fn usage_totals(&mut self, session: &str, branch: Option<&str>) -> Result<Option<UsageTotals>> {
        let row = match branch {
            Some(b) => self.db.rows(sql::USAGE_SUM_BRANCH, &[&session, &b])?,
            None => self.db.rows(sql::USAGE_SUM_ALL, &[&session])?,
        };
        let Some(r) = row.first() else {
            return Ok(None);
        };
        let int = |i| -> Result<i64> { Ok(get::<Option<i64>>(r, i)?.unwrap_or(0)) };
        Ok(match get::<Option<i64>>(r, 0)? {
            None => None,
            Some(requests) => Some(UsageTotals {
                requests,
                input_tokens: int(1)?,
                output_tokens: int(2)?,
                total_tokens: int(3)?,
                total_turns: int(4)?,
            }),
        })
    }

    fn turn_usage(
        &mut self,
        session: &str,
        branch: &str,
        turn: Option<i64>,
    ) -> Result<Vec<TurnUsage>> {
        let rows = match turn {
            Some(n) => self
                .db
                .rows(sql::TURN_USAGE_ONE, &[&session, &branch, &n])?,
            None => self.db.rows(sql::TURN_USAGE_ALL, &[&session, &branch])?,
        };
        rows.iter().map(turn_usage_row).collect()
    }
}

fn turn_usage_row(r: &Row) -> Result<TurnUsage> {
    let int = |i| -> Result<i64> { Ok(get::<Option<i64>>(r, i)?.unwrap_or(0)) };
    // Details stored as something other than JSON read as absent (as on SQLite).
    let details = |i| -> Result<Option<Value>> {
        Ok(get::<Option<String>>(r, i)?
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
}

impl AdvancedRows for PgRows<'_> {
    fn delete_session(&mut self, session: &str) -> Result<()> {
        self.db.exec(sql::USAGE_CLEAR, &[&session])?;
        self.db.exec(sql::STRUCT_CLEAR, &[&session])?;
        self.db.exec(&self.t.delete_messages, &[&session])?;
        self.db.exec(&self.t.delete_session, &[&session])?;
        Ok(())
    }

    fn is_missing_structure(&self, e: &Error) -> bool {
        matches!(e, Error::Postgres { code: Some(c), message, .. }
            if c == "42P01" && (message.contains("message_structure")
                || message.contains("turn_usage")
                || message.contains("branch_reservations")
                || message.contains("session_clear_generations")))
    }
}

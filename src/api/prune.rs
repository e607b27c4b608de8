//! Retention: deleting sessions idle for longer than a duration, judged by the sessions table's
//! `updated_at` (which every add touches). Dry-run first, then batches of
//! [`PRUNE_BATCH`] sessions, each batch one transaction (one `Op::PruneSessions`), so a long
//! prune never holds the write lock for long and a crash loses no more than the batch in flight.
//! Advanced sessions go with all their rows (an Advanced clear per session: I11, I12 hold).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use agent_sessions_model::{Op, Outcome, SessionInfo};

use super::store::{unexpected, Store};
use crate::error::{Error, Result};

/// Sessions deleted per transaction.
pub const PRUNE_BATCH: u64 = 100;

impl Store {
    /// Delete (or, with `dry_run`, only list) every session whose row was last updated more
    /// than `idle` ago, oldest cut-off computed from this machine's clock in UTC. Returns the
    /// sessions concerned, as they were.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> agent_sessions::Result<()> {
    /// use std::time::Duration;
    /// let store = agent_sessions::Store::open_in_memory_async().await?;
    /// store.session("fresh").add_items(vec![serde_json::json!("hi")]).await?;
    /// let month = Duration::from_secs(30 * 24 * 3600);
    /// assert!(store.prune_idle(month, true).await?.is_empty()); // updated just now
    /// # Ok(()) }
    /// ```
    pub async fn prune_idle(&self, idle: Duration, dry_run: bool) -> Result<Vec<SessionInfo>> {
        self.prune_before(&cutoff(idle)?, dry_run).await
    }

    /// Blocking form of [`Store::prune_idle`].
    pub fn prune_idle_blocking(&self, idle: Duration, dry_run: bool) -> Result<Vec<SessionInfo>> {
        self.prune_before_blocking(&cutoff(idle)?, dry_run)
    }

    /// [`Store::prune_idle`] with an explicit cut-off: sessions last updated before
    /// `idle_before` (`YYYY-MM-DD HH:MM:SS`, UTC, the form of SQLite's `CURRENT_TIMESTAMP`).
    pub async fn prune_before(&self, idle_before: &str, dry_run: bool) -> Result<Vec<SessionInfo>> {
        let mut pruned = Vec::new();
        loop {
            let batch = sessions(self.execute(prune_op(idle_before, dry_run)).await?)?;
            if !more(&mut pruned, batch, dry_run)? {
                return Ok(pruned);
            }
        }
    }

    /// Blocking form of [`Store::prune_before`].
    pub fn prune_before_blocking(
        &self,
        idle_before: &str,
        dry_run: bool,
    ) -> Result<Vec<SessionInfo>> {
        let mut pruned = Vec::new();
        loop {
            let batch = sessions(self.execute_blocking(prune_op(idle_before, dry_run))?)?;
            if !more(&mut pruned, batch, dry_run)? {
                return Ok(pruned);
            }
        }
    }
}

/// Add a batch to what was pruned; whether another batch may follow. A session listed twice
/// means a batch deleted nothing (a row another program wrote that no delete matches): stop
/// with an error rather than loop.
fn more(pruned: &mut Vec<SessionInfo>, batch: Vec<SessionInfo>, dry_run: bool) -> Result<bool> {
    let full = !dry_run && batch.len() as u64 == PRUNE_BATCH;
    if let Some(again) = batch
        .iter()
        .find(|b| pruned.iter().any(|p| p.session_id == b.session_id))
    {
        return Err(Error::Internal(format!(
            "prune: session {:?} was listed again after its batch was deleted; stopped after \
             {} session(s)",
            again.session_id,
            pruned.len()
        )));
    }
    pruned.extend(batch);
    Ok(full)
}

fn prune_op(idle_before: &str, dry_run: bool) -> Op {
    Op::PruneSessions {
        idle_before: idle_before.to_owned(),
        dry_run,
        // A dry run lists everything at once (a read); a real one deletes batch by batch.
        max: if dry_run { u64::MAX } else { PRUNE_BATCH },
    }
}

fn sessions(o: Outcome) -> Result<Vec<SessionInfo>> {
    match o {
        Outcome::Sessions(list) => Ok(list),
        other => Err(unexpected(&other)),
    }
}

/// Now minus `idle`, as `YYYY-MM-DD HH:MM:SS` UTC.
fn cutoff(idle: Duration) -> Result<String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| Error::Internal("the system clock is before 1970".into()))?;
    let secs = now.as_secs().checked_sub(idle.as_secs()).ok_or_else(|| {
        Error::InvalidArgument(format!(
            "prune: an idle time of {idle:?} reaches before 1970"
        ))
    })?;
    Ok(utc_timestamp(secs))
}

/// Seconds since the Unix epoch as `YYYY-MM-DD HH:MM:SS` (proleptic Gregorian, UTC), using
/// Howard Hinnant's days-to-civil algorithm.
pub(crate) fn utc_timestamp(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_timestamps_match_sqlite() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        for secs in [
            0u64,
            59,
            86_399,
            951_782_400,
            1_709_164_800,
            1_764_547_200,
            4_102_444_799,
            // Past the first century of a 400-year era, where the century terms of the
            // algorithm stop being zero.
            4_102_444_800,
            4_107_542_400,
            7_258_118_400,
            13_574_563_200,
            253_402_300_799,
        ] {
            let sqlite: String = conn
                .query_row("SELECT datetime(?1, 'unixepoch')", [secs as i64], |r| {
                    r.get(0)
                })
                .unwrap();
            assert_eq!(utc_timestamp(secs), sqlite, "{secs}");
        }
    }
}

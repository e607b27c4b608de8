//! The branch pointer of an Advanced handle: the protocol that keeps a handle's view (current
//! branch, last clear generation seen) consistent with concurrent clears, without holding a lock
//! across I/O. Engine-independent, so loom checks it with the model engine.
//!
//! Each operation takes a snapshot of the view ([`BranchPointer::prepare`]), travels to the engine
//! with it, and comes back with the view after it, folded in by [`HandleView::merge`]
//! ([`BranchPointer::finish`]). Invariant I12 (handle part): the generation a handle knows never
//! decreases, and a switch or create that validated before a clear never re-points the handle
//! after it. I15 (handle part): a failed operation merges nothing.

use agent_sessions_model::{AdvancedAnswer, AdvancedOp, HandleView, Op, Outcome};

use super::sync::Mutex;
use crate::error::{Error, Result};

/// A handle's view behind a mutex from the shim (held only to copy or merge, never across I/O).
#[derive(Debug, Default)]
pub struct BranchPointer {
    view: Mutex<HandleView>,
    #[doc(hidden)]
    /// Negative control: adopt every reported view as is ("last reply wins"; breaks I12).
    pub fault_last_reply_wins: bool,
}

impl BranchPointer {
    /// A fresh handle: on `main`, adopting whatever generation its first operation finds.
    pub fn new() -> Self {
        Self::default()
    }

    #[doc(hidden)]
    /// A deliberately broken pointer for negative controls: adopts every reply as is.
    #[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
    pub fn last_reply_wins() -> Self {
        BranchPointer {
            fault_last_reply_wins: true,
            ..Self::default()
        }
    }

    /// The current view (a copy).
    pub fn view(&self) -> HandleView {
        self.view.lock().clone()
    }

    /// Wrap `op` for `session` with a snapshot of the view; keep the snapshot for
    /// [`BranchPointer::finish`].
    pub fn prepare(&self, session: &str, op: AdvancedOp) -> (HandleView, Op) {
        let sent = self.view();
        let op = Op::Advanced {
            session: session.to_owned(),
            view: sent.clone(),
            op,
        };
        (sent, op)
    }

    /// Fold the view the engine reported into this handle and return the operation's answer.
    pub fn finish(&self, sent: &HandleView, outcome: Outcome) -> Result<AdvancedAnswer> {
        match outcome {
            Outcome::Advanced { view, answer } => {
                let mut mine = self.view.lock();
                if self.fault_last_reply_wins {
                    *mine = view;
                } else {
                    mine.merge(sent, &view);
                }
                Ok(answer)
            }
            other => Err(Error::Internal(format!(
                "unexpected outcome {other:?} for an Advanced operation"
            ))),
        }
    }
}

//! What running one cell produced, and what of it is recorded: the [`CellRun`] the caller gets,
//! the cell's status and summary for the graph, and what code a cell may hold.

use std::time::Duration;

use super::Stop;
use super::names::Names;
use super::pool::Snapshots;
use crate::error::{Error, Result};
use crate::graph::{Cell, CellId, CellStatus};
use crate::kernel::{Execution, ExecutionStatus, Output};
use crate::util::shorten;

/// Largest code accepted in one cell.
pub const MAX_CODE_BYTES: usize = 1 << 20;

/// Characters of a cell's text output kept in the graph as its summary.
const SUMMARY_CHARS: usize = 200;

/// What running one cell did.
#[derive(Debug, Clone)]
pub struct CellRun {
    /// The recorded cell (its id is what the caller uses as a parent later).
    pub cell: Cell,
    /// The new code's outputs and status.
    pub execution: Execution,
    /// The names the code bound or rebound (before it raised, when it did).
    pub names: Names,
    /// The cells replayed first, in order.
    pub replayed: Vec<CellId>,
    /// Whether the kernel was (re)started first.
    pub restarted: bool,
    /// Time spent restarting and replaying.
    pub replay_time: Duration,
    /// Time spent running the new code.
    pub run_time: Duration,
    /// Set when the cell was stopped (time limit or cancellation).
    pub stopped: Option<Stop>,
    /// Whether a snapshot served it (its parent's state was a forked copy, not a replay).
    pub from_snapshot: bool,
    /// Whether the session's kernels can be snapshotted, as last found out.
    pub snapshots: Snapshots,
}

/// Refuses code that is empty or too large to be a cell.
pub(super) fn check_code(code: &str) -> Result<()> {
    if code.trim().is_empty() {
        return Err(Error::InvalidArgument("the code is empty; send the Python source to run".into()));
    }
    if code.len() > MAX_CODE_BYTES {
        return Err(Error::InvalidArgument(format!(
            "the code is {} bytes, over the limit of {MAX_CODE_BYTES}; split it into several cells",
            code.len()
        )));
    }
    Ok(())
}

pub(super) fn cell_status(execution: &Execution) -> CellStatus {
    match &execution.status {
        ExecutionStatus::Ok => CellStatus::Ok,
        ExecutionStatus::Died(_) => CellStatus::KernelDied,
        ExecutionStatus::Error | ExecutionStatus::Aborted => {
            let interrupted = execution
                .outputs
                .iter()
                .any(|o| matches!(o, Output::Error { ename, .. } if ename == "KeyboardInterrupt"));
            if interrupted { CellStatus::Interrupted } else { CellStatus::Error }
        }
    }
}

/// The first characters of a cell's text output, for listings.
pub(super) fn summarize(outputs: &[Output]) -> String {
    let text: String = outputs
        .iter()
        .filter_map(|o| match o {
            Output::Stream { text, .. } => Some(text.clone()),
            Output::Error { ename, evalue, .. } => Some(format!("{ename}: {evalue}")),
            _ => o.text_plain().map(str::to_owned),
        })
        .collect::<Vec<_>>()
        .join("");
    shorten(text.trim(), SUMMARY_CHARS)
}

//! What a caller hands a session operation, and what it learns of a cell that was stopped:
//! where progress goes, the tokens that cancel or interrupt, time limits as a caller gives them,
//! and why and how a cell was stopped.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

/// One progress report for a long operation.
#[derive(Debug, Clone, PartialEq)]
pub struct ProgressUpdate {
    /// Steps done so far.
    pub progress: f64,
    /// Steps in all, when known.
    pub total: Option<f64>,
    /// What is happening.
    pub message: String,
}

/// Where progress goes: a channel the caller forwards (as MCP progress notifications), or
/// nowhere.
#[derive(Debug, Clone, Default)]
pub struct Progress(Option<mpsc::UnboundedSender<ProgressUpdate>>);

impl Progress {
    /// Progress sent into `sender`.
    pub fn to(sender: mpsc::UnboundedSender<ProgressUpdate>) -> Self {
        Progress(Some(sender))
    }

    /// Reports step `progress` of `total`.
    pub fn report(&self, progress: f64, total: Option<f64>, message: impl Into<String>) {
        if let Some(sender) = &self.0 {
            let _ = sender.send(ProgressUpdate { progress, total, message: message.into() });
        }
    }
}

/// What the caller of a long operation provides: where progress goes, a token that is
/// cancelled when the caller gives up (an MCP `notifications/cancelled`), and one that
/// `interrupt_cell` cancels.
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    /// Progress reports.
    pub progress: Progress,
    /// Cancelled when the request is withdrawn.
    pub cancel: CancellationToken,
    /// Cancelled when the cell is to be stopped as a time limit stops it.
    pub interrupt: CancellationToken,
}

/// Why a cell was stopped before it ended by itself.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StopReason {
    /// It ran longer than its time limit.
    Timeout(Duration),
    /// The request was cancelled.
    Cancelled,
    /// `interrupt_cell` asked.
    Interrupted,
}

impl std::fmt::Display for StopReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StopReason::Timeout(limit) => write!(f, "it ran past its time limit of {}s", limit.as_secs_f64()),
            StopReason::Cancelled => f.write_str("the request was cancelled"),
            StopReason::Interrupted => f.write_str("interrupt_cell asked for it"),
        }
    }
}

/// How a cell was stopped: interrupted, and killed with its kernel when it ignored that.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stop {
    /// Why.
    pub reason: StopReason,
    /// The cell survived the interrupt, so its kernel was killed: the in-memory state is lost.
    pub kernel_killed: bool,
}

/// Longest time limit a caller may ask for.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// A caller's number of seconds for the argument `name`, checked: finite, at most a day, and
/// positive (or zero, with `zero_allowed`).
///
/// # Errors
/// When it is out of that range, naming the argument.
pub fn parse_seconds(name: &str, seconds: f64, zero_allowed: bool) -> Result<Duration> {
    let lowest_ok = if zero_allowed { seconds >= 0.0 } else { seconds > 0.0 };
    if !(seconds.is_finite() && lowest_ok && seconds <= MAX_TIMEOUT.as_secs_f64()) {
        let kind = if zero_allowed { "non-negative" } else { "positive" };
        // A huge number is shown in scientific notation, not as hundreds of digits.
        let given = if seconds.abs() < 1e9 { seconds.to_string() } else { format!("{seconds:e}") };
        return Err(Error::InvalidArgument(format!(
            "{name} must be a {kind} number of seconds up to {}; got {given}",
            MAX_TIMEOUT.as_secs()
        )));
    }
    Ok(Duration::from_secs_f64(seconds))
}

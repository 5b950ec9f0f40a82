//! A cell that is still running, seen from outside its session's lock.
//!
//! `run_code` with `wait_s` answers before the cell ends; the cell goes on in a task that holds
//! the session, and [`LiveCell`] is what the answer, and later `wait_cell` and `interrupt_cell`
//! calls, look at: the cell's id (chosen before it runs), its outputs so far, its outcome once
//! there is one, and the token that stops it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::CellRun;
use crate::error::Result;
use crate::graph::CellId;
use crate::kernel::{Output, OutputView};

/// How a finished cell ended, shared by everyone waiting for it.
pub type Outcome = Arc<Result<CellRun>>;

/// A cell being run.
pub struct LiveCell {
    id: CellId,
    /// The new code's outputs, once it has started (before that, the path is being replayed).
    outputs: Mutex<Option<OutputView>>,
    outcome: watch::Sender<Option<Outcome>>,
    interrupter: CancellationToken,
}

impl LiveCell {
    /// A cell about to run under the id `id`.
    pub fn new(id: CellId) -> Self {
        LiveCell {
            id,
            outputs: Mutex::new(None),
            outcome: watch::Sender::new(None),
            interrupter: CancellationToken::new(),
        }
    }

    /// The id the cell will be recorded under.
    pub fn id(&self) -> &CellId {
        &self.id
    }

    /// Called when the new code starts running: its outputs can be watched from now on.
    pub(crate) fn started(&self, outputs: OutputView) {
        *self.outputs.lock().expect("live cell lock") = Some(outputs);
    }

    /// The outputs so far; `None` until the code starts (while a kernel starts or the path to its
    /// parent is replayed).
    pub fn snapshot(&self) -> Option<Vec<Output>> {
        self.outputs.lock().expect("live cell lock").as_ref().map(OutputView::snapshot)
    }

    /// Records how the cell ended and wakes everyone waiting.
    pub(crate) fn finish(&self, outcome: Result<CellRun>) {
        self.outcome.send_replace(Some(Arc::new(outcome)));
    }

    /// The token that stops the cell as its time limit would (the runner watches it).
    pub(crate) fn interrupter(&self) -> &CancellationToken {
        &self.interrupter
    }

    /// Asks the cell to stop as its time limit would: an interrupt, then a kill of its kernel
    /// when it ignores that. Whether it was still running when asked.
    pub fn interrupt(&self) -> bool {
        self.interrupter.cancel();
        self.outcome.borrow().is_none()
    }

    /// The outcome, waiting at most `wait` for it.
    pub async fn wait(&self, wait: Duration) -> Option<Outcome> {
        let mut outcome = self.outcome.subscribe();
        let finished = tokio::time::timeout(wait, outcome.wait_for(Option::is_some)).await;
        finished.ok().and_then(|seen| seen.ok()).and_then(|seen| seen.clone())
    }
}

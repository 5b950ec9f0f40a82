//! The snapshot policy of one pool: which states get a forked copy, what each copy is worth,
//! how long a call waits for one still coming up, and how a copy that came up joins the pool.
//!
//! Snapshots are kernels too: while the session is idle the state its last cell left is
//! forked ([`KernelPool::keep_copy_of`](super::KernelPool::keep_copy_of)); before a kernel runs
//! code that changes the state it holds, the pool asks for a fork
//! ([`KernelPool::keep_copy`](super::KernelPool::keep_copy)) when nothing else holds that state
//! and rebuilding it from the nearest state kept would cost more than [`SNAPSHOT_WORTH`] (so
//! calls back to back on cheap cells fork once in a while). The copy is parked at the same head
//! and serves like any kernel when it is the cheapest way to a parent; the copy of a fresh
//! kernel (with the base packages imported) is kept always, so a restart is a fork, not a kernel
//! start. Snapshots are capped by count, the one whose loss costs least going first, aged as
//! others go (GreedyDual: an old snapshot of an expensive state loses to a new one eventually),
//! and, with the kernels, by the pool's memory budget.
//!
//! Owns the copies being made, what rebuilding each state costs, the ranks and whether forks
//! work; the pool owns the kernels (copies that came up among them) and which one serves.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::HeldKernel;
use crate::graph::{ChainHash, GraphError, KernelHead, Reach};
use crate::kernel::{Kernel, KernelError};
use crate::provider::KernelProvider;

/// Rebuilding a state by replay from the nearest state kept must cost at least this much for a
/// snapshot of it to be made before the next cell: a fork costs that cell some 20 ms and the
/// kernel's following cells their first writes to each page, so calls back to back on cheap
/// cells pay about a tenth of this once in a while. (While the model thinks, the last state is
/// copied whatever it cost: see `copy_when_idle`.)
pub const SNAPSHOT_WORTH: Duration = Duration::from_millis(250);

/// The shortest and longest a call waits for a snapshot still coming up that would serve it
/// (it waits about what replaying that state would cost): a copy comes up in some 60 ms, but
/// one that is slow, stuck or dead must not hold the call up longer than replay would.
const FORK_WAIT_MIN: Duration = Duration::from_millis(500);
const FORK_WAIT_MAX: Duration = Duration::from_secs(3);

/// Whether the pool's kernels can be snapshotted, as last found out.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Snapshots {
    /// Not tried yet.
    #[default]
    Untried,
    /// The last fork worked.
    Available,
    /// The last fork was refused or failed, and why.
    Unavailable(String),
}

/// A snapshot being made: the kernel has been asked to fork; the copy comes up in the
/// background.
struct PendingSnapshot {
    head: KernelHead,
    /// Its place in the order forks were asked for: what the latest one found is what
    /// [`SnapshotPolicy::status`] says.
    asked: u64,
    copy: JoinHandle<std::result::Result<Kernel, KernelError>>,
}

/// The snapshot state and decisions of one pool.
pub(super) struct SnapshotPolicy {
    /// How many snapshots (besides the fresh one) may be kept; 0 for none.
    limit: usize,
    pending: Vec<PendingSnapshot>,
    status: Snapshots,
    /// How many forks were asked for, and which of them last set `status`.
    forks_asked: u64,
    status_from: u64,
    /// Code that imports the base packages without a trace, run in a fresh snapshot.
    warm_up: Option<String>,
    /// What rebuilding each state by replay from the nearest state kept then cost, as measured
    /// when its cells last ran.
    rebuild_cost: HashMap<ChainHash, Duration>,
    /// The rank of the last snapshot dropped for the count limit: new ones rank above it.
    dropped_rank: Duration,
}

impl SnapshotPolicy {
    /// No snapshots, until [`SnapshotPolicy::with_limit`].
    pub(super) fn new() -> Self {
        SnapshotPolicy {
            limit: 0,
            pending: Vec::new(),
            status: Snapshots::Untried,
            forks_asked: 0,
            status_from: 0,
            warm_up: None,
            rebuild_cost: HashMap::new(),
            dropped_rank: Duration::ZERO,
        }
    }

    /// The same policy, keeping up to `limit` snapshots; a fresh snapshot is warmed up with
    /// `warm_up` (silent code importing the base packages).
    pub(super) fn with_limit(mut self, limit: usize, warm_up: String) -> Self {
        self.limit = limit;
        if limit == 0 {
            self.status = Snapshots::Unavailable("snapshots are off (`--snapshots-per-session 0`)".into());
        }
        self.warm_up = Some(warm_up);
        self
    }

    /// Whether snapshots work, as last found out.
    pub(super) fn status(&self) -> &Snapshots {
        &self.status
    }

    /// Records that reaching the state `head` by replay costs `run_time` (the time its own
    /// cell just took) over its parent state, which costs nothing more when it is kept (fresh,
    /// or a snapshot among `kernels` or being made).
    pub(super) fn note_cost(
        &mut self,
        kernels: &[HeldKernel],
        parent: KernelHead,
        head: ChainHash,
        run_time: Duration,
    ) {
        let kept = kernels.iter().any(|held| held.snapshot && held.head == parent)
            || self.pending.iter().any(|pending| pending.head == parent);
        let before = match parent {
            KernelHead::Fresh => Some(Duration::ZERO),
            KernelHead::At(_) if kept => Some(Duration::ZERO),
            KernelHead::At(hash) => self.rebuild_cost.get(&hash).copied(),
            KernelHead::Unknown => None,
        };
        // A state whose path cost is unknown (cells run before a server restart) counts as
        // expensive: it is snapshotted.
        self.rebuild_cost
            .insert(head, before.map_or(Duration::MAX, |before| before.saturating_add(run_time)));
    }

    /// Whether a copy of `head` is worth a fork before code changes it: rebuilding it from the
    /// nearest state kept would cost at least [`SNAPSHOT_WORTH`] (a fresh state always does: it
    /// is a kernel start).
    pub(super) fn worth_keeping(&self, head: KernelHead) -> bool {
        match head {
            KernelHead::Fresh => true,
            KernelHead::At(hash) => self.rebuild_cost.get(&hash).is_none_or(|cost| *cost >= SNAPSHOT_WORTH),
            KernelHead::Unknown => false,
        }
    }

    /// Asks `provider` to fork the kernel at `index` of `kernels` unless snapshots are off or
    /// another kernel holds, or is being made to hold, its state.
    pub(super) fn fork_unless_held(
        &mut self,
        provider: &dyn KernelProvider,
        kernels: &[HeldKernel],
        index: usize,
    ) {
        let head = kernels[index].head;
        let state = match head {
            KernelHead::Fresh => String::new(),
            KernelHead::At(hash) => hash.to_hex(),
            KernelHead::Unknown => return,
        };
        let held_elsewhere = kernels.iter().enumerate().any(|(i, held)| i != index && held.head == head)
            || self.pending.iter().any(|pending| pending.head == head);
        if self.limit == 0 || held_elsewhere {
            return;
        }
        self.forks_asked += 1;
        let asked = self.forks_asked;
        match provider.fork(&kernels[index].kernel, state) {
            Ok(fork) => self.pending.push(PendingSnapshot { head, asked, copy: tokio::spawn(fork.finish()) }),
            Err(error) => self.found(asked, Snapshots::Unavailable(error.to_string())),
        }
    }

    /// Records what fork number `asked` found, unless a later one has said already.
    fn found(&mut self, asked: u64, status: Snapshots) {
        if asked > self.status_from {
            self.status_from = asked;
            self.status = status;
        }
    }

    /// Waits, when `may_wait`, for a copy still coming up that `reach` weighs as cheaper than
    /// `chosen` (a snapshot still coming up that beats the choice is worth its last
    /// milliseconds), but no longer than rebuilding its state would cost: one that is slow to
    /// come up goes on in the background, and the call is served without it. Returns whether it
    /// waited (the copy joined `kernels` if it came up in time).
    ///
    /// # Errors
    /// `reach`'s own.
    pub(super) async fn wait_for_better(
        &mut self,
        kernels: &mut Vec<HeldKernel>,
        reach: impl Fn(KernelHead) -> Result<Reach, GraphError>,
        chosen: Reach,
        may_wait: bool,
    ) -> Result<bool, GraphError> {
        let mut better = None;
        for (position, pending) in self.pending.iter().enumerate() {
            if reach(pending.head)? < chosen {
                better = Some(position);
                break;
            }
        }
        let Some(position) = better.filter(|_| may_wait) else { return Ok(false) };
        let mut pending = self.pending.swap_remove(position);
        let wait = self.copy_wait(pending.head);
        match tokio::time::timeout(wait, &mut pending.copy).await {
            Ok(copy) => self.adopt(kernels, pending.head, pending.asked, copy),
            Err(_) => {
                tracing::info!(?wait, "a snapshot is slow to come up: serving without it");
                self.pending.push(pending);
            }
        }
        Ok(true)
    }

    /// How long a call may wait for the copy of `head` to come up: what rebuilding that state
    /// by replay was measured to cost, within bounds.
    fn copy_wait(&self, head: KernelHead) -> Duration {
        let rebuild = match head {
            KernelHead::At(hash) => self.rebuild_cost.get(&hash).copied().unwrap_or(FORK_WAIT_MAX),
            KernelHead::Fresh | KernelHead::Unknown => FORK_WAIT_MAX,
        };
        rebuild.clamp(FORK_WAIT_MIN, FORK_WAIT_MAX)
    }

    /// Moves the snapshots that have come up into `kernels` (all of them, waiting for each,
    /// when `wait`), then drops the lowest ranked beyond the count limit, discarding them
    /// through `provider` in the background.
    pub(super) async fn collect(
        &mut self,
        kernels: &mut Vec<HeldKernel>,
        provider: &Arc<dyn KernelProvider>,
        wait: bool,
    ) {
        let mut index = 0;
        while index < self.pending.len() {
            if wait || self.pending[index].copy.is_finished() {
                let pending = self.pending.swap_remove(index);
                let copy = pending.copy.await;
                self.adopt(kernels, pending.head, pending.asked, copy);
            } else {
                index += 1;
            }
        }
        // The fresh state's copy is kept besides the limit.
        let counted = |held: &&HeldKernel| held.snapshot && held.head != KernelHead::Fresh;
        while kernels.iter().filter(counted).count() > self.limit {
            let lowest = super::lowest(kernels, |_, held| counted(&held), |held| held.rank)
                .expect("a snapshot is over the limit");
            let evicted = kernels.remove(lowest);
            self.dropped_rank = evicted.rank;
            super::discard_in_background(provider, evicted.kernel);
        }
    }

    /// Parks in `kernels` the snapshot of `head` (fork number `asked`) that has come up (a
    /// fresh one imports the base packages once no cell runs, or before its first cell). One
    /// the kernel refused is said in the replies; one that was lost on the way is only logged:
    /// the call it would have served is served by replay, and the next fork may work.
    fn adopt(
        &mut self,
        kernels: &mut Vec<HeldKernel>,
        head: KernelHead,
        asked: u64,
        copy: std::result::Result<std::result::Result<Kernel, KernelError>, tokio::task::JoinError>,
    ) {
        let copy = copy.unwrap_or_else(|join| {
            Err(KernelError::ForkLost { reason: format!("the snapshot task failed: {join}") })
        });
        match copy {
            Ok(kernel) => {
                let warm_up = match (&self.warm_up, head) {
                    (Some(code), KernelHead::Fresh) => {
                        Some(kernel.execute_silently_after(code.clone(), crate::background::idle()))
                    }
                    _ => None,
                };
                self.found(asked, Snapshots::Available);
                // What losing it would cost (going back without it forks the nearest state kept
                // and replays from there, however cheap the cells), over the rank of the last one
                // dropped: recent states outrank old ones unless those are much dearer.
                let saves = match head {
                    KernelHead::At(hash) => {
                        self.rebuild_cost.get(&hash).map_or(Duration::MAX, |cost| SNAPSHOT_WORTH + *cost)
                    }
                    KernelHead::Fresh | KernelHead::Unknown => Duration::MAX,
                };
                let rank = self.dropped_rank.saturating_add(saves);
                let held =
                    HeldKernel { kernel, head, last_used: Instant::now(), snapshot: true, rank, warm_up };
                kernels.push(held);
            }
            Err(error @ KernelError::ForkLost { .. }) => tracing::info!(%error),
            Err(error) => {
                tracing::info!(%error, "no snapshot");
                self.found(asked, Snapshots::Unavailable(error.to_string()));
            }
        }
    }

    /// Gives up the copies still coming up (a pending fork dropped kills its copy).
    pub(super) fn abort_pending(&mut self) {
        for pending in self.pending.drain(..) {
            pending.copy.abort();
        }
    }
}

//! The kernels of one session, each holding the state after its own head: which kernel serves a
//! parent, and when kernels are started, restarted, kept and stopped.
//!
//! Owns the choice of kernel (the cheapest [`Reach`] wins; when every kernel would have to
//! restart, a new kernel starts while the pool has room, so the others keep their branches, and
//! the least recently used one restarts when it is full), the memory budget (least recently used
//! kernels stopped while the pool uses more), idle stopping, and reading a kernel's resident
//! memory. Every lifecycle step goes through the session's [`KernelProvider`]; a provider that
//! cannot restart gets a pool of one kernel that refuses to. Which cells to replay is the
//! graph's (`Graph::plan`); running them is the session's.
//!
//! Snapshots are kernels too: while the session is idle the state its last cell left is
//! forked ([`KernelPool::keep_copy_of`]); before a kernel runs code that changes the state it
//! holds, the pool asks the provider to fork it ([`KernelPool::keep_copy`]) when nothing else
//! holds that state and rebuilding it from the nearest state kept would cost more than
//! [`SNAPSHOT_WORTH`] (so calls back to back on cheap cells fork once in a while). The copy is
//! parked at the same head and serves like any kernel when it is the cheapest way to a parent;
//! the copy of a fresh kernel (with the base packages imported) is kept always, so a restart is
//! a fork, not a kernel start. Snapshots are capped by count, the one whose loss costs least
//! going first, aged as others go (GreedyDual: an old snapshot of an expensive state loses to a
//! new one eventually), and, with the kernels, by memory (PSS, which counts the pages a copy
//! still shares with its origin once).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::graph::{ChainHash, GraphError, KernelHead, Reach};
use crate::kernel::{Deferred, Kernel, KernelError};
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

/// A kernel of the pool and the state it holds.
pub struct HeldKernel {
    /// The kernel.
    pub kernel: Kernel,
    /// What it holds.
    pub head: KernelHead,
    /// When a call last used it (for a snapshot: when it was made).
    pub last_used: Instant,
    /// Whether it is a snapshot no code has run on since it was forked.
    pub snapshot: bool,
    /// For a snapshot, its rank in the count limit: the lowest goes first.
    rank: Duration,
    /// For a fresh snapshot, its base-package imports, due once no cell runs: sent at once
    /// when it is taken into service first.
    warm_up: Option<Deferred>,
}

impl HeldKernel {
    /// A kernel that serves, holding `head`, used now.
    fn serving(kernel: Kernel, head: KernelHead) -> Self {
        HeldKernel {
            kernel,
            head,
            last_used: Instant::now(),
            snapshot: false,
            rank: Duration::ZERO,
            warm_up: None,
        }
    }
}

/// A snapshot being made: the kernel has been asked to fork; the copy comes up in the
/// background.
struct PendingSnapshot {
    head: KernelHead,
    /// Its place in the order forks were asked for: what the latest one found is what
    /// [`KernelPool::snapshots`] says.
    asked: u64,
    copy: JoinHandle<std::result::Result<Kernel, KernelError>>,
}

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

/// How the pool serves a parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Choice {
    /// This kernel reaches the parent without a restart.
    Use(usize),
    /// A new kernel, the others keeping their states.
    Start,
    /// This kernel, restarted.
    Restart(usize),
}

/// A kernel made ready to serve a parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    /// Its place in the pool.
    pub index: usize,
    /// Whether it was started (or restarted) for this call.
    pub started: bool,
    /// Whether it was a snapshot until now.
    pub snapshot: bool,
}

/// The kernels of one session.
pub struct KernelPool {
    provider: Arc<dyn KernelProvider>,
    kernels: Vec<HeldKernel>,
    capacity: usize,
    memory_budget: Option<u64>,
    /// How many snapshots (besides the fresh one) may be kept; 0 for none.
    snapshot_limit: usize,
    pending: Vec<PendingSnapshot>,
    snapshots: Snapshots,
    /// How many forks were asked for, and which of them last set `snapshots`.
    forks_asked: u64,
    snapshots_from: u64,
    /// Code that imports the base packages without a trace, run in a fresh snapshot.
    warm_up: Option<String>,
    /// What rebuilding each state by replay from the nearest state kept then cost, as measured
    /// when its cells last ran.
    rebuild_cost: HashMap<ChainHash, Duration>,
    /// The rank of the last snapshot dropped for the count limit: new ones rank above it.
    dropped_rank: Duration,
    /// What the next kernel started holds. Fresh, except for a provider that cannot restart:
    /// its kernel outlives us and our connection, so it holds what it held when last seen (the
    /// session record says, after a server restart), or something unknown once it was seen dead.
    next_head: KernelHead,
}

impl KernelPool {
    /// An empty pool of kernels from `provider`: at most `capacity` of them (one when the
    /// provider cannot restart), using at most `memory_budget` bytes together when set.
    pub fn new(provider: Arc<dyn KernelProvider>, capacity: usize, memory_budget: Option<u64>) -> Self {
        let capacity = if provider.can_restart() { capacity.max(1) } else { 1 };
        KernelPool {
            provider,
            kernels: Vec::new(),
            capacity,
            memory_budget,
            snapshot_limit: 0,
            pending: Vec::new(),
            snapshots: Snapshots::Untried,
            forks_asked: 0,
            snapshots_from: 0,
            warm_up: None,
            rebuild_cost: HashMap::new(),
            dropped_rank: Duration::ZERO,
            next_head: KernelHead::Fresh,
        }
    }

    /// The same pool, keeping up to `limit` snapshots; a fresh snapshot is warmed up with
    /// `warm_up` (silent code importing the base packages).
    pub fn with_snapshots(mut self, limit: usize, warm_up: String) -> Self {
        self.snapshot_limit = limit;
        if limit == 0 {
            self.snapshots = Snapshots::Unavailable("snapshots are off (`--snapshots-per-session 0`)".into());
        }
        self.warm_up = Some(warm_up);
        self
    }

    /// Whether snapshots work for these kernels, as last found out.
    pub fn snapshots(&self) -> &Snapshots {
        &self.snapshots
    }

    /// Records that reaching the state `head` by replay costs `run_time` (the time its own
    /// cell just took) over its parent state, which costs nothing more when it is kept (fresh,
    /// or a snapshot made or being made).
    pub fn note_cost(&mut self, parent: KernelHead, head: ChainHash, run_time: Duration) {
        let kept = self.kernels.iter().any(|held| held.snapshot && held.head == parent)
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

    /// The same pool, its next kernel known to hold `head` already (a kernel that outlived the
    /// server, found again).
    pub fn with_next_head(mut self, head: KernelHead) -> Self {
        self.next_head = head;
        self
    }

    /// The provider the kernels come from.
    pub fn provider(&self) -> &dyn KernelProvider {
        &*self.provider
    }

    /// The kernel at `index`.
    pub fn get(&self, index: usize) -> &HeldKernel {
        &self.kernels[index]
    }

    /// Records that the kernel at `index` now holds `head`, and was just used.
    pub fn set_head(&mut self, index: usize, head: KernelHead) {
        let held = &mut self.kernels[index];
        held.head = head;
        held.last_used = Instant::now();
        held.snapshot = false;
    }

    /// The kernels and what they hold.
    pub fn iter(&self) -> impl Iterator<Item = &HeldKernel> {
        self.kernels.iter()
    }

    /// A kernel that reaches the state `reach` weighs without a restart: the cheapest one held,
    /// or one started or restarted for it. Dead kernels are dropped first.
    ///
    /// # Errors
    /// [`Error::KernelGone`] when the kernel of a provider that cannot restart has died;
    /// [`Error::CannotBranch`] (with `held` empty, for the caller to fill) when that kernel
    /// would need a restart; a kernel that does not start; `reach`'s own errors.
    pub async fn serve(&mut self, reach: impl Fn(KernelHead) -> Result<Reach, GraphError>) -> Result<Served> {
        // A copy still coming up is waited for once per call, for about what it saves.
        let mut waited = false;
        let choice = loop {
            self.collect_snapshots(false).await;
            // After the snapshots come in: one may have died since it came up.
            self.drop_dead().await?;
            let held = self.kernels.iter().map(|held| (held.head, held.last_used, held.snapshot));
            let choice = choose(held, self.capacity, &reach)?;
            let chosen = match choice {
                Choice::Use(index) => reach(self.kernels[index].head)?,
                Choice::Start | Choice::Restart(_) => Reach { restart: true, replay: usize::MAX },
            };
            // A snapshot still coming up that beats the choice is worth its last milliseconds,
            // but no more than rebuilding its state would cost: one that is slow to come up
            // goes on in the background, and the call is served without it.
            let mut better = None;
            for (position, pending) in self.pending.iter().enumerate() {
                if reach(pending.head)? < chosen {
                    better = Some(position);
                    break;
                }
            }
            match better {
                Some(position) if !waited => {
                    waited = true;
                    let mut pending = self.pending.swap_remove(position);
                    let wait = self.copy_wait(pending.head);
                    match tokio::time::timeout(wait, &mut pending.copy).await {
                        Ok(copy) => self.adopt_snapshot(pending.head, pending.asked, copy),
                        Err(_) => {
                            tracing::info!(?wait, "a snapshot is slow to come up: serving without it");
                            self.pending.push(pending);
                        }
                    }
                }
                _ => break choice,
            }
        };
        let index = match choice {
            Choice::Use(index) => {
                let held = &mut self.kernels[index];
                let snapshot = std::mem::replace(&mut held.snapshot, false);
                held.last_used = Instant::now();
                if let Some(warm_up) = held.warm_up.take() {
                    warm_up.send_now();
                }
                return Ok(Served { index, started: false, snapshot });
            }
            Choice::Start => {
                let kernel = self.provider.start().await?;
                let head = std::mem::replace(&mut self.next_head, KernelHead::Fresh);
                self.kernels.push(HeldKernel::serving(kernel, head));
                self.kernels.len() - 1
            }
            Choice::Restart(_) if !self.provider.can_restart() => {
                return Err(Error::CannotBranch { provider: self.provider.describe(), held: String::new() });
            }
            Choice::Restart(index) => {
                let old = self.kernels.remove(index);
                self.provider.discard(old.kernel).await;
                let kernel = self.provider.start().await?;
                self.kernels.insert(index, HeldKernel::serving(kernel, KernelHead::Fresh));
                index
            }
        };
        Ok(Served { index, started: true, snapshot: false })
    }

    /// Keeps a copy of the state the kernel at `index` holds before code changes it: forks it
    /// when snapshots are on, no other kernel of the pool holds or is being made to hold that
    /// state, and rebuilding it from the nearest state kept would cost at least
    /// [`SNAPSHOT_WORTH`] (a fresh state always does: it is a kernel start). The fork request
    /// is queued ahead of whatever is sent to the kernel next; the copy comes up in the
    /// background.
    pub fn keep_copy(&mut self, index: usize) {
        let head = self.kernels[index].head;
        let worth = match head {
            KernelHead::Fresh => true,
            KernelHead::At(hash) => self.rebuild_cost.get(&hash).is_none_or(|cost| *cost >= SNAPSHOT_WORTH),
            KernelHead::Unknown => false,
        };
        if worth {
            self.fork_unless_held(index);
        }
    }

    /// Forks the kernel at `index` unless another kernel holds, or is being made to hold, its
    /// state.
    fn fork_unless_held(&mut self, index: usize) {
        let head = self.kernels[index].head;
        let state = match head {
            KernelHead::Fresh => String::new(),
            KernelHead::At(hash) => hash.to_hex(),
            KernelHead::Unknown => return,
        };
        let held_elsewhere = self.kernels.iter().enumerate().any(|(i, held)| i != index && held.head == head)
            || self.pending.iter().any(|pending| pending.head == head);
        if self.snapshot_limit == 0 || held_elsewhere {
            return;
        }
        self.forks_asked += 1;
        let asked = self.forks_asked;
        match self.provider.fork(&self.kernels[index].kernel, state) {
            Ok(fork) => self.pending.push(PendingSnapshot { head, asked, copy: tokio::spawn(fork.finish()) }),
            Err(error) => self.found(asked, Snapshots::Unavailable(error.to_string())),
        }
    }

    /// Keeps a copy of the state `head` a serving kernel holds, however cheap it is to rebuild,
    /// unless another kernel holds it already: made while the session is idle (the model
    /// thinking), it costs no call anything, and going back to that state (a retry of the next
    /// cell) is then one round trip.
    pub fn keep_copy_of(&mut self, head: KernelHead) {
        let held = self.kernels.iter().position(|held| !held.snapshot && held.head == head);
        if let (Some(index), KernelHead::At(_)) = (held, head) {
            self.fork_unless_held(index);
        }
    }

    /// Records what fork number `asked` found, unless a later one has said already.
    fn found(&mut self, asked: u64, snapshots: Snapshots) {
        if asked > self.snapshots_from {
            self.snapshots_from = asked;
            self.snapshots = snapshots;
        }
    }

    /// Takes in the snapshots that have come up or failed by now (a refused fork fails at
    /// once, so the reply of the cell it preceded can say so).
    pub async fn settle(&mut self) {
        self.collect_snapshots(false).await;
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

    /// Moves the snapshots that have come up into the pool (all of them, waiting for each,
    /// when `wait`), then drops the lowest ranked beyond the count limit.
    async fn collect_snapshots(&mut self, wait: bool) {
        let mut index = 0;
        while index < self.pending.len() {
            if wait || self.pending[index].copy.is_finished() {
                let pending = self.pending.swap_remove(index);
                let copy = pending.copy.await;
                self.adopt_snapshot(pending.head, pending.asked, copy);
            } else {
                index += 1;
            }
        }
        // The fresh state's copy is kept besides the limit.
        let counted = |held: &&HeldKernel| held.snapshot && held.head != KernelHead::Fresh;
        while self.kernels.iter().filter(counted).count() > self.snapshot_limit {
            let lowest = self
                .lowest(|_, held| counted(&held), |held| held.rank)
                .expect("a snapshot is over the limit");
            let evicted = self.kernels.remove(lowest);
            self.dropped_rank = evicted.rank;
            self.discard_in_background(evicted.kernel);
        }
    }

    /// Parks the snapshot of `head` (fork number `asked`) that has come up (a fresh one imports
    /// the base packages once no cell runs, or before its first cell). One the kernel refused is
    /// said in the replies; one that was lost on the way is only logged: the call it would have
    /// served is served by replay, and the next fork may work.
    fn adopt_snapshot(
        &mut self,
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
                self.kernels.push(held);
            }
            Err(error @ KernelError::ForkLost { .. }) => tracing::info!(%error),
            Err(error) => {
                tracing::info!(%error, "no snapshot");
                self.found(asked, Snapshots::Unavailable(error.to_string()));
            }
        }
    }

    /// Drops the kernels that have died. For a provider that cannot restart that is the end of
    /// its kernel, and an error.
    async fn drop_dead(&mut self) -> Result<()> {
        let mut gone = None;
        while let Some(position) = self.kernels.iter().position(|held| !held.kernel.is_alive()) {
            let dead = self.kernels.swap_remove(position);
            let death = dead.kernel.death();
            tracing::info!(?death, "kernel died");
            self.provider.discard(dead.kernel).await;
            gone = Some(death);
        }
        match gone {
            Some(death) if !self.provider.can_restart() => {
                self.next_head = KernelHead::Unknown;
                Err(Error::KernelGone { provider: self.provider.describe(), death })
            }
            _ => Ok(()),
        }
    }

    /// Stops the least recently used kernels other than the one at `keep` while the pool uses
    /// more memory than its budget.
    pub async fn fit_memory_budget(&mut self, keep: usize) {
        let keep = self.fit_capacity(keep).await;
        let Some(budget) = self.memory_budget else { return };
        let resident = |held: &HeldKernel| held.kernel.pid().and_then(proportional_bytes).unwrap_or(0);
        let mut total: u64 = self.kernels.iter().map(resident).sum();
        let mut keep = keep;
        while total > budget {
            let Some(oldest) = self.lowest(|index, _| index != keep, |held| held.last_used) else { break };
            let evicted;
            (evicted, keep) = self.remove_keeping(oldest, keep);
            total = total.saturating_sub(resident(&evicted));
            tracing::info!("memory budget: stopping the least recently used kernel");
            self.provider.stop(evicted.kernel).await;
        }
    }

    /// Stops the least recently used serving kernels other than the one at `keep` while more
    /// serve than the pool's capacity (a snapshot taken into service adds one); where `keep`
    /// is then.
    async fn fit_capacity(&mut self, mut keep: usize) -> usize {
        while self.kernels.iter().filter(|held| !held.snapshot).count() > self.capacity {
            let oldest = self
                .lowest(|index, held| !held.snapshot && index != keep, |held| held.last_used)
                .expect("more kernels serve than the one kept");
            let evicted;
            (evicted, keep) = self.remove_keeping(oldest, keep);
            self.discard_in_background(evicted.kernel);
        }
        keep
    }

    /// The kernel among those `eligible` says may go with the lowest `key` (its last use, its
    /// rank).
    fn lowest<K: Ord>(
        &self,
        eligible: impl Fn(usize, &HeldKernel) -> bool,
        key: impl Fn(&HeldKernel) -> K,
    ) -> Option<usize> {
        let kernels = self.kernels.iter().enumerate();
        kernels
            .filter(|&(index, held)| eligible(index, held))
            .min_by_key(|(_, held)| key(held))
            .map(|(i, _)| i)
    }

    /// Discards `kernel` without waiting for it to end (a call is waiting for the pool).
    fn discard_in_background(&self, kernel: Kernel) {
        let provider = self.provider.clone();
        tokio::spawn(async move { provider.discard(kernel).await });
    }

    /// Removes the kernel at `index`; returns it and where the kernel at `keep` is now.
    fn remove_keeping(&mut self, index: usize, keep: usize) -> (HeldKernel, usize) {
        let removed = self.kernels.remove(index);
        (removed, if index < keep { keep - 1 } else { keep })
    }

    /// How long since any kernel was used, when kernels run that may be stopped for idleness
    /// (they come back by replay, so only those of a provider that can restart).
    pub fn idle_for(&self) -> Option<Duration> {
        if !self.provider.can_restart() {
            return None;
        }
        self.kernels.iter().map(|held| held.last_used.elapsed()).min()
    }

    /// Stops every kernel gracefully, all at once (snapshots being made are waited for, so
    /// that none comes up after).
    pub async fn stop_all(&mut self) {
        self.collect_snapshots(true).await;
        self.end_all(true).await;
    }

    /// Gets rid of every kernel at once, their states being thrown away: copies still coming
    /// up are not waited for (a pending fork dropped kills its copy).
    pub async fn discard_all(&mut self) {
        for pending in self.pending.drain(..) {
            pending.copy.abort();
        }
        self.end_all(false).await;
    }

    /// Stops (`graceful`) or discards every kernel, side by side, until all have ended.
    async fn end_all(&mut self, graceful: bool) {
        let mut ending = tokio::task::JoinSet::new();
        for held in std::mem::take(&mut self.kernels) {
            let provider = self.provider.clone();
            ending.spawn(async move {
                if graceful {
                    provider.stop(held.kernel).await;
                } else {
                    provider.discard(held.kernel).await;
                }
            });
        }
        ending.join_all().await;
    }
}

/// How to serve a parent with kernels holding `held` (head, last use, whether a snapshot): the
/// cheapest reach without a restart (a kernel before a snapshot at equal cost, so the copy is
/// kept); else a new kernel while fewer than `capacity` serve; else the least recently used
/// serving kernel, restarted.
fn choose(
    held: impl Iterator<Item = (KernelHead, Instant, bool)> + Clone,
    capacity: usize,
    reach: impl Fn(KernelHead) -> Result<Reach, GraphError>,
) -> Result<Choice, GraphError> {
    let mut best: Option<(usize, (Reach, bool))> = None;
    for (index, (head, _, snapshot)) in held.clone().enumerate() {
        let cost = (reach(head)?, snapshot);
        if best.is_none_or(|(_, cheapest)| cost < cheapest) {
            best = Some((index, cost));
        }
    }
    let serving = held.clone().filter(|&(_, _, snapshot)| !snapshot);
    let count = serving.clone().count();
    let serving_indices = held.clone().enumerate().filter(|(_, (_, _, snapshot))| !snapshot).map(|(i, _)| i);
    Ok(match best {
        Some((index, (cost, _))) if !cost.restart => Choice::Use(index),
        _ if count < capacity => Choice::Start,
        _ => {
            let oldest = least_recently_used(serving.map(|(_, used, _)| used), None).unwrap_or(0);
            Choice::Restart(serving_indices.clone().nth(oldest).unwrap_or(0))
        }
    })
}

fn least_recently_used(used: impl Iterator<Item = Instant>, except: Option<usize>) -> Option<usize> {
    used.enumerate().filter(|&(i, _)| Some(i) != except).min_by_key(|&(_, used)| used).map(|(i, _)| i)
}

/// Proportional memory of process `pid` (its private pages, and its share of the pages it
/// shares with a fork), from `/proc/<pid>/smaps_rollup`.
pub fn proportional_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb << 10)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::ChainHash;

    /// Heads named by a number; reach: `At(n)` replays `target - n` when `n <= target`, else
    /// restarts; `Fresh` replays `target`.
    fn reach_to(target: u8) -> impl Fn(KernelHead) -> Result<Reach, GraphError> {
        let hashes: Vec<ChainHash> = (0..=target).map(|n| ChainHash::of(None, &n.to_string())).collect();
        move |head| {
            Ok(match head {
                KernelHead::Fresh => Reach { restart: false, replay: target.into() },
                KernelHead::At(hash) => match hashes.iter().position(|h| *h == hash) {
                    Some(n) => Reach { restart: false, replay: target as usize - n },
                    None => Reach { restart: true, replay: target.into() },
                },
                KernelHead::Unknown => Reach { restart: true, replay: target.into() },
            })
        }
    }

    fn at(n: u8) -> KernelHead {
        KernelHead::At(ChainHash::of(None, &n.to_string()))
    }

    #[test]
    fn reaches_order_restarts_last_then_by_replay() {
        let cheap = Reach { restart: false, replay: 9 };
        assert!(cheap < Reach { restart: true, replay: 0 });
        assert!(Reach { restart: false, replay: 1 } < cheap);
    }

    #[test]
    fn the_cheapest_kernel_serves_and_a_full_pool_restarts_its_least_recently_used() {
        let now = Instant::now();
        let old = now - Duration::from_secs(60);
        fn held(
            heads: &[(KernelHead, Instant)],
        ) -> impl Iterator<Item = (KernelHead, Instant, bool)> + Clone + '_ {
            heads.iter().map(|&(head, used)| (head, used, false))
        }
        // The kernel nearest the parent wins, whatever its age.
        let pool = [(at(1), now), (at(3), old)];
        assert_eq!(choose(held(&pool), 2, reach_to(4)).unwrap(), Choice::Use(1));
        // Every kernel would restart: a new one while there is room, else the oldest restarts.
        let off_path = [(at(9), now), (KernelHead::Unknown, old)];
        assert_eq!(choose(held(&off_path[..1]), 2, reach_to(4)).unwrap(), Choice::Start);
        assert_eq!(choose(held(&off_path), 2, reach_to(4)).unwrap(), Choice::Restart(1));
        // An empty pool starts one; a fresh kernel beats a restart.
        assert_eq!(choose(held(&[]), 1, reach_to(4)).unwrap(), Choice::Start);
        let with_fresh = [(at(9), now), (KernelHead::Fresh, old)];
        assert_eq!(choose(held(&with_fresh), 2, reach_to(4)).unwrap(), Choice::Use(1));
    }

    #[test]
    fn a_snapshot_serves_when_it_is_nearest_and_is_never_restarted() {
        let now = Instant::now();
        let old = now - Duration::from_secs(60);
        // A snapshot at the parent beats a kernel that would replay; at an equal reach the
        // kernel serves and the copy is kept.
        let pool = [(at(2), now, false), (at(4), old, true)];
        assert_eq!(choose(pool.iter().copied(), 2, reach_to(4)).unwrap(), Choice::Use(1));
        let tie = [(at(4), old, true), (at(4), now, false)];
        assert_eq!(choose(tie.iter().copied(), 2, reach_to(4)).unwrap(), Choice::Use(1));
        // Snapshots do not count against the capacity, and a full pool restarts a serving
        // kernel, never a snapshot, however old.
        let off_path = [(at(9), old, true), (at(8), now, false)];
        assert_eq!(choose(off_path.iter().copied(), 2, reach_to(4)).unwrap(), Choice::Start);
        assert_eq!(choose(off_path.iter().copied(), 1, reach_to(4)).unwrap(), Choice::Restart(1));
    }

    #[test]
    fn the_least_recently_used_skips_the_kernel_kept() {
        let now = Instant::now();
        let uses = [now, now - Duration::from_secs(5), now - Duration::from_secs(9)];
        assert_eq!(least_recently_used(uses.into_iter(), None), Some(2));
        assert_eq!(least_recently_used(uses.into_iter(), Some(2)), Some(1));
        assert_eq!(least_recently_used([now].into_iter(), Some(0)), None);
    }
}

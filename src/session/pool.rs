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
//! Snapshots are kernels too: forked copies parked in the pool at the state they hold, serving
//! like any kernel when they are the cheapest way to a parent. Which states get one, what each
//! is worth and how a copy joins the pool is the snapshot policy's (`pool/snapshots.rs`); the
//! pool calls it when it serves, before a kernel's state changes, and when it stops.

mod snapshots;

use std::sync::Arc;
use std::time::{Duration, Instant};

use self::snapshots::SnapshotPolicy;
pub use self::snapshots::{SNAPSHOT_WORTH, Snapshots};
use crate::error::{Error, Result};
use crate::graph::{ChainHash, GraphError, KernelHead, Reach};
use crate::kernel::{Deferred, Kernel};
use crate::provider::KernelProvider;

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
    snapshots: SnapshotPolicy,
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
            snapshots: SnapshotPolicy::new(),
            next_head: KernelHead::Fresh,
        }
    }

    /// The same pool, keeping up to `limit` snapshots; a fresh snapshot is warmed up with
    /// `warm_up` (silent code importing the base packages).
    pub fn with_snapshots(mut self, limit: usize, warm_up: String) -> Self {
        self.snapshots = self.snapshots.with_limit(limit, warm_up);
        self
    }

    /// Whether snapshots work for these kernels, as last found out.
    pub fn snapshots(&self) -> &Snapshots {
        self.snapshots.status()
    }

    /// Records that reaching the state `head` by replay costs `run_time` (the time its own
    /// cell just took) over its parent state, which costs nothing more when it is kept (fresh,
    /// or a snapshot made or being made).
    pub fn note_cost(&mut self, parent: KernelHead, head: ChainHash, run_time: Duration) {
        self.snapshots.note_cost(&self.kernels, parent, head, run_time);
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
    /// or one started or restarted for it. Dead kernels are dropped first. `None` when the
    /// kernel of a provider that cannot restart would need a restart (the caller says what it
    /// holds instead).
    ///
    /// # Errors
    /// [`Error::KernelGone`] when the kernel of a provider that cannot restart has died; a
    /// kernel that does not start; `reach`'s own errors.
    pub async fn serve(
        &mut self,
        reach: impl Fn(KernelHead) -> Result<Reach, GraphError>,
    ) -> Result<Option<Served>> {
        // A copy still coming up is waited for once per call, for about what it saves.
        let mut waited = false;
        let choice = loop {
            self.snapshots.collect(&mut self.kernels, &self.provider, false).await;
            // After the snapshots come in: one may have died since it came up.
            self.drop_dead().await?;
            let held = self.kernels.iter().map(|held| (held.head, held.last_used, held.snapshot));
            let choice = choose(held, self.capacity, &reach)?;
            let chosen = match choice {
                Choice::Use(index) => reach(self.kernels[index].head)?,
                Choice::Start | Choice::Restart(_) => Reach { restart: true, replay: usize::MAX },
            };
            if !self.snapshots.wait_for_better(&mut self.kernels, &reach, chosen, !waited).await? {
                break choice;
            }
            waited = true;
        };
        let index = match choice {
            Choice::Use(index) => {
                let held = &mut self.kernels[index];
                let snapshot = std::mem::replace(&mut held.snapshot, false);
                held.last_used = Instant::now();
                if let Some(warm_up) = held.warm_up.take() {
                    warm_up.send_now();
                }
                return Ok(Some(Served { index, started: false, snapshot }));
            }
            Choice::Start => {
                let kernel = self.provider.start().await?;
                let head = std::mem::replace(&mut self.next_head, KernelHead::Fresh);
                self.kernels.push(HeldKernel::serving(kernel, head));
                self.kernels.len() - 1
            }
            Choice::Restart(_) if !self.provider.can_restart() => return Ok(None),
            Choice::Restart(index) => {
                let old = self.kernels.remove(index);
                self.provider.discard(old.kernel).await;
                let kernel = self.provider.start().await?;
                self.kernels.insert(index, HeldKernel::serving(kernel, KernelHead::Fresh));
                index
            }
        };
        Ok(Some(Served { index, started: true, snapshot: false }))
    }

    /// Keeps a copy of the state the kernel at `index` holds before code changes it: forks it
    /// when snapshots are on, no other kernel of the pool holds or is being made to hold that
    /// state, and rebuilding it from the nearest state kept would cost at least
    /// [`SNAPSHOT_WORTH`] (a fresh state always does: it is a kernel start). The fork request
    /// is queued ahead of whatever is sent to the kernel next; the copy comes up in the
    /// background.
    pub fn keep_copy(&mut self, index: usize) {
        if self.snapshots.worth_keeping(self.kernels[index].head) {
            self.snapshots.fork_unless_held(&*self.provider, &self.kernels, index);
        }
    }

    /// Keeps a copy of the state `head` a serving kernel holds, however cheap it is to rebuild,
    /// unless another kernel holds it already: made while the session is idle (the model
    /// thinking), it costs no call anything, and going back to that state (a retry of the next
    /// cell) is then one round trip.
    pub fn keep_copy_of(&mut self, head: KernelHead) {
        let held = self.kernels.iter().position(|held| !held.snapshot && held.head == head);
        if let (Some(index), KernelHead::At(_)) = (held, head) {
            self.snapshots.fork_unless_held(&*self.provider, &self.kernels, index);
        }
    }

    /// Takes in the snapshots that have come up or failed by now (a refused fork fails at
    /// once, so the reply of the cell it preceded can say so).
    pub async fn settle(&mut self) {
        self.snapshots.collect(&mut self.kernels, &self.provider, false).await;
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
            let Some(oldest) = lowest(&self.kernels, |index, _| index != keep, |held| held.last_used) else {
                break;
            };
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
            let oldest =
                lowest(&self.kernels, |index, held| !held.snapshot && index != keep, |held| held.last_used)
                    .expect("more kernels serve than the one kept");
            let evicted;
            (evicted, keep) = self.remove_keeping(oldest, keep);
            discard_in_background(&self.provider, evicted.kernel);
        }
        keep
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
        self.snapshots.collect(&mut self.kernels, &self.provider, true).await;
        self.end_all(true).await;
    }

    /// Gets rid of every kernel at once, their states being thrown away: copies still coming
    /// up are not waited for (a pending fork dropped kills its copy).
    pub async fn discard_all(&mut self) {
        self.snapshots.abort_pending();
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

/// The kernel among those `eligible` says may go with the lowest `key` (its last use, its
/// rank).
fn lowest<K: Ord>(
    kernels: &[HeldKernel],
    eligible: impl Fn(usize, &HeldKernel) -> bool,
    key: impl Fn(&HeldKernel) -> K,
) -> Option<usize> {
    kernels
        .iter()
        .enumerate()
        .filter(|&(index, held)| eligible(index, held))
        .min_by_key(|(_, held)| key(held))
        .map(|(i, _)| i)
}

/// Discards `kernel` through `provider` without waiting for it to end (a call is waiting for
/// the pool).
fn discard_in_background(provider: &Arc<dyn KernelProvider>, kernel: Kernel) {
    let provider = provider.clone();
    tokio::spawn(async move { provider.discard(kernel).await });
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

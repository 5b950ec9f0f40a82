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

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::graph::{GraphError, KernelHead, Reach};
use crate::kernel::Kernel;
use crate::provider::KernelProvider;

/// A kernel of the pool and the state it holds.
pub struct HeldKernel {
    /// The kernel.
    pub kernel: Kernel,
    /// What it holds.
    pub head: KernelHead,
    /// When a call last used it.
    pub last_used: Instant,
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
}

/// The kernels of one session.
pub struct KernelPool {
    provider: Arc<dyn KernelProvider>,
    kernels: Vec<HeldKernel>,
    capacity: usize,
    memory_budget: Option<u64>,
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
        KernelPool { provider, kernels: Vec::new(), capacity, memory_budget, next_head: KernelHead::Fresh }
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
        self.drop_dead().await?;
        let held = self.kernels.iter().map(|held| (held.head, held.last_used));
        let choice = choose(held, self.capacity, reach)?;
        let index = match choice {
            Choice::Use(index) => return Ok(Served { index, started: false }),
            Choice::Start => {
                let kernel = self.provider.start().await?;
                let head = std::mem::replace(&mut self.next_head, KernelHead::Fresh);
                self.kernels.push(HeldKernel { kernel, head, last_used: Instant::now() });
                self.kernels.len() - 1
            }
            Choice::Restart(_) if !self.provider.can_restart() => {
                return Err(Error::CannotBranch { provider: self.provider.describe(), held: String::new() });
            }
            Choice::Restart(index) => {
                let old = self.kernels.remove(index);
                self.provider.discard(old.kernel).await;
                let kernel = self.provider.start().await?;
                self.kernels
                    .insert(index, HeldKernel { kernel, head: KernelHead::Fresh, last_used: Instant::now() });
                index
            }
        };
        Ok(Served { index, started: true })
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
        let Some(budget) = self.memory_budget else { return };
        let resident = |held: &HeldKernel| held.kernel.pid().and_then(resident_bytes).unwrap_or(0);
        let mut total: u64 = self.kernels.iter().map(resident).sum();
        let mut keep = keep;
        while total > budget {
            let Some(oldest) = self.least_recently_used(Some(keep)) else { break };
            let evicted = self.kernels.remove(oldest);
            if oldest < keep {
                keep -= 1;
            }
            total = total.saturating_sub(resident(&evicted));
            tracing::info!("memory budget: stopping the least recently used kernel");
            self.provider.stop(evicted.kernel).await;
        }
    }

    fn least_recently_used(&self, except: Option<usize>) -> Option<usize> {
        least_recently_used(self.kernels.iter().map(|held| held.last_used), except)
    }

    /// How long since any kernel was used, when kernels run that may be stopped for idleness
    /// (they come back by replay, so only those of a provider that can restart).
    pub fn idle_for(&self) -> Option<Duration> {
        if !self.provider.can_restart() {
            return None;
        }
        self.kernels.iter().map(|held| held.last_used.elapsed()).min()
    }

    /// Stops every kernel gracefully.
    pub async fn stop_all(&mut self) {
        for held in std::mem::take(&mut self.kernels) {
            self.provider.stop(held.kernel).await;
        }
    }

    /// Gets rid of every kernel at once, their states being thrown away.
    pub async fn discard_all(&mut self) {
        for held in std::mem::take(&mut self.kernels) {
            self.provider.discard(held.kernel).await;
        }
    }
}

/// How to serve a parent with kernels holding `held` (head, last use): the cheapest reach
/// without a restart; else a new kernel while there are fewer than `capacity`; else the least
/// recently used kernel, restarted.
fn choose(
    held: impl Iterator<Item = (KernelHead, Instant)> + Clone,
    capacity: usize,
    reach: impl Fn(KernelHead) -> Result<Reach, GraphError>,
) -> Result<Choice, GraphError> {
    let mut best: Option<(usize, Reach)> = None;
    for (index, (head, _)) in held.clone().enumerate() {
        let cost = reach(head)?;
        if best.is_none_or(|(_, cheapest)| cost < cheapest) {
            best = Some((index, cost));
        }
    }
    let count = held.clone().count();
    Ok(match best {
        Some((index, cost)) if !cost.restart => Choice::Use(index),
        _ if count < capacity => Choice::Start,
        _ => Choice::Restart(least_recently_used(held.map(|(_, used)| used), None).unwrap_or(0)),
    })
}

fn least_recently_used(used: impl Iterator<Item = Instant>, except: Option<usize>) -> Option<usize> {
    used.enumerate().filter(|&(i, _)| Some(i) != except).min_by_key(|&(_, used)| used).map(|(i, _)| i)
}

/// Resident memory of process `pid`, from `/proc/<pid>/status`.
fn resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
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
        fn held(heads: &[(KernelHead, Instant)]) -> impl Iterator<Item = (KernelHead, Instant)> + Clone + '_ {
            heads.iter().copied()
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
    fn the_least_recently_used_skips_the_kernel_kept() {
        let now = Instant::now();
        let uses = [now, now - Duration::from_secs(5), now - Duration::from_secs(9)];
        assert_eq!(least_recently_used(uses.into_iter(), None), Some(2));
        assert_eq!(least_recently_used(uses.into_iter(), Some(2)), Some(1));
        assert_eq!(least_recently_used([now].into_iter(), Some(0)), None);
    }
}

//! Background work yields to cells: spares, the bytecode store and other work nobody waits for
//! start only while no cell runs, and their processes run at idle CPU and I/O priority.
//!
//! A cell holds a [`Busy`] guard while its code (or its replay) runs; background steps await
//! [`idle`] before they begin. Owns only that count and the priorities; what the background
//! work is belongs to its callers (`session/manager.rs`, `venv/bytecode.rs`).

use std::sync::LazyLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// How long the machine must have been free of cells before background work starts: a model's
/// calls come in bursts, and the next one usually follows within this.
const SETTLE: Duration = Duration::from_millis(250);

struct Cells {
    running: AtomicUsize,
    ended: Notify,
}

static CELLS: LazyLock<Cells> =
    LazyLock::new(|| Cells { running: AtomicUsize::new(0), ended: Notify::new() });

/// Held while a cell runs: background work waits until none is held.
#[must_use = "the cell counts as running only while the guard lives"]
pub struct Busy(());

impl Drop for Busy {
    fn drop(&mut self) {
        if CELLS.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            CELLS.ended.notify_waiters();
        }
    }
}

/// Marks a cell as running until the guard is dropped.
pub fn busy() -> Busy {
    CELLS.running.fetch_add(1, Ordering::AcqRel);
    Busy(())
}

/// Waits until no cell runs and none has for a moment.
pub async fn idle() {
    loop {
        let ended = CELLS.ended.notified();
        if CELLS.running.load(Ordering::Acquire) == 0 {
            tokio::time::sleep(SETTLE).await;
            if CELLS.running.load(Ordering::Acquire) == 0 {
                return;
            }
            continue;
        }
        ended.await;
    }
}

/// Makes `command` run at idle priority: nice 19 and the idle I/O class, set in the child
/// before it executes, so everything it starts inherits them. For work whose processes never
/// serve a cell (a kernel started this way would run its cells at idle priority too).
#[allow(unsafe_code)]
pub fn at_idle_priority(command: &mut tokio::process::Command) {
    // SAFETY: the closure runs in the forked child before exec and only makes two system calls,
    // which are async-signal-safe; it allocates nothing. Failures are ignored: the priority is
    // a courtesy, not a requirement.
    unsafe {
        command.pre_exec(|| {
            const IOPRIO_WHO_PROCESS: nix::libc::c_long = 1;
            const IOPRIO_CLASS_IDLE: nix::libc::c_long = 3;
            const IOPRIO_CLASS_SHIFT: u32 = 13;
            nix::libc::setpriority(nix::libc::PRIO_PROCESS, 0, 19);
            nix::libc::syscall(
                nix::libc::SYS_ioprio_set,
                IOPRIO_WHO_PROCESS,
                0 as nix::libc::c_long,
                IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT,
            );
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn background_work_waits_for_the_last_cell_to_end() {
        let first = busy();
        let second = busy();
        let waiter = tokio::spawn(idle());
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!waiter.is_finished(), "background work started while cells ran");
        drop(first);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(!waiter.is_finished(), "background work started while a cell ran");
        drop(second);
        tokio::time::timeout(SETTLE * 2, waiter).await.expect("idle once no cell runs").unwrap();
    }
}

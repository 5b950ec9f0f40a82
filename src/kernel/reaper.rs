//! Processes that are no children of ours until they are orphaned: snapshots.
//!
//! A snapshot is forked twice (the middle process exits at once), so it is an orphan from its
//! first moment; with the server a child subreaper ([`adopt_orphans`]) the orphan becomes the
//! server's child, and [`watch_exit`] learns exactly how it ends (a signal, an exit code), as
//! for the kernels we start. The same goes for anything a kernel's code leaves behind, so a
//! sweep reaps the server's children that stay zombies (those tokio waits for are reaped at
//! once). Without a subreaper (another OS, or the call refused) an orphan goes to init, and
//! all that is known is that it is gone.

use std::collections::HashSet;
use std::sync::OnceLock;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::sync::watch;

use super::Death;

/// How often the exit of an adopted process is looked for.
const EXIT_POLL: Duration = Duration::from_millis(50);
/// How often zombie children are looked for; one seen at two sweeps in a row is reaped.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Makes this process the reaper of orphans among its descendants, and sweeps the zombies
/// among them, once per process. Returns whether the OS agreed.
pub fn adopt_orphans() -> bool {
    static ADOPTING: OnceLock<bool> = OnceLock::new();
    *ADOPTING.get_or_init(|| {
        if let Err(error) = nix::sys::prctl::set_child_subreaper(true) {
            tracing::info!(%error, "cannot become a child subreaper: a snapshot's end will be known only as an exit");
            return false;
        }
        let sweep = || {
            let mut seen = HashSet::new();
            loop {
                std::thread::sleep(SWEEP_EVERY);
                let zombies: HashSet<i32> = zombie_children().into_iter().map(|(pid, _)| pid).collect();
                for pid in zombies.intersection(&seen) {
                    let _ = waitpid(Pid::from_raw(*pid), Some(WaitPidFlag::WNOHANG));
                }
                seen = zombies;
            }
        };
        std::thread::Builder::new().name("orphan-reaper".into()).spawn(sweep).is_ok()
    })
}

/// Reports on `exit` how `pid` ended once it has: exactly when it is our child (an adopted
/// orphan), as [`Death::Vanished`] when it is not. Stops when nobody listens any more.
pub(super) fn watch_exit(pid: Pid, exit: watch::Sender<Option<Death>>) {
    tokio::spawn(async move {
        let death = loop {
            if exit.is_closed() {
                return;
            }
            match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, code)) => break Death::Exited { code },
                Ok(WaitStatus::Signaled(_, signal, _)) => break Death::Signalled { signal: signal as i32 },
                Ok(_) => {}
                // Not (yet) ours: its origin's until the middle process of the fork is gone.
                Err(Errno::ECHILD) if !process_lives(pid) => break Death::Vanished,
                Err(_) => {}
            }
            tokio::time::sleep(EXIT_POLL).await;
        };
        exit.send_replace(Some(death));
    });
}

/// Whether `pid` runs: it exists and is no zombie.
pub(super) fn process_lives(pid: Pid) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses and may hold any byte.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| !matches!(rest.trim_start().chars().next(), Some('Z' | 'X'))),
        Err(_) => false,
    }
}

/// Reaps the zombies among the server's children in process group `group`, except its leader
/// (whoever started the leader waits for it): what a killed kernel's own children leave once
/// they are adopted, so that "no process of the group is left" comes true at once.
pub(super) fn reap_group(group: Pid) {
    for (pid, pgid) in zombie_children() {
        if pgid == group.as_raw() && pid != group.as_raw() {
            let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
        }
    }
}

/// The server's children that are zombies now: (pid, process group).
fn zombie_children() -> HashSet<(i32, i32)> {
    let me = std::process::id().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else { return HashSet::new() };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // `pid (comm) state ppid pgrp ...`; comm may hold any byte.
            let (_, rest) = stat.rsplit_once(')')?;
            let mut fields = rest.split_whitespace();
            let zombie = fields.next() == Some("Z") && fields.next() == Some(me.as_str());
            let group = fields.next()?.parse().ok()?;
            zombie.then_some((pid, group))
        })
        .collect()
}

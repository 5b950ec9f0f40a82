//! The re-exec'd side of the sandbox: `mcp-pyrepl confine --policy <json> -- <argv…>`.
//!
//! Runs in a fresh, single-threaded process (before any runtime exists: `unshare` of a user
//! namespace fails in a multi-threaded one). It first enters a user namespace of its own,
//! mapping our own ids (so a kernel of a server run as root keeps no capability over the rest
//! of the machine: without it, such a kernel reads every process's `/proc/<pid>/environ`), a
//! mount namespace whose root holds only the policy's paths (`view.rs`), and for a policy
//! without network a network namespace too and the socket filter (`sockets.rs`); then it
//! applies the Landlock ruleset, checks that every part of it is enforced, and execs the
//! kernel in place, so the kernel keeps our pid and process group. What goes into a policy is
//! `mod.rs`'s business.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

use landlock::{
    ABI, Access, AccessFs, AccessNet, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetError, RulesetStatus,
    Scope, path_beneath_rules,
};
use nix::sched::{CloneFlags, unshare};
use nix::unistd::{getgid, getuid};

use super::{Policy, without_secrets};

/// The Landlock ABI the ruleset is written for: files, TCP ports, signal and abstract-socket
/// scoping.
const LANDLOCK_ABI: ABI = ABI::V6;

/// Flags of the hidden `mcp-pyrepl confine` command.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfineArgs {
    /// The policy, as JSON
    #[arg(long, required_unless_present = "probe", conflicts_with = "probe")]
    pub policy: Option<String>,

    /// Confine ourselves with the system readable and nothing writable, then exit 0
    #[arg(long)]
    pub probe: bool,

    /// With `--probe`: check the network namespace too
    #[arg(long, requires = "probe")]
    pub strict: bool,

    /// The command to exec once confined
    #[arg(last = true, required_unless_present = "probe")]
    pub argv: Vec<OsString>,
}

/// Why a process could not be confined (the kernel then never starts).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfineError {
    /// `--policy` is not a policy.
    #[error("`--policy` is not a valid policy")]
    Policy(#[source] serde_json::Error),
    /// The user (and network) namespaces could not be entered.
    #[error(
        "cannot enter a user namespace of our own ({step}); unprivileged user namespaces may be disabled"
    )]
    Namespace {
        /// The step that failed.
        step: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A directory the policy names for scratch files could not be created.
    #[error("cannot create `{}`", path.display())]
    Scratch {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The kernel's view of the filesystem could not be built.
    #[error("cannot build the sandbox's view of the filesystem: {step}")]
    View {
        /// The step that failed, with the path involved.
        step: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The socket filter of `strict` could not be installed.
    #[error("cannot install the seccomp filter that allows unix, IP and routing sockets only ({step})")]
    Seccomp {
        /// The call that failed.
        step: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Landlock refused the ruleset.
    #[error("cannot apply the Landlock ruleset")]
    Landlock(#[from] RulesetError),
    /// Landlock is missing or older than the ABI we need.
    #[error(
        "Landlock is {status} on this kernel (ABI {} with files, TCP and scopes is needed, Linux 6.12 or \
         later with `lsm=landlock`)", LANDLOCK_ABI as i32
    )]
    NotEnforced {
        /// How much of the ruleset was enforced.
        status: &'static str,
    },
    /// The command could not be executed.
    #[error("cannot exec `{}`", program.to_string_lossy())]
    Exec {
        /// The program.
        program: OsString,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Confines this process as `args` say and execs the command (returning only on failure), or,
/// with `--probe`, returns once confined.
///
/// # Errors
/// When any step of the confinement fails, or the command cannot be executed.
pub fn run(args: ConfineArgs) -> Result<(), ConfineError> {
    let policy = match &args.policy {
        Some(json) => serde_json::from_str(json).map_err(ConfineError::Policy)?,
        None => Policy::probe(args.strict),
    };
    enter_namespaces(policy.no_network)?;
    super::view::isolate(&[&policy.read[..], &policy.write[..]].concat())?;
    for dir in policy.scratch.values() {
        std::fs::create_dir_all(dir).map_err(|source| ConfineError::Scratch { path: dir.clone(), source })?;
    }
    if policy.no_network {
        super::sockets::unix_ip_and_route_only()?;
    }
    restrict(&policy)?;
    let Some((program, rest)) = args.argv.split_first() else { return Ok(()) };
    let source = std::process::Command::new(program).args(rest).envs(&policy.scratch).exec();
    Err(ConfineError::Exec { program: program.clone(), source })
}

/// Enters a user namespace (mapping our own uid and gid, so files keep their owners), a mount
/// namespace and, with `no_network`, a network namespace of its own: no interface but a
/// loopback that is down.
fn enter_namespaces(no_network: bool) -> Result<(), ConfineError> {
    let (uid, gid) = (getuid(), getgid());
    let step =
        |step, result: std::io::Result<()>| result.map_err(|source| ConfineError::Namespace { step, source });
    let mut namespaces = CloneFlags::CLONE_NEWUSER | CloneFlags::CLONE_NEWNS;
    if no_network {
        namespaces |= CloneFlags::CLONE_NEWNET;
    }
    step("unshare", unshare(namespaces).map_err(std::io::Error::from))?;
    step("/proc/self/setgroups", std::fs::write("/proc/self/setgroups", "deny"))?;
    step("/proc/self/uid_map", std::fs::write("/proc/self/uid_map", format!("{uid} {uid} 1")))?;
    step("/proc/self/gid_map", std::fs::write("/proc/self/gid_map", format!("{gid} {gid} 1")))
}

/// Applies the Landlock ruleset of `policy` to this process and what it execs.
fn restrict(policy: &Policy) -> Result<(), ConfineError> {
    let mut ruleset = Ruleset::default()
        .handle_access(AccessFs::from_all(LANDLOCK_ABI))?
        .scope(Scope::from_all(LANDLOCK_ABI))?;
    if policy.no_network {
        // Handled with no rule: no TCP port may be bound or connected to.
        ruleset = ruleset.handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp)?;
    }
    let status = ruleset
        .create()?
        .add_rules(path_beneath_rules(without_secrets(&policy.read), AccessFs::from_read(LANDLOCK_ABI)))?
        .add_rules(path_beneath_rules(without_secrets(&policy.write), AccessFs::from_all(LANDLOCK_ABI)))?
        .restrict_self()?;
    match status.ruleset {
        RulesetStatus::FullyEnforced => Ok(()),
        RulesetStatus::PartiallyEnforced => {
            Err(ConfineError::NotEnforced { status: "only partly supported" })
        }
        RulesetStatus::NotEnforced => Err(ConfineError::NotEnforced { status: "not available" }),
    }
}

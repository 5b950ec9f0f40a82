//! Snapshots: a kernel we started, forked into a copy that holds the same state and serves on
//! sockets of its own.
//!
//! The fork is the kernel's own (`_mcp_pyrepl_snapshot` in the startup file): a silent
//! execute request makes it fork, the child gives itself new sockets, threads and event loop
//! around the same IPython shell, and writes a connection file with its pid. Since the request
//! is queued on the kernel's shell channel like any other, the copy holds exactly the state
//! left by what was sent before it, and it proves it: the kernel keeps the chain hash of the
//! cells it ran, and the copy writes it into its connection file, which must name the state
//! the fork was asked for. Owns sending that request, waiting for the copy and connecting to
//! it; which kernels to fork and when is the pool's (`session/pool.rs`).

use std::path::PathBuf;
use std::time::Duration;

use super::actor::Client;
use super::launch::{KernelProcess, Lineage, names_kernel_file};
use super::link::ZmqLink;
use super::reaper::process_lives;
use super::{
    Execution, ExecutionStatus, Kernel, KernelAddress, KernelError, Output, OutputLimits, RunningExecution,
    handshake,
};
use crate::jupyter::connection::{ConnectionInfo, Transport};
use crate::jupyter::message::ExecuteRequest;
use crate::jupyter::socket::ClientSockets;
use crate::util::WriteError;

/// How long a copy may take to listen and answer once the kernel has forked.
const FORK_TIMEOUT: Duration = Duration::from_secs(10);

/// How often to look for the copy's files: a retry waiting for its copy waits this much more at
/// worst, and the server reads three files each time.
const POLL: Duration = Duration::from_millis(5);

/// How long to look for the copy of a kernel that died as it forked.
const DEAD_ORIGIN_WAIT: Duration = Duration::from_secs(2);

/// A fork asked of a kernel: the request is on its way, ahead of anything sent after it.
/// Dropped before it delivered its copy (failed, timed out, abandoned with its session), it
/// kills the copy and removes its files, whatever moved since.
pub struct PendingFork {
    request: RunningExecution,
    instance: String,
    connection_file: PathBuf,
    pid_file: PathBuf,
    lineage: Lineage,
    /// The chain hash (hex; empty for a fresh kernel) of the state the copy must hold.
    state: String,
    /// The copy's pid, once its pid record has been read.
    copy_pid: Option<i32>,
    delivered: bool,
}

impl Kernel {
    /// Asks this kernel to fork into a copy holding the state it will have once what was
    /// already sent to it has run, which must be `state` (the chain hash in hex, empty for a
    /// fresh kernel). Returns as soon as the request is queued; the copy is
    /// [`PendingFork::finish`]ed later.
    ///
    /// # Errors
    /// [`KernelError::NotOwned`] for a kernel we did not start; a kernel that is gone.
    pub fn fork(&self, state: String) -> Result<PendingFork, KernelError> {
        let origin = self.own_process("fork")?;
        let instance = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
        let dir =
            self.connection_file().and_then(|file| file.parent()).map(PathBuf::from).unwrap_or_default();
        let connection_file = dir.join(format!("kernel-{instance}.json"));
        let pid_file = dir.join(format!("kernel-{instance}.pid"));
        let lineage = origin.lineage();
        let literal = |text: &str| serde_json::to_string(text).expect("a string serialises");
        let code = format!(
            "_mcp_pyrepl_snapshot({}, {}, {}, {})",
            literal(&connection_file.to_string_lossy()),
            literal(&pid_file.to_string_lossy()),
            std::process::id(),
            literal(lineage.command_file()),
        );
        let request = self.client.execute(ExecuteRequest::silent(code), OutputLimits::default())?;
        Ok(PendingFork {
            request,
            instance,
            connection_file,
            pid_file,
            lineage,
            state,
            copy_pid: None,
            delivered: false,
        })
    }
}

impl PendingFork {
    /// The copy, connected and answering, holding the state asked for.
    ///
    /// # Errors
    /// [`KernelError::ForkRefused`] when the kernel said a copy would not work (threads the
    /// user started, CUDA, an ipykernel we do not fork); [`KernelError::ForkLost`] for a copy
    /// that does not come up or answer in time, dies, or holds another state.
    pub async fn finish(mut self) -> Result<Kernel, KernelError> {
        let copy = self.come_up().await;
        self.delivered = copy.is_ok();
        copy
    }

    /// The copy's pid as its pid record (written as soon as it is forked) names it.
    fn copy_pid(&mut self) -> Option<i32> {
        if self.copy_pid.is_none() {
            self.copy_pid = recorded_pid(&self.pid_file);
        }
        self.copy_pid
    }

    async fn come_up(&mut self) -> Result<Kernel, KernelError> {
        // The copy's file is the proof of the fork: a kernel that dies right after forking
        // (the next cell kills it) may never send the request's idle status.
        let mut deadline = tokio::time::Instant::now() + FORK_TIMEOUT;
        let mut answered = false;
        let (connection, ForkFile { pid, chain }) = loop {
            if let Some(found) = read_fork_file(&self.connection_file)? {
                break found;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(KernelError::ForkLost {
                    reason: format!("the copy did not come up within {} s", FORK_TIMEOUT.as_secs()),
                });
            }
            let failed = self.connection_file.with_extension("json.failed");
            if let Ok(reason) = std::fs::read_to_string(&failed) {
                let _ = std::fs::remove_file(&failed);
                return Err(KernelError::ForkLost { reason: format!("the copy failed to start: {reason}") });
            }
            if let Some(pid) = self.copy_pid()
                && !process_lives(nix::unistd::Pid::from_raw(pid))
            {
                return Err(KernelError::ForkLost { reason: "the copy died before it listened".into() });
            }
            if answered {
                tokio::time::sleep(POLL).await;
                continue;
            }
            let wait = tokio::time::sleep(POLL);
            tokio::select! {
                reply = self.request.finish() => {
                    answered = true;
                    match reply {
                        Ok(reply) if reply.status == ExecutionStatus::Ok => {}
                        Ok(Execution { status: ExecutionStatus::Died(_), .. }) | Err(KernelError::Died(_)) => {
                            // It may have forked before it died: the copy is up soon or never.
                            deadline = deadline.min(tokio::time::Instant::now() + DEAD_ORIGIN_WAIT);
                        }
                        Ok(reply) => return Err(refusal(&reply)),
                        Err(error) => return Err(error),
                    }
                }
                () = wait => {}
            }
        };
        self.copy_pid.get_or_insert(pid);
        if chain != self.state {
            let shown =
                |hash: &str| if hash.is_empty() { "a fresh state".to_owned() } else { hash.to_owned() };
            return Err(KernelError::ForkLost {
                reason: format!("the copy holds {}, not {}", shown(&chain), shown(&self.state)),
            });
        }
        // The file is the kernel's to write: act on its pid only if that is a kernel of ours,
        // and on its sockets (removed when the copy goes) only if they are in its directory.
        if names_kernel_file(pid, self.lineage.command_file()) != Some(true) {
            return Err(KernelError::ForkLost {
                reason: format!("pid {pid} of the copy's file is no fork of this kernel"),
            });
        }
        let own_dir = self.connection_file.parent();
        if connection.transport == Transport::Ipc && std::path::Path::new(&connection.ip).parent() != own_dir
        {
            return Err(KernelError::ForkLost {
                reason: format!("the copy's sockets `{}` are outside its directory", connection.ip),
            });
        }
        let process = KernelProcess::adopt(
            &self.lineage,
            pid,
            &self.instance,
            connection,
            self.connection_file.clone(),
        )?;
        fn lost(error: impl std::fmt::Display) -> KernelError {
            KernelError::ForkLost { reason: error.to_string() }
        }
        let sockets = ClientSockets::connect(process.connection(), FORK_TIMEOUT).await.map_err(lost)?;
        let (transport, _heartbeat) = ZmqLink::new(sockets);
        let client = Client::spawn(transport, process.exit());
        let info = handshake(&client, FORK_TIMEOUT).await.map_err(lost)?;
        let address = KernelAddress::ConnectionFile(self.connection_file.clone());
        Ok(Kernel { client, info, address, process: Some(Box::new(process)) })
    }
}

impl Drop for PendingFork {
    /// A copy that came up too late, half-way or for nobody is of no use: nothing of it is left.
    fn drop(&mut self) {
        if self.delivered {
            return;
        }
        if let Some(pid) = self.copy_pid()
            && names_kernel_file(pid, self.lineage.command_file()) == Some(true)
        {
            let _ =
                nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
        let _ = std::fs::remove_file(&self.pid_file);
        let _ = std::fs::remove_file(&self.connection_file);
    }
}

/// Why the fork request failed: the kernel's refusal (the `RuntimeError` it raises when a copy
/// would not work), or anything else, which loses this copy only.
fn refusal(reply: &Execution) -> KernelError {
    let raised = reply.outputs.iter().find_map(|output| match output {
        Output::Error { ename, evalue, .. } => Some((ename.as_str(), evalue.clone())),
        _ => None,
    });
    match raised {
        Some(("RuntimeError", reason)) => KernelError::ForkRefused { reason },
        Some((ename, evalue)) => {
            KernelError::ForkLost { reason: format!("the fork request raised {ename}: {evalue}") }
        }
        None => KernelError::ForkLost { reason: format!("the fork request ended with {:?}", reply.status) },
    }
}

/// The pid a pid record names, once the fork's middle process has written it.
fn recorded_pid(path: &std::path::Path) -> Option<i32> {
    let record: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    record["kernel"].as_i64().and_then(|pid| i32::try_from(pid).ok())
}

/// What a copy adds to its connection file: its pid and the chain hash of the state it holds.
#[derive(serde::Deserialize)]
struct ForkFile {
    pid: i32,
    chain: String,
}

/// The copy's connection file, pid and state, once it has written them (it renames the file
/// into place whole).
fn read_fork_file(path: &std::path::Path) -> Result<Option<(ConnectionInfo, ForkFile)>, KernelError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(KernelError::Io(WriteError { path: path.to_owned(), source })),
    };
    let connection = ConnectionInfo::read(path)?;
    let fork = serde_json::from_slice(&bytes).map_err(|error| KernelError::ForkLost {
        reason: format!("the copy's connection file `{}` has no pid and state: {error}", path.display()),
    })?;
    Ok(Some((connection, fork)))
}

//! Snapshots: a kernel we started, forked into a copy that holds the same state and serves on
//! sockets of its own.
//!
//! The fork is the kernel's own (`_mcp_pyrepl_snapshot` in the startup file): a silent
//! execute request makes it fork, the child gives itself new sockets, threads and event loop
//! around the same IPython shell, and writes a connection file with its pid. Since the request
//! is queued on the kernel's shell channel like any other, the copy holds exactly the state
//! left by what was sent before it. Owns sending that request, waiting for the copy and
//! connecting to it; which kernels to fork and when is the pool's (`session/pool.rs`).

use std::path::PathBuf;
use std::time::Duration;

use super::actor::Client;
use super::launch::{KernelProcess, Lineage};
use super::reaper::process_lives;
use super::transport::ZmqTransport;
use super::{
    Execution, ExecutionStatus, Kernel, KernelAddress, KernelError, Output, OutputLimits, RunningExecution,
    handshake,
};
use crate::jupyter::connection::ConnectionInfo;
use crate::jupyter::message::ExecuteRequest;
use crate::jupyter::socket::ClientSockets;

/// How long a copy may take to listen and answer once the kernel has forked.
const FORK_TIMEOUT: Duration = Duration::from_secs(10);

/// How long to look for the copy of a kernel that died as it forked.
const DEAD_ORIGIN_WAIT: Duration = Duration::from_secs(2);

/// A fork asked of a kernel: the request is on its way, ahead of anything sent after it.
pub struct PendingFork {
    request: RunningExecution,
    instance: String,
    connection_file: PathBuf,
    lineage: Lineage,
}

impl Kernel {
    /// Asks this kernel to fork into a copy holding the state it will have once what was
    /// already sent to it has run. Returns as soon as the request is queued; the copy is
    /// [`PendingFork::finish`]ed later.
    ///
    /// # Errors
    /// [`KernelError::NotOwned`] for a kernel we did not start; a kernel that is gone.
    pub fn fork(&self) -> Result<PendingFork, KernelError> {
        let origin = self.own_process("fork")?;
        let instance = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
        let dir =
            self.connection_file().and_then(|file| file.parent()).map(PathBuf::from).unwrap_or_default();
        let connection_file = dir.join(format!("kernel-{instance}.json"));
        let path = serde_json::to_string(&connection_file.to_string_lossy()).expect("a string serialises");
        let code = format!("_mcp_pyrepl_snapshot({path}, {})", std::process::id());
        let request = self.client.execute(ExecuteRequest::silent(code), OutputLimits::default())?;
        Ok(PendingFork { request, instance, connection_file, lineage: origin.lineage() })
    }
}

impl PendingFork {
    /// The copy, connected and answering.
    ///
    /// # Errors
    /// [`KernelError::ForkRefused`] when the kernel said a copy would not work (threads the
    /// user started, CUDA, an ipykernel we do not fork); a copy that does not come up in time.
    pub async fn finish(mut self) -> Result<Kernel, KernelError> {
        // The copy's file is the proof of the fork: a kernel that dies right after forking
        // (the next cell kills it) may never send the request's idle status.
        let mut deadline = tokio::time::Instant::now() + FORK_TIMEOUT;
        let mut answered = false;
        let (connection, pid) = loop {
            if let Some(found) = read_fork_file(&self.connection_file)? {
                break found;
            }
            let failed = self.connection_file.with_extension("json.failed");
            if let Ok(reason) = std::fs::read_to_string(&failed) {
                let _ = std::fs::remove_file(&failed);
                return Err(KernelError::ForkRefused {
                    reason: format!("the copy failed to start: {reason}"),
                });
            }
            let early_pid = self.connection_file.with_extension("json.pid");
            if let Some(pid) =
                std::fs::read_to_string(&early_pid).ok().and_then(|pid| pid.trim().parse().ok())
                && !process_lives(nix::unistd::Pid::from_raw(pid))
            {
                let _ = std::fs::remove_file(&early_pid);
                return Err(KernelError::ForkRefused { reason: "the copy died before it listened".into() });
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(KernelError::Timeout {
                    what: "a forked copy's connection file",
                    timeout: FORK_TIMEOUT,
                });
            }
            if answered {
                tokio::time::sleep(Duration::from_millis(2)).await;
                continue;
            }
            let wait = tokio::time::sleep(Duration::from_millis(2));
            tokio::select! {
                reply = self.request.finish() => {
                    answered = true;
                    match reply {
                        Ok(reply) if reply.status == ExecutionStatus::Ok => {}
                        Ok(Execution { status: ExecutionStatus::Died(_), .. }) | Err(KernelError::Died(_)) => {
                            // It may have forked before it died: the copy is up soon or never.
                            deadline = deadline.min(tokio::time::Instant::now() + DEAD_ORIGIN_WAIT);
                        }
                        Ok(reply) => return Err(KernelError::ForkRefused { reason: refusal(&reply) }),
                        Err(error) => return Err(error),
                    }
                }
                () = wait => {}
            }
        };
        let process = KernelProcess::adopt(
            &self.lineage,
            pid,
            &self.instance,
            connection,
            self.connection_file.clone(),
        )?;
        let sockets = ClientSockets::connect(process.connection(), FORK_TIMEOUT).await?;
        let (transport, _heartbeat) = ZmqTransport::new(sockets);
        let client = Client::spawn(transport, process.exit());
        let info = handshake(&client, FORK_TIMEOUT).await?;
        let address = KernelAddress::ConnectionFile(self.connection_file);
        Ok(Kernel { client, info, address, process: Some(Box::new(process)) })
    }
}

/// Why the kernel refused to fork: the message of its `RuntimeError`.
fn refusal(reply: &Execution) -> String {
    reply
        .outputs
        .iter()
        .find_map(|output| match output {
            Output::Error { evalue, .. } => Some(evalue.clone()),
            _ => None,
        })
        .unwrap_or_else(|| format!("the snapshot request ended with {:?}", reply.status))
}

/// The copy's connection file and pid, once it has written them (it renames the file into
/// place whole).
fn read_fork_file(path: &std::path::Path) -> Result<Option<(ConnectionInfo, i32)>, KernelError> {
    #[derive(serde::Deserialize)]
    struct Pid {
        pid: i32,
    }
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(KernelError::Io { path: path.to_owned(), source }),
    };
    let connection = ConnectionInfo::read(path)?;
    let Pid { pid } = serde_json::from_slice(&bytes).map_err(|error| KernelError::ForkRefused {
        reason: format!("the copy's connection file `{}` has no pid: {error}", path.display()),
    })?;
    Ok(Some((connection, pid)))
}

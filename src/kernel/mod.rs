//! A Jupyter kernel we talk to: [`Kernel`] runs code, interrupts, kills and shuts down.
//!
//! Owns one kernel connection and, when we started the kernel ([`Kernel::launch`],
//! `launch.rs`), its process; a kernel somebody else started ([`Kernel::attach`]) has no process
//! of ours, so it is never signalled or stopped, and a kernel behind a Jupyter server's WebSocket
//! ([`Kernel::over_websocket`]) is stopped through that server's API by its provider. Which
//! kernels to start, restart or stop is the provider's decision (`crate::provider`). The
//! connection is owned by one task (`actor.rs`) over either transport (`link.rs`); outputs
//! are built in `output.rs`. Knows nothing of venvs, cells or MCP.

mod actor;
pub mod browser;
mod fork;
pub mod launch;
mod link;
pub mod output;
mod reaper;

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::jupyter::connection::{ConnectionError, ConnectionInfo};
use crate::jupyter::message::{Content, ExecuteRequest, KernelInfoReply, Shutdown};
use crate::jupyter::socket::{ClientSockets, SocketError};
use crate::jupyter::websocket::KernelWebSocket;
use crate::util::{SpawnError, WriteError};
use actor::Client;
pub use actor::{OutputView, RunningExecution};
pub use fork::PendingFork;
pub use launch::{InterruptMode, KernelProcess, LaunchSpec};
use link::{RequestChannel, WebSocketLink, ZmqLink, heartbeat_watch};
pub use output::{MimeBundle, Output, OutputLimits, StreamName};
pub use reaper::adopt_orphans;

/// How long a kernel we attach to may take to accept our connections.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a graceful `shutdown_request` may take before the process is signalled.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// How long control requests (interrupt, shutdown) may take to be answered.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a kernel is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Death {
    /// The process exited with a status code.
    Exited {
        /// The exit code.
        code: i32,
    },
    /// The process was killed by a signal (a segfault, the OOM killer, SIGKILL).
    Signalled {
        /// The signal number.
        signal: i32,
    },
    /// An attached kernel stopped answering its heartbeat.
    HeartbeatLost {
        /// How long it was silent.
        silent_for: Duration,
    },
    /// The connection to a kernel behind a Jupyter server closed (the kernel was deleted or
    /// culled, or the server went away): whatever the kernel held is out of our reach.
    ConnectionLost {
        /// How it closed.
        detail: String,
    },
    /// The Jupyter server that runs the kernel says it died, restarted it, or no longer has it.
    Remote {
        /// What the server said, in words.
        detail: String,
    },
    /// Waiting on the process failed.
    WaitFailed {
        /// The OS error.
        error: String,
    },
    /// We stopped watching it (its owner is shutting down).
    Stopped,
    /// A process that was no child of ours (a snapshot the server could not adopt) is gone;
    /// how it ended was for its parent to know.
    Vanished,
}

impl std::fmt::Display for Death {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Death::Exited { code } => write!(f, "exited with code {code}"),
            Death::Signalled { signal } => {
                let name = Signal::try_from(*signal).map(Signal::as_str).unwrap_or("unknown");
                write!(f, "was killed by signal {signal} ({name})")
            }
            Death::HeartbeatLost { silent_for } => {
                write!(f, "stopped answering its heartbeat for {}s", silent_for.as_secs())
            }
            Death::ConnectionLost { detail } => write!(f, "lost its connection: {detail}"),
            Death::Remote { detail } => write!(f, "{detail}"),
            Death::WaitFailed { error } => write!(f, "could not be waited on: {error}"),
            Death::Stopped => write!(f, "was stopped"),
            Death::Vanished => write!(f, "exited"),
        }
    }
}

/// Errors from starting, attaching to or talking to a kernel.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KernelError {
    /// The kernel process could not be started or did not come up.
    #[error("kernel failed to start: {reason}\n--- last lines of `{}` ---\n{log_tail}", log.display())]
    StartFailed {
        /// What went wrong.
        reason: String,
        /// The kernel's log file.
        log: PathBuf,
        /// The end of that log (Python's traceback, usually).
        log_tail: String,
    },
    /// The interpreter could not be run at all.
    #[error(transparent)]
    Spawn(#[from] SpawnError),
    /// A file or directory of the kernel could not be written.
    #[error(transparent)]
    Io(#[from] WriteError),
    /// The connection file could not be read or written.
    #[error(transparent)]
    Connection(#[from] ConnectionError),
    /// A socket failed.
    #[error(transparent)]
    Socket(#[from] SocketError),
    /// The kernel is gone.
    #[error("the kernel {0}")]
    Died(Death),
    /// The kernel did not answer in time.
    #[error("the kernel did not answer {what} within {}s", timeout.as_secs_f32())]
    Timeout {
        /// The request.
        what: &'static str,
        /// How long we waited.
        timeout: Duration,
    },
    /// Something only the owner may do (a kill) was asked of a kernel whose process is not ours.
    #[error("cannot {action} {address}: its process is not ours; do it where the kernel was started")]
    NotOwned {
        /// What was asked.
        action: &'static str,
        /// Where the kernel is reached.
        address: KernelAddress,
    },
    /// A Jupyter server (a kernel gateway) refused or failed a request about a kernel.
    #[error("the Jupyter gateway `{url}` {answer}")]
    Gateway {
        /// The gateway's base URL.
        url: String,
        /// What was asked and what it answered (or why it could not be reached), and what to do.
        answer: String,
    },
    /// The kernel would not fork into a snapshot: no copy of its will work.
    #[error("no snapshot: {reason}")]
    ForkRefused {
        /// Why, as the kernel said it.
        reason: String,
    },
    /// One copy is of no use (it did not come up or answer in time, died, or holds another
    /// state than asked for): it is discarded, and later forks may work.
    #[error("snapshot discarded: {reason}")]
    ForkLost {
        /// What went wrong with it.
        reason: String,
    },
    /// The socket task stopped (only when the runtime is shutting down).
    #[error("the kernel client task has stopped")]
    ClientGone,
}

/// How an execution ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecutionStatus {
    /// The code ran to the end.
    Ok,
    /// The code raised; the error is among the outputs.
    Error,
    /// The kernel skipped the code because an earlier request failed.
    Aborted,
    /// The kernel died while running it; the outputs are what arrived before.
    Died(Death),
}

/// The outcome of running one piece of code.
#[derive(Debug, Clone, PartialEq)]
pub struct Execution {
    /// Outputs in the order the kernel produced them.
    pub outputs: Vec<Output>,
    /// How it ended.
    pub status: ExecutionStatus,
    /// The kernel's execution counter for it, when the kernel reported one.
    pub execution_count: Option<u64>,
    /// The values of the request's `user_expressions` as the kernel formatted them, by name
    /// (each `{status, data, metadata}`); empty when none were asked or the code failed.
    pub user_expressions: serde_json::Map<String, serde_json::Value>,
}

/// Where a kernel is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelAddress {
    /// Through a connection file (one we wrote, or one we attached through).
    ConnectionFile(PathBuf),
    /// Through a Jupyter server's API: the kernel `id` on the server at `url`.
    Gateway {
        /// The server's base URL.
        url: String,
        /// The kernel's id there.
        id: String,
    },
}

impl std::fmt::Display for KernelAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KernelAddress::ConnectionFile(path) => write!(f, "the kernel of `{}`", path.display()),
            KernelAddress::Gateway { url, id } => write!(f, "the kernel `{id}` on the gateway `{url}`"),
        }
    }
}

/// A connected kernel.
pub struct Kernel {
    client: Client,
    info: KernelInfoReply,
    address: KernelAddress,
    /// The process, when we started it; `None` for a kernel somebody else started or runs.
    process: Option<Box<KernelProcess>>,
}

impl Kernel {
    /// Starts a kernel as `spec` says and waits until it answers.
    ///
    /// # Errors
    /// [`KernelError::StartFailed`] (with the kernel's log) when it does not come up within
    /// `spec.startup_timeout`; I/O and spawn errors otherwise.
    pub async fn launch(spec: LaunchSpec) -> Result<Kernel, KernelError> {
        let process = KernelProcess::start(&spec).await?;
        let started = async {
            let sockets = ClientSockets::connect(process.connection(), spec.startup_timeout).await?;
            let (transport, _heartbeat) = ZmqLink::new(sockets);
            let client = Client::spawn(transport, process.exit());
            let info = handshake(&client, spec.startup_timeout).await?;
            Ok::<_, KernelError>((client, info))
        };
        match started.await {
            Ok((client, info)) => Ok(Kernel {
                client,
                info,
                address: KernelAddress::ConnectionFile(process.connection_file().to_owned()),
                process: Some(Box::new(process)),
            }),
            Err(error) => Err(process.start_failed(error.to_string())),
        }
    }

    /// Connects to a kernel somebody else started, given its connection file. The kernel is
    /// watched through its heartbeat; it is never killed or restarted by us.
    ///
    /// # Errors
    /// When the file cannot be read or the kernel does not answer within 10 s.
    pub async fn attach(connection_file: &Path) -> Result<Kernel, KernelError> {
        let connection = ConnectionInfo::read(connection_file)?;
        let sockets = ClientSockets::connect(&connection, ATTACH_TIMEOUT).await?;
        let (transport, heartbeat) = ZmqLink::new(sockets);
        let client = Client::spawn(transport, heartbeat_watch(heartbeat));
        let info = handshake(&client, ATTACH_TIMEOUT).await?;
        let address = KernelAddress::ConnectionFile(connection_file.to_owned());
        Ok(Kernel { client, info, address, process: None })
    }

    /// Talks to the kernel at `address` through a Jupyter server's kernel WebSocket, once it
    /// answers (within `timeout`). `liveness` says when the server no longer has the kernel; a
    /// closed socket, or the server's `status: restarting` or `dead`, is its death too.
    ///
    /// # Errors
    /// When the kernel does not answer in time, or the socket closes first.
    pub async fn over_websocket(
        socket: KernelWebSocket,
        address: KernelAddress,
        liveness: tokio::sync::watch::Receiver<Option<Death>>,
        timeout: Duration,
    ) -> Result<Kernel, KernelError> {
        let client = Client::spawn(WebSocketLink::new(socket, address.to_string()), liveness);
        let info = handshake(&client, timeout).await?;
        Ok(Kernel { client, info, address, process: None })
    }

    /// Runs `code` as a cell and returns its outputs once both the reply and the kernel's idle
    /// status have arrived, or once the kernel has died (status [`ExecutionStatus::Died`], with
    /// the outputs captured before).
    ///
    /// # Errors
    /// When the request cannot be sent, or the kernel was already dead.
    pub async fn execute(&self, code: &str) -> Result<Execution, KernelError> {
        self.execute_with(code, OutputLimits::default()).await
    }

    /// [`Kernel::execute`], keeping the outputs within `limits` (text beyond them is counted,
    /// and written to `limits.spill_to`).
    ///
    /// # Errors
    /// As [`Kernel::execute`].
    pub async fn execute_with(&self, code: &str, limits: OutputLimits) -> Result<Execution, KernelError> {
        self.start(code, limits)?.finish().await
    }

    /// Sends `code` to run and returns at once: the [`RunningExecution`] shows the outputs so
    /// far and gives the end.
    ///
    /// # Errors
    /// When the kernel client has stopped.
    pub fn start(&self, code: &str, limits: OutputLimits) -> Result<RunningExecution, KernelError> {
        self.start_request(ExecuteRequest::new(code), limits)
    }

    /// [`Kernel::start`] for a request of the caller's making (one with `user_expressions`).
    ///
    /// # Errors
    /// When the kernel client has stopped.
    pub fn start_request(
        &self,
        request: ExecuteRequest,
        limits: OutputLimits,
    ) -> Result<RunningExecution, KernelError> {
        self.client.execute(request, limits)
    }

    /// Runs `code` with its outputs but out of the user's history and execution counter (an
    /// install the session does on the user's behalf).
    ///
    /// # Errors
    /// As [`Kernel::execute`].
    pub async fn execute_unrecorded(
        &self,
        code: &str,
        limits: OutputLimits,
    ) -> Result<Execution, KernelError> {
        let request = ExecuteRequest { store_history: false, ..ExecuteRequest::new(code) };
        self.client.execute(request, limits)?.finish().await
    }

    /// Runs `code` leaving no trace a user could see: nothing broadcast, no history, no change
    /// of the execution counter (for warming a kernel up).
    ///
    /// # Errors
    /// As [`Kernel::execute`].
    pub async fn execute_silently(&self, code: &str) -> Result<Execution, KernelError> {
        self.client.execute(ExecuteRequest::silent(code), OutputLimits::default())?.finish().await
    }

    /// Runs each of `codes` as [`Kernel::execute_silently`] does, in the background, each sent
    /// once the one before has finished: a cell sent meanwhile waits for one of them at most.
    pub fn execute_silently_in_turn(&self, codes: Vec<String>) {
        let client = self.client.clone();
        tokio::spawn(async move {
            for code in codes {
                let finished = match client.execute(ExecuteRequest::silent(&code), OutputLimits::default()) {
                    Ok(mut running) => running.finish().await,
                    Err(error) => Err(error),
                };
                if let Err(error) = finished {
                    tracing::debug!(%error, "silent code did not finish: the rest is not sent");
                    return;
                }
            }
        });
    }

    /// Queues `code` to run as [`Kernel::execute_silently`] does once `ready` is done (work
    /// that waits for the machine to be free), or at once when [`Deferred::send_now`] comes
    /// first; it is sent once either way, and not at all to a kernel gone by then.
    pub fn execute_silently_after(
        &self,
        code: String,
        ready: impl Future<Output = ()> + Send + 'static,
    ) -> Deferred {
        let deferred = Deferred { client: self.client.clone(), code: code.into(), sent: Default::default() };
        let later = deferred.clone();
        tokio::spawn(async move {
            ready.await;
            later.send_now();
        });
        deferred
    }

    /// Evaluates `expressions` (name to Python expression) in the user namespace as
    /// [`Kernel::execute_silently`] runs code: no cell, no history, no counter, no hooks of a
    /// cell. Returns their values as the kernel formatted them, by name.
    ///
    /// # Errors
    /// As [`Kernel::execute`], and [`KernelError::Timeout`] when the values take longer than
    /// `timeout` (the kernel is left to finish them).
    pub async fn evaluate(
        &self,
        expressions: serde_json::Map<String, serde_json::Value>,
        timeout: Duration,
    ) -> Result<serde_json::Map<String, serde_json::Value>, KernelError> {
        let request = ExecuteRequest::silent("").with_expressions(expressions);
        let mut running = self.client.execute(request, OutputLimits::default())?;
        match tokio::time::timeout(timeout, running.finish()).await {
            Ok(finished) => Ok(finished?.user_expressions),
            Err(_) => Err(KernelError::Timeout { what: "user_expressions", timeout }),
        }
    }

    /// Kills a kernel we started, at once (SIGKILL to its process group): for code that
    /// survives interrupts. A running execution ends with [`ExecutionStatus::Died`] and the
    /// output captured so far.
    ///
    /// # Errors
    /// [`KernelError::NotOwned`] for an attached kernel.
    pub fn kill(&self) -> Result<(), KernelError> {
        let process = self.own_process("kill")?;
        process.signal_group(Signal::SIGKILL);
        Ok(())
    }

    /// Interrupts the running code (a `KeyboardInterrupt` in the cell; variables are kept):
    /// SIGINT to the process group of a kernel we started with `interrupt_mode: signal`, an
    /// `interrupt_request` on control otherwise.
    ///
    /// # Errors
    /// When the control request fails or is not answered.
    pub async fn interrupt(&self) -> Result<(), KernelError> {
        if let Some(process) = &self.process
            && process.interrupt_mode() == InterruptMode::Signal
        {
            process.signal_group(Signal::SIGINT);
            return Ok(());
        }
        self.control_request("interrupt_request", Content::InterruptRequest).await.map(drop)
    }

    /// Stops a kernel we started at once, its state being thrown away: SIGKILL to its process
    /// group, waiting (bounded) until no process of it is left. An attached kernel is only
    /// disconnected.
    pub async fn terminate(self) {
        if let Some(process) = &self.process {
            process.kill(SHUTDOWN_GRACE).await;
        }
    }

    /// Stops the kernel: `shutdown_request` on control, a bounded wait, then SIGTERM and
    /// SIGKILL to its process group, so no process of it is left. An attached kernel is only
    /// disconnected, never stopped.
    pub async fn shutdown(self) {
        let Some(process) = &self.process else { return };
        if process.is_running() {
            let request = Content::ShutdownRequest(Shutdown { restart: false });
            if let Err(error) = self.control_request("shutdown_request", request).await {
                tracing::debug!(%error, "shutdown_request not answered; signalling");
            }
            process.wait_exit(SHUTDOWN_GRACE).await;
        }
        process.terminate(SHUTDOWN_GRACE).await;
    }

    /// Whether the kernel is still alive: for a kernel we started or adopted, its process runs
    /// as the OS says now (its death reaches the client a poll later, and a cell sent in that
    /// moment would die with it); for an attached kernel, its heartbeat answered.
    pub fn is_alive(&self) -> bool {
        self.client.death().borrow().is_none()
            && self.process.as_ref().is_none_or(|process| process.is_running())
    }

    /// Why the kernel is gone, if it is.
    pub fn death(&self) -> Option<Death> {
        self.client.death().borrow().clone()
    }

    /// What the kernel said about itself at connection time.
    pub fn info(&self) -> &KernelInfoReply {
        &self.info
    }

    /// Where the kernel is reached.
    pub fn address(&self) -> &KernelAddress {
        &self.address
    }

    /// The connection file (the one we wrote, or the one we attached through), unless the
    /// kernel is reached through a Jupyter server.
    pub fn connection_file(&self) -> Option<&Path> {
        match &self.address {
            KernelAddress::ConnectionFile(path) => Some(path),
            KernelAddress::Gateway { .. } => None,
        }
    }

    /// The kernel's process id, when we started it.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(|process| process.pid())
    }

    /// The death watch: `Some(cause)` once the kernel is gone.
    pub fn death_watch(&self) -> tokio::sync::watch::Receiver<Option<Death>> {
        self.client.death()
    }

    fn own_process(&self, action: &'static str) -> Result<&KernelProcess, KernelError> {
        self.process.as_deref().ok_or_else(|| KernelError::NotOwned { action, address: self.address.clone() })
    }

    async fn control_request(&self, what: &'static str, content: Content) -> Result<(), KernelError> {
        match tokio::time::timeout(CONTROL_TIMEOUT, self.client.request(RequestChannel::Control, content))
            .await
        {
            Ok(reply) => reply.map(drop),
            Err(_) => Err(KernelError::Timeout { what, timeout: CONTROL_TIMEOUT }),
        }
    }
}

/// Waits until the kernel answers `kernel_info_request` on shell and our iopub subscription has
/// landed. ipykernel >= 7.2 greets a new subscriber with `iopub_welcome`; older kernels only show
/// it by the status messages each request causes, so the request is repeated until iopub speaks.
async fn handshake(client: &Client, timeout: Duration) -> Result<KernelInfoReply, KernelError> {
    const ATTEMPT: Duration = Duration::from_millis(500);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut iopub_seen = client.iopub_seen();
    let mut info = None;
    while tokio::time::Instant::now() < deadline {
        if let Some(death) = client.death().borrow().clone() {
            return Err(KernelError::Died(death));
        }
        let remaining = deadline - tokio::time::Instant::now();
        if info.is_none() {
            let request = client.request(RequestChannel::Shell, Content::KernelInfoRequest);
            if let Ok(reply) = tokio::time::timeout(ATTEMPT.min(remaining), request).await {
                match reply?.content {
                    Content::KernelInfoReply(reply) => info = Some(*reply),
                    other => tracing::warn!(msg_type = other.msg_type(), "odd reply to kernel_info_request"),
                }
            }
        }
        if let Some(reply) = &info {
            let wait = ATTEMPT.min(deadline - tokio::time::Instant::now());
            if tokio::time::timeout(wait, iopub_seen.wait_for(|seen| *seen)).await.is_ok() {
                return Ok(reply.clone());
            }
            // Subscription not confirmed: ask again so the kernel publishes another status.
            info = None;
        }
    }
    Err(KernelError::Timeout { what: "kernel_info_request", timeout })
}

/// Silent code queued for later ([`Kernel::execute_silently_after`]).
#[derive(Clone)]
pub struct Deferred {
    client: Client,
    code: std::sync::Arc<str>,
    sent: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Deferred {
    /// Sends the code now, unless it was sent already: whatever is sent afterwards runs after it.
    pub fn send_now(&self) {
        if self.sent.swap(true, std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        if let Err(error) = self.client.execute(ExecuteRequest::silent(&*self.code), OutputLimits::default())
        {
            tracing::debug!(%error, "silent code not sent");
        }
    }
}

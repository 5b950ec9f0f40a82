//! The task that owns one kernel connection's sockets.
//!
//! Callers hold a cheap [`Client`] that sends [`Command`]s over a channel; the task sends requests,
//! drains iopub continuously (a slow reader makes the kernel drop messages) and routes every
//! message by `parent_header.msg_id`. An execution completes only when both its shell
//! `execute_reply` and its iopub `status: idle` have arrived: the two sockets are not ordered
//! against each other. When the kernel dies (reported on the `death` watch by whoever watches the
//! process or heartbeat) every pending request is answered with what was captured, never left
//! hanging.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use std::sync::Arc;

use super::output::{Output, OutputLimits, OutputLog};
use super::{Death, Execution, ExecutionStatus, KernelError};
use crate::jupyter::message::{Content, ExecuteRequest, ExecutionState, Message};
use crate::jupyter::socket::{ClientSockets, Heartbeat, Receiver};

/// How long to keep reading after a death notice, for output already on its way.
const DRAIN_AFTER_DEATH: Duration = Duration::from_millis(100);

/// How often an attached kernel's heartbeat is checked, and how long an echo may take.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// Missed heartbeats in a row before an attached kernel is declared dead.
const HEARTBEAT_MISSES: u32 = 3;

/// Which request channel a generic request goes to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RequestChannel {
    Shell,
    Control,
}

pub(crate) enum Command {
    Execute {
        request: ExecuteRequest,
        log: SharedLog,
        reply: oneshot::Sender<Result<Execution, KernelError>>,
    },
    Request {
        channel: RequestChannel,
        content: Content,
        reply: oneshot::Sender<Result<Message, KernelError>>,
    },
}

/// An execution's output log, shared between the actor (which fills it) and the caller (which
/// may look at it while the code still runs). Locked only for one message at a time.
type SharedLog = Arc<std::sync::Mutex<OutputLog>>;

fn take_outputs(log: &SharedLog) -> Vec<Output> {
    std::mem::take(&mut *log.lock().expect("output log lock")).into_outputs()
}

/// An execution under way: its outputs so far can be looked at while it runs.
pub struct RunningExecution {
    log: SharedLog,
    done: oneshot::Receiver<Result<Execution, KernelError>>,
}

/// A window on an execution's outputs, to look at while it runs.
#[derive(Clone)]
pub struct OutputView(SharedLog);

impl OutputView {
    /// The outputs so far, as they would be returned if the execution ended now.
    pub fn snapshot(&self) -> Vec<Output> {
        self.0.lock().expect("output log lock").snapshot()
    }
}

impl RunningExecution {
    /// A view of the outputs that can outlive this handle.
    pub fn view(&self) -> OutputView {
        OutputView(self.log.clone())
    }

    /// Waits for the end (or the kernel's death).
    ///
    /// # Errors
    /// When the kernel client stopped.
    pub async fn finish(&mut self) -> Result<Execution, KernelError> {
        (&mut self.done).await.map_err(|_| KernelError::ClientGone)?
    }
}

/// How the actor learns that its kernel died.
pub(crate) enum Liveness {
    /// From whoever waits on the kernel process we started: the cause once it exits.
    Process(watch::Receiver<Option<Death>>),
    /// From the heartbeat channel, for a kernel whose process we cannot wait on.
    Heartbeat,
}

/// A handle to the socket-owning task. Dropping every clone stops the task.
#[derive(Clone)]
pub(crate) struct Client {
    commands: mpsc::UnboundedSender<Command>,
    iopub_seen: watch::Receiver<bool>,
    death: watch::Receiver<Option<Death>>,
}

impl Client {
    /// Starts the task on `sockets`; `liveness` says how the kernel's death is learnt.
    pub(crate) fn spawn(sockets: ClientSockets, liveness: Liveness) -> Client {
        let ClientSockets { shell_tx, shell_rx, control_tx, control_rx, stdin_rx, iopub, heartbeat } =
            sockets;
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (iopub_seen_tx, iopub_seen) = watch::channel(false);
        let death = match liveness {
            Liveness::Process(death) => death,
            Liveness::Heartbeat => {
                let (death_tx, death) = watch::channel(None);
                tokio::spawn(watch_heartbeat_until_silent(heartbeat, death_tx));
                death
            }
        };
        let actor = Actor {
            session: uuid::Uuid::new_v4().to_string(),
            shell_tx,
            control_tx,
            executions: HashMap::new(),
            requests: HashMap::new(),
            iopub_seen: iopub_seen_tx,
            dead: None,
        };
        tokio::spawn(actor.run(command_rx, shell_rx, control_rx, stdin_rx, iopub, death.clone()));
        Client { commands, iopub_seen, death }
    }

    /// Runs `code`, keeping its outputs within `limits`, and waits for its end (or the
    /// kernel's death).
    pub(crate) fn execute(
        &self,
        request: ExecuteRequest,
        limits: OutputLimits,
    ) -> Result<RunningExecution, KernelError> {
        let (reply, done) = oneshot::channel();
        let log: SharedLog = Arc::new(std::sync::Mutex::new(OutputLog::new(limits)));
        self.send(Command::Execute { request, log: log.clone(), reply })?;
        Ok(RunningExecution { log, done })
    }

    /// Sends `content` on `channel` and waits for the reply.
    pub(crate) async fn request(
        &self,
        channel: RequestChannel,
        content: Content,
    ) -> Result<Message, KernelError> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Request { channel, content, reply })?;
        rx.await.map_err(|_| KernelError::ClientGone)?
    }

    fn send(&self, command: Command) -> Result<(), KernelError> {
        self.commands.send(command).map_err(|_| KernelError::ClientGone)
    }

    /// Whether any iopub message has arrived, i.e. our subscription has landed.
    pub(crate) fn iopub_seen(&self) -> watch::Receiver<bool> {
        self.iopub_seen.clone()
    }

    /// The death watch: `Some(cause)` once the kernel is gone.
    pub(crate) fn death(&self) -> watch::Receiver<Option<Death>> {
        self.death.clone()
    }
}

/// What an `execute_reply` said.
struct Reply {
    status: ExecutionStatus,
    execution_count: Option<u64>,
    user_expressions: serde_json::Map<String, serde_json::Value>,
}

struct PendingExecution {
    log: SharedLog,
    reply: Option<Reply>,
    idle: bool,
    respond: oneshot::Sender<Result<Execution, KernelError>>,
}

struct Actor {
    session: String,
    shell_tx: crate::jupyter::socket::Sender,
    control_tx: crate::jupyter::socket::Sender,
    executions: HashMap<String, PendingExecution>,
    requests: HashMap<String, oneshot::Sender<Result<Message, KernelError>>>,
    iopub_seen: watch::Sender<bool>,
    dead: Option<Death>,
}

impl Actor {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut shell_rx: Receiver<zeromq::DealerRecvHalf>,
        mut control_rx: Receiver<zeromq::DealerRecvHalf>,
        mut stdin_rx: Receiver<zeromq::DealerRecvHalf>,
        mut iopub: Receiver<zeromq::SubSocket>,
        mut death: watch::Receiver<Option<Death>>,
    ) {
        // A closed socket yields errors forever: stop polling it.
        let (mut shell_open, mut control_open, mut stdin_open, mut iopub_open) = (true, true, true, true);
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => self.on_command(command).await,
                    None => break,
                },
                message = iopub.recv(), if iopub_open => match message {
                    Ok(message) => self.on_iopub(message),
                    Err(error) => { tracing::debug!(%error, "iopub closed"); iopub_open = false; }
                },
                message = shell_rx.recv(), if shell_open => match message {
                    Ok(message) => self.on_reply(message),
                    Err(error) => { tracing::debug!(%error, "shell closed"); shell_open = false; }
                },
                message = control_rx.recv(), if control_open => match message {
                    Ok(message) => self.on_reply(message),
                    Err(error) => { tracing::debug!(%error, "control closed"); control_open = false; }
                },
                message = stdin_rx.recv(), if stdin_open => match message {
                    // We send allow_stdin: false, so a well-behaved kernel never asks.
                    Ok(message) => tracing::warn!(msg_type = message.msg_type(), "unexpected message on stdin"),
                    Err(_) => stdin_open = false,
                },
                changed = death.changed(), if self.dead.is_none() => {
                    let cause = match changed {
                        Ok(()) => death.borrow_and_update().clone(),
                        Err(_) => None,
                    };
                    // The watcher went away without a cause: the kernel's owner is shutting down.
                    let cause = cause.unwrap_or(Death::Stopped);
                    self.drain(&mut shell_rx, &mut iopub).await;
                    self.on_death(cause);
                }
            }
        }
    }

    async fn on_command(&mut self, command: Command) {
        match command {
            Command::Execute { request, log, reply } => {
                if let Some(cause) = &self.dead {
                    let _ = reply.send(Err(KernelError::Died(cause.clone())));
                    return;
                }
                let request = Message::new(Content::ExecuteRequest(request), &self.session);
                if let Err(error) = self.shell_tx.send(&request).await {
                    let _ = reply.send(Err(error.into()));
                    return;
                }
                self.executions.insert(
                    request.header.msg_id,
                    PendingExecution { log, reply: None, idle: false, respond: reply },
                );
            }
            Command::Request { channel, content, reply } => {
                if let Some(cause) = &self.dead {
                    let _ = reply.send(Err(KernelError::Died(cause.clone())));
                    return;
                }
                let request = Message::new(content, &self.session);
                let socket = match channel {
                    RequestChannel::Shell => &mut self.shell_tx,
                    RequestChannel::Control => &mut self.control_tx,
                };
                if let Err(error) = socket.send(&request).await {
                    let _ = reply.send(Err(error.into()));
                    return;
                }
                // Forget requests whose callers gave up waiting.
                self.requests.retain(|_, waiter| !waiter.is_closed());
                self.requests.insert(request.header.msg_id, reply);
            }
        }
    }

    fn on_reply(&mut self, message: Message) {
        let Some(parent) = message.parent_msg_id().map(str::to_owned) else {
            tracing::debug!(msg_type = message.msg_type(), "reply without parent ignored");
            return;
        };
        if let Some(waiter) = self.requests.remove(&parent) {
            let _ = waiter.send(Ok(message));
            return;
        }
        let Some(pending) = self.executions.get_mut(&parent) else {
            tracing::debug!(msg_type = message.msg_type(), "reply to an unknown request ignored");
            return;
        };
        if let Content::ExecuteReply(reply) = message.content {
            let status = match reply.status {
                crate::jupyter::message::ReplyStatus::Ok => ExecutionStatus::Ok,
                crate::jupyter::message::ReplyStatus::Error => ExecutionStatus::Error,
                crate::jupyter::message::ReplyStatus::Aborted => ExecutionStatus::Aborted,
            };
            pending.reply = Some(Reply {
                status,
                execution_count: reply.execution_count,
                user_expressions: reply.user_expressions,
            });
            self.complete_if_done(&parent);
        }
    }

    fn on_iopub(&mut self, message: Message) {
        self.iopub_seen.send_if_modified(|seen| !std::mem::replace(seen, true));
        let Some(parent) = message.parent_msg_id() else { return };
        let Some(pending) = self.executions.get_mut(parent) else {
            if !matches!(message.content, Content::Status(_) | Content::IopubWelcome) {
                tracing::debug!(msg_type = message.msg_type(), "iopub output outside any running cell");
            }
            return;
        };
        let parent = parent.to_owned();
        match message.content {
            Content::Status(status) if status.execution_state == ExecutionState::Idle => {
                pending.idle = true;
                self.complete_if_done(&parent);
            }
            content => pending.log.lock().expect("output log lock").apply(content),
        }
    }

    fn complete_if_done(&mut self, msg_id: &str) {
        let done = self.executions.get(msg_id).is_some_and(|p| p.idle && p.reply.is_some());
        if !done {
            return;
        }
        let pending = self.executions.remove(msg_id).expect("checked above");
        let Reply { status, execution_count, user_expressions } = pending.reply.expect("checked above");
        let _ = pending.respond.send(Ok(Execution {
            outputs: take_outputs(&pending.log),
            status,
            execution_count,
            user_expressions,
        }));
    }

    /// Reads what is already on its way for a short while, so output printed just before a
    /// crash is kept.
    async fn drain(
        &mut self,
        shell_rx: &mut Receiver<zeromq::DealerRecvHalf>,
        iopub: &mut Receiver<zeromq::SubSocket>,
    ) {
        let deadline = tokio::time::sleep(DRAIN_AFTER_DEATH);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                Ok(message) = iopub.recv() => self.on_iopub(message),
                Ok(message) = shell_rx.recv() => self.on_reply(message),
                else => break,
            }
        }
    }

    fn on_death(&mut self, cause: Death) {
        tracing::info!(%cause, "kernel is gone");
        for (_, pending) in self.executions.drain() {
            let execution_count = pending.reply.as_ref().and_then(|reply| reply.execution_count);
            let _ = pending.respond.send(Ok(Execution {
                outputs: take_outputs(&pending.log),
                status: ExecutionStatus::Died(cause.clone()),
                execution_count,
                user_expressions: serde_json::Map::new(),
            }));
        }
        for (_, waiter) in self.requests.drain() {
            let _ = waiter.send(Err(KernelError::Died(cause.clone())));
        }
        self.dead = Some(cause);
    }
}

/// Pings until the kernel misses [`HEARTBEAT_MISSES`] echoes in a row, then reports its death.
/// Ends quietly when the death watch is closed or already set by someone else.
async fn watch_heartbeat_until_silent(mut heartbeat: Heartbeat, death: watch::Sender<Option<Death>>) {
    let mut misses = 0;
    loop {
        tokio::select! {
            _ = death.closed() => return,
            alive = heartbeat.ping(HEARTBEAT_INTERVAL) => {
                if death.borrow().is_some() {
                    return;
                }
                if alive {
                    misses = 0;
                    tokio::time::sleep(HEARTBEAT_INTERVAL).await;
                    continue;
                }
                misses += 1;
                if misses >= HEARTBEAT_MISSES {
                    let silent_for = HEARTBEAT_INTERVAL * HEARTBEAT_MISSES;
                    death.send_replace(Some(Death::HeartbeatLost { silent_for }));
                    return;
                }
            }
        }
    }
}

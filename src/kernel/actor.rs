//! The task that owns one kernel connection, over either transport (`link.rs`: ZeroMQ
//! sockets or a Jupyter server's kernel WebSocket).
//!
//! Callers hold a cheap [`Client`] that sends [`Command`]s over a channel; the task sends requests,
//! drains iopub continuously (a slow reader makes the kernel drop messages) and routes every
//! message by `parent_header.msg_id`. An execution completes only when both its shell
//! `execute_reply` and its iopub `status: idle` have arrived: the two channels are not ordered
//! against each other. When the kernel dies (reported on the `liveness` watch by whoever watches
//! the process, heartbeat or gateway, or by the transport itself) the cause is published on the
//! client's death watch and every pending request is answered with what was captured, never left
//! hanging.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};

use std::sync::Arc;

use super::link::{KernelLink, RequestChannel};
use super::output::{Output, OutputLimits, OutputLog};
use super::{Death, Execution, ExecutionStatus, KernelError};
use crate::jupyter::message::{Channel, Content, ExecuteRequest, ExecutionState, Message};

/// How long to keep reading after a death notice, for output already on its way.
const DRAIN_AFTER_DEATH: Duration = Duration::from_millis(100);

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

/// A handle to the socket-owning task. Dropping every clone stops the task.
#[derive(Clone)]
pub(crate) struct Client {
    commands: mpsc::UnboundedSender<Command>,
    iopub_seen: watch::Receiver<bool>,
    death: watch::Receiver<Option<Death>>,
}

impl Client {
    /// Starts the task on `transport`; `liveness` says when the kernel has died (the
    /// transport may also say so itself).
    pub(crate) fn spawn(transport: impl KernelLink, liveness: watch::Receiver<Option<Death>>) -> Client {
        let (commands, command_rx) = mpsc::unbounded_channel();
        let (iopub_seen_tx, iopub_seen) = watch::channel(false);
        let (death_tx, death) = watch::channel(None);
        let actor = Actor {
            session: uuid::Uuid::new_v4().to_string(),
            transport,
            executions: HashMap::new(),
            requests: HashMap::new(),
            iopub_seen: iopub_seen_tx,
            death: death_tx,
        };
        tokio::spawn(actor.run(command_rx, liveness));
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

struct Actor<T> {
    session: String,
    transport: T,
    executions: HashMap<String, PendingExecution>,
    requests: HashMap<String, oneshot::Sender<Result<Message, KernelError>>>,
    iopub_seen: watch::Sender<bool>,
    /// `Some(cause)` once the kernel is gone; what [`Client::death`] shows.
    death: watch::Sender<Option<Death>>,
}

impl<T: KernelLink> Actor<T> {
    async fn run(
        mut self,
        mut commands: mpsc::UnboundedReceiver<Command>,
        mut liveness: watch::Receiver<Option<Death>>,
    ) {
        loop {
            let alive = self.dead().is_none();
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => self.on_command(command).await,
                    None => break,
                },
                received = self.transport.recv(), if alive => match received {
                    Ok((channel, message)) => self.on_message(channel, message),
                    Err(cause) => self.on_death(cause),
                },
                changed = liveness.changed(), if alive => {
                    let cause = match changed {
                        Ok(()) => liveness.borrow_and_update().clone(),
                        Err(_) => None,
                    };
                    // The watcher went away without a cause: the kernel's owner is shutting down.
                    let cause = cause.unwrap_or(Death::Stopped);
                    self.death.send_replace(Some(cause.clone()));
                    self.drain().await;
                    self.on_death(cause);
                }
            }
        }
        // Every handle is gone: whoever still watches sees a stopped kernel, not a live one.
        if self.dead().is_none() {
            self.death.send_replace(Some(Death::Stopped));
        }
    }

    fn dead(&self) -> Option<Death> {
        self.death.borrow().clone()
    }

    fn on_message(&mut self, channel: Channel, message: Message) {
        match channel {
            Channel::Iopub => self.on_iopub(message),
            Channel::Shell | Channel::Control => self.on_reply(message),
            // We send allow_stdin: false, so a well-behaved kernel never asks.
            Channel::Stdin | Channel::Heartbeat => {
                tracing::warn!(msg_type = message.msg_type(), ?channel, "unexpected message");
            }
        }
    }

    async fn on_command(&mut self, command: Command) {
        match command {
            Command::Execute { request, log, reply } => {
                if let Some(cause) = self.dead() {
                    let _ = reply.send(Err(KernelError::Died(cause)));
                    return;
                }
                let request = Message::new(Content::ExecuteRequest(request), &self.session);
                if let Err(error) = self.transport.send(RequestChannel::Shell, &request).await {
                    let _ = reply.send(Err(error));
                    return;
                }
                self.executions.insert(
                    request.header.msg_id,
                    PendingExecution { log, reply: None, idle: false, respond: reply },
                );
            }
            Command::Request { channel, content, reply } => {
                if let Some(cause) = self.dead() {
                    let _ = reply.send(Err(KernelError::Died(cause)));
                    return;
                }
                let request = Message::new(content, &self.session);
                if let Err(error) = self.transport.send(channel, &request).await {
                    let _ = reply.send(Err(error));
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
    async fn drain(&mut self) {
        let deadline = tokio::time::sleep(DRAIN_AFTER_DEATH);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = &mut deadline => break,
                received = self.transport.recv() => match received {
                    Ok((channel, message)) => self.on_message(channel, message),
                    Err(_) => break,
                },
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
        self.death.send_replace(Some(cause));
    }
}

//! How the actor (`actor.rs`) reaches its kernel: a [`KernelLink`] sends a request on a channel and
//! yields the next message from any channel. Two of them: [`ZmqLink`], the five ZeroMQ
//! sockets of a connection file, and [`WebSocketLink`], a Jupyter server's kernel WebSocket.
//!
//! Owns what a transport itself says about the kernel's life: a closed ZeroMQ socket says nothing
//! (liveness comes from the process or the heartbeat, `watch_heartbeat_until_silent`), while a
//! closed WebSocket, or the server's own `status: restarting` or `dead`, is the kernel's death
//! as far as we are concerned: its state is gone.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;

use super::{Death, KernelError};
use crate::jupyter::message::{Channel, Content, ExecutionState, Message};
use crate::jupyter::socket::{ClientSockets, Heartbeat, Receiver, Sender, SocketError};
use crate::jupyter::websocket::KernelWebSocket;

/// How often an attached kernel's heartbeat is checked, and how long an echo may take.
const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
/// Missed heartbeats in a row before an attached kernel is declared dead.
const HEARTBEAT_MISSES: u32 = 3;

/// Which request channel a request goes to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RequestChannel {
    Shell,
    Control,
}

/// A connection to one kernel, owned by its actor.
pub(crate) trait KernelLink: Send + 'static {
    /// Sends `message` on `channel`.
    fn send(
        &mut self,
        channel: RequestChannel,
        message: &Message,
    ) -> impl Future<Output = Result<(), KernelError>> + Send;

    /// The next message from the kernel, on any channel; `Err` once the transport knows the
    /// kernel is gone, after which it yields nothing more. Cancel-safe.
    fn recv(&mut self) -> impl Future<Output = Result<(Channel, Message), Death>> + Send;
}

/// The ZeroMQ sockets of one connection file (the heartbeat is watched apart, when needed).
pub(crate) struct ZmqLink {
    shell_tx: Sender,
    control_tx: Sender,
    shell_rx: Receiver<zeromq::DealerRecvHalf>,
    control_rx: Receiver<zeromq::DealerRecvHalf>,
    stdin_rx: Receiver<zeromq::DealerRecvHalf>,
    iopub: Receiver<zeromq::SubSocket>,
    /// Which of shell, control, stdin and iopub still deliver: a closed socket yields errors
    /// forever, so it is no longer polled.
    open: [bool; 4],
}

impl ZmqLink {
    /// The transport over `sockets`, and their heartbeat.
    pub(crate) fn new(sockets: ClientSockets) -> (ZmqLink, Heartbeat) {
        let ClientSockets { shell_tx, shell_rx, control_tx, control_rx, stdin_rx, iopub, heartbeat } =
            sockets;
        let transport =
            ZmqLink { shell_tx, control_tx, shell_rx, control_rx, stdin_rx, iopub, open: [true; 4] };
        (transport, heartbeat)
    }
}

impl KernelLink for ZmqLink {
    async fn send(&mut self, channel: RequestChannel, message: &Message) -> Result<(), KernelError> {
        let socket = match channel {
            RequestChannel::Shell => &mut self.shell_tx,
            RequestChannel::Control => &mut self.control_tx,
        };
        Ok(socket.send(message).await?)
    }

    async fn recv(&mut self) -> Result<(Channel, Message), Death> {
        loop {
            let [shell, control, stdin, iopub] = self.open;
            let (index, received): (usize, Result<Message, SocketError>) = tokio::select! {
                message = self.iopub.recv(), if iopub => (3, message),
                message = self.shell_rx.recv(), if shell => (0, message),
                message = self.control_rx.recv(), if control => (1, message),
                message = self.stdin_rx.recv(), if stdin => (2, message),
                // Every socket closed: nothing more will come (the death watch says why).
                else => std::future::pending().await,
            };
            let channel = [Channel::Shell, Channel::Control, Channel::Stdin, Channel::Iopub][index];
            match received {
                Ok(message) => return Ok((channel, message)),
                Err(error) => {
                    tracing::debug!(%error, "socket closed");
                    self.open[index] = false;
                }
            }
        }
    }
}

/// A Jupyter server's kernel WebSocket. The server keeps the kernel's ZeroMQ sockets; its own
/// status messages (no parent: `restarting` after the kernel's process died, `dead`) and the
/// socket closing (the kernel deleted, culled, or the server gone) end the kernel for us.
pub(crate) struct WebSocketLink {
    socket: KernelWebSocket,
    /// The kernel, in words, for the cause of its death: "the kernel `…` on the gateway `…`".
    kernel: String,
    closed: bool,
}

impl WebSocketLink {
    pub(crate) fn new(socket: KernelWebSocket, kernel: String) -> Self {
        WebSocketLink { socket, kernel, closed: false }
    }
}

impl KernelLink for WebSocketLink {
    async fn send(&mut self, channel: RequestChannel, message: &Message) -> Result<(), KernelError> {
        let channel = match channel {
            RequestChannel::Shell => Channel::Shell,
            RequestChannel::Control => Channel::Control,
        };
        self.socket
            .send(channel, message)
            .await
            .map_err(|error| KernelError::Died(Death::ConnectionLost { detail: error.to_string() }))
    }

    async fn recv(&mut self) -> Result<(Channel, Message), Death> {
        if self.closed {
            return std::future::pending().await;
        }
        let received = self.socket.recv().await;
        let death = match received {
            Ok((channel, message)) => {
                let Content::Status(status) = &message.content else { return Ok((channel, message)) };
                match status.execution_state {
                    ExecutionState::Restarting => Death::Remote {
                        detail: format!(
                            "died and was restarted by its server ({}), so its state is gone",
                            self.kernel
                        ),
                    },
                    ExecutionState::Dead => {
                        Death::Remote { detail: format!("is dead, says its server ({})", self.kernel) }
                    }
                    _ => return Ok((channel, message)),
                }
            }
            Err(error) => Death::ConnectionLost { detail: error.to_string() },
        };
        self.closed = true;
        Err(death)
    }
}

/// A death watch fed by pinging `heartbeat`, for a kernel whose process we cannot wait on: it
/// says the kernel died once [`HEARTBEAT_MISSES`] echoes in a row are missed.
pub(crate) fn heartbeat_watch(heartbeat: Heartbeat) -> watch::Receiver<Option<Death>> {
    let (death_tx, death) = watch::channel(None);
    tokio::spawn(watch_heartbeat_until_silent(heartbeat, death_tx));
    death
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

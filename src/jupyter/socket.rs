//! ZeroMQ sockets for the client side of the five channels, on top of the codec in `wire.rs`.
//!
//! Owns connecting (the kernel binds, we connect), the shared DEALER identity, and turning frames
//! into verified [`Message`]s. A message that fails to decode or verify is logged and dropped
//! here, never handed up. Knows nothing of executions or routing (`kernel::actor` does).
//!
//! The `zeromq` crate's DEALER and REQ do not reconnect to a restarted kernel, so a restart
//! builds a new [`ClientSockets`].

use std::time::Duration;

use bytes::Bytes;
use zeromq::{
    DealerRecvHalf, DealerSendHalf, DealerSocket, ReqSocket, Socket, SocketOptions, SocketRecv, SocketSend,
    SubSocket, ZmqMessage,
};

use super::connection::ConnectionInfo;
use super::message::{Channel, Message};
use super::wire::{self, Signer};

/// A socket could not be connected, or failed while in use.
#[derive(Debug, thiserror::Error)]
#[error("{channel:?} socket at `{endpoint}`: {source}")]
pub struct SocketError {
    /// Which channel.
    pub channel: Channel,
    /// Its endpoint.
    pub endpoint: String,
    /// The ZeroMQ error.
    #[source]
    pub source: zeromq::ZmqError,
}

/// The sending half of a DEALER channel (shell, control or stdin).
pub struct Sender {
    channel: Channel,
    endpoint: String,
    socket: DealerSendHalf,
    signer: Signer,
}

impl Sender {
    /// Signs and sends `message`.
    ///
    /// # Errors
    /// When the socket is closed.
    pub async fn send(&mut self, message: &Message) -> Result<(), SocketError> {
        let frames = wire::encode(message, &self.signer);
        let zmq = ZmqMessage::try_from(frames).expect("an encoded message has frames");
        self.socket.send(zmq).await.map_err(|source| SocketError {
            channel: self.channel,
            endpoint: self.endpoint.clone(),
            source,
        })
    }
}

/// The receiving half of a channel: yields verified messages only.
pub struct Receiver<S> {
    channel: Channel,
    endpoint: String,
    socket: S,
    signer: Signer,
}

impl<S: SocketRecv + Send> Receiver<S> {
    /// The next message that decodes and verifies; bad ones are logged and skipped.
    ///
    /// Cancel-safe: nothing is lost when the future is dropped before it completes.
    ///
    /// # Errors
    /// When the socket is closed.
    pub async fn recv(&mut self) -> Result<Message, SocketError> {
        loop {
            let frames = self.socket.recv().await.map_err(|source| SocketError {
                channel: self.channel,
                endpoint: self.endpoint.clone(),
                source,
            })?;
            match wire::decode(frames.into_vec(), &self.signer) {
                Ok(message) => return Ok(message),
                Err(error) => {
                    tracing::warn!(channel = ?self.channel, %error, "dropped a message from the kernel");
                }
            }
        }
    }
}

/// The heartbeat REQ socket: sends `ping`, expects it echoed.
pub struct Heartbeat {
    endpoint: String,
    socket: ReqSocket,
    /// A ping was sent whose echo has not been read yet. A REQ socket cannot send again until
    /// it has, so a late echo is waited for rather than a new ping sent.
    awaiting_echo: bool,
}

impl Heartbeat {
    /// Whether an echo arrives within `timeout` (of a new ping, or of one still outstanding).
    pub async fn ping(&mut self, timeout: Duration) -> bool {
        let exchange = async {
            if !self.awaiting_echo {
                self.socket.send(ZmqMessage::from(Bytes::from_static(b"ping"))).await?;
                self.awaiting_echo = true;
            }
            let echo = self.socket.recv().await;
            self.awaiting_echo = false;
            echo
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(_)) => true,
            Ok(Err(error)) => {
                tracing::debug!(endpoint = %self.endpoint, %error, "heartbeat failed");
                false
            }
            Err(_) => false,
        }
    }
}

/// All five client sockets of one kernel connection.
pub struct ClientSockets {
    /// Shell requests.
    pub shell_tx: Sender,
    /// Shell replies.
    pub shell_rx: Receiver<DealerRecvHalf>,
    /// Control requests.
    pub control_tx: Sender,
    /// Control replies.
    pub control_rx: Receiver<DealerRecvHalf>,
    /// Stdin: connected so the kernel sees the same identity; `allow_stdin` is always false.
    pub stdin_rx: Receiver<DealerRecvHalf>,
    /// IOPub, subscribed to every topic.
    pub iopub: Receiver<SubSocket>,
    /// Heartbeat.
    pub heartbeat: Heartbeat,
}

impl ClientSockets {
    /// Connects all five channels of `info`, giving shell, control and stdin one shared identity
    /// (the kernel sends `input_request` to the identity that sent the execute request).
    ///
    /// # Errors
    /// When a channel cannot be connected within `timeout`.
    pub async fn connect(info: &ConnectionInfo, timeout: Duration) -> Result<Self, SocketError> {
        let identity = zeromq::util::PeerIdentity::new();
        let signer = Signer::new(info.key.as_bytes());
        let options = || {
            let mut options = SocketOptions::default();
            options.connect_timeout(timeout);
            options
        };
        let dealer = |channel: Channel| {
            let mut options = options();
            options.peer_identity(identity.clone());
            let endpoint = info.endpoint(channel);
            async move {
                let mut socket = DealerSocket::with_options(options);
                socket.connect(&endpoint).await.map_err(|source| SocketError {
                    channel,
                    endpoint: endpoint.clone(),
                    source,
                })?;
                Ok::<_, SocketError>((channel, endpoint, socket.split()))
            }
        };
        let iopub = async {
            let endpoint = info.endpoint(Channel::Iopub);
            let error = |source| SocketError { channel: Channel::Iopub, endpoint: endpoint.clone(), source };
            let mut socket = SubSocket::with_options(options());
            socket.connect(&endpoint).await.map_err(error)?;
            socket.subscribe("").await.map_err(error)?;
            Ok::<_, SocketError>(socket)
        };
        let heartbeat = async {
            let endpoint = info.endpoint(Channel::Heartbeat);
            let mut socket = ReqSocket::with_options(options());
            socket.connect(&endpoint).await.map_err(|source| SocketError {
                channel: Channel::Heartbeat,
                endpoint: endpoint.clone(),
                source,
            })?;
            Ok::<_, SocketError>(Heartbeat { endpoint, socket, awaiting_echo: false })
        };
        let (shell, control, stdin, iopub, heartbeat) = tokio::try_join!(
            dealer(Channel::Shell),
            dealer(Channel::Control),
            dealer(Channel::Stdin),
            iopub,
            heartbeat
        )?;

        let split = |(channel, endpoint, (tx, rx)): (Channel, String, (DealerSendHalf, DealerRecvHalf))| {
            (
                Sender { channel, endpoint: endpoint.clone(), socket: tx, signer: signer.clone() },
                Receiver { channel, endpoint, socket: rx, signer: signer.clone() },
            )
        };
        let (shell_tx, shell_rx) = split(shell);
        let (control_tx, control_rx) = split(control);
        let (_stdin_tx, stdin_rx) = split(stdin);
        Ok(ClientSockets {
            shell_tx,
            shell_rx,
            control_tx,
            control_rx,
            stdin_rx,
            iopub: Receiver {
                channel: Channel::Iopub,
                endpoint: info.endpoint(Channel::Iopub),
                socket: iopub,
                signer: signer.clone(),
            },
            heartbeat,
        })
    }
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jupyter::message::{Content, Status};
    use zeromq::PubSocket;

    /// A publisher in the role of a kernel's iopub, and our receiver subscribed to it.
    async fn iopub_pair(key: &[u8]) -> (PubSocket, Receiver<SubSocket>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let endpoint = format!("ipc://{}/iopub", dir.path().display());
        let mut publisher = PubSocket::new();
        publisher.bind(&endpoint).await.unwrap();
        let mut socket = SubSocket::new();
        socket.connect(&endpoint).await.unwrap();
        socket.subscribe("").await.unwrap();
        let receiver = Receiver { channel: Channel::Iopub, endpoint, socket, signer: Signer::new(key) };
        (publisher, receiver, dir)
    }

    fn status(state: &str) -> Message {
        let content = format!(r#"{{"execution_state": "{state}"}}"#);
        Message::new(Content::from_type_and_json("status", content.as_bytes()).unwrap(), "kernel")
    }

    #[tokio::test]
    async fn forged_unsigned_and_malformed_messages_are_dropped() {
        let key = b"the-real-key";
        let (mut publisher, mut receiver, _dir) = iopub_pair(key).await;
        let genuine = status("idle");
        let frames =
            |message: &Message, signer: &Signer| ZmqMessage::try_from(wire::encode(message, signer)).unwrap();
        // The SUB side subscribes asynchronously: publish until the first genuine one arrives.
        let first = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                publisher.send(frames(&status("starting"), &Signer::new(key))).await.unwrap();
                if let Ok(Ok(message)) =
                    tokio::time::timeout(Duration::from_millis(50), receiver.recv()).await
                {
                    return message;
                }
            }
        })
        .await
        .unwrap();
        assert!(matches!(first.content, Content::Status(Status { .. })));
        while tokio::time::timeout(Duration::from_millis(100), receiver.recv()).await.is_ok() {}

        publisher.send(frames(&status("busy"), &Signer::new(b"a forger's key"))).await.unwrap();
        publisher.send(frames(&status("busy"), &Signer::new(b""))).await.unwrap();
        publisher.send(ZmqMessage::from(Bytes::from_static(b"not a jupyter message"))).await.unwrap();
        publisher.send(frames(&genuine, &Signer::new(key))).await.unwrap();

        let received = tokio::time::timeout(Duration::from_secs(10), receiver.recv()).await.unwrap().unwrap();
        assert_eq!(received.header.msg_id, genuine.header.msg_id, "a bad message got through");
    }
}

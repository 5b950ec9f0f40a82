//! A Jupyter server's kernel WebSocket (`/api/kernels/<id>/channels`), client side, on top of the
//! codec in `json_wire.rs`: connecting (with the server's token, TLS from the system's roots),
//! sending a message on a channel, and reading verified-by-the-server messages.
//!
//! A frame that does not decode is logged and dropped here, never handed up. Knows nothing of
//! executions or routing (`kernel::actor` does) nor of what a closed socket means for a kernel
//! (`kernel::transport` does).

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message as Frame};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use super::json_wire;
use super::message::{Channel, Message};

/// The WebSocket could not be opened, or failed while in use.
#[derive(Debug, thiserror::Error)]
#[error("the kernel WebSocket `{url}` {detail}")]
pub struct WebSocketError {
    /// The socket's URL (it carries no token: the token goes in a header).
    pub url: String,
    /// What happened, in words: what the server answered, or why it could not be reached.
    pub detail: String,
}

/// The TLS configuration of `https://` and `wss://` connections: the platform's verifier and the
/// system's roots (`SSL_CERT_FILE` is honoured), aws-lc-rs as the crypto provider.
///
/// # Errors
/// When the system's roots cannot be loaded.
pub fn system_tls_config() -> Result<rustls::ClientConfig, rustls::Error> {
    use rustls_platform_verifier::BuilderVerifierExt;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_platform_verifier()?
        .with_no_client_auth())
}

/// One open kernel WebSocket.
pub struct KernelWebSocket {
    url: String,
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl KernelWebSocket {
    /// Opens `url` (`ws://` or `wss://`), sending `token` as `Authorization: token …`.
    ///
    /// # Errors
    /// When the server cannot be reached within `timeout`, refuses the upgrade (its status is
    /// named), or TLS fails.
    pub async fn connect(
        url: &str,
        token: Option<&str>,
        tls: Arc<rustls::ClientConfig>,
        timeout: Duration,
    ) -> Result<KernelWebSocket, WebSocketError> {
        let failed = |detail: String| WebSocketError { url: url.to_owned(), detail };
        let mut request =
            url.into_client_request().map_err(|error| failed(format!("is not usable: {error}")))?;
        if let Some(token) = token {
            let value = format!("token {token}")
                .parse()
                .map_err(|_| failed("cannot carry the token (it must be visible ASCII)".into()))?;
            request.headers_mut().insert("Authorization", value);
        }
        let connect = tokio_tungstenite::connect_async_tls_with_config(
            request,
            None,
            true,
            Some(Connector::Rustls(tls)),
        );
        let (socket, _) = match tokio::time::timeout(timeout, connect).await {
            Err(_) => return Err(failed(format!("did not open within {}s", timeout.as_secs()))),
            Ok(Err(tungstenite::Error::Http(response))) => {
                let body = response.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default();
                return Err(failed(format!("was refused: {} {}", response.status(), body.trim())));
            }
            Ok(Err(error)) => return Err(failed(format!("could not be opened: {error}"))),
            Ok(Ok(opened)) => opened,
        };
        Ok(KernelWebSocket { url: url.to_owned(), socket })
    }

    /// Asks the kernel to acknowledge what it receives at once. Jupyter servers (Tornado) leave
    /// Nagle's algorithm on for their WebSockets, so each small message after the first waits
    /// for our acknowledgement of the one before, which Linux delays by up to 40 ms: a reply of
    /// five messages would take that long. Linux clears the flag again by itself, so it is set
    /// after each frame read.
    fn ack_quickly(&self) {
        let tcp = match self.socket.get_ref() {
            MaybeTlsStream::Plain(tcp) => tcp,
            MaybeTlsStream::Rustls(tls) => tls.get_ref().0,
            _ => return,
        };
        if let Err(error) = socket2::SockRef::from(tcp).set_tcp_quickack(true) {
            tracing::debug!(%error, "cannot set TCP_QUICKACK");
        }
    }

    /// Sends `message` on `channel`.
    ///
    /// # Errors
    /// When the socket is closed.
    pub async fn send(&mut self, channel: Channel, message: &Message) -> Result<(), WebSocketError> {
        let text = json_wire::encode(message, channel);
        self.socket
            .send(Frame::text(text))
            .await
            .map_err(|error| WebSocketError { url: self.url.clone(), detail: format!("failed: {error}") })
    }

    /// The next message; frames that are not messages are logged and skipped.
    ///
    /// Cancel-safe: nothing is lost when the future is dropped before it completes.
    ///
    /// # Errors
    /// When the socket closes (the error says how: the close frame's code and reason).
    pub async fn recv(&mut self) -> Result<(Channel, Message), WebSocketError> {
        let closed = |detail: String| WebSocketError { url: self.url.clone(), detail };
        loop {
            let frame = self.socket.next().await;
            self.ack_quickly();
            let decoded = match frame {
                None => return Err(closed("closed".into())),
                Some(Err(error)) => return Err(closed(format!("failed: {error}"))),
                Some(Ok(Frame::Close(frame))) => {
                    let how = frame.map_or_else(String::new, |f| format!(" ({}: {})", f.code, f.reason));
                    return Err(closed(format!("was closed by the server{how}")));
                }
                Some(Ok(Frame::Text(text))) => json_wire::decode(text.as_bytes()),
                Some(Ok(Frame::Binary(bytes))) => json_wire::decode_binary(&bytes),
                Some(Ok(_)) => continue, // pings are answered by tungstenite itself
            };
            match decoded {
                Ok(message) => return Ok(message),
                Err(error) => {
                    tracing::warn!(url = %self.url, %error, "dropped a frame from the kernel WebSocket")
                }
            }
        }
    }
}

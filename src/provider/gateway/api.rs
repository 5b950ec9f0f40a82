//! The REST side of a Jupyter server's kernels API (Enterprise Gateway, Kernel Gateway, Jupyter
//! Server, a JupyterHub single-user server), and its kernel WebSocket: start, interrupt, delete,
//! look up a kernel, open its channels.
//!
//! Owns the HTTP client (rustls, the system's roots, for `https://` and `wss://`), the token
//! header, the time limits of each request, and turning every failure into a
//! [`KernelError::Gateway`] that names the gateway, the request, what it answered and what to do.

use std::sync::Arc;
use std::time::Duration;

use crate::jupyter::websocket::{KernelWebSocket, system_tls_config};
use crate::kernel::KernelError;
use reqwest::{Method, StatusCode};

/// How long connecting to the gateway may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a request other than a start may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long starting a kernel may take (a gateway on Kubernetes may first pull an image).
pub(super) const START_TIMEOUT: Duration = Duration::from_secs(180);

/// One gateway's API, with or without a token; clones share the HTTP client. Its `Debug`
/// never shows the token.
#[derive(Clone)]
pub(super) struct GatewayApi {
    /// The base URL, without a trailing `/`.
    url: String,
    token: Option<String>,
    /// Why no token is sent, when none is (for the error a refusal gets).
    no_token_because: &'static str,
    http: reqwest::Client,
    tls: Arc<rustls::ClientConfig>,
}

impl std::fmt::Debug for GatewayApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayApi").field("url", &self.url).field("token", &self.token.is_some()).finish()
    }
}

/// What the gateway says about one kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum KernelState {
    /// It has the kernel, in this `execution_state` (`idle`, `busy`, `dead`, ...).
    Known(String),
    /// It does not have it (deleted, culled).
    Unknown,
}

#[derive(serde::Deserialize)]
struct KernelModel {
    id: String,
    #[serde(default)]
    execution_state: String,
}

impl GatewayApi {
    /// The API at `url` (a base URL, `http://` or `https://`), sending `token` when given.
    /// `no_token_because` says why there is none (for the error a refusal gets).
    ///
    /// # Errors
    /// When the TLS configuration cannot be built from the system's roots.
    pub(super) fn new(
        url: &str,
        token: Option<String>,
        no_token_because: &'static str,
    ) -> Result<GatewayApi, KernelError> {
        let url = url.trim_end_matches('/').to_owned();
        let failed = |answer: String| KernelError::Gateway { url: url.clone(), answer };
        let tls = system_tls_config()
            .map_err(|error| failed(format!("cannot be reached: no TLS configuration ({error})")))?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls.clone())
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .map_err(|error| failed(format!("cannot be reached: no HTTP client ({})", chain(&error))))?;
        Ok(GatewayApi { url, token, no_token_because, http, tls: Arc::new(tls) })
    }

    /// The base URL.
    pub(super) fn url(&self) -> &str {
        &self.url
    }

    /// Starts a kernel of the kernelspec `name`; its id.
    ///
    /// # Errors
    /// When the gateway cannot be reached, refuses the token, lacks the kernelspec or fails.
    pub(super) async fn start_kernel(&self, name: &str) -> Result<String, KernelError> {
        let body = serde_json::json!({ "name": name });
        let response = self.call(Method::POST, "/api/kernels", Some(body), START_TIMEOUT).await?;
        let model: KernelModel = response.json().await.map_err(|error| {
            self.failed(&Method::POST, "/api/kernels", format!("answered with no kernel ({})", chain(&error)))
        })?;
        Ok(model.id)
    }

    /// Interrupts kernel `id` (a `KeyboardInterrupt` in its running code).
    ///
    /// # Errors
    /// As [`GatewayApi::start_kernel`], or when the gateway does not have the kernel.
    pub(super) async fn interrupt(&self, id: &str) -> Result<(), KernelError> {
        let path = format!("/api/kernels/{id}/interrupt");
        self.call(Method::POST, &path, None, REQUEST_TIMEOUT).await.map(drop)
    }

    /// Deletes kernel `id` (its process stops, its WebSocket closes); one the gateway no longer
    /// has is fine.
    ///
    /// # Errors
    /// As [`GatewayApi::start_kernel`].
    pub(super) async fn delete(&self, id: &str) -> Result<(), KernelError> {
        let path = format!("/api/kernels/{id}");
        let Err(error) = self.call(Method::DELETE, &path, None, REQUEST_TIMEOUT).await else { return Ok(()) };
        match self.state(id).await {
            Ok(KernelState::Unknown) => Ok(()),
            _ => Err(error),
        }
    }

    /// What the gateway says of kernel `id`.
    ///
    /// # Errors
    /// When the gateway cannot be reached or fails (a kernel it does not have is no error).
    pub(super) async fn state(&self, id: &str) -> Result<KernelState, KernelError> {
        let path = format!("/api/kernels/{id}");
        let response = self.request(Method::GET, &path, None, REQUEST_TIMEOUT).await?;
        if response.status() == StatusCode::NOT_FOUND {
            return Ok(KernelState::Unknown);
        }
        let response = self.check(&Method::GET, &path, response).await?;
        let model: KernelModel = response.json().await.map_err(|error| {
            self.failed(&Method::GET, &path, format!("answered with no kernel ({})", chain(&error)))
        })?;
        Ok(KernelState::Known(model.execution_state))
    }

    /// Opens the channels WebSocket of kernel `id`.
    ///
    /// # Errors
    /// When it cannot be opened; the error names the socket and what the gateway answered.
    pub(super) async fn channels(&self, id: &str) -> Result<KernelWebSocket, KernelError> {
        let base = match self.url.split_once("://") {
            Some(("https", rest)) => format!("wss://{rest}"),
            Some((_, rest)) => format!("ws://{rest}"),
            None => self.url.clone(),
        };
        let url = format!("{base}/api/kernels/{id}/channels");
        KernelWebSocket::connect(&url, self.token.as_deref(), self.tls.clone(), REQUEST_TIMEOUT)
            .await
            .map_err(|error| KernelError::Gateway { url: self.url.clone(), answer: error.to_string() })
    }

    /// Sends a request and checks that it succeeded.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
        timeout: Duration,
    ) -> Result<reqwest::Response, KernelError> {
        let response = self.request(method.clone(), path, body, timeout).await?;
        self.check(&method, path, response).await
    }

    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
        timeout: Duration,
    ) -> Result<reqwest::Response, KernelError> {
        let mut request = self.http.request(method.clone(), format!("{}{path}", self.url)).timeout(timeout);
        if let Some(token) = &self.token {
            request = request.header("Authorization", format!("token {token}"));
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.map_err(|error| {
            let why = if error.is_timeout() {
                format!("did not answer within {}s", timeout.as_secs())
            } else {
                format!("could not be reached ({})", chain(&error))
            };
            self.failed(
                &method,
                path,
                format!(
                    "{why}; check that it runs and that --kernel-gateway (MCP_PYREPL_KERNEL_GATEWAY) names it"
                ),
            )
        })
    }

    /// `response` when it is a success; otherwise an error with its status and message.
    async fn check(
        &self,
        method: &Method,
        path: &str,
        response: reqwest::Response,
    ) -> Result<reqwest::Response, KernelError> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let message = error_message(&response.text().await.unwrap_or_default());
        let advice = match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => match &self.token {
                Some(_) => {
                    "; the token was refused: check --gateway-token (MCP_PYREPL_GATEWAY_TOKEN)".to_owned()
                }
                None => format!("; no token was sent ({})", self.no_token_because),
            },
            _ => String::new(),
        };
        Err(self.failed(method, path, format!("answered {status}{message}{advice}")))
    }

    fn failed(&self, method: &Method, path: &str, what: String) -> KernelError {
        KernelError::Gateway {
            url: self.url.clone(),
            answer: format!("was asked `{method} {path}` and {what}"),
        }
    }
}

/// The gist of an error body from a Jupyter server: its `message` (and `reason`), or the last
/// line of its traceback (`NoSuchKernel: No such kernel named …`), as `: …`; empty for none.
fn error_message(body: &str) -> String {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(body) else {
        let body = body.trim();
        return if body.is_empty() {
            String::new()
        } else {
            format!(": {}", crate::util::shorten(body, 300))
        };
    };
    let field =
        |name: &str| value.get(name).and_then(|v| v.as_str()).map(str::trim).filter(|s| !s.is_empty());
    let last_traceback_line =
        field("traceback").and_then(|tb| tb.lines().rev().find(|l| !l.trim().is_empty()));
    let text = match (field("message"), last_traceback_line) {
        (Some("Unknown server error") | None, Some(line)) => line.trim().to_owned(),
        (Some(message), _) => message.to_owned(),
        (None, None) => return field("reason").map_or_else(String::new, |reason| format!(": {reason}")),
    };
    format!(": {}", crate::util::shorten(&text, 300))
}

/// An error and its causes, `: `-separated (reqwest's own text leaves the cause out).
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_are_reduced_to_what_the_server_said() {
        let traceback = serde_json::json!({
            "reason": "Internal Server Error",
            "message": "Unknown server error",
            "traceback": "Traceback (most recent call last):\n  File \"x\"\njupyter_client.kernelspec.NoSuchKernel: No such kernel named nope\n",
        });
        assert_eq!(
            error_message(&traceback.to_string()),
            ": jupyter_client.kernelspec.NoSuchKernel: No such kernel named nope"
        );
        let plain = serde_json::json!({ "reason": "Not Found", "message": "Kernel does not exist: k1" });
        assert_eq!(error_message(&plain.to_string()), ": Kernel does not exist: k1");
        assert_eq!(error_message(r#"{"reason": "Unauthorized", "message": ""}"#), ": Unauthorized");
        assert_eq!(error_message(""), "");
        assert_eq!(error_message("<html>bad gateway</html>"), ": <html>bad gateway</html>");
    }
}

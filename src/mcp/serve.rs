//! Running the MCP server on a transport until the client leaves or shutdown is asked for: stdio
//! (one client, which started us) or streamable HTTP (any number of clients, all on one
//! [`SessionManager`], so a client that reconnects finds its sessions by their ids).
//!
//! Owns the `serve` command's flags, the rule of who needs a bearer token (anything off loopback,
//! and loopback too while sandboxed kernels run: they share the machine's loopback, so without
//! one a cell could call the tools), the token check, and the order of shutdown: the transport
//! first, then every kernel, each step bounded in time, and what serving can fail with
//! ([`ServeError`]). The tools themselves live in `tools.rs`.

use std::future::{Future, IntoFuture};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::ServiceExt;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use super::stdio::LineTransport;
use super::tools::PyReplServer;
use crate::config::{InRange, Settings};
use crate::sandbox::{Sandbox, SandboxError};
use crate::session::manager::SessionManager;

/// The port `--transport http` listens on unless told otherwise.
pub const DEFAULT_PORT: u16 = 8484;

/// The path of the MCP endpoint on the HTTP server.
pub const HTTP_PATH: &str = "/mcp";

/// How long open HTTP connections (a streaming reply, a client's event stream) get to finish
/// once shutdown is asked for; they are dropped after it.
const HTTP_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// How long stopping every kernel may take on shutdown. A kernel stops within about ten seconds
/// (`shutdown_request`, then SIGTERM, then SIGKILL), but a session busy with a cell is only
/// reached when the cell ends; kernels still running then are killed as the process exits.
const KERNEL_STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Flags of `mcp-pyrepl serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// How MCP clients reach the server: `stdio` (the client starts the server and talks over
    /// stdin/stdout) or `http` (streamable HTTP at `http://<host>:<port>/mcp`)
    #[arg(long, value_enum, env = "MCP_PYREPL_TRANSPORT", default_value_t = ClientTransport::Stdio)]
    pub transport: ClientTransport,

    /// Address `--transport http` listens on; anything but a loopback address needs `--token`
    #[arg(long, env = "MCP_PYREPL_HOST", default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub host: IpAddr,

    /// Port `--transport http` listens on (0 picks a free one)
    #[arg(
        long,
        env = "MCP_PYREPL_PORT",
        default_value_t = DEFAULT_PORT,
        value_parser = InRange::new(0..=u16::MAX)
    )]
    pub port: u16,

    /// Bearer token every HTTP request must carry (`Authorization: Bearer <token>`, or
    /// `?token=<token>` in the URL); required when `--host` is not a loopback address [default:
    /// none; on loopback while kernels are sandboxed, one is made and printed on stderr]
    #[arg(long, env = "MCP_PYREPL_TOKEN", hide_env_values = true)]
    pub token: Option<Token>,
}

impl ServeArgs {
    /// The flags as the environment and the defaults set them: what `mcp-pyrepl` without a
    /// command serves with.
    ///
    /// # Errors
    /// When an `MCP_PYREPL_*` variable of these flags holds an invalid value.
    pub fn from_env() -> Result<Self, clap::Error> {
        #[derive(clap::Parser)]
        struct Defaults {
            #[command(flatten)]
            args: ServeArgs,
        }
        <Defaults as clap::Parser>::try_parse_from(["mcp-pyrepl"]).map(|defaults| defaults.args)
    }
}

/// Result of serving.
pub type Result<T, E = ServeError> = std::result::Result<T, E>;

/// Why the server could not start, or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// A listener other machines can reach was asked for without a token.
    #[error(
        "refusing to serve on `{host}` without a bearer token: other machines can reach that \
         address and run code through it; set `--token` (or `MCP_PYREPL_TOKEN`), or listen on \
         `127.0.0.1`"
    )]
    TokenRequired {
        /// The address asked for.
        host: IpAddr,
    },
    /// No random token could be made for a loopback listener.
    #[error(
        "cannot make a token for the HTTP server (sandboxed kernels share the loopback, so one is \
         required): the system's random source failed; set `MCP_PYREPL_TOKEN`"
    )]
    Random {
        /// What the random source said.
        #[source]
        source: getrandom::Error,
    },
    /// The address could not be bound.
    #[error("cannot listen on `{address}`")]
    Listen {
        /// The address asked for.
        address: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The sandbox asked for cannot be enforced.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// The client that started us did not complete the MCP handshake over stdio.
    #[error(
        "the MCP handshake over stdio failed: an MCP client starts this server and sends \
         `initialize` on its stdin"
    )]
    Handshake {
        /// What went wrong.
        #[source]
        source: Box<rmcp::service::ServerInitializeError>,
    },
    /// The HTTP server failed while serving or stopping.
    #[error("the HTTP server failed")]
    Http {
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// How MCP clients reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClientTransport {
    /// JSON-RPC over stdin/stdout, for a client that starts the server.
    Stdio,
    /// Streamable HTTP, for clients that connect to a running server.
    Http,
}

/// A bearer token: one or more visible ASCII characters, so that it fits in an HTTP header as
/// is. Its `Debug` form does not show it.
#[derive(Clone)]
pub struct Token(String);

impl std::str::FromStr for Token {
    type Err = String;

    fn from_str(token: &str) -> Result<Self, Self::Err> {
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("a token is one or more visible ASCII characters (no spaces)".to_owned());
        }
        Ok(Token(token.to_owned()))
    }
}

impl Token {
    /// Bytes of randomness in a token the server makes itself (256 bits).
    const GENERATED_BYTES: usize = 32;

    /// A fresh random token: [`Self::GENERATED_BYTES`] from the system's random source, in hex.
    fn generate() -> Result<Self> {
        let mut bytes = [0; Self::GENERATED_BYTES];
        getrandom::fill(&mut bytes).map_err(|source| ServeError::Random { source })?;
        Ok(Token(hex::encode(bytes)))
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<hidden>)")
    }
}

/// Serves MCP on the transport `args` names until the client leaves (stdio) or `shutdown`
/// completes, then stops every kernel. Nothing is started when the flags are refused.
///
/// # Errors
/// When a non-loopback address is asked for without a token, the address cannot be bound, or
/// the stdio handshake fails.
pub async fn run(mut settings: Settings, args: &ServeArgs, shutdown: impl Future<Output = ()>) -> Result<()> {
    // Decided once, before anything is served: every kernel of this server gets the same.
    settings.limits.sandbox = Sandbox::resolve(&settings.sandbox.settings()).await?;
    // Bind first: a refused address must not leave spare sessions being built.
    let endpoint = match args.transport {
        ClientTransport::Stdio => None,
        ClientTransport::Http => Some(HttpEndpoint::bind(args, settings.limits.sandbox.is_enforced()).await?),
    };
    let manager = Arc::new(SessionManager::new(settings).await);
    manager.start_background();
    match endpoint {
        None => serve_stdio(manager, shutdown).await,
        Some(endpoint) => serve_http(manager, endpoint, shutdown).await,
    }
}

/// Serves MCP over stdin/stdout until the client closes stdin or `shutdown` completes, then
/// stops every kernel. Stdout carries only JSON-RPC: logs go to stderr, kernels write to their
/// own log files. Every line that is no message is answered (`stdio.rs`), and a line may hold
/// an upload of `--max-upload-bytes` in base64.
///
/// # Errors
/// When the MCP handshake fails.
pub async fn serve_stdio(manager: Arc<SessionManager>, shutdown: impl Future<Output = ()>) -> Result<()> {
    let server = PyReplServer::new(manager.clone());
    let (stdin, stdout) = rmcp::transport::io::stdio_pipes();
    let max_line = super::stdio::max_line_bytes(manager.limits().max_upload_bytes);
    let running = server
        .serve(LineTransport::new(stdin, stdout, max_line))
        .await
        .map_err(|source| ServeError::Handshake { source: Box::new(source) })?;
    let cancel = running.cancellation_token();
    tokio::select! {
        quit = running.waiting() => tracing::info!(?quit, "client left"),
        () = shutdown => {
            tracing::info!("shutting down");
            cancel.cancel();
        }
    }
    stop_kernels(&manager).await;
    Ok(())
}

/// A bound HTTP listener and the rules its requests are held to.
#[derive(Debug)]
pub struct HttpEndpoint {
    listener: tokio::net::TcpListener,
    address: SocketAddr,
    token: Option<Token>,
    /// Whether the token was made by us (and must be told to the user).
    generated: bool,
    loopback: bool,
}

impl HttpEndpoint {
    /// Binds `args.host:args.port`, after checking that a listener reachable from other
    /// machines has a token. A loopback listener without one gets a token made for this run
    /// when `kernels_confined`: a sandboxed kernel may still connect to the machine's loopback
    /// (`files` leaves the network alone), and a cell must not call the tools. Telling the
    /// server's clients from its kernels by the peer of each connection is no guard: a kernel
    /// reaches the port through any local proxy or forwarder as well.
    ///
    /// # Errors
    /// When `args.host` is not a loopback address and there is no token, no token could be
    /// made, or the address cannot be bound.
    pub async fn bind(args: &ServeArgs, kernels_confined: bool) -> Result<Self> {
        let loopback = args.host.to_canonical().is_loopback();
        let (token, generated) = match &args.token {
            Some(token) => (Some(token.clone()), false),
            None if !loopback => return Err(ServeError::TokenRequired { host: args.host }),
            None if kernels_confined => (Some(Token::generate()?), true),
            None => (None, false),
        };
        let address = SocketAddr::new(args.host, args.port);
        let cannot_listen = |source| ServeError::Listen { address, source };
        let listener = tokio::net::TcpListener::bind(address).await.map_err(cannot_listen)?;
        let address = listener.local_addr().map_err(cannot_listen)?;
        Ok(HttpEndpoint { listener, address, token, generated, loopback })
    }

    /// The address actually bound (port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }
}

/// Serves MCP over streamable HTTP at [`HTTP_PATH`] until `shutdown` completes: stops accepting,
/// ends the MCP transport sessions, gives open connections five seconds to finish, then stops
/// every kernel.
///
/// Every transport session (every client, every reconnection) gets a server over the same
/// `manager`: REPL sessions are named by the tools' `session_id`, never by the transport's
/// session. With a token, a request with neither `Authorization: Bearer <token>` nor
/// `?token=<token>` gets 401. A
/// loopback listener also refuses `Host` headers other than loopback names (DNS rebinding); one
/// reachable from other machines accepts any `Host`, its token being the guard.
///
/// # Errors
/// When the HTTP server fails.
pub async fn serve_http(
    manager: Arc<SessionManager>,
    endpoint: HttpEndpoint,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let stop = CancellationToken::new();
    let mut config = StreamableHttpServerConfig::default().with_cancellation_token(stop.child_token());
    if !endpoint.loopback {
        config = config.disable_allowed_hosts();
    }
    let server = PyReplServer::new(manager.clone());
    let service = StreamableHttpService::new(
        move || Ok(server.clone()),
        Arc::new(LocalSessionManager::default()),
        config,
    );
    let mut router = axum::Router::new().nest_service(HTTP_PATH, service);
    if let Some(token) = &endpoint.token {
        router = router
            .layer(axum::middleware::from_fn_with_state(Arc::new(RequiredToken::new(token)), require_token));
    }

    let generated = endpoint.token.as_ref().filter(|_| endpoint.generated);
    announce(&format!("http://{}{HTTP_PATH}", endpoint.local_addr()), endpoint.token.is_some(), generated);
    let serving = axum::serve(endpoint.listener, router)
        .with_graceful_shutdown(stop.clone().cancelled_owned())
        .into_future();
    let mut serving = std::pin::pin!(serving);
    let served = tokio::select! {
        served = &mut serving => served,
        () = shutdown => {
            tracing::info!("shutting down");
            stop.cancel();
            match tokio::time::timeout(HTTP_DRAIN_TIMEOUT, serving).await {
                Ok(served) => served,
                Err(_) => {
                    tracing::info!(timeout = ?HTTP_DRAIN_TIMEOUT, "closing HTTP connections still open");
                    Ok(())
                }
            }
        }
    };
    stop_kernels(&manager).await;
    served.map_err(|source| ServeError::Http { source })
}

/// Tells where the server listens: a tracing event at info, and one line on stderr when that
/// event would not show (the default filter is `warn`), so a person starting it sees the URL.
/// A token made for this run is written to stderr whatever the filter (never to the tracing
/// event), as the header and as a URL carrying it, for clients that take only a URL.
fn announce(url: &str, token: bool, generated: Option<&Token>) {
    let say = |lines: String| std::io::Write::write_all(&mut std::io::stderr(), lines.as_bytes());
    // Before the event, so that whoever waits for it finds the token written.
    if let Some(Token(token)) = generated {
        let _ = say(format!(
            "mcp-pyrepl: sandboxed kernels share this machine's loopback, so requests need this run's \
             token (set MCP_PYREPL_TOKEN to choose one); clients send\n\
             mcp-pyrepl:     Authorization: Bearer {token}\n\
             mcp-pyrepl: or use the URL\n\
             mcp-pyrepl:     {url}?token={token}\n"
        ));
    }
    tracing::info!(%url, token, "serving MCP over streamable HTTP");
    if !tracing::enabled!(tracing::Level::INFO) {
        let auth = if token { " (bearer token required)" } else { "" };
        let _ = say(format!("mcp-pyrepl: serving MCP over streamable HTTP at {url}{auth}\n"));
    }
}

/// Stops every kernel, giving up after [`KERNEL_STOP_TIMEOUT`].
async fn stop_kernels(manager: &SessionManager) {
    if tokio::time::timeout(KERNEL_STOP_TIMEOUT, manager.shutdown()).await.is_err() {
        tracing::warn!(
            timeout = ?KERNEL_STOP_TIMEOUT,
            "kernels still stopping; the rest are killed as the server exits"
        );
    }
}

/// The token requests must present, kept as its SHA-256 digest: comparing digests in constant
/// time reveals neither the content nor the length of the token.
struct RequiredToken([u8; 32]);

impl RequiredToken {
    fn new(token: &Token) -> Self {
        RequiredToken(Sha256::digest(token.0.as_bytes()).into())
    }

    /// Whether `headers` carry `Authorization: Bearer <the token>` (the scheme is
    /// case-insensitive, RFC 9110 §11.1), or else `query` has `token=<the token>` (compared as
    /// sent, not percent-decoded).
    fn admits(&self, headers: &HeaderMap, query: Option<&str>) -> bool {
        let presented = match headers.get(AUTHORIZATION) {
            Some(value) => bearer(value.as_bytes()),
            None => query
                .and_then(|query| query.split('&').find_map(|pair| pair.strip_prefix("token=")))
                .map(str::as_bytes),
        };
        presented.is_some_and(|presented| Sha256::digest(presented).as_slice().ct_eq(&self.0).into())
    }
}

/// The credentials of a `Bearer` authorization value.
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, credentials) = value.split_at_checked(b"Bearer ".len())?;
    scheme.eq_ignore_ascii_case(b"Bearer ").then(|| credentials.trim_ascii())
}

/// Passes requests that carry the token on, and answers the others 401.
async fn require_token(State(token): State<Arc<RequiredToken>>, request: Request, next: Next) -> Response {
    if token.admits(request.headers(), request.uri().query()) {
        return next.run(request).await;
    }
    tracing::info!(method = %request.method(), path = request.uri().path(), "refused a request without the bearer token");
    (
        StatusCode::UNAUTHORIZED,
        [(WWW_AUTHENTICATE, "Bearer realm=\"mcp-pyrepl\"")],
        "Unauthorized: send `Authorization: Bearer <token>` (or `?token=<token>` in the URL) with \
         the server's token: `--token`, `MCP_PYREPL_TOKEN`, or the one it printed on stderr\n",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(authorization: Option<&'static str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(value) = authorization {
            headers.insert(AUTHORIZATION, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn only_the_exact_bearer_token_is_admitted() {
        let required = RequiredToken::new(&"s3cret".parse().unwrap());
        assert!(required.admits(&headers(Some("Bearer s3cret")), None));
        assert!(required.admits(&headers(Some("bearer s3cret")), None));
        assert!(required.admits(&headers(Some("BEARER  s3cret ")), None));
        assert!(required.admits(&headers(None), Some("token=s3cret")));
        assert!(required.admits(&headers(None), Some("a=b&token=s3cret")));
        for query in ["token=s3cre", "token=s3cret2", "token=", "xtoken=s3cret", "s3cret"] {
            assert!(!required.admits(&headers(None), Some(query)), "{query:?} was admitted");
        }
        // A wrong header is not rescued by a right query.
        assert!(!required.admits(&headers(Some("Bearer nope")), Some("token=s3cret")));
        for refused in [
            None,
            Some(""),
            Some("Bearer"),
            Some("Bearer "),
            Some("Bearer s3cre"),
            Some("Bearer s3cret2"),
            Some("Basic s3cret"),
            Some("Bearers3cret"),
            Some("s3cret"),
        ] {
            assert!(!required.admits(&headers(refused), None), "{refused:?} was admitted");
        }
    }

    #[test]
    fn tokens_are_visible_ascii_and_never_shown() {
        assert!("".parse::<Token>().is_err());
        assert!("two words".parse::<Token>().is_err());
        assert!("tab\there".parse::<Token>().is_err());
        assert!("é".parse::<Token>().is_err());
        let token: Token = "abc-DEF_123.~+/=".parse().unwrap();
        assert_eq!(format!("{token:?}"), "Token(<hidden>)");
    }

    #[test]
    fn only_loopback_addresses_go_without_a_token() {
        let args = |host: &str, token: Option<&str>| ServeArgs {
            transport: ClientTransport::Http,
            host: host.parse().unwrap(),
            port: 0,
            token: token.map(|t| t.parse().unwrap()),
        };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            for host in ["127.0.0.1", "::1", "::ffff:127.0.0.1"] {
                for confined in [false, true] {
                    // `::1` may be missing on a machine without IPv6; the rule passed if binding was tried.
                    match HttpEndpoint::bind(&args(host, None), confined).await {
                        Ok(endpoint) => {
                            assert_eq!(endpoint.token.is_some(), confined, "{host}");
                            assert_eq!(endpoint.generated, confined, "{host}");
                        }
                        Err(error) => {
                            assert!(error.to_string().starts_with("cannot listen"), "{host}: {error:#}")
                        }
                    }
                }
            }
            for host in ["0.0.0.0", "::", "192.0.2.1"] {
                for confined in [false, true] {
                    let error =
                        HttpEndpoint::bind(&args(host, None), confined).await.unwrap_err().to_string();
                    assert!(error.contains("without a bearer token") && error.contains("--token"), "{error}");
                }
            }
            let given = HttpEndpoint::bind(&args("127.0.0.1", Some("s3cret")), true).await.unwrap();
            assert!(!given.generated && given.token.is_some_and(|Token(token)| token == "s3cret"));
        });
    }

    #[test]
    fn generated_tokens_are_fresh_256_bit_hex() {
        let (Token(one), Token(two)) = (Token::generate().unwrap(), Token::generate().unwrap());
        assert_eq!(one.len(), 64);
        assert!(one.bytes().all(|b| b.is_ascii_hexdigit()), "{one}");
        assert_ne!(one, two);
        assert!(one.parse::<Token>().is_ok());
    }
}

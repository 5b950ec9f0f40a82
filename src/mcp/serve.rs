//! Running the MCP server on a transport until the client leaves or shutdown is asked for.

use std::future::Future;
use std::sync::Arc;

use rmcp::ServiceExt;

use super::tools::PyReplServer;
use crate::session::manager::SessionManager;

/// Serves MCP over stdin/stdout until the client closes stdin or `shutdown` completes, then
/// stops every kernel. Stdout carries only JSON-RPC: logs go to stderr, kernels write to their
/// own log files.
///
/// # Errors
/// When the MCP handshake fails.
pub async fn serve_stdio(
    manager: Arc<SessionManager>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let server = PyReplServer::new(manager.clone());
    let running = server.serve(rmcp::transport::io::stdio_pipes()).await?;
    let cancel = running.cancellation_token();
    tokio::select! {
        quit = running.waiting() => tracing::info!(?quit, "client left"),
        () = shutdown => {
            tracing::info!("shutting down");
            cancel.cancel();
        }
    }
    manager.shutdown().await;
    Ok(())
}

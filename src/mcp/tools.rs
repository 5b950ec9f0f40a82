//! The MCP tools and their argument types. Each method validates nothing itself beyond the JSON
//! shape: it finds the session, calls it, and maps the outcome with `content.rs`.

use std::sync::Arc;
use std::time::Duration;

use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    CallToolResult, Implementation, ListResourcesResult, PaginatedRequestParams, ProgressNotificationParam,
    ReadResourceRequestParams, ReadResourceResponse, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, schemars, tool, tool_handler, tool_router};
use serde::Deserialize;
use serde_json::json;

use super::content::{
    Reply, already_ended_result, cell_detail_result, cell_result, cells_result, error_result, export_result,
    file_result, finished_cell_result, live_result, text_result, variables_result,
};
use super::images::ImageLimits;
use super::resources;
use crate::error::Error;
use crate::graph::CellId;
use crate::session::Session;
use crate::session::manager::{SessionManager, SharedSession};
use crate::session::workdir::decode_upload;
use crate::session::{CallContext, Progress, ProgressUpdate, copy_when_idle, parse_seconds};

/// A tool's answer: what `done` makes of what the call did, or the error as a tool result the
/// model sees (only requests that cannot be routed at all are protocol errors).
fn respond<T>(
    outcome: crate::error::Result<T>,
    done: impl FnOnce(T) -> CallToolResult,
) -> Result<CallToolResult, ErrorData> {
    Ok(outcome.map_or_else(|error| error_result(&error), done))
}

/// What the server tells the model about itself.
const INSTRUCTIONS: &str = "\
A stateful Python interpreter whose history is a tree. Call create_repl once to get a session \
(a private virtualenv with numpy, pandas, matplotlib, scipy, scikit-learn, seaborn and plotly, \
and a running IPython kernel). Then call run_code with Python source: every call creates a \
cell and returns its outputs followed by the new cell id as the last text item.\n\
To continue where a cell left off, pass its id as parent_cell_id: the code runs on exactly the \
state after that cell (variables, imports). To explore an alternative, pass an older cell id: \
the new cell branches from there and sees none of the later cells' effects. Without \
parent_cell_id the code runs on a fresh interpreter. Cells that raised can still be parents.\n\
Figures: call display_figure(fig) (predefined), plt.show(), or end the cell with the figure; \
each figure comes back once as an image, and so does a plotly figure (fig.show(), display(fig) \
or the cell's value; a text summary where the server has no Chromium), scaled down to fit the \
reply when large (the note beside it links the full-size original as an MCP resource). HTML, \
Markdown and LaTeX outputs come back as text. Every run_code result lists in \
structuredContent.names the names the cell bound (type and a short summary each); \
list_variables shows the whole namespace at any cell. Output too long for a reply is cut, \
with a resource link to its full text. Files: upload_file puts a file in the session's working \
directory (the kernel's current directory: open it by its relative path), download_file returns \
one the code wrote; both stay across restarts and resets. Install more packages with install_packages; they \
import at once. reset_repl clears a session's cells and restarts its kernel.\n\
Long cells: pass wait_s to run_code to get the output so far after that many seconds; then \
wait_cell gives more or the end, and interrupt_cell stops the cell. list_cells shows the tree \
of cells, get_cell one cell's code and outputs; both answer even while a cell runs.\n\
Kernels are sandboxed unless the server says otherwise (create_repl's `sandbox`): code may \
write only inside its session (its working directory, $TMPDIR) and read the system, its \
environment and its session; install packages with install_packages or %pip install.\n\
When create_repl reports a `gateway`, the session's kernels run on that Jupyter gateway, not on this \
machine: their environment and confinement are the gateway's, install_packages runs %pip install in \
them (and again in each new kernel of the session, before any replay), and files the code writes stay \
on the gateway's side.";

/// `run_code` arguments.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunCodeArgs {
    /// The session id returned by create_repl.
    pub session_id: String,
    /// Python source to run, as in a notebook cell; the value of a last expression is returned.
    pub code: String,
    /// Run on the state after this cell (an id returned by an earlier run_code). Omit to start
    /// from a fresh interpreter.
    #[serde(default)]
    pub parent_cell_id: Option<String>,
    /// Seconds the code may run before it is interrupted (the server's default, 300 unless
    /// configured, when omitted). Variables survive an interrupt.
    #[serde(default)]
    pub timeout_s: Option<f64>,
    /// Seconds to wait for the cell before replying. When it still runs then, the reply has the
    /// output so far and the cell id, the cell goes on, and wait_cell gives the rest. Omit to wait
    /// for the end.
    #[serde(default)]
    pub wait_s: Option<f64>,
}

/// `wait_cell` arguments.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitCellArgs {
    /// The session id returned by create_repl.
    pub session_id: String,
    /// The cell id returned by run_code.
    pub cell_id: String,
    /// Seconds to wait for the end before replying with the output so far (default 30).
    #[serde(default)]
    pub wait_s: Option<f64>,
}

/// How long `wait_cell` waits when not told.
const DEFAULT_WAIT_S: f64 = 30.0;

/// How long `interrupt_cell` waits for a stopped cell's end beyond the interrupt grace: the
/// kill of a kernel that ignored the interrupt, and the recording of the cell.
const INTERRUPT_SETTLE: Duration = Duration::from_secs(30);

/// Arguments naming one session.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionArgs {
    /// The session id returned by create_repl.
    pub session_id: String,
}

/// Arguments naming one cell of one session.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CellArgs {
    /// The session id returned by create_repl.
    pub session_id: String,
    /// A cell id returned by run_code.
    pub cell_id: String,
}

/// `attach_kernel` arguments.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachArgs {
    /// Path of the running kernel's connection file (`jupyter --runtime-dir` holds JupyterLab's,
    /// `%connect_info` in a notebook shows its name).
    pub connection_file: String,
}

/// `install_packages` arguments.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InstallPackagesArgs {
    /// The session id returned by create_repl.
    pub session_id: String,
    /// Package requirements: names with optional extras and versions, e.g. ["requests",
    /// "polars>=1.0", "httpx[http2]"]. Options, paths and URLs are refused.
    pub packages: Vec<String>,
}

/// `upload_file` arguments.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadArgs {
    /// The session id returned by create_repl.
    pub session_id: String,
    /// Where the file goes, relative to the session's working directory (e.g. "data/input.csv").
    pub path: String,
    /// The file's bytes, base64-encoded.
    pub content_base64: String,
}

/// `download_file` arguments.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DownloadArgs {
    /// The session id returned by create_repl.
    pub session_id: String,
    /// The file, relative to the session's working directory (e.g. "results/out.csv").
    pub path: String,
}

/// The MCP server: its tools over one [`SessionManager`].
#[derive(Clone)]
pub struct PyReplServer {
    manager: Arc<SessionManager>,
    tool_router: ToolRouter<PyReplServer>,
}

#[tool_router]
impl PyReplServer {
    /// A server whose tools act on `manager`'s sessions.
    pub fn new(manager: Arc<SessionManager>) -> Self {
        PyReplServer { manager, tool_router: Self::tool_router() }
    }

    #[tool(
        description = "Create a new Python session: a private virtualenv with numpy, pandas, matplotlib, scipy, \
        scikit-learn, seaborn and plotly, and a running kernel. Returns the session id to pass to the other \
        tools. Takes a few seconds; progress is reported when the request carries a progress token.",
        annotations(
            title = "Create a Python session",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn create_repl(&self, context: RequestContext<RoleServer>) -> Result<CallToolResult, ErrorData> {
        let outcome =
            with_context(&context, |call| async move { self.manager.create(&call.progress).await }).await;
        respond(outcome, |id| {
            let sandbox = self.manager.sandbox();
            let structured = match self.manager.gateway_url() {
                Some(url) => json!({
                    "session_id": id,
                    "gateway": url,
                    "sandbox": "off",
                    "sandboxed": false,
                    "sandbox_note": "the kernels run on the Jupyter gateway, confined (or not) by it, not by mcp-pyrepl; \
                        packages install through the kernel (%pip); snapshots are not available there",
                }),
                None => json!({
                    "session_id": id,
                    "sandbox": sandbox.level().as_str(),
                    "sandboxed": sandbox.is_enforced(),
                }),
            };
            text_result(id.clone(), structured)
        })
    }

    #[tool(
        description = "Run Python code in a session and return its outputs in order: stdout, stderr (labelled), \
        the value of the last expression, images (display_figure(fig), plt.show(), or a figure as the last \
        value; plotly figures too), HTML and Markdown as text, and tracebacks. The last text item is always \
        the new cell's id; structuredContent.names lists the names the cell bound, with type and summary. \
        Pass parent_cell_id to run on exactly the state after that cell (continue a line of work, or branch from an older cell); omit it to \
        start from a fresh interpreter. Cells that raised are recorded and can be parents too. For long cells \
        pass wait_s: if the cell still runs after that, the reply comes at once with the output so far, and \
        wait_cell gives the rest (interrupt_cell stops it).",
        annotations(
            title = "Run Python code",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn run_code(
        &self,
        Parameters(args): Parameters<RunCodeArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        if let Some(wait_s) = args.wait_s {
            return Ok(self.run_code_in_background(args, wait_s, &context).await);
        }
        let session_id = args.session_id.clone();
        let outcome = with_context(&context, |call| async move {
            let parent = args.parent_cell_id.as_deref().map(CellId::parse).transpose()?;
            let timeout = args.timeout_s.map(|s| parse_seconds("timeout_s", s, false)).transpose()?;
            let session = self.manager.get(&args.session_id)?;
            let mut locked = lock_unless_cancelled(&session, &call).await?;
            let run = locked.run_cell(&args.code, parent.as_ref(), timeout, &call, None).await?;
            drop(locked);
            copy_when_idle(session, &run);
            Ok(run)
        })
        .await;
        respond(outcome, |run| cell_result(&self.reply(&session_id), &run))
    }

    /// `run_code` with `wait_s`: the cell runs in a task of its own; the reply waits for it at
    /// most `wait_s`.
    async fn run_code_in_background(
        &self,
        args: RunCodeArgs,
        wait_s: f64,
        context: &RequestContext<RoleServer>,
    ) -> CallToolResult {
        let started = async {
            let wait = parse_seconds("wait_s", wait_s, true)?;
            let parent = args.parent_cell_id.as_deref().map(CellId::parse).transpose()?;
            let timeout = args.timeout_s.map(|s| parse_seconds("timeout_s", s, false)).transpose()?;
            let session = self.manager.get(&args.session_id)?;
            let guard = tokio::select! {
                guard = session.lock_owned() => guard,
                () = context.ct.cancelled() => return Err(Error::Cancelled),
            };
            let live = self.manager.run_in_background(guard, args.code, parent, timeout);
            Ok::<_, Error>((live, wait))
        };
        match started.await {
            Ok((live, wait)) => {
                live_result(&self.reply(&args.session_id), &live, live.wait(wait).await, wait)
            }
            Err(error) => error_result(&error),
        }
    }

    #[tool(
        description = "Wait for a cell started by run_code with wait_s: returns as soon as it ends (its full \
        result, as run_code gives it) or after wait_s seconds (the output so far, and that it still runs).",
        annotations(title = "Wait for a running cell", read_only_hint = true, open_world_hint = false)
    )]
    async fn wait_cell(
        &self,
        Parameters(args): Parameters<WaitCellArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let outcome = async {
            let wait = parse_seconds("wait_s", args.wait_s.unwrap_or(DEFAULT_WAIT_S), true)?;
            let cell = CellId::parse(&args.cell_id)?;
            let records = self.manager.records(&args.session_id)?;
            let reply = self.reply(&args.session_id);
            if let Some(live) = self.manager.live_cell(&args.session_id, &cell) {
                return Ok(live_result(&reply, &live, live.wait(wait).await, wait));
            }
            // Not running: it ended (or never was). Its record is in the graph.
            let outputs = records.outputs_of(&cell)?;
            Ok::<_, Error>(finished_cell_result(&reply, records.graph().cell(&cell)?, &outputs))
        }
        .await;
        respond(outcome, |result| result)
    }

    #[tool(
        description = "Stop a cell started by run_code with wait_s, as its time limit would: an interrupt \
        (KeyboardInterrupt in the cell; the variables are kept), then, if the code ignores it, a kill of its \
        kernel (the state is rebuilt by replay on the next run_code). Returns the cell's final result. On a \
        cell that has already ended, returns its recorded result and says so.",
        annotations(
            title = "Interrupt a running cell",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn interrupt_cell(
        &self,
        Parameters(args): Parameters<CellArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let outcome = async {
            let cell = CellId::parse(&args.cell_id)?;
            let records = self.manager.records(&args.session_id)?;
            let reply = self.reply(&args.session_id);
            if let Some(live) = self.manager.live_cell(&args.session_id, &cell) {
                let was_running = live.interrupt();
                let wait = self.manager.interrupt_grace() + INTERRUPT_SETTLE;
                let result = live_result(&reply, &live, live.wait(wait).await, wait);
                return Ok(if was_running { result } else { already_ended_result(result) });
            }
            let outputs = records.outputs_of(&cell)?;
            let cell = records.graph().cell(&cell)?.clone();
            Ok::<_, Error>(already_ended_result(finished_cell_result(&reply, &cell, &outputs)))
        }
        .await;
        respond(outcome, |result| result)
    }

    #[tool(
        description = "Install Python packages into a session's virtualenv with uv (in a session on a Jupyter \
        gateway: with %pip install in its kernels, repeated in every new kernel of the session). They can be \
        imported at once, without a restart. Give plain requirements such as \"requests\" or \"polars>=1.0\".",
        annotations(
            title = "Install Python packages",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = true
        )
    )]
    async fn install_packages(
        &self,
        Parameters(args): Parameters<InstallPackagesArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let outcome = with_context(&context, |call| async move {
            let session = self.manager.get(&args.session_id)?;
            let uv = self.manager.uv().await?;
            let mut session = lock_unless_cancelled(&session, &call).await?;
            session.install(uv, &args.packages, &call).await.map(|report| (report, args.packages))
        })
        .await;
        respond(outcome, |(report, packages)| {
            text_result(
                format!("Installed {}; import them directly.\n{report}", packages.join(", ")),
                json!({ "installed": packages, "report": report }),
            )
        })
    }

    #[tool(
        description = "Reset a session: stop its kernel and forget all its cells. The next run_code starts on a \
        fresh interpreter. Installed packages stay.",
        annotations(
            title = "Reset a session",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn reset_repl(
        &self,
        Parameters(args): Parameters<SessionArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let outcome = async {
            let session = self.manager.get(&args.session_id)?;
            session.lock().await.reset().await
        }
        .await;
        respond(outcome, |()| {
            text_result(
                format!(
                    "Session {} was reset: its cells are gone and the next run_code starts fresh",
                    args.session_id
                ),
                json!({ "session_id": args.session_id }),
            )
        })
    }
    #[tool(
        description = "Make a session on a kernel that is already running (JupyterLab, jupyter console, \
        `python -m ipykernel_launcher`), given its connection file. run_code then works on that kernel's live \
        state and can continue from the last cell; branching back to an older cell is refused, because a \
        kernel we did not start is never restarted. reset_repl and server shutdown never stop it.",
        annotations(
            title = "Attach to a running kernel",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn attach_kernel(
        &self,
        Parameters(args): Parameters<AttachArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        respond(self.manager.attach(std::path::Path::new(&args.connection_file)).await, |id| {
            text_result(
                id.clone(),
                json!({
                    "session_id": id,
                    "sandboxed": false,
                    "sandbox_note": "attached kernels are not confined by mcp-pyrepl: they keep the rights of whoever started them",
                }),
            )
        })
    }

    #[tool(
        description = "List every session (including those from earlier server runs): id, number of cells, \
        whether a kernel is running.",
        annotations(title = "List sessions", read_only_hint = true, open_world_hint = false)
    )]
    async fn list_sessions(&self) -> Result<CallToolResult, ErrorData> {
        let sessions = self.manager.list();
        let text = if sessions.is_empty() {
            "No sessions; create one with create_repl.".to_owned()
        } else {
            sessions
                .iter()
                .map(|s| {
                    let kernel = if s.kernel_running { "kernel running" } else { "no kernel" };
                    let cells = s.cells.map_or("?".to_owned(), |n| n.to_string());
                    format!("{}  {cells} cells  {kernel}", s.id)
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        Ok(text_result(text, json!({ "sessions": sessions })))
    }

    #[tool(
        description = "Show a session's cells as a tree: ids, parents, the first line of each cell's code, \
        its status, and which cells the running kernel holds now (running under one of those needs no replay).",
        annotations(title = "List a session's cells", read_only_hint = true, open_world_hint = false)
    )]
    async fn list_cells(
        &self,
        Parameters(args): Parameters<SessionArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let outcome = async {
            let records = self.manager.records(&args.session_id)?;
            let held = records.held_cells();
            Ok::<_, Error>(cells_result(&records.graph(), &held))
        }
        .await;
        respond(outcome, |result| result)
    }

    #[tool(
        description = "Show one cell: its code and the outputs it produced when it last ran.",
        annotations(title = "Show a cell", read_only_hint = true, open_world_hint = false)
    )]
    async fn get_cell(&self, Parameters(args): Parameters<CellArgs>) -> Result<CallToolResult, ErrorData> {
        let outcome = async {
            let cell = CellId::parse(&args.cell_id)?;
            let records = self.manager.records(&args.session_id)?;
            let outputs = records.outputs_of(&cell)?;
            let cell = records.graph().cell(&cell)?.clone();
            Ok::<_, Error>(cell_detail_result(&self.reply(&args.session_id), &cell, &outputs))
        }
        .await;
        respond(outcome, |result| result)
    }

    #[tool(
        description = "List the variables of the user namespace at the state after a cell: each name with its \
        type and a short summary (shape and dtype of arrays and frames, length of containers, the start of the \
        repr otherwise); modules and names starting with `_` are left out. Reaches that cell's state as run_code \
        would (replaying when no kernel holds it) but creates no cell and changes nothing.",
        annotations(title = "List a cell's variables", read_only_hint = true, open_world_hint = false)
    )]
    async fn list_variables(
        &self,
        Parameters(args): Parameters<CellArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let outcome = with_context(&context, |call| async move {
            let cell = CellId::parse(&args.cell_id)?;
            let session = self.manager.get(&args.session_id)?;
            let mut session = lock_unless_cancelled(&session, &call).await?;
            session.variables(&cell, &call).await.map(|names| (cell, names))
        })
        .await;
        respond(outcome, |(cell, names)| variables_result(&cell, &names))
    }

    #[tool(
        description = "Export the path from the first cell down to cell_id as a Jupyter notebook (with the \
        outputs), plus the session's `uv pip freeze`. Returns the paths of both files.",
        annotations(
            title = "Export a notebook",
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn export_notebook(
        &self,
        Parameters(args): Parameters<CellArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let outcome = async {
            let cell = CellId::parse(&args.cell_id)?;
            let records = self.manager.records(&args.session_id)?;
            let uv = self.manager.uv().await?;
            records.export_notebook(uv, &cell).await
        }
        .await;
        respond(outcome, |(notebook, requirements)| {
            export_result(&args.session_id, &notebook, requirements.as_deref())
        })
    }

    #[tool(
        description = "Write a file into a session's working directory (the kernel's current directory, so \
        code opens it by the same relative path, e.g. pd.read_csv('data.csv')). path is relative to that \
        directory (subdirectories are created; `..`, absolute paths and symbolic links are refused); \
        content_base64 is the file's bytes in base64. A file of that name is replaced. Files stay when the \
        kernel restarts, replays or the session is reset.",
        annotations(
            title = "Upload a file",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn upload_file(
        &self,
        Parameters(args): Parameters<UploadArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResult, ErrorData> {
        let limit = self.manager.limits().max_upload_bytes;
        let outcome = with_context(&context, |call| async move {
            let bytes = decode_upload(&args.path, &args.content_base64, limit)?;
            let session = self.manager.get(&args.session_id)?;
            lock_unless_cancelled(&session, &call).await?.upload(&args.path, &bytes)?;
            Ok::<_, Error>((args.path, bytes.len()))
        })
        .await;
        respond(outcome, |(path, bytes)| {
            text_result(
                format!("Wrote {bytes} bytes to `{path}` in the session's working directory"),
                json!({ "path": path, "bytes": bytes }),
            )
        })
    }

    #[tool(
        description = "Read a file from a session's working directory (the kernel's current directory): an \
        image comes back as an image (scaled down like figures, with a link to the original), text as text, \
        anything else as an embedded blob. path is relative to that directory; `..`, absolute paths and \
        symbolic links are refused.",
        annotations(title = "Download a file", read_only_hint = true, open_world_hint = false)
    )]
    async fn download_file(
        &self,
        Parameters(args): Parameters<DownloadArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        let outcome = async {
            let records = self.manager.records(&args.session_id)?;
            let Some(work_dir) = records.work_dir() else {
                return Err(Error::Unsupported {
                    operation: "download_file",
                    provider: "a kernel somebody else started".to_owned(),
                    advice: "its working directory is not ours; print the file from a cell with run_code",
                });
            };
            let limit = self.manager.limits().max_download_bytes;
            Ok(work_dir.read(&args.path, limit, "--max-download-bytes")?)
        }
        .await;
        respond(outcome, |bytes| file_result(&self.reply(&args.session_id), &args.path, &bytes))
    }

    #[tool(
        description = "Delete a session for good: its kernel is stopped and its directory (venv, cells) removed.",
        annotations(
            title = "Destroy a session",
            read_only_hint = false,
            destructive_hint = true,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    async fn destroy_repl(
        &self,
        Parameters(args): Parameters<SessionArgs>,
    ) -> Result<CallToolResult, ErrorData> {
        respond(self.manager.destroy(&args.session_id).await, |()| {
            text_result(
                format!("Session {} was destroyed", args.session_id),
                json!({ "session_id": args.session_id }),
            )
        })
    }
}

impl PyReplServer {
    /// How a reply about `session` shows its outputs.
    fn reply<'a>(&self, session: &'a str) -> Reply<'a> {
        Reply { session, images: ImageLimits::from_limits(self.manager.limits()) }
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for PyReplServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().enable_resources().build())
            .with_server_info(Implementation::new("mcp-pyrepl", env!("CARGO_PKG_VERSION")))
            .with_instructions(INSTRUCTIONS)
    }

    async fn list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let cursor = request.and_then(|request| request.cursor);
        Ok(resources::list(&self.manager, cursor.as_deref()))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        resources::read(&self.manager, &request.uri).map(ReadResourceResponse::from)
    }
}

/// Waits for the session (calls on one session run one at a time), unless the request is
/// cancelled first: then it never runs.
async fn lock_unless_cancelled<'a>(
    session: &'a SharedSession,
    call: &CallContext,
) -> Result<tokio::sync::MutexGuard<'a, Session>, Error> {
    tokio::select! {
        guard = session.lock() => Ok(guard),
        () = call.cancel.cancelled() => Err(Error::Cancelled),
    }
}

/// Runs `operation` with the request's [`CallContext`]: its cancellation token, and progress
/// that becomes MCP progress notifications when the request carries a progress token (every
/// notification is sent before this returns).
async fn with_context<T, F, Fut>(context: &RequestContext<RoleServer>, operation: F) -> Result<T, Error>
where
    F: FnOnce(CallContext) -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let cancel = context.ct.clone();
    let Some(token) = context.meta.get_progress_token() else {
        return operation(CallContext { progress: Progress::default(), cancel, ..CallContext::default() })
            .await;
    };
    let (sender, mut updates) = tokio::sync::mpsc::unbounded_channel::<ProgressUpdate>();
    let peer = context.peer.clone();
    let forwarder = tokio::spawn(async move {
        while let Some(update) = updates.recv().await {
            let mut param =
                ProgressNotificationParam::new(token.clone(), update.progress).with_message(update.message);
            if let Some(total) = update.total {
                param = param.with_total(total);
            }
            if let Err(error) = peer.notify_progress(param).await {
                tracing::debug!(%error, "progress notification not sent");
            }
        }
    });
    let outcome =
        operation(CallContext { progress: Progress::to(sender), cancel, ..CallContext::default() }).await;
    let _ = forwarder.await;
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the model reads of the server before any call (instructions, tool descriptions,
    /// argument schemas) holds no run of spaces left by a string broken across lines.
    #[test]
    fn no_tool_text_holds_a_run_of_spaces() {
        assert!(!INSTRUCTIONS.contains("   "), "{INSTRUCTIONS}");
        for tool in PyReplServer::tool_router().list_all() {
            let text = serde_json::to_string(&tool).unwrap();
            assert!(!text.contains("   "), "a run of spaces in tool `{}`: {text}", tool.name);
        }
    }
}

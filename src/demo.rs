//! `mcp-pyrepl demo`: the branching sine-wave example, end to end through a real MCP client.
//!
//! Starts this same binary as an MCP server over stdio (with the caller's settings), drives it
//! with rmcp's client as an LLM application would, and prints each call and what the model would
//! see; images are saved to files whose paths are printed. [`DemoError`] says what can fail.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::{ClientInitializeError, ServiceError};
use rmcp::transport::TokioChildProcess;
use serde_json::{Value, json};

use crate::config::Settings;

/// Flags of `mcp-pyrepl demo`.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Where the demo's images are saved [default: a new directory under the system temp directory]
    #[arg(long, value_name = "DIR")]
    pub image_dir: Option<PathBuf>,
}

/// Result of the demo.
pub type Result<T, E = DemoError> = std::result::Result<T, E>;

/// Why the demo stopped before its end (a tool result flagged as an error is no error: [`run`]
/// returns false).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DemoError {
    /// The path of this program, to start it as the server, is unknown.
    #[error("cannot find the path of this program, to start it as the MCP server")]
    CurrentExe {
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The server could not be started.
    #[error("cannot start `{} serve`", program.display())]
    Spawn {
        /// This program.
        program: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The server did not complete the MCP handshake.
    #[error("the MCP handshake with `mcp-pyrepl serve` failed")]
    Handshake {
        /// What went wrong.
        #[source]
        source: Box<ClientInitializeError>,
    },
    /// A tool call failed at the protocol level (the server died, say).
    #[error("the `{tool}` call failed")]
    Call {
        /// The tool.
        tool: &'static str,
        /// What went wrong.
        #[source]
        source: ServiceError,
    },
    /// A reply lacks the id the next steps need.
    #[error("`{tool}` returned no {id} (no text item in its reply)")]
    MissingId {
        /// The tool.
        tool: &'static str,
        /// The id expected: `session id`, `cell id`.
        id: &'static str,
    },
    /// An image in a reply is not valid base64.
    #[error("an image in a reply is not valid base64")]
    Image {
        /// The decoding error.
        #[source]
        source: base64::DecodeError,
    },
    /// The MCP client did not stop cleanly.
    #[error("the MCP client did not stop cleanly")]
    Stop {
        /// The client task's failure.
        #[source]
        source: tokio::task::JoinError,
    },
    /// The image directory or an image could not be written.
    #[error("cannot write `{}`", path.display())]
    Write {
        /// The directory or file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The demo's text could not be printed (a closed pipe, a full disk).
    #[error("cannot print the demo")]
    Print(#[from] std::io::Error),
}

/// The example: (what it shows, code, index of the parent step or none).
const STEPS: [(&str, &str, Option<usize>); 4] = [
    ("imports, on a fresh interpreter", "import numpy as np\nimport matplotlib.pyplot as plt", None),
    ("a sine wave, continuing from the imports", "x = np.linspace(0, 10, 100)\ny = np.sin(x)", Some(0)),
    (
        "branch A from the sine wave: statistics",
        "mean = np.mean(y)\nstd = np.std(y)\nprint(f\"Mean: {mean:.4f}, Std Dev: {std:.4f}\")",
        Some(1),
    ),
    (
        "branch B from the same cell: a scatter plot (branch A's `mean` is not defined here)",
        "fig, ax = plt.subplots()\nax.scatter(x, y)\nax.set_title('Sine Wave Scatter')\n\
         print('mean' in dir())\ndisplay_figure(fig)",
        Some(1),
    ),
];

/// Runs the demo, printing to `out`.
///
/// # Errors
/// When the server cannot be started, a call fails at the protocol level, or the text or an
/// image cannot be written.
pub async fn run(settings: &Settings, args: &DemoArgs, out: &mut impl Write) -> Result<bool> {
    let image_dir = match &args.image_dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("mcp-pyrepl-demo-{}", std::process::id())),
    };
    let program = std::env::current_exe().map_err(|source| DemoError::CurrentExe { source })?;
    let mut server = tokio::process::Command::new(&program);
    server.args(server_args(settings)).arg("serve");
    let transport = TokioChildProcess::new(server).map_err(|source| DemoError::Spawn { program, source })?;
    let client =
        ().serve(transport).await.map_err(|source| DemoError::Handshake { source: Box::new(source) })?;
    writeln!(out, "Started `mcp-pyrepl serve` and connected to it over stdio as an MCP client.\n")?;

    let call = async |tool: &'static str, arguments: Value| -> Result<CallToolResult> {
        let params = CallToolRequestParams::new(tool)
            .with_arguments(arguments.as_object().cloned().unwrap_or_default());
        client.call_tool(params).await.map_err(|source| DemoError::Call { tool, source })
    };

    writeln!(out, "→ create_repl()  (builds a venv with the base packages; takes a few seconds)")?;
    let created = call("create_repl", json!({})).await?;
    let session =
        last_text(&created).ok_or(DemoError::MissingId { tool: "create_repl", id: "session id" })?;
    show(out, &created, &image_dir)?;

    let mut cells: Vec<String> = Vec::new();
    let mut all_ok = created.is_error != Some(true);
    for (what, code, parent) in STEPS {
        let parent = parent.map(|index| cells[index].clone());
        writeln!(out, "\n→ run_code: {what}")?;
        for line in code.lines() {
            writeln!(out, "    {line}")?;
        }
        if let Some(parent) = &parent {
            writeln!(out, "  parent_cell_id = {parent}")?;
        }
        let mut arguments = json!({"session_id": session, "code": code});
        if let Some(parent) = &parent {
            arguments["parent_cell_id"] = json!(parent);
        }
        let result = call("run_code", arguments).await?;
        all_ok &= result.is_error != Some(true);
        show(out, &result, &image_dir)?;
        cells.push(last_text(&result).ok_or(DemoError::MissingId { tool: "run_code", id: "cell id" })?);
    }

    writeln!(out, "\n→ list_cells()")?;
    let tree = call("list_cells", json!({"session_id": session})).await?;
    show(out, &tree, &image_dir)?;
    writeln!(out, "\nThe session stays on disk: `{session}` (destroy it with destroy_repl).")?;
    client.cancel().await.map_err(|source| DemoError::Stop { source })?;
    Ok(all_ok)
}

/// The settings flags that make the child server use what this process uses.
fn server_args(settings: &Settings) -> Vec<String> {
    let mut args = vec!["--data-dir".to_owned(), settings.data_dir().display().to_string()];
    if let Some(uv) = &settings.uv {
        args.extend(["--uv".to_owned(), uv.display().to_string()]);
    }
    if let Some(python) = &settings.python {
        args.extend(["--python".to_owned(), python.clone()]);
    }
    args.extend(["--base-packages".to_owned(), settings.base_packages().join(",")]);
    args
}

fn last_text(result: &CallToolResult) -> Option<String> {
    result.content.iter().rev().find_map(|c| c.as_text()).map(|t| t.text.clone())
}

/// Prints a tool result as the model would see it, saving images to files.
fn show(out: &mut impl Write, result: &CallToolResult, image_dir: &Path) -> Result<()> {
    let flag = if result.is_error == Some(true) { "  (flagged as an error)" } else { "" };
    writeln!(out, "← reply{flag}:")?;
    for content in &result.content {
        if let Some(text) = content.as_text() {
            for line in text.text.trim_end().lines() {
                writeln!(out, "    {line}")?;
            }
        } else if let Some(image) = content.as_image() {
            std::fs::create_dir_all(image_dir)
                .map_err(|source| DemoError::Write { path: image_dir.to_owned(), source })?;
            let count = std::fs::read_dir(image_dir).map(|d| d.count()).unwrap_or(0);
            let path = image_dir.join(format!("image-{}.png", count + 1));
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(&image.data)
                .map_err(|source| DemoError::Image { source })?;
            std::fs::write(&path, bytes).map_err(|source| DemoError::Write { path: path.clone(), source })?;
            writeln!(out, "    [{} image saved to {}]", image.mime_type, path.display())?;
        }
    }
    Ok(())
}

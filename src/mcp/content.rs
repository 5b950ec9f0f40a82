//! Cell runs and errors as MCP tool results.
//!
//! Stdout as text, stderr as text labelled `[stderr]`, results and displays as their image
//! (PNG or JPEG) when they have one and as text otherwise, errors as a plain traceback with the
//! result flagged as an error. The new cell id is always the last text item (the original
//! server's convention, which clients read as `result[-1].text`), and again in structured
//! content with the status, the replayed cells and the timings.
//!
//! Images go through one [`ImageFitter`] per reply (`images.rs`): scaled down, re-encoded or left
//! out to stay within the reply's budget, each changed one with a note and a resource link to
//! its full-size original; a cut output links the file holding its whole text.

use std::path::Path;

use rmcp::model::{CallToolResult, ContentBlock};
use serde_json::{Value, json};

use crate::error::Error;
use std::collections::HashMap;

use crate::graph::{Cell, CellId, CellStatus, Graph};
use crate::kernel::{ExecutionStatus, Output, StreamName};
use std::time::Duration;

use super::images::{Fitted, IMAGE_TYPES, ImageFitter, ImageLimits};
use super::resources::{self, FileKind, ResourceUri};
use super::rich_text::{RICH_TYPES, rich_text};
use crate::session::live::{LiveCell, Outcome};
use crate::session::names::Names;
use crate::session::pool::Snapshots;
use crate::session::records::KeptFiles;
use crate::session::{CellRun, Stop, StopReason};
use crate::util::shorten;

/// Whose outputs a reply shows (for the links to its resources) and what its images may take.
#[derive(Debug, Clone, Copy)]
pub struct Reply<'a> {
    /// The session id.
    pub session: &'a str,
    /// The image limits of one reply.
    pub images: ImageLimits,
}

/// The tool result of a cell run.
pub fn cell_result(reply: &Reply, run: &CellRun) -> CallToolResult {
    let mut content = outputs_content(reply, Some(&run.cell.id), &run.execution.outputs);
    match (&run.stopped, &run.execution.status) {
        (Some(stop), _) => content.push(ContentBlock::text(stop_note(stop))),
        (None, ExecutionStatus::Died(death)) => content.push(ContentBlock::text(format!(
            "The kernel {death} while running this cell. Its in-memory state is lost; the next run_code \
             starts a new kernel and replays the cells it needs."
        ))),
        (None, _) => {}
    }
    content.push(ContentBlock::text(run.cell.id.to_string()));

    let status = status_name(run.cell.status);
    let structured = json!({
        "cell_id": run.cell.id,
        "parent_cell_id": run.cell.parent,
        "status": status,
        "execution_count": run.execution.execution_count,
        "names": run.names.names,
        "names_omitted": run.names.omitted,
        "replayed_cell_ids": run.replayed,
        "kernel_restarted": run.restarted,
        "replay_ms": millis(run.replay_time),
        "run_ms": millis(run.run_time),
        "stopped": run.stopped.map(|stop| json!({
            "reason": match stop.reason {
                StopReason::Timeout(_) => "timeout",
                StopReason::Cancelled => "cancelled",
                StopReason::Interrupted => "interrupt_cell",
            },
            "kernel_killed": stop.kernel_killed,
        })),
        "snapshot": snapshot_report(run),
    });
    let mut result = if run.cell.status == CellStatus::Ok {
        CallToolResult::success(content)
    } else {
        CallToolResult::error(content)
    };
    result.structured_content = Some(structured);
    result
}

/// Whether a snapshot served the cell, and whether snapshots work for the session: when they
/// do not (a kernel that is not ours to fork, threads the user started), why, so a model knows
/// going back will replay.
fn snapshot_report(run: &CellRun) -> Value {
    let (available, reason) = match &run.snapshots {
        Snapshots::Available => (Value::Bool(true), None),
        Snapshots::Unavailable(reason) => (Value::Bool(false), Some(reason)),
        Snapshots::Untried => (Value::Null, None),
    };
    json!({ "used": run.from_snapshot, "available": available, "reason": reason })
}

/// The reply about a cell running in the background: its result when `outcome` is there,
/// otherwise the output so far, a note that it still runs, and its id last.
pub fn live_result(
    reply: &Reply,
    live: &LiveCell,
    outcome: Option<Outcome>,
    waited: Duration,
) -> CallToolResult {
    if let Some(outcome) = outcome {
        return match &*outcome {
            Ok(run) => cell_result(reply, run),
            Err(error) => error_result(error),
        };
    }
    let mut content: Vec<ContentBlock> = match live.snapshot() {
        // Not recorded yet: its outputs are no resources until it ends.
        Some(outputs) => outputs_content(reply, None, &outputs),
        None => vec![ContentBlock::text(
            "[the code has not started yet: the kernel is starting, or replaying the path to the parent cell]",
        )],
    };
    content.push(ContentBlock::text(format!(
        "Still running after {}s. Call wait_cell with this cell id for more output or the end; other calls on \
         this session wait until it ends.",
        waited.as_secs_f64()
    )));
    content.push(ContentBlock::text(live.id().to_string()));
    let mut result = CallToolResult::success(content);
    result.structured_content = Some(json!({ "cell_id": live.id(), "status": "running" }));
    result
}

/// A cell that has ended, from its record: its kept outputs, then its id, as run_code ends.
pub fn finished_cell_result(reply: &Reply, cell: &Cell, outputs: &[Output]) -> CallToolResult {
    let mut content = outputs_content(reply, Some(&cell.id), outputs);
    content.push(ContentBlock::text(cell.id.to_string()));
    let mut result = if cell.status == CellStatus::Ok {
        CallToolResult::success(content)
    } else {
        CallToolResult::error(content)
    };
    result.structured_content = Some(json!({
        "cell_id": cell.id,
        "parent_cell_id": cell.parent,
        "status": status_name(cell.status),
        "execution_count": cell.execution_count,
    }));
    result
}

/// `result` (a cell's final result) marked as that of a cell that had ended before it was asked
/// to stop: a note before the cell id, and `already_ended` in structured content.
pub fn already_ended_result(mut result: CallToolResult) -> CallToolResult {
    let at = result.content.len().saturating_sub(1);
    result.content.insert(at, ContentBlock::text("The cell had already ended; this is its recorded result."));
    if let Some(Value::Object(structured)) = &mut result.structured_content {
        structured.insert("already_ended".to_owned(), Value::Bool(true));
    }
    result
}

/// The tree of a session's cells, drawn for a reader, with the same data as structured content.
pub fn cells_result(graph: &Graph, held: &[CellId]) -> CallToolResult {
    let mut children: HashMap<Option<&CellId>, Vec<&Cell>> = HashMap::new();
    for cell in graph.cells() {
        children.entry(cell.parent.as_ref()).or_default().push(cell);
    }
    let mut lines = Vec::new();
    let mut stack: Vec<(&Cell, usize)> =
        children.get(&None).map(|roots| roots.iter().rev().map(|c| (*c, 0)).collect()).unwrap_or_default();
    while let Some((cell, depth)) = stack.pop() {
        let first_line = cell.code.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        let held_mark = if held.contains(&cell.id) { "  [in kernel]" } else { "" };
        lines.push(format!(
            "{}{} {:<11} {}{held_mark}",
            "  ".repeat(depth),
            cell.id,
            status_name(cell.status),
            shorten(first_line, 60)
        ));
        if let Some(kids) = children.get(&Some(&cell.id)) {
            stack.extend(kids.iter().rev().map(|c| (*c, depth + 1)));
        }
    }
    let text = if lines.is_empty() { "No cells yet.".to_owned() } else { lines.join("\n") };
    let cells: Vec<Value> = graph
        .cells()
        .map(|cell| {
            json!({
                "cell_id": cell.id,
                "parent_cell_id": cell.parent,
                "first_line": cell.code.lines().next().unwrap_or(""),
                "status": status_name(cell.status),
                "execution_count": cell.execution_count,
                "in_kernel": held.contains(&cell.id),
                "summary": cell.summary,
            })
        })
        .collect();
    text_result(text, json!({ "cells": cells }))
}

/// One cell: its code, then its kept outputs as `run_code` returned them.
pub fn cell_detail_result(reply: &Reply, cell: &Cell, outputs: &[Output]) -> CallToolResult {
    let mut content = vec![ContentBlock::text(cell.code.clone())];
    content.extend(outputs_content(reply, Some(&cell.id), outputs));
    let mut result = CallToolResult::success(content);
    result.structured_content = Some(json!({
        "cell_id": cell.id,
        "parent_cell_id": cell.parent,
        "code": cell.code,
        "status": status_name(cell.status),
        "execution_count": cell.execution_count,
        "created": cell.created,
    }));
    result
}

fn status_name(status: CellStatus) -> &'static str {
    match status {
        CellStatus::Ok => "ok",
        CellStatus::Error => "error",
        CellStatus::Interrupted => "interrupted",
        CellStatus::KernelDied => "kernel_died",
    }
}

/// The tool result of a failed operation: the error and its causes, flagged as an error.
pub fn error_result(error: &Error) -> CallToolResult {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(&format!("\ncaused by: {cause}"));
        source = cause.source();
    }
    CallToolResult::error(vec![ContentBlock::text(text)])
}

/// A text result with the same data as structured content.
pub fn text_result(text: impl Into<String>, structured: Value) -> CallToolResult {
    let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
    result.structured_content = Some(structured);
    result
}

/// The content of `outputs` (those of the recorded `cell`, or of a cell still running when
/// `None`), their images within one reply's budget.
fn outputs_content(reply: &Reply, cell: Option<&CellId>, outputs: &[Output]) -> Vec<ContentBlock> {
    let mut fitter = ImageFitter::new(reply.images);
    let mut content = Vec::new();
    for (index, output) in outputs.iter().enumerate() {
        let uri = cell.map(|cell| ResourceUri::CellOutput {
            session: reply.session.to_owned(),
            cell: cell.clone(),
            index,
        });
        match output {
            Output::Omitted { full_output: Some(path), .. } => {
                content.extend(output.omission_note().map(ContentBlock::text));
                let file = path.file_name().and_then(|name| name.to_str()).map(str::to_owned);
                if let Some(file) = file {
                    let uri = ResourceUri::Kept {
                        session: reply.session.to_owned(),
                        kind: KeptFiles::Spilled,
                        file,
                    };
                    let size = std::fs::metadata(path).ok().map(|m| m.len());
                    content.push(resources::link(
                        &uri,
                        "text/plain",
                        size,
                        "the full text of the cut output",
                    ));
                }
            }
            _ => match IMAGE_TYPES.into_iter().find_map(|mime| Some((mime, output.image(mime)?))) {
                Some((mime, bytes)) => {
                    content.extend(image_content(&mut fitter, &bytes, mime, uri.as_ref(), "the image"))
                }
                None => content.extend(output_content(output)),
            },
        }
    }
    content
}

/// An image fitted into what is left of a reply's budget: the image, and when it was changed or
/// left out, a note and a link to `original` (where its full-size original is, when known).
fn image_content(
    fitter: &mut ImageFitter,
    bytes: &[u8],
    mime: &str,
    original: Option<&ResourceUri>,
    what: &str,
) -> Vec<ContentBlock> {
    let original_at = match original {
        Some(uri) => format!("the full-size original is the resource `{uri}`"),
        None => "the full-size original can be read as a resource once the cell ends (wait_cell links it)"
            .to_owned(),
    };
    let (mut content, note) = match fitter.fit(bytes) {
        Fitted::Original { base64 } => return vec![ContentBlock::image(base64, mime)],
        Fitted::Scaled { base64, mime: sent, size, original } => (
            vec![ContentBlock::image(base64, sent)],
            format!(
                "[{what} was scaled from {}x{} to {}x{} px to fit the reply; {original_at}]",
                original.0, original.1, size.0, size.1
            ),
        ),
        Fitted::Dropped { original, reason } => {
            let size = original.map_or_else(String::new, |(w, h)| format!(" ({w}x{h} px)"));
            (Vec::new(), format!("[{what}{size} was left out of the reply: {reason}; {original_at}]"))
        }
    };
    content.push(ContentBlock::text(note));
    if let Some(uri) = original {
        content.push(resources::link(uri, mime, Some(bytes.len() as u64), "the full-size original"));
    }
    content
}

fn output_content(output: &Output) -> Option<ContentBlock> {
    match output {
        Output::Stream { name: StreamName::Stdout, text } => Some(ContentBlock::text(text.clone())),
        Output::Stream { name: StreamName::Stderr, text } => {
            Some(ContentBlock::text(format!("[stderr]\n{text}")))
        }
        Output::Error { .. } => output.traceback_text().map(ContentBlock::text),
        Output::Omitted { .. } => output.omission_note().map(ContentBlock::text),
        Output::ExecuteResult { data, .. } | Output::DisplayData { data, .. } => {
            // A real text form (a DataFrame's table) wins; a `<… object>` placeholder does not.
            let plain = output.text_plain();
            if let Some(text) = plain.filter(|text| !is_placeholder(text)) {
                return Some(ContentBlock::text(text.to_owned()));
            }
            let rich = RICH_TYPES.into_iter().find_map(|mime| Some(rich_text(mime, data.get(mime)?)));
            rich.or(plain.map(str::to_owned)).map(ContentBlock::text)
        }
    }
}

/// Whether a `text/plain` form only names its object (`<IPython.core.display.HTML object>`,
/// `<pandas.io.formats.style.Styler at 0x7f…>`) instead of showing it.
fn is_placeholder(text: &str) -> bool {
    let text = text.trim();
    text.starts_with('<')
        && text.ends_with('>')
        && !text.contains('\n')
        && (text.ends_with(" object>") || text.contains(" at 0x"))
}

/// The tool result of `list_variables`: one line a name, and the same as structured content.
pub fn variables_result(cell: &CellId, names: &Names) -> CallToolResult {
    let mut lines: Vec<String> =
        names.names.iter().map(|n| format!("{}: {} = {}", n.name, n.type_name, n.summary)).collect();
    if lines.is_empty() {
        lines.push(format!("No variables after cell {cell}."));
    }
    if names.omitted > 0 {
        lines.push(format!("[… {} more names not listed]", names.omitted));
    }
    text_result(
        lines.join("\n"),
        json!({ "cell_id": cell, "names": names.names, "names_omitted": names.omitted }),
    )
}

/// The reply of `download_file`: the file `path` holding `bytes`, an image as an image (within
/// the reply's image limits), text as text, anything else as an embedded blob; its size, type
/// and resource URI in structured content.
pub fn file_result(reply: &Reply, path: &str, bytes: &[u8]) -> CallToolResult {
    let uri = ResourceUri::WorkFile { session: reply.session.to_owned(), path: path.to_owned() };
    let kind = FileKind::of(path, bytes);
    let (content, mime, kind_name) = match kind {
        FileKind::Image(mime) => {
            let mut fitter = ImageFitter::new(reply.images);
            (image_content(&mut fitter, bytes, mime, Some(&uri), "the image file"), mime, "image")
        }
        FileKind::Text(mime) => {
            let text = String::from_utf8_lossy(bytes).into_owned();
            (vec![ContentBlock::text(text)], mime, "text")
        }
        FileKind::Binary(mime) => {
            let blob = rmcp::model::ResourceContents::blob(resources::encode(bytes), uri.to_string())
                .with_mime_type(mime);
            (vec![ContentBlock::resource(blob)], mime, "binary")
        }
    };
    let mut result = CallToolResult::success(content);
    result.structured_content = Some(json!({
        "path": path,
        "bytes": bytes.len(),
        "kind": kind_name,
        "mime_type": mime,
        "uri": uri.to_string(),
    }));
    result
}

/// The reply of `export_notebook`: the paths on the server's disk, and links to both files.
pub fn export_result(session: &str, notebook: &Path, requirements: Option<&Path>) -> CallToolResult {
    let mut text = format!("Notebook: {}", notebook.display());
    if let Some(requirements) = requirements {
        text.push_str(&format!("\nRequirements: {}", requirements.display()));
    }
    let mut content = vec![ContentBlock::text(text)];
    let mut uris = Vec::new();
    for (path, mime, description) in [
        (Some(notebook), "application/x-ipynb+json", "the exported notebook"),
        (requirements, "text/plain", "the session's uv pip freeze"),
    ] {
        let Some(file) = path.and_then(Path::file_name).and_then(|name| name.to_str()) else { continue };
        let uri = ResourceUri::Kept {
            session: session.to_owned(),
            kind: KeptFiles::Exports,
            file: file.to_owned(),
        };
        let size = path.and_then(|path| std::fs::metadata(path).ok()).map(|m| m.len());
        content.push(resources::link(&uri, mime, size, description));
        uris.push(uri.to_string());
    }
    let mut result = CallToolResult::success(content);
    result.structured_content = Some(json!({
        "notebook": notebook,
        "requirements": requirements,
        "notebook_uri": uris.first(),
        "requirements_uri": uris.get(1),
    }));
    result
}

/// What happened to a stopped cell, and what it means for the session's state.
fn stop_note(stop: &Stop) -> String {
    let why = stop.reason;
    if stop.kernel_killed {
        format!(
            "The cell was stopped because {why}. It ignored the interrupt, so its kernel was killed: the \
             in-memory state is lost and will be rebuilt by replay on the next run_code."
        )
    } else {
        let advice = match stop.reason {
            StopReason::Timeout(_) => " Pass a larger timeout_s to let it finish.",
            StopReason::Cancelled | StopReason::Interrupted => "",
        };
        format!(
            "The cell was interrupted because {why}. The kernel kept its state: whatever the cell did \
             before the interrupt is still there.{advice}"
        )
    }
}

fn millis(duration: std::time::Duration) -> f64 {
    (duration.as_secs_f64() * 1e6).round() / 1e3
}

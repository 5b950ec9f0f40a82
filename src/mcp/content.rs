//! Cell runs and errors as MCP tool results.
//!
//! Stdout as text, stderr as text labelled `[stderr]`, results and displays as their image
//! (PNG or JPEG) when they have one and as text otherwise, errors as a plain traceback with the
//! result flagged as an error. The new cell id is always the last text item (the original
//! server's convention, which clients read as `result[-1].text`), and again in structured
//! content with the status, the replayed cells and the timings.

use base64::Engine;
use rmcp::model::{CallToolResult, ContentBlock};
use serde_json::{Value, json};

use crate::error::Error;
use std::collections::HashMap;

use crate::graph::{Cell, CellId, CellStatus, Graph};
use crate::kernel::{ExecutionStatus, Output, StreamName};
use std::time::Duration;

use super::rich_text::{RICH_TYPES, rich_text};
use crate::session::live::{LiveCell, Outcome};
use crate::session::names::Names;
use crate::session::pool::Snapshots;
use crate::session::{CellRun, Stop, StopReason, shorten};

/// Image types passed to the client as images, in order of preference.
const IMAGE_TYPES: [&str; 2] = ["image/png", "image/jpeg"];

/// The tool result of a cell run.
pub fn cell_result(run: &CellRun) -> CallToolResult {
    let mut content: Vec<ContentBlock> = run.execution.outputs.iter().filter_map(output_content).collect();
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
    match &run.snapshots {
        Snapshots::Unavailable(reason) if !run.from_snapshot => {
            json!({ "used": false, "available": false, "reason": reason })
        }
        Snapshots::Untried if !run.from_snapshot => json!({ "used": false, "available": null }),
        _ => json!({ "used": run.from_snapshot, "available": true }),
    }
}

/// The reply about a cell running in the background: its result when `outcome` is there,
/// otherwise the output so far, a note that it still runs, and its id last.
pub fn live_result(live: &LiveCell, outcome: Option<Outcome>, waited: Duration) -> CallToolResult {
    if let Some(outcome) = outcome {
        return match &*outcome {
            Ok(run) => cell_result(run),
            Err(error) => error_result(error),
        };
    }
    let mut content: Vec<ContentBlock> = match live.snapshot() {
        Some(outputs) => outputs.iter().filter_map(output_content).collect(),
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
pub fn finished_cell_result(cell: &Cell, outputs: &[Output]) -> CallToolResult {
    let mut content: Vec<ContentBlock> = outputs.iter().filter_map(output_content).collect();
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
pub fn cell_detail_result(cell: &Cell, outputs: &[Output]) -> CallToolResult {
    let mut content = vec![ContentBlock::text(cell.code.clone())];
    content.extend(outputs.iter().filter_map(output_content));
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

fn output_content(output: &Output) -> Option<ContentBlock> {
    match output {
        Output::Stream { name: StreamName::Stdout, text } => Some(ContentBlock::text(text.clone())),
        Output::Stream { name: StreamName::Stderr, text } => {
            Some(ContentBlock::text(format!("[stderr]\n{text}")))
        }
        Output::Error { .. } => output.traceback_text().map(ContentBlock::text),
        Output::Omitted { .. } => output.omission_note().map(ContentBlock::text),
        Output::ExecuteResult { data, .. } | Output::DisplayData { data, .. } => {
            for mime in IMAGE_TYPES {
                if let Some(bytes) = output.image(mime) {
                    let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
                    return Some(ContentBlock::image(encoded, mime));
                }
            }
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

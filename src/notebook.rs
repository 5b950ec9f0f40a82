//! Cells and their outputs in Jupyter's notebook format (nbformat 4.5).
//!
//! Owns the conversion of [`Output`]s to nbformat output objects and back (a session keeps each
//! cell's outputs on disk in this form), and the assembly of a notebook from a path of cells.
//! Pure: the caller reads and writes the files.

use serde_json::{Map, Value, json};

use crate::graph::Cell;
use crate::kernel::{Output, StreamName};

/// nbformat version written.
const NBFORMAT: u64 = 4;
/// nbformat minor version written (4.5 has cell ids).
const NBFORMAT_MINOR: u64 = 5;

/// `outputs` as nbformat output objects. An [`Output::Omitted`] becomes a stderr note.
pub fn to_nbformat(outputs: &[Output]) -> Vec<Value> {
    outputs
        .iter()
        .map(|output| match output {
            Output::Stream { name, text } => json!({"output_type": "stream", "name": name.as_str(), "text": text}),
            Output::ExecuteResult { execution_count, data } => json!({
                "output_type": "execute_result", "execution_count": execution_count, "data": data, "metadata": {},
            }),
            Output::DisplayData { data, .. } => {
                json!({"output_type": "display_data", "data": data, "metadata": {}})
            }
            Output::Error { ename, evalue, traceback } => {
                json!({"output_type": "error", "ename": ename, "evalue": evalue, "traceback": traceback})
            }
            Output::Omitted { .. } => json!({
                "output_type": "stream", "name": "stderr", "text": output.omission_note().unwrap_or_default(),
            }),
        })
        .collect()
}

/// Outputs back from nbformat output objects; objects of unknown shape are skipped.
pub fn from_nbformat(outputs: &[Value]) -> Vec<Output> {
    outputs
        .iter()
        .filter_map(|output| {
            let text = |key: &str| output.get(key).map(multiline);
            let data = || output.get("data").and_then(Value::as_object).cloned().unwrap_or_default();
            Some(match output.get("output_type")?.as_str()? {
                "stream" => Output::Stream {
                    name: if output.get("name")? == "stderr" {
                        StreamName::Stderr
                    } else {
                        StreamName::Stdout
                    },
                    text: text("text")?,
                },
                "execute_result" => Output::ExecuteResult {
                    execution_count: output.get("execution_count").and_then(Value::as_u64).unwrap_or(0),
                    data: data(),
                },
                "display_data" => Output::DisplayData { data: data(), display_id: None },
                "error" => Output::Error {
                    ename: text("ename")?,
                    evalue: text("evalue")?,
                    traceback: output
                        .get("traceback")?
                        .as_array()?
                        .iter()
                        .filter_map(|line| line.as_str().map(str::to_owned))
                        .collect(),
                },
                _ => return None,
            })
        })
        .collect()
}

/// nbformat allows text as one string or a list of lines.
fn multiline(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Array(lines) => lines.iter().filter_map(Value::as_str).collect(),
        other => other.to_string(),
    }
}

/// A notebook of `cells` (root first), each with its kept nbformat outputs.
pub fn notebook<'a>(
    cells: impl IntoIterator<Item = (&'a Cell, Vec<Value>)>,
    python_version: Option<&str>,
) -> Value {
    let cells: Vec<Value> = cells
        .into_iter()
        .map(|(cell, outputs)| {
            json!({
                "cell_type": "code",
                "id": cell.id.as_str(),
                "metadata": {"mcp_pyrepl": {"parent": cell.parent, "status": cell.status}},
                "execution_count": cell.execution_count,
                "source": cell.code,
                "outputs": outputs,
            })
        })
        .collect();
    let mut language_info = Map::new();
    language_info.insert("name".into(), json!("python"));
    if let Some(version) = python_version {
        language_info.insert("version".into(), json!(version));
    }
    json!({
        "nbformat": NBFORMAT,
        "nbformat_minor": NBFORMAT_MINOR,
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"},
            "language_info": language_info,
        },
        "cells": cells,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_survive_the_round_trip() {
        let mut data = Map::new();
        data.insert("text/plain".into(), json!("42"));
        let outputs = vec![
            Output::Stream { name: StreamName::Stdout, text: "hi\n".into() },
            Output::Stream { name: StreamName::Stderr, text: "warn\n".into() },
            Output::ExecuteResult { execution_count: 3, data: data.clone() },
            Output::DisplayData { data, display_id: None },
            Output::Error { ename: "E".into(), evalue: "v".into(), traceback: vec!["a".into(), "b".into()] },
        ];
        assert_eq!(from_nbformat(&to_nbformat(&outputs)), outputs);
    }

    #[test]
    fn list_of_lines_text_is_joined_and_unknown_outputs_skipped() {
        let outputs = from_nbformat(&[
            json!({"output_type": "stream", "name": "stdout", "text": ["a\n", "b\n"]}),
            json!({"output_type": "something_new"}),
        ]);
        assert_eq!(outputs, [Output::Stream { name: StreamName::Stdout, text: "a\nb\n".into() }]);
    }
}

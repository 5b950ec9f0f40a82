//! What a cell produced, as [`Output`] values built from its iopub messages.
//!
//! Owns the notebook semantics of a cell's output list: consecutive stream text of one name is
//! coalesced, `clear_output` clears (at once, or at the next output with `wait`), and
//! `update_display_data` replaces the display with the same id. Knows nothing of sockets or MCP.

use base64::Engine;
use serde_json::{Map, Value};

use crate::jupyter::message::{Content, DisplayData};

/// A MIME bundle: MIME type to data (text, JSON, or base64 for binary types).
pub type MimeBundle = Map<String, Value>;

/// One output of a cell, in the order the kernel produced it.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Text written to stdout or stderr.
    Stream {
        /// Which stream.
        name: StreamName,
        /// The text, coalesced across consecutive writes.
        text: String,
    },
    /// The value of the cell's last expression.
    ExecuteResult {
        /// The execution counter of the cell.
        execution_count: u64,
        /// Its representations.
        data: MimeBundle,
    },
    /// Rich output shown during the cell (`display(...)`, figures).
    DisplayData {
        /// Its representations.
        data: MimeBundle,
        /// The display id, for updates.
        display_id: Option<String>,
    },
    /// An exception the cell raised.
    Error {
        /// Exception class name.
        ename: String,
        /// Exception message.
        evalue: String,
        /// Traceback lines as the kernel formatted them (with ANSI codes).
        traceback: Vec<String>,
    },
}

/// The stream a piece of text was written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamName {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl StreamName {
    /// `stdout` or `stderr`.
    pub fn as_str(self) -> &'static str {
        match self {
            StreamName::Stdout => "stdout",
            StreamName::Stderr => "stderr",
        }
    }
}

impl Output {
    /// The `text/plain` representation of a result or display, if it has one.
    pub fn text_plain(&self) -> Option<&str> {
        self.data()?.get("text/plain")?.as_str()
    }

    /// The decoded bytes of an image of `mime` type (e.g. `image/png`), if present and valid.
    pub fn image(&self, mime: &str) -> Option<Vec<u8>> {
        let encoded = self.data()?.get(mime)?.as_str()?;
        // Kernels may wrap base64 in newlines.
        let compact: String = encoded.split_ascii_whitespace().collect();
        base64::engine::general_purpose::STANDARD.decode(compact).ok()
    }

    /// An error's traceback as plain text, one frame after another, without ANSI codes; `None`
    /// for other outputs.
    pub fn traceback_text(&self) -> Option<String> {
        let Output::Error { ename, evalue, traceback } = self else { return None };
        if traceback.is_empty() {
            return Some(format!("{ename}: {evalue}"));
        }
        Some(strip_ansi(&traceback.join("\n")))
    }

    /// The MIME bundle of a result or display.
    pub fn data(&self) -> Option<&MimeBundle> {
        match self {
            Output::ExecuteResult { data, .. } | Output::DisplayData { data, .. } => Some(data),
            Output::Stream { .. } | Output::Error { .. } => None,
        }
    }
}

/// The outputs of one execution, built up message by message.
#[derive(Debug, Default)]
pub struct OutputLog {
    outputs: Vec<Output>,
    clear_on_next: bool,
}

impl OutputLog {
    /// Applies one iopub content. Contents that are not outputs (status, execute_input, ...) are
    /// ignored.
    pub fn apply(&mut self, content: Content) {
        let output = match content {
            Content::Stream(stream) => {
                let name = if stream.name == "stderr" { StreamName::Stderr } else { StreamName::Stdout };
                Output::Stream { name, text: stream.text }
            }
            Content::ExecuteResult(result) => {
                Output::ExecuteResult { execution_count: result.execution_count, data: result.data }
            }
            Content::DisplayData(display) => {
                Output::DisplayData { display_id: display_id(&display), data: display.data }
            }
            Content::Error(error) => {
                Output::Error { ename: error.ename, evalue: error.evalue, traceback: error.traceback }
            }
            Content::UpdateDisplayData(update) => {
                self.update_display(update);
                return;
            }
            Content::ClearOutput(clear) => {
                if clear.wait {
                    self.clear_on_next = true;
                } else {
                    self.outputs.clear();
                }
                return;
            }
            _ => return,
        };
        self.push(output);
    }

    fn push(&mut self, output: Output) {
        if std::mem::take(&mut self.clear_on_next) {
            self.outputs.clear();
        }
        if let (Output::Stream { name, text }, Some(Output::Stream { name: last_name, text: last_text })) =
            (&output, self.outputs.last_mut())
            && name == last_name
        {
            last_text.push_str(text);
            return;
        }
        self.outputs.push(output);
    }

    fn update_display(&mut self, update: DisplayData) {
        let Some(id) = display_id(&update) else { return };
        for output in &mut self.outputs {
            if let Output::DisplayData { data, display_id: Some(existing) } = output
                && *existing == id
            {
                *data = update.data.clone();
            }
        }
    }

    /// The outputs so far, in order.
    pub fn outputs(&self) -> &[Output] {
        &self.outputs
    }

    /// The finished list of outputs.
    pub fn into_outputs(self) -> Vec<Output> {
        self.outputs
    }
}

/// `text` without ANSI escape sequences (IPython colours its tracebacks).
pub fn strip_ansi(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            plain.push(c);
            continue;
        }
        // CSI: ESC [ parameters… final byte in @..~; other escapes are two characters long.
        if chars.next() == Some('[') {
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        }
    }
    plain
}

fn display_id(display: &DisplayData) -> Option<String> {
    display.transient.get("display_id")?.as_str().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jupyter::message::{ClearOutput, ErrorContent, Stream};
    use serde_json::json;

    fn stream(name: &str, text: &str) -> Content {
        Content::Stream(Stream { name: name.into(), text: text.into() })
    }

    fn display(id: Option<&str>, text: &str, update: bool) -> Content {
        let mut transient = Map::new();
        if let Some(id) = id {
            transient.insert("display_id".into(), json!(id));
        }
        let mut data = Map::new();
        data.insert("text/plain".into(), json!(text));
        let display = DisplayData { data, metadata: Map::new(), transient };
        if update { Content::UpdateDisplayData(display) } else { Content::DisplayData(display) }
    }

    #[test]
    fn consecutive_streams_of_one_name_coalesce() {
        let mut log = OutputLog::default();
        for content in
            [stream("stdout", "a"), stream("stdout", "b"), stream("stderr", "c"), stream("stdout", "d")]
        {
            log.apply(content);
        }
        assert_eq!(
            log.into_outputs(),
            vec![
                Output::Stream { name: StreamName::Stdout, text: "ab".into() },
                Output::Stream { name: StreamName::Stderr, text: "c".into() },
                Output::Stream { name: StreamName::Stdout, text: "d".into() },
            ]
        );
    }

    #[test]
    fn clear_output_clears_now_or_at_the_next_output() {
        let mut log = OutputLog::default();
        log.apply(stream("stdout", "10%"));
        log.apply(Content::ClearOutput(ClearOutput { wait: true }));
        assert_eq!(log.outputs().len(), 1);
        log.apply(stream("stdout", "100%"));
        assert_eq!(log.outputs(), &[Output::Stream { name: StreamName::Stdout, text: "100%".into() }]);
        log.apply(Content::ClearOutput(ClearOutput { wait: false }));
        assert!(log.outputs().is_empty());
    }

    #[test]
    fn update_display_data_replaces_by_id() {
        let mut log = OutputLog::default();
        log.apply(display(Some("p"), "0/3", false));
        log.apply(display(None, "other", false));
        log.apply(display(Some("p"), "3/3", true));
        log.apply(display(Some("unknown"), "ignored", true));
        let texts: Vec<_> = log.outputs().iter().map(|o| o.text_plain().unwrap()).collect();
        assert_eq!(texts, ["3/3", "other"]);
    }

    #[test]
    fn ansi_codes_are_stripped() {
        assert_eq!(strip_ansi("\x1b[0;31mValueError\x1b[0m: bad"), "ValueError: bad");
        assert_eq!(strip_ansi("plain"), "plain");
        assert_eq!(strip_ansi("cut\x1b["), "cut");
        assert_eq!(strip_ansi("é\x1b[1;32m✓"), "é✓");
    }

    #[test]
    fn errors_and_images_decode() {
        let mut log = OutputLog::default();
        log.apply(Content::Error(ErrorContent {
            ename: "ValueError".into(),
            evalue: "bad".into(),
            traceback: vec!["line".into()],
        }));
        let mut data = Map::new();
        data.insert("image/png".into(), json!("iVBO\nRw0KGgo="));
        log.apply(Content::DisplayData(DisplayData { data, metadata: Map::new(), transient: Map::new() }));
        let outputs = log.into_outputs();
        assert!(matches!(&outputs[0], Output::Error { ename, .. } if ename == "ValueError"));
        assert_eq!(outputs[1].image("image/png").unwrap(), b"\x89PNG\r\n\x1a\n");
        assert_eq!(outputs[1].image("image/jpeg"), None);
    }
}

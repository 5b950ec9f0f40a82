//! What a cell produced, as [`Output`] values built from its iopub messages.
//!
//! Owns the notebook semantics of a cell's output list: consecutive stream text of one name is
//! coalesced, `clear_output` clears (at once, or at the next output with `wait`), and
//! `update_display_data` replaces the display with the same id. Knows nothing of sockets or MCP.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

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
    /// Output cut to stay within the limits: it stood here, between the head and the tail.
    Omitted {
        /// Bytes of text left out.
        bytes: u64,
        /// Images left out.
        images: usize,
        /// The file holding the whole text, when it could be written.
        full_output: Option<PathBuf>,
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

    /// For [`Output::Omitted`], a line saying what was left out and where the whole text is.
    pub fn omission_note(&self) -> Option<String> {
        let Output::Omitted { bytes, images, full_output } = self else { return None };
        let mut what = Vec::new();
        if *bytes > 0 {
            what.push(format!("{bytes} bytes of output"));
        }
        if *images > 0 {
            what.push(format!("{images} image(s)"));
        }
        let mut note = format!("[… {} omitted here to keep the reply small", what.join(" and "));
        if let Some(path) = full_output {
            note.push_str(&format!("; the full text output is in `{}`", path.display()));
        }
        note.push_str(" …]");
        Some(note)
    }

    /// The MIME bundle of a result or display.
    pub fn data(&self) -> Option<&MimeBundle> {
        match self {
            Output::ExecuteResult { data, .. } | Output::DisplayData { data, .. } => Some(data),
            Output::Stream { .. } | Output::Error { .. } | Output::Omitted { .. } => None,
        }
    }
}

/// What one execution may keep in memory. Whatever is cut is counted, and the full text is
/// written to `spill_to` (when given) so it can still be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputLimits {
    /// Text kept, half from the start and half from the end of the output.
    pub max_text_bytes: usize,
    /// Images kept.
    pub max_images: usize,
    /// Bytes of (base64) image data kept.
    pub max_image_bytes: usize,
    /// The file the whole text goes to once something is cut; created only then.
    pub spill_to: Option<PathBuf>,
}

impl Default for OutputLimits {
    fn default() -> Self {
        OutputLimits { max_text_bytes: 64 * 1024, max_images: 10, max_image_bytes: 16 << 20, spill_to: None }
    }
}

/// Largest spill file written for one execution.
const MAX_SPILL_BYTES: u64 = 256 << 20;

/// The outputs of one execution, built up message by message, within [`OutputLimits`].
///
/// Text is kept as a head (the first half of the limit) and a tail (a sliding window over the
/// last half); what falls between is counted in one [`Output::Omitted`] placed between them.
/// Memory stays bounded however much the kernel prints.
#[derive(Debug, Default)]
pub struct OutputLog {
    limits: OutputLimits,
    head: Vec<Output>,
    head_bytes: usize,
    /// Set once the head is full: everything after goes through the tail window.
    cut: bool,
    tail: VecDeque<Output>,
    tail_bytes: usize,
    omitted_bytes: u64,
    omitted_images: usize,
    images: usize,
    image_bytes: usize,
    clear_on_next: bool,
    spill: Option<Spill>,
}

impl OutputLog {
    /// An empty log bounded by `limits`.
    pub fn new(limits: OutputLimits) -> Self {
        OutputLog { limits, ..OutputLog::default() }
    }

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
                    self.clear();
                }
                return;
            }
            _ => return,
        };
        self.push(output);
    }

    fn clear(&mut self) {
        let limits = std::mem::take(&mut self.limits);
        let spill = self.spill.take();
        *self = OutputLog { limits, spill, ..OutputLog::default() };
    }

    fn push(&mut self, output: Output) {
        if std::mem::take(&mut self.clear_on_next) {
            self.clear();
        }
        let image_size = image_size(&output);
        if image_size > 0 {
            if self.images >= self.limits.max_images
                || self.image_bytes + image_size > self.limits.max_image_bytes
            {
                self.omitted_images += 1;
                self.spill_write(&output);
                return;
            }
            self.images += 1;
            self.image_bytes += image_size;
        }
        let half = self.limits.max_text_bytes / 2;
        let weight = text_weight(&output);
        if !self.cut {
            if self.head_bytes + weight <= half {
                self.head_bytes += weight;
                push_coalesced(&mut self.head, output);
                return;
            }
            self.start_cut();
            let output = match output {
                // Fill the head to the brim with the start of the stream.
                Output::Stream { name, mut text } => {
                    let at = floor_char_boundary(&text, half - self.head_bytes);
                    let rest = text.split_off(at);
                    self.head_bytes += text.len();
                    self.spill_write(&Output::Stream { name, text: text.clone() });
                    push_coalesced(&mut self.head, Output::Stream { name, text });
                    Output::Stream { name, text: rest }
                }
                other => other,
            };
            return self.push_tail(output);
        }
        self.push_tail(output);
    }

    /// Adds to the tail window, then slides it so it holds at most half the text limit.
    fn push_tail(&mut self, output: Output) {
        self.spill_write(&output);
        self.tail_bytes += text_weight(&output);
        push_coalesced_back(&mut self.tail, output);
        let half = self.limits.max_text_bytes / 2;
        while self.tail_bytes > half {
            let excess = self.tail_bytes - half;
            let Some(front) = self.tail.front_mut() else { break };
            if let Output::Stream { text, .. } = front
                && text.len() > excess
            {
                let at = ceil_char_boundary(text, excess);
                text.drain(..at);
                self.tail_bytes -= at;
                self.omitted_bytes += at as u64;
                continue;
            }
            let evicted = self.tail.pop_front().expect("front exists");
            let weight = text_weight(&evicted);
            self.tail_bytes -= weight;
            self.omitted_bytes += weight as u64;
            if image_size(&evicted) > 0 {
                self.omitted_images += 1;
            }
        }
    }

    /// The head is full: from here on the whole text also goes to the spill file.
    fn start_cut(&mut self) {
        self.cut = true;
        if self.spill.is_none()
            && let Some(path) = &self.limits.spill_to
        {
            self.spill = Spill::create(path);
            let head = std::mem::take(&mut self.head);
            for output in &head {
                self.spill_write(output);
            }
            self.head = head;
        }
    }

    fn spill_write(&mut self, output: &Output) {
        if let Some(spill) = &mut self.spill {
            spill.write(output);
        }
    }

    fn update_display(&mut self, update: DisplayData) {
        let Some(id) = display_id(&update) else { return };
        for output in self.head.iter_mut().chain(self.tail.iter_mut()) {
            if let Output::DisplayData { data, display_id: Some(existing) } = output
                && *existing == id
            {
                *data = update.data.clone();
            }
        }
    }

    /// The outputs so far, as [`OutputLog::into_outputs`] would give them now (without the
    /// path of the full output, which is only final at the end).
    pub fn snapshot(&self) -> Vec<Output> {
        let mut outputs = self.head.clone();
        if self.omitted_bytes > 0 || self.omitted_images > 0 {
            let full_output = self.spill.as_ref().map(|spill| spill.path.clone());
            outputs.push(Output::Omitted {
                bytes: self.omitted_bytes,
                images: self.omitted_images,
                full_output,
            });
        }
        outputs.extend(self.tail.iter().cloned());
        outputs
    }

    /// The finished list of outputs: the head, an [`Output::Omitted`] when anything was cut,
    /// the tail.
    pub fn into_outputs(mut self) -> Vec<Output> {
        let full_output = self.spill.take().and_then(Spill::finish);
        let mut outputs = self.head;
        if self.omitted_bytes > 0 || self.omitted_images > 0 {
            outputs.push(Output::Omitted {
                bytes: self.omitted_bytes,
                images: self.omitted_images,
                full_output,
            });
        }
        outputs.extend(self.tail);
        outputs
    }
}

/// The spill file of one execution.
#[derive(Debug)]
struct Spill {
    path: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
    written: u64,
}

impl Spill {
    fn create(path: &Path) -> Option<Spill> {
        if let Some(parent) = path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        match std::fs::File::create(path) {
            Ok(file) => {
                Some(Spill { path: path.to_owned(), file: std::io::BufWriter::new(file), written: 0 })
            }
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "cannot keep the full output");
                None
            }
        }
    }

    fn write(&mut self, output: &Output) {
        use std::io::Write;
        let rendered;
        let text = match output {
            Output::Stream { text, .. } => text.as_str(),
            Output::Error { .. } => {
                rendered = output.traceback_text().unwrap_or_default() + "\n";
                &rendered
            }
            Output::ExecuteResult { .. } | Output::DisplayData { .. } => {
                rendered = match image_size(output) {
                    0 => format!("{}\n", output.text_plain().unwrap_or("[rich output]")),
                    _ => "[image]\n".to_owned(),
                };
                &rendered
            }
            Output::Omitted { .. } => return,
        };
        let room = MAX_SPILL_BYTES.saturating_sub(self.written) as usize;
        let text = &text[..floor_char_boundary(text, room)];
        if !text.is_empty() && self.file.write_all(text.as_bytes()).is_ok() {
            self.written += text.len() as u64;
        }
    }

    fn finish(mut self) -> Option<PathBuf> {
        use std::io::Write;
        self.file.flush().ok().map(|()| self.path)
    }
}

fn push_coalesced(outputs: &mut Vec<Output>, output: Output) {
    if let (Output::Stream { name, text }, Some(Output::Stream { name: last_name, text: last_text })) =
        (&output, outputs.last_mut())
        && name == last_name
    {
        last_text.push_str(text);
        return;
    }
    outputs.push(output);
}

fn push_coalesced_back(outputs: &mut VecDeque<Output>, output: Output) {
    if let (Output::Stream { name, text }, Some(Output::Stream { name: last_name, text: last_text })) =
        (&output, outputs.back_mut())
        && name == last_name
    {
        last_text.push_str(text);
        return;
    }
    outputs.push_back(output);
}

/// Bytes of text an output holds (images count under their own limits).
fn text_weight(output: &Output) -> usize {
    match output {
        Output::Stream { text, .. } => text.len(),
        Output::Error { ename, evalue, traceback } => {
            ename.len() + evalue.len() + traceback.iter().map(String::len).sum::<usize>()
        }
        Output::ExecuteResult { data, .. } | Output::DisplayData { data, .. } => data
            .iter()
            .filter(|(mime, _)| !mime.starts_with("image/") || mime.as_str() == "image/svg+xml")
            .map(|(_, value)| value.as_str().map_or_else(|| value.to_string().len(), str::len))
            .sum(),
        Output::Omitted { .. } => 0,
    }
}

/// Bytes of raster image data an output holds.
fn image_size(output: &Output) -> usize {
    let Some(data) = output.data() else { return 0 };
    ["image/png", "image/jpeg"].iter().filter_map(|mime| data.get(*mime)?.as_str()).map(str::len).sum()
}

/// The largest char boundary of `text` at or below `at`.
fn floor_char_boundary(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// The smallest char boundary of `text` at or above `at`.
fn ceil_char_boundary(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at += 1;
    }
    at
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

    fn outputs_of(limits: OutputLimits, contents: impl IntoIterator<Item = Content>) -> Vec<Output> {
        let mut log = OutputLog::new(limits);
        for content in contents {
            log.apply(content);
        }
        log.into_outputs()
    }

    #[test]
    fn clear_output_clears_now_or_at_the_next_output() {
        let waiting = [stream("stdout", "10%"), Content::ClearOutput(ClearOutput { wait: true })];
        assert_eq!(outputs_of(OutputLimits::default(), waiting.clone()).len(), 1);
        let replaced = waiting.into_iter().chain([stream("stdout", "100%")]);
        assert_eq!(
            outputs_of(OutputLimits::default(), replaced),
            [Output::Stream { name: StreamName::Stdout, text: "100%".into() }]
        );
        let cleared = [stream("stdout", "x"), Content::ClearOutput(ClearOutput { wait: false })];
        assert!(outputs_of(OutputLimits::default(), cleared).is_empty());
    }

    #[test]
    fn update_display_data_replaces_by_id() {
        let outputs = outputs_of(
            OutputLimits::default(),
            [
                display(Some("p"), "0/3", false),
                display(None, "other", false),
                display(Some("p"), "3/3", true),
                display(Some("unknown"), "ignored", true),
            ],
        );
        let texts: Vec<_> = outputs.iter().map(|o| o.text_plain().unwrap()).collect();
        assert_eq!(texts, ["3/3", "other"]);
    }

    fn small(spill_to: Option<PathBuf>) -> OutputLimits {
        OutputLimits { max_text_bytes: 1000, max_images: 2, max_image_bytes: 1 << 20, spill_to }
    }

    #[test]
    fn a_flood_keeps_head_and_tail_and_counts_the_middle() {
        let dir = tempfile::tempdir().unwrap();
        let spill = dir.path().join("out/full.txt");
        let lines: Vec<String> = (0..10_000).map(|i| format!("line {i:05}\n")).collect();
        let outputs = outputs_of(small(Some(spill.clone())), lines.iter().map(|l| stream("stdout", l)));
        let total: usize = lines.iter().map(String::len).sum();
        let [
            Output::Stream { text: head, .. },
            Output::Omitted { bytes, images: 0, full_output },
            Output::Stream { text: tail, .. },
        ] = outputs.as_slice()
        else {
            panic!("{outputs:?}")
        };
        assert_eq!(head.len(), 500);
        assert!(head.starts_with("line 00000\n"));
        assert!(tail.ends_with("line 09999\n"), "{tail}");
        assert!(tail.len() <= 500);
        assert_eq!(head.len() + tail.len() + *bytes as usize, total);
        assert_eq!(full_output.as_deref(), Some(spill.as_path()));
        assert_eq!(std::fs::read_to_string(&spill).unwrap(), lines.concat());
    }

    #[test]
    fn nothing_is_spilled_when_nothing_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let spill = dir.path().join("full.txt");
        let outputs = outputs_of(small(Some(spill.clone())), [stream("stdout", "short\n")]);
        assert_eq!(outputs.len(), 1);
        assert!(!spill.exists());
    }

    #[test]
    fn images_past_the_limit_are_counted_not_kept() {
        let png = |n: usize| {
            let mut data = Map::new();
            data.insert("image/png".into(), json!("iVBORw0KGgo="));
            data.insert("text/plain".into(), json!(format!("<Figure {n}>")));
            Content::DisplayData(DisplayData { data, metadata: Map::new(), transient: Map::new() })
        };
        let outputs = outputs_of(small(None), (0..5).map(png));
        let images = outputs.iter().filter(|o| o.image("image/png").is_some()).count();
        assert_eq!(images, 2);
        assert!(matches!(outputs.last(), Some(Output::Omitted { images: 3, bytes: 0, .. })), "{outputs:?}");
    }

    #[test]
    fn multibyte_text_is_cut_on_char_boundaries() {
        let text = "é".repeat(2000);
        let outputs = outputs_of(small(None), [stream("stdout", &text), stream("stderr", "é!")]);
        let kept: String = outputs
            .iter()
            .filter_map(|o| match o {
                Output::Stream { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect();
        assert!(kept.ends_with("é!"));
        assert!(kept.chars().all(|c| c == 'é' || c == '!'));
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

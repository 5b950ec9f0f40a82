//! Rich outputs without a better form, as text a model can read: HTML as text (tables as text
//! tables, links as `[text](href)`), Markdown and LaTeX as written, JSON pretty-printed.
//!
//! Owns only the conversion; which MIME type of a bundle is shown is `content.rs`'s choice.

use html2text::render::{TaggedLine, TextDecorator};
use serde_json::Value;

/// The rich text types, in order of preference.
pub const RICH_TYPES: [&str; 5] =
    ["text/markdown", "text/html", "text/latex", "application/json", "image/svg+xml"];

/// Columns HTML is laid out in: wide, so that tables keep a row a line.
const HTML_WIDTH: usize = 200;

/// `value` of MIME type `mime` as text, at most as long as the value itself (which the output
/// limits already bounded) plus a note.
pub fn rich_text(mime: &str, value: &Value) -> String {
    let source = value.as_str().map(str::to_owned).unwrap_or_else(|| value.to_string());
    let text = match mime {
        "text/html" => html_to_text(&source),
        "application/json" => serde_json::to_string_pretty(value).unwrap_or(source.clone()),
        "image/svg+xml" => format!("[image/svg+xml]\n{source}"),
        _ => source.clone(),
    };
    bounded(text, source.len().max(1024))
}

/// HTML as text: tables drawn with borders, links kept inline as Markdown links.
pub fn html_to_text(html: &str) -> String {
    let rendered = html2text::config::with_decorator(InlineLinks::default())
        .do_decorate()
        .allow_width_overflow()
        .string_from_read(html.as_bytes(), HTML_WIDTH);
    match rendered {
        Ok(text) => text.lines().map(str::trim_end).collect::<Vec<_>>().join("\n").trim().to_owned(),
        Err(error) => format!("[text/html that could not be read as text ({error})]\n{html}"),
    }
}

/// `text` cut to `limit` bytes (on a char boundary) with a note of how much was cut.
fn bounded(mut text: String, limit: usize) -> String {
    if text.len() <= limit {
        return text;
    }
    let mut at = limit;
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    let cut = text.len() - at;
    text.truncate(at);
    text.push_str(&format!("\n[… {cut} more bytes of this output as text; get_cell shows the same]"));
    text
}

/// html2text's plain decorator, with links as `[text](href)` instead of footnotes.
#[derive(Debug, Clone, Default)]
struct InlineLinks {
    /// The targets of the links being rendered, innermost last.
    open: Vec<String>,
}

impl TextDecorator for InlineLinks {
    type Annotation = ();

    fn decorate_link_start(&mut self, url: &str) -> (String, Self::Annotation) {
        self.open.push(url.to_owned());
        ("[".to_owned(), ())
    }

    fn decorate_link_end(&mut self) -> String {
        format!("]({})", self.open.pop().unwrap_or_default())
    }

    fn decorate_em_start(&self) -> (String, Self::Annotation) {
        (String::new(), ())
    }

    fn decorate_em_end(&self) -> String {
        String::new()
    }

    fn decorate_strong_start(&self) -> (String, Self::Annotation) {
        (String::new(), ())
    }

    fn decorate_strong_end(&self) -> String {
        String::new()
    }

    fn decorate_strikeout_start(&self) -> (String, Self::Annotation) {
        (String::new(), ())
    }

    fn decorate_strikeout_end(&self) -> String {
        String::new()
    }

    fn decorate_code_start(&self) -> (String, Self::Annotation) {
        (String::new(), ())
    }

    fn decorate_code_end(&self) -> String {
        String::new()
    }

    fn decorate_preformat_first(&self) -> Self::Annotation {}

    fn decorate_preformat_cont(&self) -> Self::Annotation {}

    fn decorate_image(&mut self, _src: &str, title: &str) -> (String, Self::Annotation) {
        (format!("[image: {title}]"), ())
    }

    fn header_prefix(&self, level: usize) -> String {
        "#".repeat(level) + " "
    }

    fn quote_prefix(&self) -> String {
        "> ".to_owned()
    }

    fn unordered_item_prefix(&self) -> String {
        "* ".to_owned()
    }

    fn ordered_item_prefix(&self, i: i64) -> String {
        format!("{i}. ")
    }

    fn make_subblock_decorator(&self) -> Self {
        InlineLinks::default()
    }

    fn finalise(&mut self, _urls: Vec<String>) -> Vec<TaggedLine<Self::Annotation>> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_table_keeps_its_cells_in_rows_and_links_stay_inline() {
        let html = "<p>See <a href=\"https://example.org/doc\">the docs</a>.</p>\
            <style>td { color: red }</style>\
            <table><thead><tr><th>name</th><th>score</th></tr></thead>\
            <tbody><tr><td>alpha</td><td>1.5</td></tr><tr><td>beta</td><td>22</td></tr></tbody></table>";
        let text = html_to_text(html);
        assert!(text.contains("[the docs](https://example.org/doc)"), "{text}");
        assert!(!text.contains("color"), "{text}");
        let rows: Vec<&str> =
            text.lines().filter(|line| line.contains("alpha") || line.contains("beta")).collect();
        assert_eq!(rows.len(), 2, "{text}");
        assert!(rows[0].contains("1.5") && rows[1].contains("22"), "{text}");
        assert!(text.lines().any(|line| line.contains("name") && line.contains("score")), "{text}");
    }

    #[test]
    fn json_is_pretty_and_long_text_is_cut_with_a_note() {
        assert_eq!(rich_text("application/json", &json!({"a": [1]})), "{\n  \"a\": [\n    1\n  ]\n}");
        assert_eq!(rich_text("text/latex", &json!("$x^2$")), "$x^2$");
        let cut = bounded("é".repeat(1000), 1001);
        assert!(cut.starts_with(&"é".repeat(500)) && cut.contains("[… 1000 more bytes"), "{cut}");
    }
}

//! A session's MCP resources: what a reply is too small to hold, readable by any client,
//! however it reaches the server (stdio or streamable HTTP from another machine).
//!
//! URIs, with `<session>` a session id and `<cell>` a cell id:
//! - `pyrepl://sessions/<session>/cells/<cell>/outputs/<n>`: output `n` (from 0) of a recorded
//!   cell as it was kept: a full-size image as a blob, anything else as its text;
//! - `pyrepl://sessions/<session>/outputs/<file>`: the full text of an output too long to return;
//! - `pyrepl://sessions/<session>/exports/<file>`: a notebook or requirements file written by
//!   `export_notebook`;
//! - `pyrepl://sessions/<session>/files/<path>`: a file of the kernels' working directory (read
//!   like `download_file`; not listed, as the code may write thousands).
//!
//! `resources/list` lists the first three kinds, a page of sessions at a time. Every read goes
//! through the session's records, never its lock, so it answers while a cell runs; ids and file
//! names are checked like every argument, and files are opened without following links.

use std::fmt;

use base64::Engine;
use rmcp::ErrorData;
use rmcp::model::{ContentBlock, ListResourcesResult, ReadResourceResult, Resource, ResourceContents};

use super::images::IMAGE_TYPES;
use crate::error::Error;
use crate::error::FileError;
use crate::graph::{CellId, GraphError};
use crate::kernel::Output;
use crate::session::manager::SessionManager;
use crate::session::records::{KeptFiles, Records};

/// The scheme and authority of every URI here.
const PREFIX: &str = "pyrepl://sessions/";

/// Sessions listed per `resources/list` page.
const SESSIONS_PER_PAGE: usize = 10;

/// One resource of one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResourceUri {
    /// Output `index` of cell `cell`, as kept.
    CellOutput {
        /// The session id.
        session: String,
        /// The cell.
        cell: CellId,
        /// The output's position among the cell's outputs, from 0.
        index: usize,
    },
    /// A file of the session's server-written files (spilled outputs, exports).
    Kept {
        /// The session id.
        session: String,
        /// Which directory.
        kind: KeptFiles,
        /// The file's name.
        file: String,
    },
    /// A file of the kernels' working directory.
    WorkFile {
        /// The session id.
        session: String,
        /// Its path relative to the directory.
        path: String,
    },
}

impl fmt::Display for ResourceUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResourceUri::CellOutput { session, cell, index } => {
                write!(f, "{PREFIX}{session}/cells/{cell}/outputs/{index}")
            }
            ResourceUri::Kept { session, kind: KeptFiles::Spilled, file } => {
                write!(f, "{PREFIX}{session}/outputs/{file}")
            }
            ResourceUri::Kept { session, kind: KeptFiles::Exports, file } => {
                write!(f, "{PREFIX}{session}/exports/{file}")
            }
            ResourceUri::WorkFile { session, path } => write!(f, "{PREFIX}{session}/files/{path}"),
        }
    }
}

impl ResourceUri {
    /// The resource `uri` names. Only its shape is checked here: the session, cell and file are
    /// looked up when it is read.
    ///
    /// # Errors
    /// `invalid_params` naming the URI and the forms accepted.
    pub fn parse(uri: &str) -> Result<Self, ErrorData> {
        let malformed = || {
            ErrorData::invalid_params(
                format!(
                    "`{}` is not a resource of this server; its resources are \
                     {PREFIX}<session>/cells/<cell>/outputs/<n>, {PREFIX}<session>/outputs/<file>, \
                     {PREFIX}<session>/exports/<file> and {PREFIX}<session>/files/<path>, as replies and \
                     resources/list give them",
                    shown(uri)
                ),
                None,
            )
        };
        let rest = uri.strip_prefix(PREFIX).ok_or_else(malformed)?;
        let (session, rest) = rest.split_once('/').ok_or_else(malformed)?;
        let session = session.to_owned();
        let (kind, rest) = rest.split_once('/').ok_or_else(malformed)?;
        let file = |kind| {
            let plain = !rest.is_empty() && !rest.contains('/') && !rest.starts_with('.');
            plain.then(|| ResourceUri::Kept { session: session.clone(), kind, file: rest.to_owned() })
        };
        match kind {
            "cells" => {
                let (cell, index) = rest.split_once("/outputs/").ok_or_else(malformed)?;
                let cell = CellId::parse(cell).map_err(|error| invalid(uri, &error.into()))?;
                let index = index.parse().map_err(|_| malformed())?;
                Ok(ResourceUri::CellOutput { session, cell, index })
            }
            "outputs" => file(KeptFiles::Spilled).ok_or_else(malformed),
            "exports" => file(KeptFiles::Exports).ok_or_else(malformed),
            "files" => Ok(ResourceUri::WorkFile { session, path: rest.to_owned() }),
            _ => Err(malformed()),
        }
    }

    /// The session the resource belongs to.
    pub fn session(&self) -> &str {
        match self {
            ResourceUri::CellOutput { session, .. }
            | ResourceUri::Kept { session, .. }
            | ResourceUri::WorkFile { session, .. } => session,
        }
    }
}

/// A link to `uri` for a reply: its name, type, size and what it is.
pub fn link(
    uri: &ResourceUri,
    mime: &str,
    size: Option<u64>,
    description: impl Into<String>,
) -> ContentBlock {
    let name = match uri {
        ResourceUri::CellOutput { cell, index, .. } => format!("cell {cell} output {index}"),
        ResourceUri::Kept { file, .. } => file.clone(),
        ResourceUri::WorkFile { path, .. } => path.clone(),
    };
    let mut resource =
        Resource::new(uri.to_string(), name).with_mime_type(mime).with_description(description);
    if let Some(size) = size {
        resource = resource.with_size(size);
    }
    ContentBlock::resource_link(resource)
}

/// One page of `resources/list`: the resources of up to [`SESSIONS_PER_PAGE`] sessions after
/// the one `cursor` names.
pub fn list(manager: &SessionManager, cursor: Option<&str>) -> ListResourcesResult {
    let sessions = manager.list();
    let start = cursor.map_or(0, |after| sessions.partition_point(|s| s.id.as_str() <= after));
    let page = &sessions[start.min(sessions.len())..];
    let mut resources = Vec::new();
    for summary in page.iter().take(SESSIONS_PER_PAGE) {
        match manager.records(&summary.id) {
            Ok(records) => resources.extend(session_resources(&summary.id, &records)),
            Err(error) => tracing::debug!(session = %summary.id, %error, "session not listed"),
        }
    }
    let mut result = ListResourcesResult::with_all_items(resources);
    if page.len() > SESSIONS_PER_PAGE {
        result.next_cursor = Some(page[SESSIONS_PER_PAGE - 1].id.clone());
    }
    result
}

/// Every listed resource of one session: its cells' images, spilled outputs and exports.
fn session_resources(session: &str, records: &Records) -> Vec<Resource> {
    let mut resources = Vec::new();
    let cells: Vec<CellId> = records.graph().cells().map(|cell| cell.id.clone()).collect();
    for cell in cells {
        let Ok(outputs) = records.outputs_of(&cell) else { continue };
        for (index, output) in outputs.iter().enumerate() {
            let Some((mime, encoded)) = image_data(output) else { continue };
            let uri = ResourceUri::CellOutput { session: session.to_owned(), cell: cell.clone(), index };
            let description = format!("full-size image of cell {cell}");
            resources.push(
                Resource::new(uri.to_string(), format!("cell {cell} output {index}"))
                    .with_mime_type(mime)
                    .with_size(encoded.len() as u64 / 4 * 3)
                    .with_description(description),
            );
        }
    }
    for (kind, description) in [
        (KeptFiles::Spilled, "full text of a long output"),
        (KeptFiles::Exports, "exported by export_notebook"),
    ] {
        for (file, size) in records.files_in(kind) {
            let mime = kept_file_mime(&file);
            let uri = ResourceUri::Kept { session: session.to_owned(), kind, file: file.clone() };
            resources.push(
                Resource::new(uri.to_string(), file)
                    .with_mime_type(mime)
                    .with_size(size)
                    .with_description(description),
            );
        }
    }
    resources
}

/// `resources/read`: the contents of `uri`.
///
/// # Errors
/// `invalid_params` for a malformed URI or id, `resource_not_found` for a session, cell, output
/// or file that does not exist; each names the URI.
pub fn read(manager: &SessionManager, uri: &str) -> Result<ReadResourceResult, ErrorData> {
    let parsed = ResourceUri::parse(uri)?;
    let records = manager.records(parsed.session()).map_err(|error| invalid(uri, &error))?;
    let limit = manager.limits().max_download_bytes;
    let contents = match &parsed {
        ResourceUri::CellOutput { cell, index, .. } => {
            let outputs = records.outputs_of(cell).map_err(|error| invalid(uri, &error))?;
            let output = outputs.get(*index).ok_or_else(|| {
                ErrorData::resource_not_found(
                    format!(
                        "no resource `{}`: cell `{cell}` has {} output(s), numbered from 0",
                        shown(uri),
                        outputs.len()
                    ),
                    None,
                )
            })?;
            output_contents(uri, output)
        }
        ResourceUri::Kept { kind, file, .. } => {
            let bytes =
                records.read_kept_file(*kind, file, limit).map_err(|error| invalid(uri, &error.into()))?;
            match String::from_utf8(bytes) {
                Ok(text) => ResourceContents::text(text, uri).with_mime_type(kept_file_mime(file)),
                Err(error) => ResourceContents::blob(encode(error.as_bytes()), uri),
            }
        }
        ResourceUri::WorkFile { path, .. } => {
            let work_dir = records.work_dir().ok_or_else(|| {
                ErrorData::resource_not_found(
                    format!(
                        "no resource `{}`: this session's kernel works in a directory that is not ours",
                        shown(uri)
                    ),
                    None,
                )
            })?;
            let bytes = work_dir
                .read(path, limit, "--max-download-bytes")
                .map_err(|error| invalid(uri, &error.into()))?;
            match FileKind::of(path, &bytes) {
                FileKind::Text(mime) => ResourceContents::text(
                    String::from_utf8(bytes).expect("text files are UTF-8 (checked)"),
                    uri,
                )
                .with_mime_type(mime),
                FileKind::Image(mime) | FileKind::Binary(mime) => {
                    ResourceContents::blob(encode(&bytes), uri).with_mime_type(mime)
                }
            }
        }
    };
    Ok(ReadResourceResult::new(vec![contents]))
}

/// A kept output as resource contents: an image as its bytes, anything else as its text.
fn output_contents(uri: &str, output: &Output) -> ResourceContents {
    if let Some((mime, encoded)) = image_data(output) {
        let compact: String = encoded.split_ascii_whitespace().collect();
        return ResourceContents::blob(compact, uri).with_mime_type(mime);
    }
    let text = match output {
        Output::Stream { text, .. } => text.clone(),
        Output::Error { .. } => output.traceback_text().unwrap_or_default(),
        Output::Omitted { .. } => output.omission_note().unwrap_or_default(),
        Output::ExecuteResult { data, .. } | Output::DisplayData { data, .. } => output
            .text_plain()
            .map(str::to_owned)
            .unwrap_or_else(|| serde_json::Value::Object(data.clone()).to_string()),
    };
    ResourceContents::text(text, uri)
}

/// The MIME type and base64 data of an output's image, if it has one.
fn image_data(output: &Output) -> Option<(&'static str, &str)> {
    let data = output.data()?;
    IMAGE_TYPES.into_iter().find_map(|mime| Some((mime, data.get(mime)?.as_str()?)))
}

/// A URI for a message: whole unless absurdly long, escaped.
fn shown(uri: &str) -> String {
    crate::util::shown_up_to(uri, 500)
}

fn kept_file_mime(file: &str) -> &'static str {
    if file.ends_with(".ipynb") { "application/x-ipynb+json" } else { "text/plain" }
}

/// `error` about `uri` as a protocol error: not found when something named does not exist,
/// invalid otherwise.
fn invalid(uri: &str, error: &Error) -> ErrorData {
    let message = format!("cannot read `{}`: {error}", shown(uri));
    match error {
        Error::UnknownSession { .. }
        | Error::Graph(GraphError::UnknownCell { .. })
        | Error::File(FileError::NotFound { .. }) => ErrorData::resource_not_found(message, None),
        _ => ErrorData::invalid_params(message, None),
    }
}

/// What a file of the working directory holds, by its bytes (and its name for the MIME type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A PNG or JPEG image.
    Image(&'static str),
    /// UTF-8 text without NUL characters.
    Text(&'static str),
    /// Anything else.
    Binary(&'static str),
}

impl FileKind {
    /// The kind of the file `path` holding `bytes`.
    pub fn of(path: &str, bytes: &[u8]) -> FileKind {
        match image::guess_format(bytes) {
            Ok(image::ImageFormat::Png) => return FileKind::Image("image/png"),
            Ok(image::ImageFormat::Jpeg) => return FileKind::Image("image/jpeg"),
            _ => {}
        }
        let extension = path.rsplit_once('.').map_or("", |(_, extension)| extension).to_ascii_lowercase();
        if !bytes.contains(&0) && std::str::from_utf8(bytes).is_ok() {
            return FileKind::Text(match extension.as_str() {
                "csv" => "text/csv",
                "json" => "application/json",
                "md" => "text/markdown",
                "html" | "htm" => "text/html",
                "svg" => "image/svg+xml",
                "py" => "text/x-python",
                _ => "text/plain",
            });
        }
        FileKind::Binary(match extension.as_str() {
            "pdf" => "application/pdf",
            "zip" => "application/zip",
            "gz" => "application/gzip",
            "parquet" => "application/vnd.apache.parquet",
            "gif" => "image/gif",
            "webp" => "image/webp",
            _ => "application/octet-stream",
        })
    }
}

/// `bytes` in base64.
pub fn encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_round_trip_and_bad_ones_are_refused_by_name() {
        let cell = CellId::new();
        let session = "0123456789abcdef".to_owned();
        let uris = [
            ResourceUri::CellOutput { session: session.clone(), cell: cell.clone(), index: 3 },
            ResourceUri::Kept { session: session.clone(), kind: KeptFiles::Spilled, file: "a.txt".into() },
            ResourceUri::Kept { session: session.clone(), kind: KeptFiles::Exports, file: "b.ipynb".into() },
            ResourceUri::WorkFile { session: session.clone(), path: "data/c.csv".into() },
        ];
        for uri in uris {
            assert_eq!(ResourceUri::parse(&uri.to_string()).unwrap(), uri);
        }
        for bad in [
            "file:///etc/passwd",
            "pyrepl://sessions/0123456789abcdef",
            "pyrepl://sessions/0123456789abcdef/outputs/../graph.json",
            "pyrepl://sessions/0123456789abcdef/outputs/.hidden",
            "pyrepl://sessions/0123456789abcdef/exports/",
            "pyrepl://sessions/0123456789abcdef/cells/zz/outputs/0",
            "pyrepl://sessions/0123456789abcdef/cells/0123456789ab/outputs/x",
            "pyrepl://sessions/0123456789abcdef/venv/bin",
        ] {
            let error = ResourceUri::parse(bad).unwrap_err();
            assert!(error.message.contains(bad) || error.message.contains("zz"), "{bad}: {}", error.message);
        }
    }

    #[test]
    fn files_are_told_apart_by_their_bytes() {
        let png = {
            let mut out = std::io::Cursor::new(Vec::new());
            image::DynamicImage::new_rgb8(2, 2).write_to(&mut out, image::ImageFormat::Png).unwrap();
            out.into_inner()
        };
        assert_eq!(FileKind::of("x.bin", &png), FileKind::Image("image/png"));
        assert_eq!(FileKind::of("t.csv", b"a,b\n1,2\n"), FileKind::Text("text/csv"));
        assert_eq!(FileKind::of("t.txt", b"a\0b"), FileKind::Binary("application/octet-stream"));
        assert_eq!(FileKind::of("t.pdf", &[0xff, 0xfe, 0]), FileKind::Binary("application/pdf"));
    }
}

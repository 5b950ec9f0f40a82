//! The graph file: a journal of cells, one JSON line each, appended as cells are added.
//!
//! Owns the on-disk format, its version check, and the write protocol that keeps a reported cell
//! from being lost. The first line names the format version (`{"version":2}`); every later line
//! is one cell, in insertion order (parents before children). Adding a cell appends one line with
//! one `write` ([`append`]). The file is rewritten whole only for a new or cleared graph, or when
//! it is not a journal that can be appended to (a version 1 file, or a last line cut short); then
//! atomically ([`save`]: a uniquely named temp file in the same directory, fsynced, renamed over
//! the target, directory fsynced). Version 1 files (one JSON document holding every cell) are
//! still read, and become journals at their first append. [`load`] only reads.
//!
//! A crash can interrupt an append half-way: that cell's reply was never sent, so [`load`] leaves
//! out a last line that does not end in a newline. Any other line that is not a cell is
//! corruption, refused with the file and line named. Where the file lives is the session's
//! business.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Cell, Graph, GraphError};
use crate::atomic_file::{self, ReplaceError};

/// Format version written to disk: a journal, one cell a line.
pub const FORMAT_VERSION: u32 = 2;

/// The older format, one JSON document `{"version": 1, "cells": [...]}`; read, never written.
const WHOLE_FILE_VERSION: u32 = 1;

/// A version 1 file.
#[derive(Deserialize)]
struct WholeFile {
    cells: Vec<Cell>,
}

/// The journal's first line, and what is read first from any file: a newer file whose cells we
/// cannot parse is refused for its version, not called corrupt.
#[derive(Deserialize)]
struct VersionOnly {
    version: u32,
}

/// Why a graph file could not be written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// There is no file at the path.
    #[error("no graph file at `{path}`")]
    Missing {
        /// The path looked at.
        path: PathBuf,
    },
    /// A file system operation failed.
    #[error("failed to {action} `{path}`")]
    Io {
        /// What was being done: `read`, `write`, `rename into place`, ...
        action: &'static str,
        /// The file or directory it was done to.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The file is not a graph file (not JSON, or the wrong shape).
    #[error("graph file `{path}` is corrupt")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        #[source]
        source: serde_json::Error,
    },
    /// A complete line of the journal (one that ends in a newline, so not an append a crash cut
    /// short) is not a cell.
    #[error("graph file `{path}` is corrupt at line {line}")]
    CorruptLine {
        /// The file.
        path: PathBuf,
        /// The line, counting from 1 (the version line).
        line: usize,
        /// What the parser said about that line alone.
        #[source]
        source: serde_json::Error,
    },
    /// The file was written by a newer (or unknown) format version.
    #[error(
        "graph file `{path}` has format version {version}, but this mcp-pyrepl reads only versions \
         {WHOLE_FILE_VERSION} and {FORMAT_VERSION}; use a newer mcp-pyrepl"
    )]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version it declares.
        version: u32,
    },
    /// The file parses but its cells do not form a valid graph.
    #[error("graph file `{path}` holds an invalid graph")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Which cell is wrong, and how.
        #[source]
        source: GraphError,
    },
}

impl From<ReplaceError> for StoreError {
    fn from(ReplaceError { action, path, source }: ReplaceError) -> Self {
        StoreError::Io { action, path, source }
    }
}

impl StoreError {
    fn io(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
        move |source| StoreError::Io { action, path: path.to_owned(), source }
    }
}

/// Writes `graph` to `path` as a journal, atomically, replacing any previous file: for a new or
/// cleared graph (cells added later go through [`append`]).
///
/// The directory must exist. On unix the file is created with mode 0600: cells hold the
/// model's code, which may hold secrets.
///
/// # Errors
/// [`StoreError::Io`] naming the file or directory whose write, sync or rename failed; no temp
/// file is left behind.
pub fn save(graph: &Graph, path: &Path) -> Result<(), StoreError> {
    let mut journal = header().into_bytes();
    for cell in &graph.cells {
        push_line(&mut journal, cell);
    }
    // Rewrites are rare (a new or cleared graph, a converted file), so unlike appends they pay
    // for surviving a power loss.
    Ok(atomic_file::replace(path, &journal)?)
}

/// Records the cell added last to `graph` (whose other cells the file at `path` holds) by
/// appending it as one line, written with one `write`.
///
/// Not fsynced, on purpose. What a reported cell must survive is the server process dying
/// (a crash, SIGKILL), and the reply is sent only after this returns: by then the line is in the
/// OS's page cache, which outlives the process. An fsync would also cover a crash of the whole
/// machine, at the price of the disk's flush latency on every `run_code` (0.25 ms p50 for a
/// one-line append on the virtio disk this was measured on, most of the 0.3 ms budget for the
/// server's whole share of a call). Without it a machine crash may lose the last seconds of
/// cells, and the journal stays readable (a cut last line is left out on load).
///
/// A file that is not a journal ending in a complete line (a version 1 file; a line cut short
/// by a crash, or by a failed append whose undo failed too) is rewritten whole from `graph`
/// with [`save`] instead. A write that fails half-way is undone (the file is cut back to its old
/// length), so a partial line never ends up in the middle of the journal.
///
/// # Errors
/// [`StoreError::Missing`] if there is no file at `path` ([`save`] makes it);
/// [`StoreError::Io`] if it cannot be opened or written (the file is as it was).
pub fn append(graph: &Graph, path: &Path) -> Result<(), StoreError> {
    let Some(cell) = graph.cells.last() else { return save(graph, path) };
    let mut line = Vec::with_capacity(512);
    push_line(&mut line, cell);
    let mut file =
        OpenOptions::new().read(true).append(true).open(path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => StoreError::Missing { path: path.to_owned() },
            _ => StoreError::Io { action: "open for appending", path: path.to_owned(), source },
        })?;
    let end = file.metadata().map_err(StoreError::io("read the length of", path))?.len();
    if !appendable(&file, end).map_err(StoreError::io("read", path))? {
        tracing::info!(path = %path.display(), "rewriting a graph file as a journal");
        return save(graph, path);
    }
    if let Err(source) = file.write_all(&line) {
        if let Err(error) = file.set_len(end) {
            // The next append finds the partial line and rewrites the file.
            tracing::warn!(path = %path.display(), %error, "cannot cut a failed append back");
        }
        return Err(StoreError::Io { action: "append to", path: path.to_owned(), source });
    }
    Ok(())
}

/// The journal's first line.
fn header() -> String {
    format!("{{\"version\":{FORMAT_VERSION}}}\n")
}

/// Whether `file` (`len` bytes long) starts with this version's header and ends with a newline.
fn appendable(file: &File, len: u64) -> io::Result<bool> {
    let header = header();
    if len < header.len() as u64 {
        return Ok(false);
    }
    let mut start = vec![0; header.len()];
    file.read_exact_at(&mut start, 0)?;
    let mut last = [0];
    file.read_exact_at(&mut last, len - 1)?;
    Ok(start == header.as_bytes() && last == *b"\n")
}

/// `cell` as one line of JSON (compact JSON escapes every newline inside strings).
fn push_line(buffer: &mut Vec<u8>, cell: &Cell) {
    serde_json::to_writer(&mut *buffer, cell).expect("a cell serialises to JSON");
    buffer.push(b'\n');
}

/// Reads the graph at `path` and checks it with [`Graph::from_cells`]. A last line cut short by
/// a crash (a cell never reported) is left out; the file itself is not touched ([`append`]
/// rewrites it when it must).
///
/// # Errors
/// [`StoreError::Missing`] if there is no file (the caller decides whether that means an empty
/// graph); [`StoreError::Io`] if it cannot be read; [`StoreError::UnsupportedVersion`] if it
/// declares a version this build does not read; [`StoreError::Corrupt`] if it is not a graph
/// file, [`StoreError::CorruptLine`] if a line other than a cut-short last one is not a cell;
/// [`StoreError::Invalid`] if its cells do not form a valid graph.
pub fn load(path: &Path) -> Result<Graph, StoreError> {
    let bytes = fs::read(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => StoreError::Missing { path: path.to_owned() },
        _ => StoreError::Io { action: "read", path: path.to_owned(), source },
    })?;
    let cells = parse(path, &bytes)?;
    Graph::from_cells(cells).map_err(|source| StoreError::Invalid { path: path.to_owned(), source })
}

/// How many cells the graph file at `path` holds, counted without parsing them (for listings of
/// many sessions): the complete lines after a journal's version line. `None` for a file that is
/// missing, unreadable or not a journal (a version 1 file).
pub fn count_cells(path: &Path) -> Option<usize> {
    let bytes = fs::read(path).ok()?;
    let (first_line, rest) = bytes.split_at(bytes.iter().position(|&b| b == b'\n')? + 1);
    let VersionOnly { version } = serde_json::from_slice(first_line).ok()?;
    (version == FORMAT_VERSION).then(|| rest.iter().filter(|&&b| b == b'\n').count())
}

/// The cells in `bytes`, the contents of the graph file at `path`.
fn parse(path: &Path, bytes: &[u8]) -> Result<Vec<Cell>, StoreError> {
    let corrupt = |source| StoreError::Corrupt { path: path.to_owned(), source };
    let first_line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    // A journal's first line is its version; a version 1 file may be pretty-printed, so its
    // version is only found by reading all of it.
    let version = match serde_json::from_slice::<VersionOnly>(first_line) {
        Ok(VersionOnly { version }) => version,
        Err(_) => serde_json::from_slice::<VersionOnly>(bytes).map_err(corrupt)?.version,
    };
    match version {
        FORMAT_VERSION => {}
        WHOLE_FILE_VERSION => return Ok(serde_json::from_slice::<WholeFile>(bytes).map_err(corrupt)?.cells),
        version => return Err(StoreError::UnsupportedVersion { path: path.to_owned(), version }),
    }
    let mut cells = Vec::new();
    // Numbered from 1, the version line being line 1.
    for (number, line) in (1..).zip(bytes.split_inclusive(|&b| b == b'\n')).skip(1) {
        let Some(line) = line.strip_suffix(b"\n") else {
            // Only the last piece can lack its newline: an append a crash cut short.
            tracing::warn!(path = %path.display(), line = number, "leaving out a partial last line");
            break;
        };
        let cell = serde_json::from_slice(line).map_err(|source| StoreError::CorruptLine {
            path: path.to_owned(),
            line: number,
            source,
        })?;
        cells.push(cell);
    }
    Ok(cells)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::super::{CellId, CellStatus};
    use super::*;

    fn sample() -> Graph {
        let mut graph = Graph::new();
        let a = graph
            .add(CellId::new(), None, "x = 1".into(), CellStatus::Ok, Some(1), String::new())
            .unwrap()
            .id
            .clone();
        let b = graph
            .add(
                CellId::new(),
                Some(&a),
                "x / 0".into(),
                CellStatus::Error,
                Some(2),
                "ZeroDivisionError".into(),
            )
            .unwrap()
            .id
            .clone();
        graph
            .add(
                CellId::new(),
                Some(&b),
                "print('é\\n\"')\nprint(2)\r\n".into(),
                CellStatus::Interrupted,
                None,
                "é\n\"".into(),
            )
            .unwrap();
        graph
            .add(
                CellId::new(),
                Some(&a),
                "import os; os._exit(1)".into(),
                CellStatus::KernelDied,
                None,
                String::new(),
            )
            .unwrap();
        graph.add(CellId::new(), None, String::new(), CellStatus::Ok, Some(1), String::new()).unwrap();
        graph
    }

    /// The graph of the first `n` cells of `graph`.
    fn first(graph: &Graph, n: usize) -> Graph {
        Graph::from_cells(graph.cells().take(n).cloned().collect()).unwrap()
    }

    /// `graph` written the way a session writes it: an empty journal, then one append a cell.
    fn journal_of(graph: &Graph, path: &Path) {
        save(&Graph::new(), path).unwrap();
        for n in 1..=graph.len() {
            append(&first(graph, n), path).unwrap();
        }
    }

    fn lines(path: &Path) -> Vec<String> {
        fs::read_to_string(path).unwrap().lines().map(str::to_owned).collect()
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn round_trip_keeps_everything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("graph.json");
        let graph = sample();
        save(&graph, &path).unwrap();
        let loaded = load(&path).unwrap();
        assert_eq!(loaded, graph);
        let ids: Vec<&CellId> = loaded.cells().map(|cell| &cell.id).collect();
        assert_eq!(ids, graph.cells().map(|cell| &cell.id).collect::<Vec<_>>());
    }

    #[test]
    fn the_file_is_a_version_line_then_one_cell_a_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("graph.json");
        save(&sample(), &path).unwrap();
        let lines = lines(&path);
        assert_eq!(lines.len(), 6, "{lines:#?}");
        assert_eq!(lines[0], format!("{{\"version\":{FORMAT_VERSION}}}"));
        let cells: Vec<serde_json::Value> =
            lines[1..].iter().map(|line| serde_json::from_str(line).unwrap()).collect();
        assert_eq!(cells[3]["status"], "kernel_died");
        assert_eq!(cells[0]["parent"], serde_json::Value::Null);
        assert_eq!(cells[0]["chain_hash"].as_str().unwrap().len(), 64);
        // Newlines inside code stay escaped: a cell never spans two lines.
        assert_eq!(cells[2]["code"], "print('é\\n\"')\nprint(2)\r\n");
    }

    #[test]
    fn appending_adds_one_line_and_leaves_the_rest_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("graph.json");
        let graph = sample();
        save(&Graph::new(), &path).unwrap();
        let inode = fs::metadata(&path).unwrap().ino();
        let mut before = fs::read(&path).unwrap();
        for n in 1..=graph.len() {
            append(&first(&graph, n), &path).unwrap();
            let after = fs::read(&path).unwrap();
            assert!(after.starts_with(&before), "an append rewrote earlier bytes");
            let line = &after[before.len()..];
            assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
            assert!(line.ends_with(b"\n"));
            assert_eq!(load(&path).unwrap(), first(&graph, n));
            before = after;
        }
        // Appended in place (no temp file, no rename), and byte for byte what a rewrite writes.
        assert_eq!(fs::metadata(&path).unwrap().ino(), inode);
        assert_eq!(entries(dir.path()), ["graph.json"]);
        let appended = fs::read(&path).unwrap();
        save(&graph, &path).unwrap();
        assert_eq!(fs::read(&path).unwrap(), appended);
        assert_eq!(load(&path).unwrap(), graph);
    }

    #[test]
    fn appending_needs_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("graph.json");
        let err = append(&sample(), &path).unwrap_err();
        assert!(matches!(&err, StoreError::Missing { path: p } if *p == path), "{err:?}");
        assert!(!path.exists());

        // Something that cannot be opened for writing: the error names it.
        let err = append(&sample(), dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::Io { .. }), "{err:?}");
        assert_eq!(err.to_string(), format!("failed to open for appending `{}`", dir.path().display()));
        assert!(entries(dir.path()).is_empty());
    }

    #[test]
    fn a_partial_last_line_is_left_out_and_the_next_append_rewrites_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("graph.json");
        let graph = sample();
        let kept = first(&graph, 4);
        let mut line = Vec::new();
        push_line(&mut line, graph.cells().last().unwrap());
        save(&graph, &path).unwrap();
        let whole = fs::read(&path).unwrap();
        // Cut anywhere, even right before the newline (the cell's JSON is whole, but its reply
        // was still never sent).
        for cut in [1, line.len() / 2, line.len() - 1] {
            journal_of(&kept, &path);
            fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(&line[..cut]).unwrap();
            let partial = fs::read(&path).unwrap();
            assert_eq!(load(&path).unwrap(), kept, "cut at {cut}");
            assert_eq!(fs::read(&path).unwrap(), partial, "load wrote to the file");
            // The journal goes on from the cells the session holds, without the partial line.
            append(&graph, &path).unwrap();
            assert_eq!(fs::read(&path).unwrap(), whole);
            assert_eq!(load(&path).unwrap(), graph);
            assert_eq!(entries(dir.path()), ["graph.json"]);
        }
        // What a failed write whose undo failed too leaves: garbage, with no load in between.
        journal_of(&kept, &path);
        fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"{\"id\":\"0123").unwrap();
        append(&graph, &path).unwrap();
        assert_eq!(fs::read(&path).unwrap(), whole);
    }

    #[test]
    fn cells_are_counted_without_parsing_them_and_a_partial_line_is_not_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("graph.json");
        assert_eq!(count_cells(&path), None);
        let graph = sample();
        journal_of(&graph, &path);
        assert_eq!(count_cells(&path), Some(graph.len()));
        // Lines are counted, not read: a garbled line still counts, a cut-short one does not.
        fs::OpenOptions::new().append(true).open(&path).unwrap().write_all(b"not json\n{\"id\"").unwrap();
        assert_eq!(count_cells(&path), Some(graph.len() + 1));
        let cells: Vec<&Cell> = graph.cells().collect();
        fs::write(&path, serde_json::to_vec(&serde_json::json!({ "version": 1, "cells": cells })).unwrap())
            .unwrap();
        assert_eq!(count_cells(&path), None);
    }

    #[test]
    fn a_bad_line_before_the_last_is_refused_naming_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("graph.json");
        journal_of(&sample(), &path);
        let good = lines(&path);
        // Garbage, a blank line, a cell cut short, and a bad last line that did end in a newline
        // (a complete write: not something a crash leaves).
        for (line, bad) in [(3, "{\"id\": 12"), (2, ""), (4, &good[3][..good[3].len() / 2]), (6, "[]")] {
            let mut edited = good.clone();
            edited[line - 1] = bad.to_owned();
            fs::write(&path, edited.join("\n") + "\n").unwrap();
            let err = load(&path).unwrap_err();
            assert!(matches!(err, StoreError::CorruptLine { line: l, .. } if l == line), "{err:?}");
            assert_eq!(err.to_string(), format!("graph file `{}` is corrupt at line {line}", path.display()));
            // Refused, and left as it was for a human to look at.
            assert_eq!(fs::read_to_string(&path).unwrap(), edited.join("\n") + "\n");
        }
    }

    #[test]
    fn version_1_files_still_load_and_become_journals_at_the_first_append() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("graph.json");
        let graph = sample();
        let cells: Vec<&Cell> = graph.cells().collect();
        let document = serde_json::json!({ "version": 1, "cells": cells });
        for bytes in [serde_json::to_vec_pretty(&document).unwrap(), serde_json::to_vec(&document).unwrap()] {
            fs::write(&path, &bytes).unwrap();
            assert_eq!(load(&path).unwrap(), graph);
            assert_eq!(fs::read(&path).unwrap(), bytes, "load wrote to the file");
            let mut more = graph.clone();
            let last = more.cells().last().unwrap().id.clone();
            more.add(CellId::new(), Some(&last), "1".into(), CellStatus::Ok, Some(3), "1".into()).unwrap();
            append(&more, &path).unwrap();
            assert_eq!(lines(&path).len(), 1 + more.len());
            assert_eq!(lines(&path)[0], format!("{{\"version\":{FORMAT_VERSION}}}"));
            assert_eq!(load(&path).unwrap(), more);
            assert_eq!(entries(dir.path()), ["graph.json"]);
            // And from then on, appends.
            let last = more.cells().last().unwrap().id.clone();
            more.add(CellId::new(), Some(&last), "2".into(), CellStatus::Ok, Some(4), "2".into()).unwrap();
            let inode = fs::metadata(&path).unwrap().ino();
            append(&more, &path).unwrap();
            assert_eq!(fs::metadata(&path).unwrap().ino(), inode);
            assert_eq!(load(&path).unwrap(), more);
        }
    }

    #[test]
    fn clearing_rewrites_the_file_atomically_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("graph.json");
        journal_of(&sample(), &path);
        let inode = fs::metadata(&path).unwrap().ino();
        // A reader that had the old file open keeps seeing the old file whole: a new file was
        // renamed over it, not truncated and rewritten in place.
        let mut old = File::open(&path).unwrap();
        save(&Graph::new(), &path).unwrap();
        assert_ne!(fs::metadata(&path).unwrap().ino(), inode);
        let mut seen = String::new();
        io::Read::read_to_string(&mut old, &mut seen).unwrap();
        assert_eq!(seen.lines().count(), 6);
        assert_eq!(lines(&path), [format!("{{\"version\":{FORMAT_VERSION}}}")]);
        assert!(load(&path).unwrap().is_empty());
        assert_eq!(entries(dir.path()), ["graph.json"]);
    }

    #[test]
    fn save_replaces_the_file_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("graph.json");
        save(&Graph::new(), &path).unwrap();
        let graph = sample();
        save(&graph, &path).unwrap();
        assert_eq!(entries(dir.path()), ["graph.json"]);
        assert_eq!(load(&path).unwrap(), graph);
        save(&Graph::new(), &path).unwrap();
        assert!(load(&path).unwrap().is_empty());
        assert_eq!(entries(dir.path()), ["graph.json"]);
    }

    #[cfg(unix)]
    #[test]
    fn the_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("graph.json");
        journal_of(&sample(), &path);
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn a_failed_save_names_the_path_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        // The target is a non-empty directory: the rename fails after the temp file is written.
        let path = dir.path().join("graph.json");
        fs::create_dir(&path).unwrap();
        fs::write(path.join("keep"), b"").unwrap();
        let err = save(&sample(), &path).unwrap_err();
        assert!(matches!(err, StoreError::Io { .. }), "{err:?}");
        assert!(err.to_string().contains(&format!("`{}`", path.display())), "{err}");
        assert_eq!(entries(dir.path()), ["graph.json"]);

        let missing_dir = dir.path().join("nope").join("graph.json");
        let err = save(&sample(), &missing_dir).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn a_missing_file_is_reported_as_missing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("graph.json");
        let err = load(&path).unwrap_err();
        assert!(matches!(&err, StoreError::Missing { path: p } if *p == path), "{err:?}");
        assert_eq!(err.to_string(), format!("no graph file at `{}`", path.display()));
    }

    #[test]
    fn a_newer_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("graph.json");
        // A future format may change the cells' shape too: the version is what gets reported,
        // whether it is a journal or one document (pretty-printed or not).
        for content in [
            &b"{\"version\":3}\n{\"something\": \"else\"}\n"[..],
            b"{\"version\": 3, \"cells\": [{\"something\": \"else\"}]}",
            b"{\n  \"version\": 3,\n  \"cells\": []\n}",
        ] {
            fs::write(&path, content).unwrap();
            let err = load(&path).unwrap_err();
            assert!(matches!(err, StoreError::UnsupportedVersion { version: 3, .. }), "{err:?}");
            let message = err.to_string();
            assert!(
                message.contains("version 3") && message.contains(&path.display().to_string()),
                "{message}"
            );
            assert_eq!(fs::read(&path).unwrap(), content, "a refused file is left alone");
        }
    }

    #[test]
    fn corrupt_content_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("graph.json");
        for content in [
            &b"{not json"[..],
            b"",
            b"\n",
            b"[]",
            br#"{"version": 1}"#,
            br#"{"version": 1, "cells": [{}]}"#,
            b"{\"vers",
        ] {
            fs::write(&path, content).unwrap();
            let err = load(&path).unwrap_err();
            assert!(matches!(err, StoreError::Corrupt { .. }), "{content:?}: {err:?}");
            assert!(err.to_string().contains(&format!("`{}`", path.display())), "{err}");
        }
    }

    #[test]
    fn a_bad_cell_id_in_the_file_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("graph.json");
        journal_of(&sample(), &path);
        let mut lines = lines(&path);
        let mut cell: serde_json::Value = serde_json::from_str(&lines[1]).unwrap();
        cell["id"] = "../../etc".into();
        lines[1] = cell.to_string();
        fs::write(&path, lines.join("\n") + "\n").unwrap();
        assert!(matches!(load(&path), Err(StoreError::CorruptLine { line: 2, .. })));

        let graph = sample();
        let mut document = serde_json::json!({ "version": 1, "cells": graph.cells().collect::<Vec<_>>() });
        document["cells"][0]["id"] = "../../etc".into();
        fs::write(&path, serde_json::to_vec(&document).unwrap()).unwrap();
        assert!(matches!(load(&path), Err(StoreError::Corrupt { .. })));
    }

    #[test]
    fn an_inconsistent_graph_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("graph.json");
        journal_of(&sample(), &path);
        let mut lines = lines(&path);
        let mut cell: serde_json::Value = serde_json::from_str(&lines[2]).unwrap();
        cell["code"] = "x / 1".into();
        lines[2] = cell.to_string();
        fs::write(&path, lines.join("\n") + "\n").unwrap();
        let err = load(&path).unwrap_err();
        let StoreError::Invalid { source: GraphError::Inconsistent { id, .. }, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(Some(id.as_str()), cell["id"].as_str());
        assert!(err.to_string().contains(&format!("`{}`", path.display())), "{err}");
    }
}

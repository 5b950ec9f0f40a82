//! The graph file: a versioned JSON document of cells in insertion order, written atomically.
//!
//! Owns the on-disk format and its version check, and the write protocol that keeps a reported
//! cell from being lost: write a uniquely named temp file in the same directory, fsync it,
//! rename it over the target, fsync the directory. A crash leaves either the old file or the new
//! one, never a torn one. Where the file lives is the session's business.

use std::borrow::Cow;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Cell, Graph, GraphError};

/// Current format version written to disk.
pub const FORMAT_VERSION: u32 = 1;

/// The file's shape: cells in insertion order, parents before children.
#[derive(Serialize, Deserialize)]
struct GraphFile<'a> {
    version: u32,
    cells: Cow<'a, [Cell]>,
}

/// Read first, so a newer file whose cells we cannot parse is refused for its version, not
/// called corrupt.
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
    /// The file was written by a newer (or unknown) format version.
    #[error(
        "graph file `{path}` has format version {version}, but this mcp-pyrepl reads only version \
         {FORMAT_VERSION}; use a newer mcp-pyrepl"
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

impl StoreError {
    fn io(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
        move |source| StoreError::Io { action, path: path.to_owned(), source }
    }
}

/// Writes `graph` to `path` atomically, replacing any previous file.
///
/// The directory must exist. On unix the file is created with mode 0600: cells hold the
/// model's code, which may hold secrets.
///
/// # Errors
/// [`StoreError::Io`] naming the file or directory whose write, sync or rename failed; no temp
/// file is left behind.
pub fn save(graph: &Graph, path: &Path) -> Result<(), StoreError> {
    let file = GraphFile { version: FORMAT_VERSION, cells: Cow::Borrowed(&graph.cells) };
    let mut json = serde_json::to_vec_pretty(&file).expect("a graph serialises to JSON");
    json.push(b'\n');

    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path.file_name().map_or_else(|| "graph".into(), |name| name.to_string_lossy());
    // Unique per call, so two writers never share a temp file; the dot keeps it out of listings.
    let temp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));

    let written = write_synced(&temp, &json).and_then(|()| {
        fs::rename(&temp, path).map_err(|source| StoreError::Io {
            action: "rename a temp file into place at",
            path: path.to_owned(),
            source,
        })
    });
    if written.is_err() {
        // Best effort: the original error is the one worth reporting.
        let _ = fs::remove_file(&temp);
    }
    written?;
    // The rename is durable only once the directory entry is.
    File::open(dir).and_then(|dir| dir.sync_all()).map_err(StoreError::io("sync the directory", dir))
}

/// Creates `path` (which must not exist), writes `bytes` and syncs them to disk.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(StoreError::io("create", path))?;
    file.write_all(bytes).map_err(StoreError::io("write", path))?;
    file.sync_all().map_err(StoreError::io("sync", path))
}

/// Reads the graph at `path` and checks it with [`Graph::from_cells`].
///
/// # Errors
/// [`StoreError::Missing`] if there is no file (the caller decides whether that means an empty
/// graph); [`StoreError::Io`] if it cannot be read; [`StoreError::UnsupportedVersion`] if it
/// declares a version other than [`FORMAT_VERSION`]; [`StoreError::Corrupt`] if it is not a graph
/// file; [`StoreError::Invalid`] if its cells do not form a valid graph.
pub fn load(path: &Path) -> Result<Graph, StoreError> {
    let bytes = fs::read(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => StoreError::Missing { path: path.to_owned() },
        _ => StoreError::Io { action: "read", path: path.to_owned(), source },
    })?;
    let corrupt = |source| StoreError::Corrupt { path: path.to_owned(), source };
    let VersionOnly { version } = serde_json::from_slice(&bytes).map_err(corrupt)?;
    if version != FORMAT_VERSION {
        return Err(StoreError::UnsupportedVersion { path: path.to_owned(), version });
    }
    let file: GraphFile<'static> = serde_json::from_slice(&bytes).map_err(corrupt)?;
    Graph::from_cells(file.cells.into_owned())
        .map_err(|source| StoreError::Invalid { path: path.to_owned(), source })
}

#[cfg(test)]
mod tests {
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
                "print('é\\n\"')".into(),
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
    fn the_file_is_versioned_json_with_snake_case_statuses() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("graph.json");
        save(&sample(), &path).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(json["version"], FORMAT_VERSION);
        assert_eq!(json["cells"].as_array().unwrap().len(), 5);
        assert_eq!(json["cells"][3]["status"], "kernel_died");
        assert_eq!(json["cells"][0]["parent"], serde_json::Value::Null);
        assert_eq!(json["cells"][0]["chain_hash"].as_str().unwrap().len(), 64);
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
        save(&sample(), &path).unwrap();
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
        // A future format may change the cells' shape too: the version is what gets reported.
        fs::write(&path, br#"{"version": 2, "cells": [{"something": "else"}]}"#).unwrap();
        let err = load(&path).unwrap_err();
        assert!(matches!(err, StoreError::UnsupportedVersion { version: 2, .. }), "{err:?}");
        let message = err.to_string();
        assert!(message.contains("version 2") && message.contains(&path.display().to_string()), "{message}");
    }

    #[test]
    fn corrupt_content_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("graph.json");
        for content in
            [&b"{not json"[..], b"", b"[]", br#"{"version": 1}"#, br#"{"version": 1, "cells": [{}]}"#]
        {
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
        save(&sample(), &path).unwrap();
        let mut json: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        json["cells"][0]["id"] = "../../etc".into();
        fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
        assert!(matches!(load(&path), Err(StoreError::Corrupt { .. })));
    }

    #[test]
    fn an_inconsistent_graph_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("graph.json");
        save(&sample(), &path).unwrap();
        let mut json: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        json["cells"][1]["code"] = "x / 1".into();
        fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();
        let err = load(&path).unwrap_err();
        let StoreError::Invalid { source: GraphError::Inconsistent { id, .. }, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(Some(id.as_str()), json["cells"][1]["id"].as_str());
        assert!(err.to_string().contains(&format!("`{}`", path.display())), "{err}");
    }
}

//! What a session has recorded, readable while one of its cells runs: the graph of cells, each
//! cell's kept outputs, which states its kernels hold now, the files it offers as resources
//! (spilled outputs, exports, its working directory) and the session's record file
//! (`session.json`: where its kernels come from).
//!
//! The session, behind its lock, is the only writer. Readers (`list_sessions`, `list_cells`,
//! `get_cell`, `wait_cell` on an ended cell, `export_notebook`, `download_file`, resources) hold
//! a [`Records`] of their own
//! and take only short std locks, so they never wait for a cell to end.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::SessionPaths;
use super::kept_outputs::KeptOutputs;
use super::workdir::WorkDir;
use crate::atomic_file;
use crate::error::FileError;
use crate::error::{Error, Result};
use crate::graph::{CellId, ChainHash, Graph, KernelHead, store};
use crate::kernel::{Death, Output};
use crate::notebook;
use crate::provider::ProviderRecord;
use crate::util::WriteError;
use crate::venv::{Uv, Venv};

/// The session's directories of files the server wrote and offers as resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeptFiles {
    /// The full text of outputs too long to return (`outputs/`).
    Spilled,
    /// Exported notebooks and requirements (`exports/`).
    Exports,
}

/// A kernel's state as readers see it: its head, and whether it is still alive.
type HeldState = (KernelHead, watch::Receiver<Option<Death>>);

/// A session's records, shared by the session and its readers.
#[derive(Debug)]
pub struct Records {
    paths: SessionPaths,
    graph: RwLock<Graph>,
    kept: KeptOutputs,
    kernels: Mutex<Vec<HeldState>>,
    /// The session's own venv, for `uv pip freeze` in exports.
    venv: Option<Venv>,
    /// The kernels' working directory, when it is ours.
    work_dir: Option<WorkDir>,
    /// Cancelled by `destroy_repl`: a running cell is stopped, waiting calls find no session.
    destroyed: CancellationToken,
}

impl Records {
    /// The records of the session in `paths`, holding `graph`; its kernels work in `work_dir`
    /// when that is known.
    pub fn new(paths: SessionPaths, graph: Graph, venv: Option<Venv>, work_dir: Option<WorkDir>) -> Self {
        let kept = KeptOutputs::new(paths.kept_outputs(), paths.legacy_cell_outputs());
        Records {
            paths,
            graph: RwLock::new(graph),
            kept,
            kernels: Mutex::new(Vec::new()),
            venv,
            work_dir,
            destroyed: CancellationToken::new(),
        }
    }

    /// The graph, read-locked: hold it only for a synchronous look.
    pub fn graph(&self) -> RwLockReadGuard<'_, Graph> {
        self.graph.read().expect("graph lock")
    }

    pub(super) fn graph_mut(&self) -> RwLockWriteGuard<'_, Graph> {
        self.graph.write().expect("graph lock")
    }

    /// The kept outputs of cell `id` (none when they could not be kept).
    ///
    /// # Errors
    /// When there is no such cell.
    pub fn outputs_of(&self, id: &CellId) -> Result<Vec<Output>> {
        self.graph().cell(id)?;
        Ok(self.kept.read(id).map(|outputs| notebook::from_nbformat(&outputs)).unwrap_or_default())
    }

    /// Keeps a cell's (bounded) outputs next to the graph. A failure is logged: the cell itself
    /// is what must not be lost.
    pub(super) fn keep_outputs(&self, id: &CellId, outputs: &[Output]) {
        if let Err(error) = self.kept.keep(id, &notebook::to_nbformat(outputs)) {
            tracing::warn!(cell = %id, %error, "cannot keep the outputs of a cell");
        }
    }

    /// Forgets every cell's kept outputs (the graph was cleared).
    pub(super) fn clear_outputs(&self) {
        if let Err(error) = self.kept.clear() {
            tracing::warn!(dir = %self.paths.dir().display(), %error, "cannot remove the outputs of cleared cells");
        }
    }

    /// Says which states the session's kernels hold now.
    pub(super) fn set_kernels(&self, kernels: impl IntoIterator<Item = HeldState>) {
        *self.kernels.lock().expect("kernels lock") = kernels.into_iter().collect();
    }

    /// Whether a kernel of the session is alive.
    pub fn kernel_running(&self) -> bool {
        self.kernels.lock().expect("kernels lock").iter().any(|(_, death)| death.borrow().is_none())
    }

    /// The cells whose effects some live kernel of the session holds: the paths to their heads.
    pub fn held_cells(&self) -> Vec<CellId> {
        let heads: Vec<ChainHash> = self
            .kernels
            .lock()
            .expect("kernels lock")
            .iter()
            .filter(|(_, death)| death.borrow().is_none())
            .filter_map(|(head, _)| match head {
                KernelHead::At(hash) => Some(*hash),
                KernelHead::Fresh | KernelHead::Unknown => None,
            })
            .collect();
        let graph = self.graph();
        let mut held = Vec::new();
        for hash in heads {
            let path = graph
                .cells()
                .find(|cell| cell.chain_hash == hash)
                .and_then(|cell| graph.path_to(&cell.id).ok())
                .unwrap_or_default();
            held.retain(|id| !path.contains(id));
            held.extend(path);
        }
        held
    }

    /// The kernels' working directory; `None` for kernels whose working directory is not ours
    /// (an attached kernel).
    pub fn work_dir(&self) -> Option<&WorkDir> {
        self.work_dir.as_ref()
    }

    /// The files in one of the session's directories of server-written files, by name with
    /// their sizes, sorted (none when it does not exist yet).
    pub fn files_in(&self, kind: KeptFiles) -> Vec<(String, u64)> {
        let Ok(entries) = std::fs::read_dir(self.kept_files_dir(kind)) else { return Vec::new() };
        let mut files: Vec<(String, u64)> = entries
            .flatten()
            .filter_map(|entry| {
                let metadata = entry.metadata().ok().filter(std::fs::Metadata::is_file)?;
                Some((entry.file_name().into_string().ok()?, metadata.len()))
            })
            .filter(|(name, _)| !name.starts_with('.'))
            .collect();
        files.sort();
        files
    }

    /// The file `name` of `kind`, at most `limit` bytes of it.
    ///
    /// # Errors
    /// A name that is not one file's, a missing file, or one over `limit`.
    pub fn read_kept_file(&self, kind: KeptFiles, name: &str, limit: u64) -> Result<Vec<u8>, FileError> {
        if name.contains('/') {
            return Err(FileError::BadPath {
                path: crate::util::shown(name),
                reason: "it is not a file name",
            });
        }
        WorkDir::new(self.kept_files_dir(kind)).read(name, limit, "--max-download-bytes")
    }

    fn kept_files_dir(&self, kind: KeptFiles) -> PathBuf {
        match kind {
            KeptFiles::Spilled => self.paths.outputs(),
            KeptFiles::Exports => self.paths.exports(),
        }
    }

    /// The token `destroy_repl` cancels.
    pub fn destroyed(&self) -> &CancellationToken {
        &self.destroyed
    }

    /// Writes the path root → `cell` as a notebook with the kept outputs, and the venv's
    /// `uv pip freeze` beside it (when the session has a venv of its own); returns both paths.
    ///
    /// # Errors
    /// An unknown cell, uv's failure, or files that cannot be written.
    pub async fn export_notebook(&self, uv: &Uv, cell: &CellId) -> Result<(PathBuf, Option<PathBuf>)> {
        let notebook = {
            let graph = self.graph();
            let path = graph.path_to(cell)?;
            let cells = path.iter().map(|id| {
                let cell = graph.cell(id).expect("ids on a path are in the graph");
                (cell, self.kept.read(id).unwrap_or_default())
            });
            notebook::notebook(cells, None)
        };
        let dir = self.paths.exports();
        std::fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        let notebook_path = dir.join(format!("{cell}.ipynb"));
        let json = serde_json::to_vec_pretty(&notebook).expect("a notebook serialises");
        std::fs::write(&notebook_path, json).map_err(io_error(&notebook_path))?;
        let Some(venv) = &self.venv else { return Ok((notebook_path, None)) };
        let requirements_path = dir.join(format!("{cell}-requirements.txt"));
        let frozen = uv.freeze(venv).await?;
        std::fs::write(&requirements_path, frozen + "\n").map_err(io_error(&requirements_path))?;
        Ok((notebook_path, Some(requirements_path)))
    }

    /// Writes the whole graph (new or cleared).
    pub(super) fn save_graph(&self) -> Result<()> {
        Ok(store::save(&self.graph(), &self.paths.graph())?)
    }

    /// Records the cell just added to the graph, appending it to the graph file. When that
    /// fails the cell leaves the graph too, so the file always holds exactly the graph (a later
    /// cell under this one would otherwise be saved without its parent).
    pub(super) fn save_new_cell(&self) -> Result<()> {
        let appended = store::append(&self.graph(), &self.paths.graph());
        if let Err(error) = appended {
            self.graph_mut().pop();
            return Err(error.into());
        }
        Ok(())
    }
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_owned();
    move |source| Error::Io(WriteError { path, source })
}

/// What `<session>/session.json` says: where the session's kernels come from and, for kernels
/// that outlive the server (an attached kernel), the state the kernel held when it was written,
/// so that a restarted server goes on from there.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SessionRecord {
    /// The provider.
    #[serde(flatten)]
    pub provider: ProviderRecord,
    /// The chain hash of the kernel's head; `None` for a fresh state (or the state an attached
    /// kernel had when attached).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_head: Option<ChainHash>,
}

/// What versions before `session.json` wrote for an attached session, as `attached.json`.
#[derive(serde::Deserialize)]
struct LegacyAttachment {
    connection_file: PathBuf,
    head: Option<ChainHash>,
}

impl SessionRecord {
    /// A record naming `provider`, its kernel in a fresh state.
    pub fn new(provider: ProviderRecord) -> Self {
        SessionRecord { provider, kernel_head: None }
    }

    /// The record of the session in `paths`. A session written before records existed has
    /// `attached.json` when attached, and nothing when its kernels are local.
    ///
    /// # Errors
    /// [`Error::DamagedRecord`] when the file cannot be read or parsed.
    pub fn load(paths: &SessionPaths) -> Result<Self> {
        let damaged = |path: PathBuf| move |reason: String| Error::DamagedRecord { path, reason };
        let read = |path: PathBuf| match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(damaged(path)(error.to_string())),
        };
        if let Some(bytes) = read(paths.record())? {
            return serde_json::from_slice(&bytes).map_err(|e| damaged(paths.record())(e.to_string()));
        }
        match read(paths.legacy_attachment())? {
            Some(bytes) => {
                let legacy: LegacyAttachment = serde_json::from_slice(&bytes)
                    .map_err(|e| damaged(paths.legacy_attachment())(e.to_string()))?;
                Ok(SessionRecord {
                    provider: ProviderRecord::Attached { connection_file: legacy.connection_file },
                    kernel_head: legacy.head,
                })
            }
            None => Ok(SessionRecord::new(ProviderRecord::Local)),
        }
    }

    /// Replaces the session's record file atomically.
    ///
    /// # Errors
    /// When it cannot be written.
    pub fn save(&self, paths: &SessionPaths) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).expect("a session record serialises");
        atomic_file::replace(&paths.record(), &json).map_err(store::StoreError::from)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_legacy_attachments_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let paths = SessionPaths::new(dir.path());
        assert_eq!(SessionRecord::load(&paths).unwrap(), SessionRecord::new(ProviderRecord::Local));

        let head = ChainHash::of(None, "x = 1");
        std::fs::write(
            paths.legacy_attachment(),
            serde_json::json!({ "connection_file": "/run/k.json", "head": head }).to_string(),
        )
        .unwrap();
        let attached = SessionRecord {
            provider: ProviderRecord::Attached { connection_file: "/run/k.json".into() },
            kernel_head: Some(head),
        };
        assert_eq!(SessionRecord::load(&paths).unwrap(), attached);

        // The record file wins over the legacy one once written.
        SessionRecord::new(ProviderRecord::Local).save(&paths).unwrap();
        assert_eq!(SessionRecord::load(&paths).unwrap(), SessionRecord::new(ProviderRecord::Local));
        attached.save(&paths).unwrap();
        assert_eq!(SessionRecord::load(&paths).unwrap(), attached);

        std::fs::write(paths.record(), "{ not json").unwrap();
        let error = SessionRecord::load(&paths).unwrap_err();
        assert!(matches!(&error, Error::DamagedRecord { path, .. } if *path == paths.record()), "{error:?}");
    }
}

//! Where a session keeps its files: the layout of `<data dir>/sessions/<id>/`.

use std::path::{Path, PathBuf};

use crate::config::{GatewaySettings, Limits};
use crate::provider::ProviderContext;

/// A session's files: `<dir>/session.json`, `<dir>/venv`, `<dir>/graph.json`, `<dir>/kernel/`,
/// `<dir>/work/`, ...
#[derive(Debug, Clone)]
pub struct SessionPaths {
    dir: PathBuf,
}

impl SessionPaths {
    /// The files of the session in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        SessionPaths { dir: dir.into() }
    }

    /// The session directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What a provider of this session's kernels needs: its directories, `limits` and the
    /// `gateway` settings.
    pub fn provider_context(&self, limits: &Limits, gateway: &GatewaySettings) -> ProviderContext {
        ProviderContext {
            session_dir: self.dir.clone(),
            venv_dir: self.venv(),
            kernel_dir: self.kernel(),
            work_dir: self.work(),
            limits: limits.clone(),
            gateway: gateway.clone(),
        }
    }

    /// The venv.
    pub fn venv(&self) -> PathBuf {
        self.dir.join("venv")
    }

    /// Present while the session is a spare, not yet handed out.
    pub fn spare_marker(&self) -> PathBuf {
        self.dir.join("spare")
    }

    /// The graph file.
    pub fn graph(&self) -> PathBuf {
        self.dir.join("graph.json")
    }

    /// The kernel's private directory (connection files, sockets, log).
    pub fn kernel(&self) -> PathBuf {
        self.dir.join("kernel")
    }

    /// The kernels' working directory: files uploaded, and files the code writes by relative
    /// paths.
    pub fn work(&self) -> PathBuf {
        self.dir.join("work")
    }

    /// Every recorded cell's outputs, in nbformat form: one JSON line per cell.
    pub fn kept_outputs(&self) -> PathBuf {
        self.dir.join("cell_outputs.jsonl")
    }

    /// Where versions before the outputs log kept them, one `<cell id>.json` per cell.
    pub fn legacy_cell_outputs(&self) -> PathBuf {
        self.dir.join("cells")
    }

    /// The session's record: where its kernels come from (`records.rs`).
    pub fn record(&self) -> PathBuf {
        self.dir.join("session.json")
    }

    /// What versions before `session.json` recorded about an attached session's kernel.
    pub fn legacy_attachment(&self) -> PathBuf {
        self.dir.join("attached.json")
    }

    /// Where exported notebooks go.
    pub fn exports(&self) -> PathBuf {
        self.dir.join("exports")
    }

    /// Where the full text of outputs too long to return is kept.
    pub fn outputs(&self) -> PathBuf {
        self.dir.join("outputs")
    }
}

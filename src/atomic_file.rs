//! Replacing a small file atomically and durably, for the records whose loss or truncation a
//! crash must not cause: the graph file's rewrites, an attached session's record, a venv recipe's
//! pinned versions.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The step of [`replace`] that failed.
#[derive(Debug, thiserror::Error)]
#[error("failed to {action} `{}`", path.display())]
pub struct ReplaceError {
    /// What was being done: `create`, `write`, `sync`, `rename a temp file into place at`, ...
    pub action: &'static str,
    /// The file or directory it was done to.
    pub path: PathBuf,
    /// The cause.
    #[source]
    pub source: io::Error,
}

/// Replaces the file at `path` with `bytes`: a uniquely named temp file in the same directory
/// (mode 0600, since these records may hold the model's code), fsynced, renamed over `path`, the
/// directory fsynced. The directory must exist.
///
/// # Errors
/// The step that failed, naming its file or directory; no temp file is left behind.
pub fn replace(path: &Path, bytes: &[u8]) -> Result<(), ReplaceError> {
    let failed = |action: &'static str, path: &Path| {
        let path = path.to_owned();
        move |source| ReplaceError { action, path, source }
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path.file_name().map_or_else(|| "file".into(), |name| name.to_string_lossy());
    // Unique per call, so two writers never share a temp file; the dot keeps it out of listings.
    let temp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));

    let written = write_synced(&temp, bytes)
        .and_then(|()| fs::rename(&temp, path).map_err(failed("rename a temp file into place at", path)));
    if written.is_err() {
        // Best effort: the original error is the one worth reporting.
        let _ = fs::remove_file(&temp);
    }
    written?;
    // The rename is durable only once the directory entry is.
    File::open(dir).and_then(|dir| dir.sync_all()).map_err(failed("sync the directory", dir))
}

/// Creates `path` (which must not exist), writes `bytes` and syncs them to disk.
fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), ReplaceError> {
    let failed = |action| {
        let path = path.to_owned();
        move |source| ReplaceError { action, path, source }
    };
    let mut file =
        OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(failed("create"))?;
    file.write_all(bytes).map_err(failed("write"))?;
    file.sync_all().map_err(failed("sync"))
}

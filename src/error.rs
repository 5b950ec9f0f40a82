//! The errors a session operation can end with, as the MCP layer sees them.
//!
//! Every variant is something the caller (an LLM, usually) can act on, and says how: a bad id, a
//! refused package, a replay that no longer reproduces, a kernel that could not start. The MCP
//! layer turns all of them into tool results flagged as errors; only requests it cannot route at
//! all become protocol errors. Knows the errors of the layers below the session (graph, kernel,
//! venv), never the session itself.

use std::path::PathBuf;

use crate::graph::GraphError;
use crate::graph::store::StoreError;
use crate::kernel::{Death, KernelError};
use crate::util::WriteError;
use crate::venv::VenvError;

/// Result of a session operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a session operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A session id that is not of the form we generate.
    #[error(
        "`{given}` is not a session id (session ids are 16 lowercase hex characters, as returned by create_repl)"
    )]
    InvalidSessionId {
        /// The id given, shortened when long.
        given: String,
    },
    /// A well-formed session id with no session behind it.
    #[error("no session `{id}`; create one with create_repl")]
    UnknownSession {
        /// The id.
        id: String,
    },
    /// A bad or unknown cell id, or a damaged graph.
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// A tool argument that cannot be used as given (empty code, a negative timeout, ...).
    #[error("{0}")]
    InvalidArgument(String),
    /// A session file the server wrote cannot be read back.
    #[error("`{}` is damaged: {reason}; the session cannot be opened until it is repaired or removed", path.display())]
    DamagedRecord {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The session's kernel is gone and cannot be replaced by us (an attached kernel).
    #[error("{provider} is gone: it {}. Start it again and attach_kernel anew", death.as_ref().map_or("stopped answering".to_owned(), ToString::to_string))]
    KernelGone {
        /// Where the kernel ran.
        provider: String,
        /// Why it is gone, when known.
        death: Option<Death>,
    },
    /// Reaching the parent needs a restart the session's kernels cannot have.
    #[error(
        "this session runs on {provider}, so it cannot be restarted to replay another branch. The kernel holds {held}: continue from that cell or its descendants, or create_repl for a session of your own to branch freely"
    )]
    CannotBranch {
        /// Where the kernel runs.
        provider: String,
        /// What it holds, in words.
        held: String,
    },
    /// An operation the session's kernels do not offer.
    #[error("{operation} is not available in a session on {provider}: {advice}")]
    Unsupported {
        /// The tool or operation.
        operation: &'static str,
        /// Where the kernels run.
        provider: String,
        /// What to do instead.
        advice: &'static str,
    },
    /// The session was destroyed while the call ran.
    #[error("session `{id}` was destroyed while this call ran; its cell was stopped and not recorded")]
    Destroyed {
        /// The session id.
        id: String,
    },
    /// A package requirement that was refused before uv ran.
    #[error("refused package `{requirement}`: {reason}")]
    InvalidRequirement {
        /// The requirement as given.
        requirement: String,
        /// Why it was refused.
        reason: String,
    },
    /// An install through the kernels (`%pip install`, for kernels in no venv of ours) failed;
    /// nothing was recorded.
    #[error("installing {requirements} on {provider} failed; the packages were not recorded:\n{output}")]
    KernelInstallFailed {
        /// The requirements, space-separated.
        requirements: String,
        /// Where the kernels run.
        provider: String,
        /// pip's output (or the kernel's death).
        output: String,
    },
    /// A cell that succeeded when it was first run failed while being replayed.
    #[error(
        "replaying cell `{cell}` failed, although it succeeded when it was first run: {detail}\nThe kernel now holds an unknown state; it will be restarted on the next run_code"
    )]
    ReplayFailed {
        /// The replayed cell.
        cell: String,
        /// Its error (traceback) or the kernel's death.
        detail: String,
    },
    /// The request was cancelled (or the cell interrupted) before its code started.
    #[error(
        "the cell was stopped (the request was cancelled, or interrupt_cell asked) before its code started; it was not run"
    )]
    Cancelled,
    /// A file of the session's working directory (or another of its files) that cannot be
    /// written or read as asked.
    #[error(transparent)]
    File(#[from] FileError),
    /// The kernel failed.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// uv failed.
    #[error(transparent)]
    Venv(#[from] VenvError),
    /// The graph file could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A session file or directory could not be written or removed.
    #[error(transparent)]
    Io(#[from] WriteError),
}

/// Why a file could not be written into or read out of the working directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// A path that is not a plain relative path inside the directory.
    #[error(
        "refused path `{path}`: {reason}; give a path relative to the session's working directory, such as `data/input.csv`"
    )]
    BadPath {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A component of the path is a symbolic link (or not a directory where one is needed).
    #[error(
        "refused path `{path}`: `{component}` is a symbolic link or not a directory; only files inside the working directory are reached, never through links"
    )]
    Link {
        /// The path as given.
        path: String,
        /// The component that is a link.
        component: String,
    },
    /// No such file.
    #[error("no file `{path}`")]
    NotFound {
        /// The path as given.
        path: String,
    },
    /// Something that is not a regular file (a directory, a FIFO, a socket).
    #[error("`{path}` is not a regular file (a directory, a FIFO or a device); only regular files are read")]
    NotAFile {
        /// The path as given.
        path: String,
    },
    /// A file over the size limit.
    #[error("`{path}` is {size} bytes, over the limit of {limit} bytes ({setting}); {advice}")]
    TooLarge {
        /// The path as given.
        path: String,
        /// Its size (at least; a read stops past the limit).
        size: u64,
        /// The limit.
        limit: u64,
        /// The setting that sets the limit.
        setting: &'static str,
        /// What to do instead.
        advice: &'static str,
    },
    /// Upload content that is not base64.
    #[error(
        "content_base64 for `{path}` is not valid base64 ({reason}); send the file's bytes in standard base64"
    )]
    NotBase64 {
        /// The path as given.
        path: String,
        /// What the decoder said.
        reason: String,
    },
    /// The OS refused.
    #[error("cannot {operation} `{path}` in the session's working directory")]
    Io {
        /// What was being done.
        operation: &'static str,
        /// The path as given.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every message the model can get from a session error reads as one sentence: no runs of
    /// spaces left by a string literal broken across lines.
    #[test]
    fn no_message_holds_a_run_of_spaces() {
        let s = || "x".to_owned();
        let io = || std::io::Error::other("denied");
        let errors = [
            Error::InvalidSessionId { given: s() },
            Error::UnknownSession { id: s() },
            Error::InvalidArgument(s()),
            Error::DamagedRecord { path: PathBuf::from("/x"), reason: s() },
            Error::KernelGone { provider: s(), death: None },
            Error::CannotBranch { provider: s(), held: s() },
            Error::Unsupported { operation: "x", provider: s(), advice: "x" },
            Error::Destroyed { id: s() },
            Error::InvalidRequirement { requirement: s(), reason: s() },
            Error::KernelInstallFailed { requirements: s(), provider: s(), output: s() },
            Error::ReplayFailed { cell: s(), detail: s() },
            Error::Cancelled,
            Error::File(FileError::BadPath { path: s(), reason: "x" }),
            Error::File(FileError::Link { path: s(), component: s() }),
            Error::File(FileError::NotFound { path: s() }),
            Error::File(FileError::NotAFile { path: s() }),
            Error::File(FileError::TooLarge { path: s(), size: 2, limit: 1, setting: "x", advice: "x" }),
            Error::File(FileError::NotBase64 { path: s(), reason: s() }),
            Error::File(FileError::Io { operation: "x", path: s(), source: io() }),
            Error::Io(WriteError { path: PathBuf::from("/x"), source: io() }),
        ];
        for error in errors {
            let text = error.to_string();
            assert!(!text.contains("   "), "a run of spaces in {error:?}: {text}");
        }
    }
}

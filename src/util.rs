//! Small helpers every layer shares: shortening text for a message, finding a program on
//! `PATH`, and the two OS failures most errors wrap (a file that cannot be written, a command
//! that cannot be run).
//!
//! A leaf: it knows no other module of the crate, and holds nothing with a policy of its own.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// How many characters of an invalid value an error message repeats.
const SHOWN_VALUE_CHARS: usize = 40;

/// The first `max` characters of `text`, with `…` when it was cut.
pub fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// `value` shortened to [`SHOWN_VALUE_CHARS`] characters and escaped, safe to put in a message.
pub fn shown(value: &str) -> String {
    shown_up_to(value, SHOWN_VALUE_CHARS)
}

/// `value` shortened to `max` characters and escaped, safe to put in a message.
pub fn shown_up_to(value: &str, max: usize) -> String {
    let mut chars = value.chars();
    let head: String = chars.by_ref().take(max).collect();
    let mut shown = head.escape_debug().to_string();
    if chars.next().is_some() {
        shown.push('…');
    }
    shown
}

/// The first executable `name` in the directories of `PATH`.
pub fn on_path(name: &Path) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|candidate| is_executable(candidate))
}

/// Whether `path` is a file someone may execute.
pub fn is_executable(path: &Path) -> bool {
    path.metadata().is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// A file or directory that could not be written (created, renamed, removed).
#[derive(Debug, thiserror::Error)]
#[error("cannot write `{}`", path.display())]
pub struct WriteError {
    /// The path.
    pub path: PathBuf,
    /// The OS error.
    #[source]
    pub source: std::io::Error,
}

impl WriteError {
    /// The error for an OS failure on `path`, for `map_err`.
    pub fn at(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> WriteError {
        let path = path.into();
        move |source| WriteError { path, source }
    }
}

/// A command that could not be started at all.
#[derive(Debug, thiserror::Error)]
#[error("cannot run `{command}`")]
pub struct SpawnError {
    /// The command line.
    pub command: String,
    /// The OS error.
    #[source]
    pub source: std::io::Error,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortening_cuts_at_characters_and_says_so() {
        assert_eq!(shorten("héllo", 2), "hé…");
        assert_eq!(shorten("hé", 2), "hé");
        assert_eq!(shown_up_to("a\nb", 5), "a\\nb");
        assert_eq!(shown_up_to("abcdef", 3), "abc…");
    }
}

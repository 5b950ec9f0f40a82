//! The Chromium or Chrome a kernel renders plotly figures with (kaleido drives it): named by
//! the server's `--chromium`, else the first of the usual names on `PATH`.
//!
//! Owns only the finding; the kernel learns the result from `PYREPL_KALEIDO_BROWSER` (empty:
//! none, and figures come back as text summaries), which the startup file reads.

use std::path::{Path, PathBuf};

use crate::util::{is_executable, on_path};

/// The variable that tells a kernel's startup file which browser to use (empty: none).
pub const BROWSER_ENV: &str = "PYREPL_KALEIDO_BROWSER";

/// Executable names tried on `PATH`, in order: Debian's headless shell (made for this, and
/// the lightest), then the full browsers.
const NAMES: [&str; 6] = [
    "chromium-headless-shell",
    "chromium",
    "chromium-browser",
    "google-chrome",
    "google-chrome-stable",
    "chrome",
];

/// The browser to use: `explicit` when given (a path, or a bare name looked up on `PATH`; an
/// empty one means none, and so does one that is not an executable file, with a warning), else
/// the first of [`NAMES`] on `PATH`. The path is absolute: kernels run in another directory.
pub fn find(explicit: Option<&Path>) -> Option<PathBuf> {
    let Some(explicit) = explicit else { return NAMES.iter().find_map(|name| on_path(Path::new(name))) };
    if explicit.as_os_str().is_empty() {
        return None;
    }
    let found = if explicit.components().count() == 1 && !explicit.has_root() {
        on_path(explicit)
    } else {
        std::path::absolute(explicit).ok().filter(|path| is_executable(path))
    };
    if found.is_none() {
        tracing::warn!(
            chromium = %explicit.display(),
            "`--chromium` names no executable file: plotly figures come back as text summaries"
        );
    }
    found
}

/// The directory a confined kernel must be able to read for `browser` to run: that of the
/// file it resolves to (Chrome keeps its resources beside its binary).
pub fn install_dir(browser: &Path) -> Option<PathBuf> {
    Some(browser.canonicalize().ok()?.parent()?.to_owned())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn an_explicit_path_wins_and_a_bad_or_empty_one_means_none() {
        let dir = tempfile::tempdir().unwrap();
        let browser = dir.path().join("chrome");
        std::fs::write(&browser, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&browser, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(find(Some(&browser)), Some(browser.clone()));
        assert_eq!(install_dir(&browser), Some(dir.path().canonicalize().unwrap()));
        assert_eq!(find(Some(Path::new(""))), None);
        assert_eq!(find(Some(&dir.path().join("missing"))), None);
        let not_executable = dir.path().join("data");
        std::fs::write(&not_executable, "").unwrap();
        assert_eq!(find(Some(&not_executable)), None);
        // A bare name is looked up on PATH (`sh` is on every PATH a test runs with).
        let sh = find(Some(Path::new("sh"))).expect("sh on PATH");
        assert!(sh.is_absolute() && sh.ends_with("sh"), "{}", sh.display());
        assert_eq!(find(Some(Path::new("no-such-browser-here"))), None);
    }
}

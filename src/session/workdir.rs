//! A session's working directory (`<session>/work`, the kernel's cwd) as seen from the server:
//! files written into it and read out of it by paths relative to it, which never leave it.
//!
//! A path is checked as given (relative, no `..`, no NUL, not empty), then walked one component
//! at a time from a descriptor of the directory with `O_NOFOLLOW`, so a symbolic link the kernel
//! made (to `/etc`, or to another session) is refused wherever it sits, and a link swapped in
//! between a check and a use cannot redirect us: nothing outside the directory is opened,
//! created or replaced. A write goes to a fresh temporary file beside the target and is renamed
//! over it, so it never writes through an existing file (a hard link, a FIFO). Knows nothing of
//! MCP or of the kernel.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use base64::Engine;
use nix::errno::Errno;
use nix::fcntl::{OFlag, open, openat, renameat};
use nix::sys::stat::{Mode, mkdirat};
use nix::unistd::{UnlinkatFlags, unlinkat};

use crate::error::FileError;

/// Longest path accepted, in bytes.
const MAX_PATH_BYTES: usize = 4096;

/// A session's working directory.
#[derive(Debug, Clone)]
pub struct WorkDir {
    dir: PathBuf,
}

impl WorkDir {
    /// The working directory `dir` (created when first written to).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        WorkDir { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `bytes` as the file `path`, creating its parent directories, replacing a file of
    /// that name.
    ///
    /// # Errors
    /// A refused path (nothing is created), a directory in the way, or the OS refusing.
    pub fn write(&self, path: &str, bytes: &[u8]) -> Result<(), FileError> {
        let (parents, name) = split(path)?;
        std::fs::create_dir_all(&self.dir).map_err(io(path, "create"))?;
        let parent = self.walk(path, &parents, true)?;
        let temp = format!(".upload-{}", uuid::Uuid::new_v4().simple());
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = openat(&parent, temp.as_str(), flags, Mode::from_bits_truncate(0o644))
            .map_err(|errno| io(path, "create")(errno.into()))?;
        let written = File::from(fd)
            .write_all(bytes)
            .and_then(|()| renameat(&parent, temp.as_str(), &parent, name).map_err(std::io::Error::from));
        if let Err(error) = written {
            let _ = unlinkat(&parent, temp.as_str(), UnlinkatFlags::NoRemoveDir);
            return Err(io(path, "write")(error));
        }
        Ok(())
    }

    /// The bytes of the file `path`, at most `limit` of them.
    ///
    /// # Errors
    /// A refused path, a missing file or one that is not a regular file, a file over `limit`
    /// (named by `setting`), or the OS refusing.
    pub fn read(&self, path: &str, limit: u64, setting: &'static str) -> Result<Vec<u8>, FileError> {
        let (parents, name) = split(path)?;
        let parent = self.walk(path, &parents, false)?;
        // Non-blocking, so a FIFO does not hang the open; it is refused below.
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK;
        let fd = openat(&parent, name, flags, Mode::empty()).map_err(|errno| match errno {
            Errno::ELOOP => FileError::Link { path: named(path), component: name.to_string_lossy().into() },
            Errno::ENOENT => FileError::NotFound { path: named(path) },
            errno => io(path, "open")(errno.into()),
        })?;
        let file = File::from(fd);
        let metadata = file.metadata().map_err(io(path, "read"))?;
        if !metadata.is_file() {
            return Err(FileError::NotAFile { path: named(path) });
        }
        let too_large = |size| FileError::TooLarge {
            path: named(path),
            size,
            limit,
            setting,
            advice: "read it in parts with run_code, or raise the limit",
        };
        if metadata.len() > limit {
            return Err(too_large(metadata.len()));
        }
        let mut bytes = Vec::with_capacity(metadata.len() as usize);
        // It may grow while we read: never past the limit.
        file.take(limit + 1).read_to_end(&mut bytes).map_err(io(path, "read"))?;
        if bytes.len() as u64 > limit {
            return Err(too_large(bytes.len() as u64));
        }
        Ok(bytes)
    }

    /// The directory holding the last component of `path`: each of `parents` opened (and with
    /// `create`, made) beneath the previous one, never following a link.
    fn walk(&self, path: &str, parents: &[&OsStr], create: bool) -> Result<OwnedFd, FileError> {
        let directory = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let mut fd = open(&self.dir, directory, Mode::empty()).map_err(|errno| match errno {
            Errno::ENOENT => FileError::NotFound { path: named(path) },
            errno => io(path, "open")(errno.into()),
        })?;
        for component in parents {
            if create {
                match mkdirat(&fd, *component, Mode::from_bits_truncate(0o755)) {
                    Ok(()) | Err(Errno::EEXIST) => {}
                    Err(errno) => return Err(io(path, "create a directory for")(errno.into())),
                }
            }
            fd = openat(&fd, *component, directory, Mode::empty()).map_err(|errno| match errno {
                Errno::ELOOP | Errno::ENOTDIR => {
                    FileError::Link { path: named(path), component: component.to_string_lossy().into() }
                }
                Errno::ENOENT => FileError::NotFound { path: named(path) },
                errno => io(path, "open")(errno.into()),
            })?;
        }
        Ok(fd)
    }
}

/// The bytes of an upload for `path`, `content_base64` decoded; one that would be over `limit`
/// bytes is refused before it is decoded.
///
/// # Errors
/// [`FileError::TooLarge`] or [`FileError::NotBase64`].
pub fn decode_upload(path: &str, content_base64: &str, limit: u64) -> Result<Vec<u8>, FileError> {
    let too_large = |size| FileError::TooLarge {
        path: named(path),
        size,
        limit,
        setting: "--max-upload-bytes, MCP_PYREPL_MAX_UPLOAD_BYTES",
        advice: "send a smaller file, split it, or fetch it from a cell",
    };
    let compact: String = content_base64.split_ascii_whitespace().collect();
    // Four characters carry three bytes, less at most two of padding.
    let at_least = (compact.len() as u64 / 4 * 3).saturating_sub(2);
    if at_least > limit {
        return Err(too_large(at_least));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|error| FileError::NotBase64 { path: named(path), reason: error.to_string() })?;
    if bytes.len() as u64 > limit {
        return Err(too_large(bytes.len() as u64));
    }
    Ok(bytes)
}

/// The parent components and the file name of `path`, checked to stay inside the directory.
fn split(path: &str) -> Result<(Vec<&OsStr>, &OsStr), FileError> {
    let bad = |reason| FileError::BadPath { path: named(path), reason };
    if path.is_empty() {
        return Err(bad("it is empty"));
    }
    if path.len() > MAX_PATH_BYTES {
        return Err(bad("it is longer than 4096 bytes"));
    }
    if path.contains('\0') {
        return Err(bad("it contains a NUL character"));
    }
    let mut components = Vec::new();
    for component in Path::new(path).components() {
        match component {
            Component::Normal(name) => components.push(name),
            Component::CurDir => {}
            Component::ParentDir => return Err(bad("it contains `..`")),
            Component::RootDir | Component::Prefix(_) => return Err(bad("it is absolute")),
        }
    }
    if path.ends_with('/') {
        return Err(bad("it names a directory, not a file"));
    }
    let name = components.pop().ok_or_else(|| bad("it names the directory itself, not a file"))?;
    Ok((components, name))
}

/// A path for a message: whole unless absurdly long, escaped.
fn named(path: &str) -> String {
    crate::util::shown_up_to(path, 300)
}

fn io(path: &str, operation: &'static str) -> impl FnOnce(std::io::Error) -> FileError {
    let path = named(path);
    move |source| FileError::Io { operation, path, source }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn setup() -> (tempfile::TempDir, WorkDir) {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("work")).unwrap();
        std::fs::write(root.path().join("secret"), "outside").unwrap();
        let work = WorkDir::new(root.path().join("work"));
        (root, work)
    }

    #[test]
    fn files_are_written_and_read_back_with_their_parents() {
        let (_root, work) = setup();
        work.write("data/in/x.bin", &[0, 1, 2, 255]).unwrap();
        work.write("./data/in/x.bin", &[7]).unwrap();
        assert_eq!(work.read("data/in/x.bin", 10, "--max").unwrap(), [7]);
        assert_eq!(std::fs::read(work.dir().join("data/in/x.bin")).unwrap(), [7]);
        let leftovers: Vec<_> = std::fs::read_dir(work.dir().join("data/in")).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
    }

    #[test]
    fn paths_leaving_the_directory_are_refused() {
        let (root, work) = setup();
        for path in ["../secret", "/etc/passwd", "a/../../secret", "", "a/", ".", "x\0y"] {
            let error = work.write(path, b"no").unwrap_err();
            assert!(matches!(error, FileError::BadPath { .. }), "{path:?}: {error}");
            let error = work.read(path, 10, "--max").unwrap_err();
            assert!(matches!(error, FileError::BadPath { .. }), "{path:?}: {error}");
        }
        assert_eq!(std::fs::read_to_string(root.path().join("secret")).unwrap(), "outside");
    }

    #[test]
    fn symbolic_links_are_never_followed() {
        let (root, work) = setup();
        symlink(root.path().join("secret"), work.dir().join("link")).unwrap();
        symlink(root.path(), work.dir().join("up")).unwrap();
        assert!(matches!(work.read("link", 100, "--max"), Err(FileError::Link { .. })));
        assert!(matches!(work.read("up/secret", 100, "--max"), Err(FileError::Link { .. })));
        assert!(matches!(work.write("up/secret", b"no"), Err(FileError::Link { .. })));
        assert!(matches!(work.write("up/new", b"no"), Err(FileError::Link { .. })));
        // Writing the link's own name replaces the link, never its target.
        work.write("link", b"mine").unwrap();
        assert_eq!(std::fs::read_to_string(root.path().join("secret")).unwrap(), "outside");
        assert!(!root.path().join("new").exists());
        assert_eq!(work.read("link", 100, "--max").unwrap(), b"mine");
    }

    #[test]
    fn uploads_over_the_limit_are_refused_before_decoding() {
        let encoded = |n| base64::engine::general_purpose::STANDARD.encode(vec![7; n]);
        assert_eq!(decode_upload("a", &encoded(100), 100).unwrap().len(), 100);
        for n in [101, 102, 103, 4000] {
            let error = decode_upload("a", &encoded(n), 100).unwrap_err();
            assert!(
                matches!(error, FileError::TooLarge { size, .. } if size <= n as u64 && size > 100),
                "{n}"
            );
        }
        assert!(matches!(decode_upload("a", "not base64!", 100), Err(FileError::NotBase64 { .. })));
    }

    #[test]
    fn sizes_and_kinds_are_checked() {
        let (_root, work) = setup();
        work.write("big", &[1; 100]).unwrap();
        let error = work.read("big", 99, "--max-download-bytes").unwrap_err();
        assert!(
            error.to_string().contains("100 bytes") && error.to_string().contains("--max-download-bytes")
        );
        std::fs::create_dir(work.dir().join("sub")).unwrap();
        assert!(matches!(work.read("sub", 10, "--max"), Err(FileError::NotAFile { .. })));
        assert!(matches!(work.read("none", 10, "--max"), Err(FileError::NotFound { .. })));
        nix::unistd::mkfifo(&work.dir().join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
        assert!(matches!(work.read("fifo", 10, "--max"), Err(FileError::NotAFile { .. })));
    }
}

//! What a confined kernel sees of the filesystem: a mount namespace whose root holds only the
//! paths its policy grants, so the rest of the machine (other sessions, other servers' data
//! directories and their kernels' sockets, `/tmp`, the home directory) does not exist for it.
//!
//! Landlock decides what a kernel may open, but in ABI 7 not whether it may `connect()` to a
//! pathname unix socket, and the paths of every kernel's sockets can be read by anyone
//! (`/proc/<pid>/cmdline` names the connection file, `/proc/net/unix` lists the sockets). A
//! path that does not resolve cannot be connected to, so each granted path is bind-mounted at
//! its own name into an empty tmpfs and the kernel's root is moved there. The binds show the
//! same inodes: the sockets a kernel binds in its session are the ones the server connects to
//! through the host's path. Mounts cannot be changed once Landlock is applied, so the kernel
//! cannot undo any of it. Runs in `confine`, inside the user namespace it made.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{OFlag, open};
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sys::stat::Mode;

use super::confine::ConfineError;

/// Where the new root is built: any directory will do, since every source is opened before the
/// tmpfs hides it, and the mount exists only in the kernel's own namespace.
const BUILD_AT: &str = "/tmp";

/// Makes `granted` (absolute, normalised paths; missing ones are left out) the only paths of
/// this process's filesystem. Its working directory is kept when granted (a kernel's always
/// is), else it becomes `/`.
pub(super) fn isolate(granted: &[PathBuf]) -> Result<(), ConfineError> {
    let cwd = std::env::current_dir().map_err(|source| step("getcwd", source))?;
    let roots = outermost(granted)?;
    if roots.iter().any(|root| root == Path::new("/")) {
        // Everything is granted: there is nothing to hide.
        return Ok(());
    }
    let sys = |what: String, result: nix::Result<()>| result.map_err(|errno| step(&what, errno.into()));
    sys(
        "make `/` private".into(),
        mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>),
    )?;
    // Opened before the tmpfs covers them (a data directory under /tmp would vanish).
    let mut sources: Vec<(PathBuf, OwnedFd, bool)> = Vec::new();
    for root in roots {
        match open(&root, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty()) {
            Ok(fd) => {
                let is_dir = nix::sys::stat::fstat(&fd)
                    .is_ok_and(|stat| stat.st_mode & nix::libc::S_IFMT == nix::libc::S_IFDIR);
                sources.push((root, fd, is_dir));
            }
            Err(nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR) => {}
            Err(errno) => return Err(step(&format!("open `{}`", root.display()), errno.into())),
        }
    }
    let tmpfs = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    sys(
        format!("mount a tmpfs on `{BUILD_AT}`"),
        mount(Some("tmpfs"), BUILD_AT, Some("tmpfs"), tmpfs, Some("mode=0755")),
    )?;
    for (root, fd, is_dir) in &sources {
        let at = Path::new(BUILD_AT).join(root.strip_prefix("/").unwrap_or(root));
        let made = if *is_dir {
            std::fs::create_dir_all(&at)
        } else {
            std::fs::create_dir_all(at.parent().unwrap_or(Path::new(BUILD_AT)))
                .and_then(|()| std::fs::File::create(&at).map(drop))
        };
        made.map_err(|source| step(&format!("create `{}`", at.display()), source))?;
        let source = format!("/proc/self/fd/{}", fd.as_raw_fd());
        let bind =
            mount(Some(source.as_str()), &at, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>);
        sys(format!("bind `{}`", root.display()), bind)?;
    }
    drop(sources);
    std::env::set_current_dir(BUILD_AT).map_err(|source| step("enter the new root", source))?;
    sys("pivot_root".into(), nix::unistd::pivot_root(".", "."))?;
    sys("detach the old root".into(), umount2(".", MntFlags::MNT_DETACH))?;
    let cwd = if granted.iter().any(|path| cwd.starts_with(path)) { cwd } else { PathBuf::from("/") };
    std::env::set_current_dir(&cwd).map_err(|source| step(&format!("enter `{}`", cwd.display()), source))
}

fn step(what: &str, source: std::io::Error) -> ConfineError {
    ConfineError::View { step: what.to_owned(), source }
}

/// The paths of `granted` that lie below no other one, sorted; an error names a path that is
/// relative or has `.` or `..` in it.
fn outermost(granted: &[PathBuf]) -> Result<Vec<PathBuf>, ConfineError> {
    let mut paths = granted.to_vec();
    if let Some(bad) = paths.iter().find(|path| {
        !path.is_absolute()
            || path.components().any(|c| !matches!(c, Component::RootDir | Component::Normal(_)))
    }) {
        return Err(ConfineError::View {
            step: format!("`{}` is not an absolute, normalised path", bad.display()),
            source: std::io::Error::from(std::io::ErrorKind::InvalidInput),
        });
    }
    paths.sort();
    paths.dedup();
    let mut roots: Vec<PathBuf> = Vec::new();
    for path in paths {
        if !roots.iter().any(|root| path.starts_with(root)) {
            roots.push(path);
        }
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_outermost_paths_are_bound_and_odd_ones_are_refused() {
        let granted =
            ["/usr", "/s/1/kernel", "/s/1", "/usr/lib", "/dev/null", "/dev", "/s/10"].map(PathBuf::from);
        assert_eq!(outermost(&granted).unwrap(), ["/dev", "/s/1", "/s/10", "/usr"].map(PathBuf::from));
        for bad in ["relative", "/a/../b"] {
            assert!(outermost(&[PathBuf::from(bad)]).is_err(), "{bad}");
        }
    }
}

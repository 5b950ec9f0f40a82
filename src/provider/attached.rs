//! A kernel somebody else started (JupyterLab, `jupyter console`, a kernel launched by hand),
//! reached through its connection file. It holds state we did not make and may hold state the
//! user still needs, so it is never restarted, killed or stopped: the session goes forward from
//! whatever it holds, and "stopping" only disconnects.

use std::path::{Path, PathBuf};

use super::{KernelProvider, ProviderRecord};
use crate::kernel::{Kernel, KernelError};

/// Connects to the kernel of one connection file.
#[derive(Debug)]
pub struct AttachedProvider {
    connection_file: PathBuf,
}

impl AttachedProvider {
    /// The kernel behind `connection_file`.
    pub fn new(connection_file: PathBuf) -> Self {
        AttachedProvider { connection_file }
    }
}

/// Refuses a connection file that a kernel may have written: one below any of
/// `kernel_writable` (the data directory, which holds every session's kernel files, and the
/// directories confined kernels may write). Such a file could name any address, or another
/// session's kernel and key. Symbolic links are resolved first; a file that cannot be resolved
/// is left for the attach to report.
///
/// # Errors
/// The message saying where the file is and what to attach instead.
pub fn refuse_kernel_written(connection_file: &Path, kernel_writable: &[PathBuf]) -> Result<(), String> {
    let Ok(real) = connection_file.canonicalize() else { return Ok(()) };
    let Some(dir) =
        kernel_writable.iter().find(|dir| dir.canonicalize().is_ok_and(|dir| real.starts_with(dir)))
    else {
        return Ok(());
    };
    Err(format!(
        "`{}` is inside `{}`, where kernels of this server write their files: it may have been \
         written by one of them, so it is not attached; attach the connection file that the \
         kernel's own launcher wrote (`jupyter --runtime-dir` lists them)",
        connection_file.display(),
        dir.display()
    ))
}

#[async_trait::async_trait]
impl KernelProvider for AttachedProvider {
    fn describe(&self) -> String {
        format!("a kernel we did not start, attached through `{}`", self.connection_file.display())
    }

    fn can_restart(&self) -> bool {
        false
    }

    fn record(&self) -> ProviderRecord {
        ProviderRecord::Attached { connection_file: self.connection_file.clone() }
    }

    async fn start(&self) -> Result<Kernel, KernelError> {
        Kernel::attach(&self.connection_file).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_files_kernels_can_write_are_refused_even_through_links() {
        let data = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        let inside = data.path().join("sessions/abc/kernel/kernel-1.json");
        std::fs::create_dir_all(inside.parent().unwrap()).unwrap();
        std::fs::write(&inside, "{}").unwrap();
        let link = elsewhere.path().join("link.json");
        std::os::unix::fs::symlink(&inside, &link).unwrap();
        let own = elsewhere.path().join("kernel-2.json");
        std::fs::write(&own, "{}").unwrap();
        let writable = [data.path().to_owned()];
        for refused in [&inside, &link] {
            let error = refuse_kernel_written(refused, &writable).unwrap_err();
            assert!(error.contains("may have been written by one of them"), "{error}");
        }
        assert_eq!(refuse_kernel_written(&own, &writable), Ok(()));
    }
}

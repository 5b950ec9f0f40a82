//! A kernel somebody else started (JupyterLab, `jupyter console`, a kernel launched by hand),
//! reached through its connection file. It holds state we did not make and may hold state the
//! user still needs, so it is never restarted, killed or stopped: the session goes forward from
//! whatever it holds, and "stopping" only disconnects.

use std::path::PathBuf;

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

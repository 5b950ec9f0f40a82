//! Kernels in the session's own uv venv: started by us in their own process group, restarted
//! by starting a fresh one, stopped for good when the session is done with them; each confined
//! to its session by the server's sandbox, which leaves the venv read-only (`%pip install` in a
//! cell goes to the session's `packages/`). Their working directory is the session's `work/`,
//! apart from their own files in `kernel/`, so uploads and downloads never meet connection files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{KernelProvider, ProviderContext, ProviderRecord};
use crate::kernel::{Kernel, KernelError, LaunchSpec, PendingFork};
use crate::venv::Venv;

/// Starts kernels from `<venv>/bin/python` with their files in the session's kernel directory.
#[derive(Debug)]
pub struct LocalProvider {
    venv: Venv,
    work_dir: PathBuf,
    spec: LaunchSpec,
}

impl LocalProvider {
    /// Kernels in the venv of `context`, under its limits and in its sandbox, with their files
    /// in its kernel directory.
    pub fn new(context: ProviderContext) -> Self {
        let venv = Venv::at(context.venv_dir);
        let memory = context.limits.kernel_memory_mb.map(|mb| mb << 20);
        // The venv is only readable: its files are hard links into uv's cache (and its bytecode
        // into the shared store), so writing one would change every venv that shares it.
        let writable = [context.kernel_dir.clone(), context.work_dir.clone()];
        let confinement =
            context.limits.sandbox.confinement(&context.session_dir, &writable, venv.dir()).map(
                |confinement| {
                    let site_packages = venv.site_packages().ok();
                    let packages = context.session_dir.join("packages");
                    confinement.with_installs_into(&packages, venv.dir(), site_packages.as_deref())
                },
            );
        let spec = LaunchSpec::new(venv.python(), context.kernel_dir)
            .with_working_dir(context.work_dir.clone())
            .with_resource_limits(memory, context.limits.kernel_cpu_seconds)
            .with_confinement(confinement)
            .with_browser(crate::kernel::browser::find(context.limits.chromium.as_deref()));
        LocalProvider { venv, work_dir: context.work_dir, spec }
    }
}

#[async_trait::async_trait]
impl KernelProvider for LocalProvider {
    fn describe(&self) -> String {
        format!("a local kernel in the venv `{}`", self.venv.dir().display())
    }

    fn can_restart(&self) -> bool {
        true
    }

    fn venv(&self) -> Option<&Venv> {
        Some(&self.venv)
    }

    fn working_dir(&self) -> Option<&Path> {
        Some(&self.work_dir)
    }

    fn record(&self) -> ProviderRecord {
        ProviderRecord::Local
    }

    async fn start(&self) -> Result<Kernel, KernelError> {
        Kernel::launch(self.spec.clone()).await
    }

    fn fork(&self, kernel: &Kernel, state: String) -> Result<PendingFork, KernelError> {
        kernel.fork(state)
    }

    async fn stop_left_behind(self: Arc<Self>) -> usize {
        crate::kernel::launch::stop_left_behind(&self.spec.dir).await
    }
}

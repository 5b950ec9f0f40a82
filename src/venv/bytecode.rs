//! Compiled bytecode shared by the venvs of one pinned package set.
//!
//! A kernel's first start in a new venv compiles every module it imports: here 1.7 s instead of
//! 0.6 s for ipykernel's own imports, 3.5 s instead of 1.5 s for the base packages. The venvs
//! of one pinned set hold the same source files, hard-linked from uv's cache, so with the same
//! modification times and sizes, which is what a `.pyc` is checked against: bytecode compiled in
//! one of them is valid in all. So once per set, in the background, a throwaway venv of the set
//! imports what a kernel imports, and its `.pyc` files become a store beside the pins; every
//! later venv of the set gets them hard-linked into its site-packages (about 50 ms for 1400
//! files).
//!
//! Nothing a kernel runs can write the store. The import that fills it runs confined as a
//! kernel is (`Uv::with_sandbox`), with the throwaway venv only readable (its files are uv's
//! cache) and Python told to write its bytecode into a directory of its own instead
//! (`PYTHONPYCACHEPREFIX`), whose site-packages part becomes the store; kernels may only read
//! their venv, so not the store's files linked into it. A store is never shared with a writer:
//! stores of versions before this one (`<hash>.pyc/`, filled unconfined and linked into
//! writable venvs) are removed, not used.
//!
//! Nothing can go stale unnoticed: a `.pyc` that does not match its source (a file uv copied
//! instead of linking) is recompiled by Python, which writes a new file rather than changing
//! the shared one. A store is discarded when its pins are resolved anew.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::{Uv, Venv, VenvError, run, warm_up_code};
use crate::util::WriteError;

/// What a kernel imports as it starts and runs its first cell, besides the packages a venv was
/// built with: ipykernel's app and debugger (with debugpy), and what IPython and tornado import
/// only once the kernel runs. A sandboxed kernel cannot write its venv, so a module missing here
/// is compiled anew by every kernel that imports it (debugpy alone: about 100 modules).
const KERNEL_MODULES: [&str; 14] = [
    "ipykernel_launcher",
    "ipykernel.kernelapp",
    "ipykernel.debugger",
    "matplotlib_inline.backend_inline",
    "IPython.core.completerlib",
    "IPython.core.debugger",
    "IPython.core.logger",
    "IPython.core.oinspect",
    "IPython.extensions.storemagic",
    "IPython.utils.wildcard",
    "tornado.gen",
    "tornado.locks",
    "tornado.queues",
    "tornado.platform.asyncio",
];

const PYCACHE: &str = "__pycache__";

/// The `.pyc` files of one pinned set, mirrored by their path below site-packages.
#[derive(Debug, Clone)]
pub(super) struct BytecodeStore {
    dir: PathBuf,
}

impl BytecodeStore {
    /// The store of the set pinned in `pins`.
    pub(super) fn for_pins(pins: &Path) -> Self {
        BytecodeStore { dir: pins.with_extension("bytecode") }
    }

    /// Hard-links the stored bytecode into `venv`; `false` when there is no store yet.
    pub(super) async fn link_into(&self, venv: &Venv) -> io::Result<bool> {
        let (store, site_packages) = (self.dir.clone(), venv.site_packages()?);
        tokio::task::spawn_blocking(move || {
            if !store.is_dir() {
                return Ok(false);
            }
            link_into_pycache(&store, &site_packages)?;
            Ok(true)
        })
        .await
        .expect("the linking task does not panic")
    }

    /// Fills the store: builds a venv of its own from `pins` (with `python`; `packages` are
    /// what the pinned set was asked for), imports what a kernel would there, confined as
    /// `uv`'s sandbox confines kernels, with the bytecode written outside the venv, makes that
    /// bytecode the store, and deletes the rest. Another process filling the same store at once
    /// makes this one a no-op.
    pub(super) async fn fill(
        &self,
        uv: &Uv,
        pins: &Path,
        python: Option<&str>,
        packages: &[String],
    ) -> Result<(), VenvError> {
        let lock_path = self.dir.with_extension("bytecode.lock");
        let lock = fs::File::create(&lock_path)
            .map_err(|source| VenvError::Io(WriteError { path: lock_path, source }))?;
        if lock.try_lock().is_err() || self.dir.is_dir() {
            return Ok(());
        }
        self.remove_leftovers();
        crate::background::idle().await;
        let build = self.scratch("build");
        let filled = self.fill_from_new_venv(uv, &build, pins, python, packages).await;
        let _ = fs::remove_dir_all(&build);
        drop(lock);
        filled
    }

    async fn fill_from_new_venv(
        &self,
        uv: &Uv,
        dir: &Path,
        pins: &Path,
        python: Option<&str>,
        packages: &[String],
    ) -> Result<(), VenvError> {
        let venv = uv.empty_venv(&dir.join("venv"), python).await?;
        uv.install_pinned(&venv, pins).await?;
        let compiled = dir.join("bytecode");
        fs::create_dir_all(&compiled)
            .map_err(|source| VenvError::Io(WriteError { path: compiled.clone(), source }))?;
        let mut modules: Vec<String> = KERNEL_MODULES.iter().map(|&m| m.to_owned()).collect();
        modules.extend(packages.iter().cloned());
        let mut argv =
            vec![venv.python().to_string_lossy().into_owned(), "-c".to_owned(), warm_up_code(&modules)];
        if let Some(confinement) = uv.sandbox.confinement(dir, std::slice::from_ref(&compiled), venv.dir()) {
            argv = confinement.wrap(&argv);
        }
        let mut import = tokio::process::Command::new(&argv[0]);
        import.args(&argv[1..]).env("PYTHONPYCACHEPREFIX", &compiled).env_remove("PYTHONDONTWRITEBYTECODE");
        crate::background::at_idle_priority(&mut import);
        run(import).await?;

        // Python mirrors each source's absolute directory below the prefix.
        let site_packages = venv
            .site_packages()
            .map_err(|source| VenvError::Io(WriteError { path: dir.to_owned(), source }))?;
        let relative = site_packages.strip_prefix("/").unwrap_or(&site_packages);
        let from = compiled.join(relative);
        fs::rename(&from, &self.dir).map_err(|source| VenvError::Io(WriteError { path: from, source }))
    }

    /// A new directory name beside the store, ending in `.<kind>`.
    fn scratch(&self, kind: &str) -> PathBuf {
        self.dir.with_extension(format!("{}.{kind}", uuid::Uuid::new_v4().simple()))
    }

    /// Removes what a fill that was killed half-way left, and the store of versions before
    /// this one, which kernels could write (call with the lock held).
    fn remove_leftovers(&self) {
        let _ = fs::remove_dir_all(self.dir.with_extension("pyc"));
        let (Some(parent), Some(stem)) = (self.dir.parent(), self.dir.file_stem()) else { return };
        let prefix = format!("{}.", stem.to_string_lossy());
        let Ok(entries) = fs::read_dir(parent) else { return };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix) && name.ends_with(".build") {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
    }

    /// Removes the store (its pins were resolved anew).
    pub(super) fn discard(&self) {
        if let Err(error) = fs::remove_dir_all(&self.dir)
            && error.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(store = %self.dir.display(), %error, "cannot remove a bytecode store");
        }
    }
}

/// Hard-links every file below `store`, a tree laid out as `PYTHONPYCACHEPREFIX` writes one
/// (`pkg/mod.cpython-313.pyc`), into the `__pycache__` directory of the same place below
/// `site_packages` (`pkg/__pycache__/mod.cpython-313.pyc`), creating directories as needed;
/// files already there are left alone. Symbolic links are not followed.
fn link_into_pycache(store: &Path, site_packages: &Path) -> io::Result<()> {
    let mut pycache = None;
    for entry in fs::read_dir(store)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            link_into_pycache(&entry.path(), &site_packages.join(entry.file_name()))?;
        } else if kind.is_file() {
            let pycache = match &pycache {
                Some(dir) => dir,
                None => {
                    let dir = site_packages.join(PYCACHE);
                    fs::create_dir_all(&dir)?;
                    pycache.insert(dir)
                }
            };
            match fs::hard_link(entry.path(), pycache.join(entry.file_name())) {
                Err(error) if error.kind() != io::ErrorKind::AlreadyExists => return Err(error),
                _ => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn stored_files_are_linked_into_pycache_and_existing_ones_are_kept() {
        let store = tempfile::tempdir().unwrap();
        let site = tempfile::tempdir().unwrap();
        let compiled = store.path().join("pkg/sub");
        fs::create_dir_all(&compiled).unwrap();
        fs::write(compiled.join("mod.cpython-311.pyc"), "compiled").unwrap();
        fs::write(compiled.join("old.cpython-311.pyc"), "ours").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", compiled.join("link.cpython-311.pyc")).unwrap();
        fs::create_dir_all(site.path().join("pkg/sub/__pycache__")).unwrap();
        fs::write(site.path().join("pkg/sub/__pycache__/old.cpython-311.pyc"), "theirs").unwrap();

        link_into_pycache(store.path(), site.path()).unwrap();
        let linked = site.path().join("pkg/sub/__pycache__/mod.cpython-311.pyc");
        assert_eq!(
            fs::metadata(&linked).unwrap().ino(),
            fs::metadata(compiled.join("mod.cpython-311.pyc")).unwrap().ino()
        );
        assert_eq!(
            fs::read_to_string(site.path().join("pkg/sub/__pycache__/old.cpython-311.pyc")).unwrap(),
            "theirs"
        );
        assert!(
            !site.path().join("pkg/sub/__pycache__/link.cpython-311.pyc").exists(),
            "a link was followed"
        );
        assert!(!site.path().join("pkg/__pycache__").exists(), "a directory without bytecode got a cache");
    }
}

//! Settings shared by every command, from flags and environment variables.
//!
//! Owns where things live on disk and which uv and Python are used; each command adds its own
//! flags next to its code.

use std::path::PathBuf;

use sha2::Digest;

use crate::venv::BASE_PACKAGES;

/// Where data lives and which tools build the venvs.
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// Directory for sessions, venvs and the bootstrapped uv
    /// [default: `$XDG_DATA_HOME/mcp-pyrepl`, else `~/.local/share/mcp-pyrepl`]
    #[arg(long, env = "MCP_PYREPL_DATA_DIR", global = true)]
    pub data_dir: Option<PathBuf>,

    /// The `uv` executable [default: `uv` on PATH, else one installed from PyPI into the data
    /// directory]
    #[arg(long, env = "MCP_PYREPL_UV", global = true)]
    pub uv: Option<PathBuf>,

    /// Python for new venvs: a version (`3.13`) or an interpreter path [default: uv's choice]
    #[arg(long, env = "MCP_PYREPL_PYTHON", global = true)]
    pub python: Option<String>,

    /// Packages every new venv gets besides ipykernel, comma-separated; `''` for none
    #[arg(
        long,
        env = "MCP_PYREPL_BASE_PACKAGES",
        global = true,
        value_delimiter = ',',
        default_values_t = base_packages_default()
    )]
    pub base_packages: Vec<String>,

    /// Sessions kept ready in the background (venv built, kernel started, base packages
    /// imported) so that create_repl answers at once; 0 for none
    #[arg(long, env = "MCP_PYREPL_SPARE_SESSIONS", global = true, default_value_t = 1)]
    pub spare_sessions: usize,

    /// Seconds a session's kernel may sit idle before it is stopped (it comes back by replay on
    /// the next call); 0 keeps kernels running
    #[arg(long, env = "MCP_PYREPL_KERNEL_IDLE_TIMEOUT", global = true, default_value_t = 1800.0)]
    pub kernel_idle_timeout: f64,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub limits: Limits,
}

/// What one cell, one reply and one kernel may use.
#[derive(Debug, Clone, clap::Args)]
pub struct Limits {
    /// Seconds a cell may run before it is interrupted (run_code's `timeout_s` overrides it)
    #[arg(long, env = "MCP_PYREPL_CELL_TIMEOUT", global = true, default_value_t = 300.0)]
    pub cell_timeout: f64,

    /// Seconds an interrupted cell gets to stop before its kernel is killed (the state is then
    /// rebuilt by replay on the next call)
    #[arg(long, env = "MCP_PYREPL_INTERRUPT_GRACE", global = true, default_value_t = 5.0)]
    pub interrupt_grace: f64,

    /// Bytes of text output returned per cell: the start and the end are kept, the middle is
    /// cut with a note saying where the full output was saved
    #[arg(long, env = "MCP_PYREPL_MAX_OUTPUT_BYTES", global = true, default_value_t = 32 * 1024)]
    pub max_output_bytes: usize,

    /// Images returned per cell
    #[arg(long, env = "MCP_PYREPL_MAX_IMAGES", global = true, default_value_t = 10)]
    pub max_images: usize,

    /// Bytes of (base64) image data returned per cell
    #[arg(long, env = "MCP_PYREPL_MAX_IMAGE_BYTES", global = true, default_value_t = 8 << 20)]
    pub max_image_bytes: usize,

    /// Address-space limit of each kernel, in MiB [default: none]
    #[arg(long, env = "MCP_PYREPL_KERNEL_MEMORY_MB", global = true)]
    pub kernel_memory_mb: Option<u64>,

    /// Kernels a session keeps, each at its own branch, so that switching back to a recent
    /// branch replays nothing; 1 for a single kernel that restarts and replays
    #[arg(long, env = "MCP_PYREPL_KERNELS_PER_SESSION", global = true, default_value_t = 2)]
    pub kernels_per_session: usize,

    /// Memory, in MiB, the kernels of one session may use together before the least recently
    /// used spare kernels are stopped [default: no limit]
    #[arg(long, env = "MCP_PYREPL_KERNEL_POOL_MEMORY_MB", global = true)]
    pub kernel_pool_memory_mb: Option<u64>,

    /// CPU-time limit of each kernel, in seconds [default: none]
    #[arg(long, env = "MCP_PYREPL_KERNEL_CPU_SECONDS", global = true)]
    pub kernel_cpu_seconds: Option<u64>,
}

impl Settings {
    /// Settings with every default (and the environment's `MCP_PYREPL_*` variables), data kept
    /// in `data_dir`.
    pub fn with_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        #[derive(clap::Parser)]
        struct Defaults {
            #[command(flatten)]
            settings: Settings,
        }
        let mut defaults = <Defaults as clap::Parser>::parse_from(["mcp-pyrepl"]);
        defaults.settings.data_dir = Some(data_dir.into());
        defaults.settings
    }

    /// The base packages, without empty entries (`--base-packages ''` means none).
    pub fn base_packages(&self) -> Vec<String> {
        self.base_packages.iter().map(|p| p.trim()).filter(|p| !p.is_empty()).map(str::to_owned).collect()
    }

    /// The shared venv for these settings' interpreter and base packages: one directory per
    /// combination, so changing a setting builds a new venv instead of rebuilding the old one.
    pub fn shared_venv_dir(&self) -> PathBuf {
        let recipe = format!("{:?}|{}", self.python, self.base_packages().join(","));
        let digest = sha2::Sha256::digest(recipe.as_bytes());
        self.data_dir().join("venvs").join(format!("shared-{}", &hex::encode(digest)[..12]))
    }

    /// The data directory, resolved to its default when not set.
    pub fn data_dir(&self) -> PathBuf {
        if let Some(dir) = &self.data_dir {
            return dir.clone();
        }
        let base = std::env::var_os("XDG_DATA_HOME")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
            .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/share")))
            .unwrap_or_else(std::env::temp_dir);
        base.join("mcp-pyrepl")
    }
}

fn base_packages_default() -> Vec<String> {
    BASE_PACKAGES.iter().map(|p| p.to_string()).collect()
}

//! Settings shared by every command, from flags and environment variables.
//!
//! Owns where things live on disk, which uv and Python are used, the limits of cells, replies
//! and kernels, and the range each numeric setting must lie in (checked by [`InRange`] as the
//! command line is read); each command adds its own flags next to its code.

mod range;

use std::ops::Bound;
use std::path::PathBuf;

use clap::builder::{OsStringValueParser, TypedValueParser};
use sha2::Digest;

pub use self::range::{InRange, Number};
use crate::sandbox::{Level, Sandbox, SandboxSettings};
use crate::venv::BASE_PACKAGES;

/// Base64 characters of image data one reply may carry, by default.
pub const DEFAULT_REPLY_IMAGE_BYTES: usize = 60_000;

/// Longest side an image is sent with, by default: what models see at most (they downscale
/// anything larger).
pub const DEFAULT_MAX_IMAGE_SIDE: u32 = 1568;

/// The longest any seconds setting may be: a week.
const WEEK_SECONDS: f64 = 7.0 * 86400.0;

/// The largest byte budget of a reply: 1 GiB.
const GIB: usize = 1 << 30;

/// The range of the memory settings, in MiB: 16 MiB (less and Python cannot start) to 16 TiB
/// (so that the limit in bytes cannot overflow).
fn memory_mb() -> InRange<u64> {
    InRange::new(16..=1 << 24)
}

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
    /// imported) so that create_repl answers at once; 0 for none, at most 16
    #[arg(
        long,
        env = "MCP_PYREPL_SPARE_SESSIONS",
        global = true,
        default_value_t = 1,
        value_parser = InRange::new(0..=16_usize)
    )]
    pub spare_sessions: usize,

    /// Seconds a session's kernel may sit idle before it is stopped (it comes back by replay on
    /// the next call); 0 keeps kernels running, at most a week (604800)
    #[arg(
        long,
        env = "MCP_PYREPL_KERNEL_IDLE_TIMEOUT",
        global = true,
        default_value_t = 1800.0,
        value_parser = InRange::new(0.0..=WEEK_SECONDS)
    )]
    pub kernel_idle_timeout: f64,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub limits: Limits,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub sandbox: SandboxFlags,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub gateway: GatewaySettings,
}

/// Where new sessions' kernels run when not on this machine: a Jupyter gateway
/// (`src/provider/gateway/`). Its `Debug` never shows the token.
#[derive(Clone, Default, clap::Args)]
pub struct GatewaySettings {
    /// Start every new session's kernels on this Jupyter gateway (Enterprise Gateway, Kernel
    /// Gateway, Jupyter Server): its base URL, `http://` or `https://` [default: kernels run on
    /// this machine]
    #[arg(long = "kernel-gateway", env = "MCP_PYREPL_KERNEL_GATEWAY", global = true, value_name = "URL", value_parser = gateway_url)]
    pub url: Option<String>,

    /// The gateway's token, sent as `Authorization: token …` (prefer the variable: `ps` shows
    /// flags) [default: none]
    #[arg(long, env = "MCP_PYREPL_GATEWAY_TOKEN", global = true, hide_env_values = true)]
    pub gateway_token: Option<String>,

    /// The kernelspec the gateway starts for each kernel
    #[arg(long, env = "MCP_PYREPL_GATEWAY_KERNEL_NAME", global = true, default_value = "python3")]
    pub gateway_kernel_name: String,
}

impl std::fmt::Debug for GatewaySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewaySettings")
            .field("url", &self.url)
            .field("gateway_token", &self.gateway_token.as_ref().map(|_| "<hidden>"))
            .field("gateway_kernel_name", &self.gateway_kernel_name)
            .finish()
    }
}

/// A gateway's base URL: `http://` or `https://` with a host, no query or fragment; kept
/// without its trailing `/`.
fn gateway_url(text: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(text.trim()).map_err(|error| format!("`{text}` is not a URL: {error}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!("`{text}` is not an `http://` or `https://` URL with a host"));
    }
    if url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return Err(format!(
            "`{text}` has a query, fragment or user name; give the base URL only, and the token with --gateway-token"
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// How the kernels we start are confined: the flags of [`SandboxSettings`].
#[derive(Debug, Clone, clap::Args)]
pub struct SandboxFlags {
    /// Confinement of every kernel the server starts: `files` (writes only in its session,
    /// reads only the system, its interpreter, uv's cache, its session, the working directory
    /// and `--sandbox-read`), `strict` (`files` and no network) or `off`. An explicit level the
    /// machine cannot enforce stops the server at start-up; the default then only warns
    /// [default: files]
    #[arg(long = "sandbox", value_enum, env = "MCP_PYREPL_SANDBOX", global = true)]
    pub level: Option<Level>,

    /// A directory confined kernels may read (repeatable; `:`-separated in the variable)
    #[arg(long, env = "MCP_PYREPL_SANDBOX_READ", global = true, value_name = "DIR", value_delimiter = ':')]
    pub sandbox_read: Vec<PathBuf>,

    /// A directory confined kernels may read and write (repeatable; `:`-separated in the
    /// variable)
    #[arg(long, env = "MCP_PYREPL_SANDBOX_WRITE", global = true, value_name = "DIR", value_delimiter = ':')]
    pub sandbox_write: Vec<PathBuf>,
}

impl SandboxFlags {
    /// The sandbox these flags ask for.
    pub fn settings(&self) -> SandboxSettings {
        SandboxSettings {
            level: self.level,
            read: self.sandbox_read.clone(),
            write: self.sandbox_write.clone(),
        }
    }
}

/// `--sandbox` reads a [`Level`] by its name.
impl clap::ValueEnum for Level {
    fn value_variants<'a>() -> &'a [Self] {
        &Level::ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.as_str()).help(self.meaning()))
    }
}

/// What one cell, one reply and one kernel may use.
#[derive(Debug, Clone, clap::Args)]
pub struct Limits {
    /// Seconds a cell may run before it is interrupted (run_code's `timeout_s` overrides it);
    /// more than 0, at most a day (86400)
    #[arg(
        long,
        env = "MCP_PYREPL_CELL_TIMEOUT",
        global = true,
        default_value_t = 300.0,
        value_parser = InRange::new((Bound::Excluded(0.0), Bound::Included(86400.0)))
    )]
    pub cell_timeout: f64,

    /// Seconds an interrupted cell gets to stop before its kernel is killed (the state is then
    /// rebuilt by replay on the next call); 0 to 3600
    #[arg(
        long,
        env = "MCP_PYREPL_INTERRUPT_GRACE",
        global = true,
        default_value_t = 5.0,
        value_parser = InRange::new(0.0..=3600.0)
    )]
    pub interrupt_grace: f64,

    /// Bytes of text output returned per cell: the start and the end are kept, the middle is
    /// cut with a note saying where the full output was saved; 1024 (1 KiB) to 1073741824 (1 GiB)
    #[arg(
        long,
        env = "MCP_PYREPL_MAX_OUTPUT_BYTES",
        global = true,
        default_value_t = 32 * 1024,
        value_parser = InRange::new(1024..=GIB)
    )]
    pub max_output_bytes: usize,

    /// Images returned per cell; 0 to 1000
    #[arg(
        long,
        env = "MCP_PYREPL_MAX_IMAGES",
        global = true,
        default_value_t = 10,
        value_parser = InRange::new(0..=1000_usize)
    )]
    pub max_images: usize,

    /// Bytes of (base64) image data kept per cell at full size (readable as resources; the
    /// reply gets them scaled to `--max-image-side` and `--max-reply-image-bytes`); 0 to
    /// 1073741824 (1 GiB)
    #[arg(
        long,
        env = "MCP_PYREPL_MAX_IMAGE_BYTES",
        global = true,
        default_value_t = 8 << 20,
        value_parser = InRange::new(0..=GIB)
    )]
    pub max_image_bytes: usize,

    /// Longest side, in pixels, of an image in a reply: a larger one is scaled down (aspect
    /// kept) and its original stays readable as a resource; 16 to 30000
    #[arg(
        long,
        env = "MCP_PYREPL_MAX_IMAGE_SIDE",
        global = true,
        default_value_t = DEFAULT_MAX_IMAGE_SIDE,
        value_parser = InRange::new(16..=30_000_u32)
    )]
    pub max_image_side: u32,

    /// Base64 bytes all the images of one reply may take together (a client counts about a
    /// quarter as many tokens): images are re-encoded or shrunk to fit, or left out with a link
    /// to their resource; 0 to 1073741824 (1 GiB)
    #[arg(
        long,
        env = "MCP_PYREPL_MAX_REPLY_IMAGE_BYTES",
        global = true,
        default_value_t = DEFAULT_REPLY_IMAGE_BYTES,
        value_parser = InRange::new(0..=GIB)
    )]
    pub max_reply_image_bytes: usize,

    /// Largest file upload_file accepts, in bytes (decoded); 1 to 1073741824 (1 GiB)
    #[arg(
        long,
        env = "MCP_PYREPL_MAX_UPLOAD_BYTES",
        global = true,
        default_value_t = 32 << 20,
        value_parser = InRange::new(1..=GIB as u64)
    )]
    pub max_upload_bytes: u64,

    /// Largest file download_file (and resources/read) returns, in bytes; 1 to 1073741824
    /// (1 GiB)
    #[arg(
        long,
        env = "MCP_PYREPL_MAX_DOWNLOAD_BYTES",
        global = true,
        default_value_t = 8 << 20,
        value_parser = InRange::new(1..=GIB as u64)
    )]
    pub max_download_bytes: u64,

    /// Address-space limit of each kernel, in MiB; 16 to 16777216 (16 TiB) [default: none]
    #[arg(long, env = "MCP_PYREPL_KERNEL_MEMORY_MB", global = true, value_parser = memory_mb())]
    pub kernel_memory_mb: Option<u64>,

    /// Kernels a session keeps, each at its own branch, so that switching back to a recent
    /// branch replays nothing; 1 for a single kernel that restarts and replays, at most 64
    #[arg(
        long,
        env = "MCP_PYREPL_KERNELS_PER_SESSION",
        global = true,
        default_value_t = 2,
        value_parser = InRange::new(1..=64_usize)
    )]
    pub kernels_per_session: usize,

    /// Snapshots a session keeps besides its kernels: forked copies of a kernel holding the
    /// state before its next cell ran, so that going back to it (a retry, a recent cell)
    /// replays nothing; 0 turns snapshots off, at most 64
    #[arg(
        long,
        env = "MCP_PYREPL_SNAPSHOTS_PER_SESSION",
        global = true,
        default_value_t = 6,
        value_parser = InRange::new(0..=64_usize)
    )]
    pub snapshots_per_session: usize,

    /// Memory, in MiB, the kernels of one session may use together before the least recently
    /// used spare kernels are stopped; 16 to 16777216 (16 TiB) [default: no limit]
    #[arg(long, env = "MCP_PYREPL_KERNEL_POOL_MEMORY_MB", global = true, value_parser = memory_mb())]
    pub kernel_pool_memory_mb: Option<u64>,

    /// CPU-time limit of each kernel, in seconds; at least 1 [default: none]
    #[arg(long, env = "MCP_PYREPL_KERNEL_CPU_SECONDS", global = true, value_parser = InRange::new(1_u64..))]
    pub kernel_cpu_seconds: Option<u64>,

    /// The Chromium or Chrome that renders plotly figures as PNG images (through kaleido);
    /// `''` for none: figures then come back as text summaries [default: the first of
    /// `chromium-headless-shell`, `chromium`, `chromium-browser`, `google-chrome`,
    /// `google-chrome-stable`, `chrome` on PATH]
    #[arg(
        long,
        env = "MCP_PYREPL_CHROMIUM",
        global = true,
        value_name = "PATH",
        value_parser = OsStringValueParser::new().map(PathBuf::from)
    )]
    pub chromium: Option<PathBuf>,

    /// The sandbox each kernel runs in: resolved from [`Settings::sandbox`] when a server or
    /// `exec` starts ([`Sandbox::resolve`]), unconfined until then.
    #[arg(skip)]
    pub sandbox: Sandbox,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_urls_are_base_urls() {
        assert_eq!(gateway_url("http://127.0.0.1:8888/").unwrap(), "http://127.0.0.1:8888");
        assert_eq!(gateway_url("https://hub.example/user/me/").unwrap(), "https://hub.example/user/me");
        for bad in ["127.0.0.1:8888", "ftp://host", "http://host/?token=x", "https://me:pw@host", "not a url"]
        {
            assert!(gateway_url(bad).is_err(), "{bad} was accepted");
        }
        let settings = GatewaySettings { gateway_token: Some("s3cret".into()), ..GatewaySettings::default() };
        assert!(!format!("{settings:?}").contains("s3cret"));
    }

    #[test]
    fn every_default_passes_its_value_parser() {
        // clap parses the defaults with the same parsers, and panics when a parser's type is
        // not its field's: parsing nothing at all checks every range and every type.
        let settings = Settings::with_data_dir("/data");
        assert_eq!(settings.data_dir(), PathBuf::from("/data"));
    }
}

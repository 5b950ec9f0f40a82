//! The one integration test binary: real uv, real ipykernel processes, real ZeroMQ sockets,
//! and the tidy checks on the source (`it/tidy.rs`). The venvs are built through the crate's own
//! bootstrap code and cached in the target directory between runs, so a fresh machine runs every
//! test. The one exception: on a machine declared unable to confine kernels
//! (`MCP_PYREPL_TEST_NO_SANDBOX=1`) the sandbox tests and the display test that needs a `strict`
//! kernel end at once, passing, and the other display tests run unconfined; without it, a machine
//! that cannot confine fails them.

mod it;

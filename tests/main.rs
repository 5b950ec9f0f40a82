//! The one integration test binary: real uv, real ipykernel processes, real ZeroMQ sockets.
//! Nothing here skips: the venvs are built through the crate's own bootstrap code and cached in
//! the target directory between runs.

mod it;

//! `strict`'s socket rule: a seccomp filter under which `socket()` makes unix, IP and
//! routing-netlink sockets only.
//!
//! A network namespace of its own takes TCP, UDP and DNS from a kernel, but not the families
//! that ignore namespaces (`AF_VSOCK` reaches the hypervisor) or that no namespace empties.
//! So every family but `AF_UNIX`, `AF_INET`, `AF_INET6` and `AF_NETLINK` with `NETLINK_ROUTE`
//! fails with `EAFNOSUPPORT`, as on a machine built without it. Those stay because libzmq
//! aborts the kernel when it cannot make them (ipykernel binds its iopub pipe on 127.0.0.1,
//! and libzmq lists the interfaces through netlink); in the kernel's namespace they reach
//! nothing but a loopback that is down, and Landlock refuses TCP ports.
//! `io_uring_setup` fails too (an io_uring can make sockets without the `socket` call), and so
//! does every call of another architecture's table (x32, or i386 through `int 0x80`, where
//! sockets come from other call numbers). Runs in `confine`, after `no_new_privs`, before exec.

use nix::libc;

use super::confine::ConfineError;

/// The audit architecture of the system call table this filter is written for.
#[cfg(target_arch = "x86_64")]
const ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const ARCH: u32 = 0xC000_00B7;

/// x86-64's flag for the calls of its x32 table.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

// The classic BPF opcodes the filter uses.
/// `BPF_LD | BPF_W | BPF_ABS`.
const LD_W_ABS: u16 = 0x20;
const JEQ_K: u16 = 0x05 | 0x10;
const JGE_K: u16 = 0x05 | 0x30;
const RET_K: u16 = 0x06;

// Offsets into `struct seccomp_data`: the call number, the architecture, the low 32 bits of
// the first and third arguments (little-endian).
const NR: u32 = 0;
const ARCH_AT: u32 = 4;
const ARG0: u32 = 16;
const ARG2: u32 = 32;

/// The netlink protocol of the routing tables and interfaces.
const NETLINK_ROUTE: u32 = 0;

const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const EAFNOSUPPORT: u32 = libc::SECCOMP_RET_ERRNO | libc::EAFNOSUPPORT as u32;
const EPERM: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;

fn op(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The filter, as BPF instructions (jumps count instructions skipped).
fn program() -> Vec<libc::sock_filter> {
    vec![
        op(LD_W_ABS, 0, 0, ARCH_AT),
        op(JEQ_K, 1, 0, ARCH),
        op(RET_K, 0, 0, EPERM),
        op(LD_W_ABS, 0, 0, NR),
        op(JGE_K, 0, 1, X32_SYSCALL_BIT),
        op(RET_K, 0, 0, EPERM),
        op(JEQ_K, 0, 1, libc::SYS_io_uring_setup as u32),
        op(RET_K, 0, 0, EPERM),
        op(JEQ_K, 0, 8, libc::SYS_socket as u32),
        op(LD_W_ABS, 0, 0, ARG0),
        op(JEQ_K, 6, 0, libc::AF_UNIX as u32),
        op(JEQ_K, 5, 0, libc::AF_INET as u32),
        op(JEQ_K, 4, 0, libc::AF_INET6 as u32),
        op(JEQ_K, 0, 2, libc::AF_NETLINK as u32),
        op(LD_W_ABS, 0, 0, ARG2),
        op(JEQ_K, 1, 0, NETLINK_ROUTE),
        op(RET_K, 0, 0, EAFNOSUPPORT),
        op(RET_K, 0, 0, ALLOW),
    ]
}

/// Installs the filter on this process and what it execs.
#[allow(unsafe_code)]
pub(super) fn unix_ip_and_route_only() -> Result<(), ConfineError> {
    let filter = program();
    let prog = libc::sock_fprog { len: filter.len() as u16, filter: filter.as_ptr().cast_mut() };
    let fail = |step| ConfineError::Seccomp { step, source: std::io::Error::last_os_error() };
    // SAFETY: prctl(2) with integer arguments, then with a pointer to a filter that outlives
    // the call (the kernel copies it).
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(fail("PR_SET_NO_NEW_PRIVS"));
        }
        if libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog as *const libc::sock_fprog) != 0
        {
            return Err(fail("PR_SET_SECCOMP"));
        }
    }
    Ok(())
}

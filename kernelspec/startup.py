"""mcp-pyrepl's kernel startup: defines display_figure(fig), makes every figure show once, and
lets the server fork the kernel into snapshots.

Runs in the user namespace of a stock ipykernel (IPython profile startup file). Kept small on
purpose: importing nothing heavy here keeps kernel start-up fast.
"""


def display_figure(fig, **savefig_kwargs):
    """Show a matplotlib figure in the cell's output as one PNG image, then close it.

    Works for any Figure (pyplot or not). Closing it stops the inline backend from showing the
    same figure again at the end of the cell.
    """
    import base64
    import io
    import sys

    from IPython.display import display

    buffer = io.BytesIO()
    savefig_kwargs.setdefault("format", "png")
    savefig_kwargs.setdefault("bbox_inches", "tight")
    fig.savefig(buffer, **savefig_kwargs)
    png = base64.b64encode(buffer.getvalue()).decode("ascii")
    display({"image/png": png, "text/plain": repr(fig)}, raw=True)
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close(fig)


def _mcp_pyrepl_close_returned_figure():
    """A figure that was the cell's value is already shown by its execute_result: close it so
    the inline backend's end-of-cell flush does not show it a second time.

    Registered before matplotlib_inline registers its flush, so it runs first.
    """
    import sys

    figure_module = sys.modules.get("matplotlib.figure")
    result = get_ipython().last_execution_result  # noqa: F821 (defined in the kernel)
    if figure_module is None or result is None:
        return
    if isinstance(result.result, figure_module.Figure):
        import matplotlib.pyplot

        matplotlib.pyplot.close(result.result)


get_ipython().events.register("post_execute", _mcp_pyrepl_close_returned_figure)  # noqa: F821


def _mcp_pyrepl_bound_stream(stream, limit=1 << 20):
    """Flush `stream` whenever a megabyte has been written since its last flush.

    ipykernel sends buffered output every 0.2 s, so a tight loop of prints becomes one message
    of tens or hundreds of megabytes, which every reader must hold at once. Flushing by size keeps
    each message small whatever the cell prints, and makes the printing loop wait for the kernel's
    I/O thread instead of outrunning it.
    """
    if not hasattr(stream, "flush") or getattr(stream, "_mcp_pyrepl_bounded", False):
        return
    write = stream.write
    pending = 0

    def bounded_write(text):
        nonlocal pending
        written = write(text)
        pending += len(text)
        if pending >= limit:
            pending = 0
            stream.flush()
        return written

    try:
        stream.write = bounded_write
        stream._mcp_pyrepl_bounded = True
    except (AttributeError, TypeError):
        pass  # not an ipykernel stream: nothing to bound


def _mcp_pyrepl_bound_streams():
    import sys

    for stream in (sys.stdout, sys.stderr):
        _mcp_pyrepl_bound_stream(stream)


_mcp_pyrepl_bound_streams()


def _mcp_pyrepl_snapshot(connection_file, server_pid):
    """Fork this kernel into a snapshot: a child holding the same state that serves on new
    sockets, described by `connection_file` (written with a "pid" key once it listens).

    Returns at once in this kernel; never returns in the copy. Raises RuntimeError, forking
    nothing, when a fork would not give a working copy.
    """
    import gc
    import os
    import sys
    import threading

    _mcp_pyrepl_check_forkable()
    gc.freeze()  # the copy never collects these objects, so it never touches their pages
    middle = os.fork()
    if middle:
        gc.unfreeze()
        threading.Thread(target=os.waitpid, args=(middle, 0), name="mcp-pyrepl-reaper", daemon=True).start()
        return
    # The middle process forks the copy and exits, so the copy is an orphan from the start and
    # the server (a child subreaper) adopts it and sees how it ends.
    try:
        pid = os.fork()
        if pid:
            try:
                # Both sides move the copy to a group of its own, so that no signal to this
                # kernel's group can reach it, whichever runs first.
                os.setpgid(pid, pid)
            except OSError:
                pass
            # The server watches this pid until the copy listens.
            _mcp_pyrepl_write_private(connection_file + ".pid", str(pid))
            os._exit(0)
        _mcp_pyrepl_serve_fork(connection_file, server_pid)
    except BaseException as error:
        import traceback

        traceback.print_exc(file=sys.__stderr__)
        try:
            # Tells the server at once that no copy is coming, and why.
            _mcp_pyrepl_write_private(connection_file + ".failed", f"{type(error).__name__}: {error}")
        except OSError:
            pass
    finally:
        os._exit(70)


def _mcp_pyrepl_check_forkable():
    """Raises RuntimeError saying why a fork of this kernel would not be a working copy."""
    import sys
    import threading

    import ipykernel

    if ipykernel.version_info[0] != 7:
        raise RuntimeError(f"snapshots need ipykernel 7, this kernel has {ipykernel.__version__}")
    ours = ("ipykernel.", "IPython.", "zmq.", "jupyter_client.")
    foreign = [
        t.name
        for t in threading.enumerate()
        if t is not threading.main_thread()
        and not t.name.startswith("mcp-pyrepl-")
        and not type(t).__module__.startswith(ours)
        and not getattr(getattr(t, "_target", None), "__module__", "").startswith(ours)
    ]
    if foreign:
        raise RuntimeError(f"the kernel runs threads the user started ({', '.join(foreign[:3])})")
    torch = sys.modules.get("torch")
    if torch is not None and getattr(torch, "cuda", None) is not None and torch.cuda.is_initialized():
        raise RuntimeError("the kernel has initialised CUDA, which does not survive a fork")


def _mcp_pyrepl_write_private(path, text):
    """Writes `text` to a new file at `path` that only its owner can read (it may hold a key)."""
    import os

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def _mcp_pyrepl_serve_fork(connection_file, server_pid):
    """In the forked child: new sockets, threads and event loop around the same shell."""
    import asyncio
    import gc
    import json
    import os
    import sys
    import threading
    import time

    from ipykernel.ipkernel import IPythonKernel
    from ipykernel.kernelapp import IPKernelApp

    os.setpgid(0, 0)
    gc.freeze()
    app = IPKernelApp.instance()

    def collect_again(*_):
        # Taken into service: the objects frozen at the fork may be collected again.
        gc.unfreeze()
        shell.events.unregister("pre_execute", collect_again)

    shell = app.shell
    app.session.pid = os.getpid()
    app.connection_file = connection_file + ".part"
    for name in ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port"):
        setattr(app, name, 0)
    app.context = None
    app.poller = None
    # The parent's event loop (and its epoll set, shared with the parent) is never touched again.
    asyncio.events._set_running_loop(None)
    asyncio.set_event_loop(asyncio.new_event_loop())
    app.init_sockets()
    app.init_heartbeat()
    app.init_io()
    sys.displayhook = shell.displayhook  # the cell's display trap is already entered
    _mcp_pyrepl_bound_streams()
    IPythonKernel.clear_instance()
    app.init_kernel()
    shell.kernel = app.kernel
    shell.events.register("pre_execute", collect_again)
    app.write_connection_file()
    with open(app.connection_file) as f:
        info = json.load(f)
    info["pid"] = os.getpid()
    _mcp_pyrepl_write_private(connection_file + ".tmp", json.dumps(info))
    os.replace(connection_file + ".tmp", connection_file)
    os.unlink(app.connection_file)
    app.connection_file = connection_file

    def watch_server():
        while True:
            time.sleep(1)
            try:
                os.kill(server_pid, 0)
            except ProcessLookupError:
                os._exit(0)
            except PermissionError:
                pass

    threading.Thread(target=watch_server, name="mcp-pyrepl-server-watch", daemon=True).start()
    app.start()

"""mcp-pyrepl's kernel startup: defines display_figure(fig), makes every figure show once,
renders plotly figures as one PNG each, names what each cell bound, and lets the server fork
the kernel into snapshots.

Runs in the user namespace of a stock ipykernel (IPython profile startup file). Kept small on
purpose: importing nothing heavy here keeps kernel start-up fast (plotly is hooked as it is
imported, never imported here). Everything but display_figure is private (`_mcp_pyrepl…`) and
hidden from the variable listings.
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


class _McpPyreplChain:
    """The chain hash of the cells this kernel has run, kept by the kernel itself as the server
    computes it (sha256 of the previous hash, 32 zero bytes at first, and the cell's code): a
    snapshot names the state it holds by it, so the server takes a copy only for the state it
    asked for. Cells are the requests stored in history; silent and unrecorded ones (warm-ups,
    forks, listings, installs) change nothing."""

    def __init__(self):
        self.head = bytes(32)
        self.cells = 0
        self.pending = None

    def before(self, info):
        """pre_run_cell hook: the cell about to run, when it is one."""
        self.pending = info.raw_cell if info.store_history and not info.silent else None

    def after(self, result=None):
        """post_run_cell hook: the state now includes the cell, whatever it did (as the server
        names a cell that raised or was interrupted by its chain hash too)."""
        if self.pending is None:
            return
        import hashlib

        self.head = hashlib.sha256(self.head + self.pending.encode("utf-8", "surrogatepass")).digest()
        self.cells += 1
        self.pending = None

    def hex(self):
        """The state as the server names it: empty for a fresh kernel, else the hash in hex."""
        return self.head.hex() if self.cells else ""


_mcp_pyrepl_chain = _McpPyreplChain()
get_ipython().events.register("pre_run_cell", _mcp_pyrepl_chain.before)  # noqa: F821
get_ipython().events.register("post_run_cell", _mcp_pyrepl_chain.after)  # noqa: F821


def _mcp_pyrepl_snapshot(connection_file, pid_file, server_pid, command_file):
    """Fork this kernel into a snapshot: a child holding the same state that serves on new
    sockets, described by `connection_file` (written with a "pid" key once it listens). Its pid
    goes into `pid_file` at once, as the server's pid records have it (`server_pid`, and the
    connection file `command_file` its command line names), so that a server started after a
    crash can find it.

    The fork is made from a thread of its own, which is the only thread the child keeps: the
    copy starts serving at the bottom of that thread's stack, not on top of the cell that asked
    for it. (Forked from the main thread, every copy ran nested inside its origin's execute
    handler, about 20 frames deeper per generation, until a copy of copies hit the recursion
    limit and ordinary cells failed with "Unexpected exception formatting exception".)

    Returns at once in this kernel; never returns in the copy. Raises RuntimeError, forking
    nothing, when a fork would not give a working copy.
    """
    import gc
    import threading

    _mcp_pyrepl_check_forkable()
    forked = threading.Event()
    failure = []

    def fork_and_reap():
        import os

        try:
            middle = os.fork()
        except BaseException as error:
            failure.append(error)
            forked.set()
            return
        if middle == 0:
            _mcp_pyrepl_become_copy(connection_file, pid_file, server_pid, command_file)
        forked.set()
        os.waitpid(middle, 0)

    gc.freeze()  # the copy never collects these objects, so it never touches their pages
    try:
        threading.Thread(target=fork_and_reap, name="mcp-pyrepl-fork", daemon=True).start()
        forked.wait()
    finally:
        gc.unfreeze()
    if failure:
        raise RuntimeError(f"the kernel could not fork: {failure[0]}")


def _mcp_pyrepl_become_copy(connection_file, pid_file, server_pid, command_file):
    """In the middle process (only the forking thread is left): fork the copy and exit, so the
    copy is an orphan from the start and the server (a child subreaper) adopts it and sees how
    it ends. Never returns."""
    import os
    import sys

    try:
        pid = os.fork()
        if pid:
            try:
                # Both sides move the copy to a group of its own, so that no signal to this
                # kernel's group can reach it, whichever runs first.
                os.setpgid(pid, pid)
            except OSError:
                pass
            import json

            record = {"kernel": pid, "server": server_pid, "command_file": command_file}
            _mcp_pyrepl_write_private(pid_file, json.dumps(record))
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
    # The kernel's own threads, and those of kaleido's browser (choreographer's): a copy
    # starts a browser of its own.
    ours = ("ipykernel.", "IPython.", "zmq.", "jupyter_client.", "choreographer.", "kaleido.", "logistro.")
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
    threading.current_thread().name = "MainThread"  # the forking thread is the copy's only one
    gc.freeze()
    for finder in sys.meta_path:
        if isinstance(finder, _McpPyreplPlotly):
            # The origin's browser and its thread are not ours: the copy starts its own.
            finder.kaleido = None
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
    info["chain"] = _mcp_pyrepl_chain.hex()
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
class _McpPyreplNames:
    """What the server reads through an execute request's user_expressions: the names a cell
    bound or rebound (`names()`, against the namespace noted before the cell ran) and the whole
    user namespace (`variables()`), each `{name, type, summary}`, modules and private names
    left out. The value's repr is the JSON the server parses."""

    SUMMARY_CHARS = 120
    MAX_NAMES = 200
    MAX_VARIABLES = 1000

    def __init__(self, shell):
        self.shell = shell
        self.before = {}

    def note(self, info=None):
        """pre_run_cell hook: remember which object each name holds."""
        self.before = {name: id(value) for name, value in self.shell.user_ns.items()}

    def names(self):
        before = self.before
        changed = [
            (name, value)
            for name, value in self.shell.user_ns.items()
            if before.get(name, _McpPyreplNames) != id(value)
        ]
        return self._listing(changed, self.MAX_NAMES)

    def variables(self):
        return self._listing(list(self.shell.user_ns.items()), self.MAX_VARIABLES)

    def _listing(self, items, limit):
        import types

        hidden = self.shell.user_ns_hidden
        shown = [
            (name, value)
            for name, value in items
            if not name.startswith("_")
            and not isinstance(value, types.ModuleType)
            and not (name in hidden and hidden[name] is value)
        ]
        listed = [self.describe(name, value) for name, value in shown[:limit]]
        return _McpPyreplJson({"names": listed, "omitted": max(0, len(shown) - limit)})

    def describe(self, name, value):
        kind = type(value)
        module = getattr(kind, "__module__", "") or ""
        type_name = kind.__qualname__ if module == "builtins" else f"{module.split('.')[0]}.{kind.__qualname__}"
        try:
            summary = self.summary(value)
        except Exception as error:  # a broken __repr__ or property must not hide the others
            summary = f"<no summary: {type(error).__name__}>"
        summary = " ".join(summary.split())
        if len(summary) > self.SUMMARY_CHARS:
            summary = summary[: self.SUMMARY_CHARS - 1] + "…"
        return {"name": name, "type": type_name, "summary": summary}

    def summary(self, value):
        import inspect
        import reprlib

        shape = getattr(value, "shape", None)
        if isinstance(shape, tuple) and shape and not isinstance(value, type):
            dims = "×".join(str(n) for n in shape)
            dtype = getattr(value, "dtype", None)
            if dtype is not None:
                return f"shape {dims}, dtype {dtype}"
            dtypes = getattr(value, "dtypes", None)
            if dtypes is not None and hasattr(dtypes, "items"):
                columns = ", ".join(f"{column} {kind}" for column, kind in list(dtypes.items())[:12])
                return f"shape {dims}; {columns}"
            return f"shape {dims}"
        traces = getattr(value, "data", None)
        if type(value).__module__.startswith("plotly.") and isinstance(traces, tuple):
            kinds = ", ".join(dict.fromkeys(getattr(trace, "type", "?") for trace in traces))
            title = getattr(getattr(getattr(value, "layout", None), "title", None), "text", None)
            return f"{len(traces)} trace(s) ({kinds})" + (f", title {title!r}" if title else "")
        if inspect.isfunction(value) or inspect.isbuiltin(value):
            try:
                return f"{value.__name__}{inspect.signature(value)}"
            except (TypeError, ValueError):
                return f"{value.__name__}(…)"
        if isinstance(value, type):
            return f"class {value.__qualname__}"
        bounded = reprlib.Repr()
        bounded.maxstring = bounded.maxother = self.SUMMARY_CHARS
        if isinstance(value, (list, tuple, dict, set, frozenset, str, bytes, bytearray)):
            return f"len {len(value)}: {bounded.repr(value)}"
        if hasattr(type(value), "__len__") and hasattr(type(value), "__iter__"):
            try:
                return f"len {len(value)}: {repr(value)[: self.SUMMARY_CHARS]}"
            except TypeError:
                pass
        return repr(value)[: self.SUMMARY_CHARS + 1]


class _McpPyreplJson:
    """A value whose text/plain form (its repr) is JSON, for user_expressions."""

    def __init__(self, data):
        self.data = data

    def __repr__(self):
        import json

        return json.dumps(self.data, default=str)


class _McpPyreplPlotly:
    """plotly figures as one PNG image each: kaleido with the browser the server found
    (`PYREPL_KALEIDO_BROWSER`, empty when none), one browser kept for the kernel's life; without
    one, or when it fails, a short text summary of the figure instead.

    Installed as plotly.io._renderers is imported (a meta path hook), so `fig.show()`,
    `display(fig)` and a figure as the cell's value all come here, through the renderer
    `mcp_pyrepl` made the default."""

    RENDERER = "mcp_pyrepl"
    START_TIMEOUT = 60
    RENDER_TIMEOUT = 90

    def __init__(self):
        import os

        self.browser = os.environ.get("PYREPL_KALEIDO_BROWSER", "")
        if self.browser:
            # plotly's own to_image and write_image find it too.
            os.environ.setdefault("BROWSER_PATH", self.browser)
        self.kaleido = None
        self.failure = None

    # The import hook: a meta path finder that only answers for plotly.io._renderers.
    def find_spec(self, fullname, path=None, target=None):
        if fullname != "plotly.io._renderers":
            return None
        import sys

        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        exec_module = loader.exec_module

        def exec_then_install(module):
            exec_module(module)
            try:
                self.install(module)
            except Exception as error:  # plotly changed: leave it as it is
                print(f"mcp-pyrepl: plotly figures are not rendered as images: {error!r}", file=sys.stderr)

        loader.exec_module = exec_then_install
        return spec

    def install(self, renderers_module):
        import os

        from plotly.io._base_renderers import MimetypeRenderer
        from plotly.io._utils import validate_coerce_fig_to_dict

        plotly = self

        class McpPyreplRenderer(MimetypeRenderer):
            """One PNG per figure (or a text summary): mcp-pyrepl's plotly renderer."""

            def __init__(self):
                self.width = self.height = self.scale = None

            def to_mimebundle(self, fig_dict):
                return plotly.bundle(fig_dict, self.width, self.height, self.scale)

        renderers = renderers_module.renderers
        renderers[self.RENDERER] = McpPyreplRenderer()
        if not os.environ.get("PLOTLY_RENDERER"):
            renderers.default = self.RENDERER
        original_show = renderers_module.show

        def show(fig, renderer=None, validate=True, **kwargs):
            """plotly.io.show: ours when our renderer is the one asked for (it needs neither
            nbformat nor a notebook front end), plotly's otherwise."""
            if (renderer or renderers.default) != self.RENDERER:
                return original_show(fig, renderer, validate, **kwargs)
            from IPython.display import display

            fig_dict = validate_coerce_fig_to_dict(fig, validate)
            size = {key: kwargs.get(key) for key in ("width", "height", "scale")}
            display(self.bundle(fig_dict, **size), raw=True)

        show.__doc__ = original_show.__doc__
        renderers_module.show = show

    def bundle(self, fig_dict, width=None, height=None, scale=None):
        import base64

        layout = fig_dict.get("layout") or {}
        template_layout = (layout.get("template") or {}).get("layout") or {}
        width = int(width or layout.get("width") or template_layout.get("width") or 700)
        height = int(height or layout.get("height") or template_layout.get("height") or 500)
        scale = scale or 1
        png, why_not = self.png(fig_dict, width, height, scale)
        summary = self.summary(fig_dict, width, height)
        if png is None:
            return {"text/plain": f"{summary}\n{why_not}"}
        return {"image/png": base64.b64encode(png).decode("ascii"), "text/plain": summary}

    def png(self, fig_dict, width, height, scale):
        """The PNG bytes and None, or None and one line saying why there is no image."""
        if not self.browser:
            return None, (
                "[no image: no Chromium or Chrome was found for kaleido; install one (Debian: "
                "`apt-get install chromium-headless-shell`) or start the server with `--chromium PATH`]"
            )
        if self.failure is not None:
            return None, self.failure
        if self.kaleido is None:
            try:
                self.kaleido = self.start()
            except Exception as error:
                # The browser does not start here: say so for every figure of this kernel.
                self.failure = f"[no image: `{self.browser}` did not start for kaleido: {self.first_line(error)}]"
                return None, self.failure
        import asyncio

        loop, kaleido = self.kaleido
        opts = {"format": "png", "width": width, "height": height, "scale": scale}
        render = asyncio.run_coroutine_threadsafe(kaleido.calc_fig(fig_dict, opts=opts), loop)
        try:
            return render.result(self.RENDER_TIMEOUT), None
        except Exception as error:
            # This figure failed (or the browser is stuck): the next one gets a new browser.
            render.cancel()
            asyncio.run_coroutine_threadsafe(kaleido.close(), loop)
            self.kaleido = None
            return None, f"[no image: kaleido failed on this figure: {self.first_line(error)}]"

    @staticmethod
    def first_line(error):
        return (str(error).strip().splitlines() or [type(error).__name__])[0][:200]

    def start(self):
        """A thread with an event loop holding one open Kaleido (one browser)."""
        import asyncio
        import threading

        import kaleido

        loop = asyncio.new_event_loop()
        threading.Thread(target=loop.run_forever, name="mcp-pyrepl-kaleido", daemon=True).start()

        async def open_kaleido():
            # mathjax False: no fetch from a CDN (kernels may have no network).
            opened = kaleido.Kaleido(n=1, path=self.browser, mathjax=False)
            await opened.open()
            return opened

        opening = asyncio.run_coroutine_threadsafe(open_kaleido(), loop)
        return loop, opening.result(self.START_TIMEOUT)

    @staticmethod
    def summary(fig_dict, width, height):
        """Title, traces (type, name, sizes), axes (title, range): a few short lines."""
        layout = fig_dict.get("layout") or {}

        def text_of(title):
            if isinstance(title, dict):
                title = title.get("text")
            return f" {str(title)[:80]!r}" if title else ""

        def decoded(values):
            """plotly's typed arrays (`{dtype, bdata, shape}`) as numpy arrays."""
            if not (isinstance(values, dict) and "bdata" in values):
                return values
            try:
                import base64

                import numpy

                array = numpy.frombuffer(base64.b64decode(values["bdata"]), dtype=values["dtype"])
                shape = values.get("shape")
                if shape:
                    array = array.reshape([int(n) for n in str(shape).split(",")])
                return array
            except Exception:
                return None

        def size_of(values):
            shape = getattr(values, "shape", None)
            if isinstance(shape, tuple):
                return "×".join(map(str, shape))
            if isinstance(values, (list, tuple)):
                inner = values[0] if values else None
                if isinstance(inner, (list, tuple)):
                    return f"{len(values)}×{len(inner)}"
                return str(len(values))
            return None

        def bounds(arrays):
            try:
                if any(getattr(values, "ndim", 1) != 1 for values in arrays):
                    return None
                flat = [v for values in arrays for v in values if v is not None]
                if not flat:
                    return None
                low, high = min(flat), max(flat)
                show = lambda v: f"{v:.6g}" if isinstance(v, float) else str(v)[:30]
                return f"{show(low)} to {show(high)}"
            except Exception:
                return None

        lines = [f"plotly figure{text_of(layout.get('title'))}, {width}×{height} px"]
        traces = fig_dict.get("data") or []
        data_by_axis = {}
        for number, trace in enumerate(traces[:20], 1):
            sizes = [
                f"{key}[{size}]"
                for key in ("x", "y", "z", "values", "labels", "lat", "lon", "r", "theta")
                if key in trace and (size := size_of(decoded(trace[key]))) is not None
            ]
            name = f" {str(trace['name'])[:40]!r}" if trace.get("name") else ""
            lines.append(f"  trace {number}: {trace.get('type', 'scatter')}{name} {' '.join(sizes)}".rstrip())
            for letter in ("x", "y"):
                if letter in trace:
                    axis = f"{letter}axis{str(trace.get(letter + 'axis', letter))[1:]}"
                    data_by_axis.setdefault(axis, []).append(decoded(trace[letter]))
        if len(traces) > 20:
            lines.append(f"  … {len(traces) - 20} more traces")
        axes = sorted(set(data_by_axis) | {key for key in layout if key[1:5] == "axis"})
        for axis in axes:
            spec = layout.get(axis) or {}
            if "range" in spec and spec["range"]:
                span = " to ".join(str(v) for v in spec["range"])
            else:
                span = bounds([values for values in data_by_axis.get(axis, []) if values is not None])
            title = text_of(spec.get("title"))
            if title or span:
                lines.append(f"  {axis}{title}{': ' + span if span else ''}")
        return "\n".join(lines)


def _mcp_pyrepl_install():
    import sys

    shell = get_ipython()  # noqa: F821 (defined in the kernel)
    names = _McpPyreplNames(shell)
    shell.events.register("pre_run_cell", names.note)
    shell.user_ns["_mcp_pyrepl_names"] = names
    sys.meta_path.insert(0, _McpPyreplPlotly())
    # Listed like In and Out: not the user's variables.
    shell.user_ns_hidden["display_figure"] = display_figure


_mcp_pyrepl_install()

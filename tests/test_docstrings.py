"""Every public class and function has a docstring in Keras's manner that names each of its
parameters and shows an example (a ``>>>`` line): what ``nnx`` exports (``nnx.__all__``), every public method of ``Sequential``, and the
public classes, methods and functions of the core modules. Introspection, no backend involved.

A method that overrides a documented one without a docstring of its own inherits the base's
(``inspect.getdoc``), which must then name the override's parameters too.
"""
from __future__ import annotations

import inspect
import re
import types

import pytest

import nnx

# the modules whose public classes and functions are checked, besides nnx.__all__
MODULES = ["nnx.backend", "nnx.models", "nnx.saving", "nnx.layers.base", "nnx.layers.core", "nnx.losses",
           "nnx.optimizers", "nnx.metrics", "nnx.initializers", "nnx.regularizers", "nnx.random"]


def _params(fn) -> list[str]:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return []
    skip = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return [p.name for p in sig.parameters.values() if p.name not in ("self", "cls") and p.kind not in skip]


def _missing(doc: str | None, names: list[str]) -> list[str]:
    if not doc:
        return ["(no docstring)"]
    return [n for n in names if not re.search(rf"(?<![\w.]){re.escape(n)}(?!\w)", doc)]


def _ours(obj) -> bool:
    return getattr(obj, "__module__", "").startswith("nnx")


def _no_example(doc: str | None) -> bool:
    return ">>>" not in (doc or "")


def _class_problems(cls, qual: str) -> list[str]:
    problems = []
    if _no_example(inspect.getdoc(cls)):
        problems.append(f"{qual}: no example (>>>) in the class docstring")
    init = cls.__dict__.get("__init__") or next((c.__dict__["__init__"] for c in cls.__mro__ if "__init__" in c.__dict__
                                                 and _ours(c)), None)
    doc = (inspect.getdoc(cls) or "") + "\n" + ((inspect.getdoc(init) or "") if init is not None else "")
    if not inspect.getdoc(cls):
        problems.append(f"{qual}: no class docstring")
    if init is not None:
        missing = _missing(doc, _params(init))
        if missing:
            problems.append(f"{qual}(...): the docstring does not name {missing}")
    for name, member in inspect.getmembers(cls):
        if name.startswith("_"):
            continue
        raw = inspect.getattr_static(cls, name)
        if isinstance(raw, property):
            if _ours(raw.fget) and not inspect.getdoc(raw):
                problems.append(f"{qual}.{name}: a property without a docstring")
            continue
        if isinstance(raw, (staticmethod, classmethod)):
            raw = raw.__func__
        if not isinstance(raw, types.FunctionType) or not _ours(raw):
            continue
        missing = _missing(inspect.getdoc(member), _params(raw))
        if missing:
            problems.append(f"{qual}.{name}: the docstring does not name {missing}")
        elif _no_example(inspect.getdoc(member)):
            problems.append(f"{qual}.{name}: no example (>>>) in the docstring")
    return problems


def _function_problems(fn, qual: str) -> list[str]:
    missing = _missing(inspect.getdoc(fn), _params(fn))
    if missing:
        return [f"{qual}: the docstring does not name {missing}"]
    return [f"{qual}: no example (>>>) in the docstring"] if _no_example(inspect.getdoc(fn)) else []


def _exported():
    for name in nnx.__all__:
        if name in ("wrappers", "__version__"):
            continue
        obj = getattr(nnx, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            yield f"nnx.{name}", obj


def _module_members():
    import importlib

    for module_name in MODULES:
        module = importlib.import_module(module_name)
        for name, obj in vars(module).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != module_name:
                continue
            if inspect.isclass(obj) or inspect.isfunction(obj):
                yield f"{module_name}.{name}", obj


def _problems(items) -> list[str]:
    out = []
    for qual, obj in items:
        out += _class_problems(obj, qual) if inspect.isclass(obj) else _function_problems(obj, qual)
    return out


def test_everything_nnx_exports_documents_each_parameter():
    problems = _problems(_exported())
    assert not problems, "\n".join(problems)


def test_every_public_method_of_sequential_documents_each_parameter():
    methods = [n for n, m in inspect.getmembers(nnx.Sequential) if not n.startswith("_") and callable(m)]
    for expected in ("add", "pop", "get_layer", "build", "compile", "fit", "evaluate", "predict", "predict_on_batch",
                     "train_on_batch", "test_on_batch", "get_weights", "set_weights", "count_params", "to_backend",
                     "get_config", "from_config", "to_json", "summary", "save", "save_weights", "load_weights"):
        assert expected in methods
    problems = _class_problems(nnx.Sequential, "Sequential")
    assert not problems, "\n".join(problems)


def test_the_core_modules_document_each_parameter():
    problems = _problems(_module_members())
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("qual, obj", list(_exported())[:3] + [("nnx.Sequential.fit", nnx.Sequential.fit)])
def test_the_check_can_fail(qual, obj):
    """The checker itself: a docstring that drops a parameter's name is reported."""
    def fake(*args, **kwargs):
        pass

    params = _params(obj.__init__ if inspect.isclass(obj) else obj)
    if not params:
        pytest.skip(f"{qual} takes no parameters")
    fake.__signature__ = inspect.signature(obj.__init__ if inspect.isclass(obj) else obj)
    fake.__doc__ = "Does something.\n\nArgs:\n    nothing: at all."
    fake.__module__ = "nnx.fake"
    assert _function_problems(fake, qual)

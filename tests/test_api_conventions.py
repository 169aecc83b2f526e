"""API conventions, checked over every public name (dm-pix ``api_test.py`` style).

- every public function and class has a docstring with a runnable example (``>>>``);
- random functions take ``key`` first;
- optional (hyper-)parameters are keyword-only: a parameter with a default value is never
  positional, except where the design card says so (listed below, with the reason).
"""

import importlib
import inspect

import pytest

import jdeconv

MODULES = [
    "jdeconv",
    "jdeconv.classic",
    "jdeconv.config",
    "jdeconv.files",
    "jdeconv.forward",
    "jdeconv.io",
    "jdeconv.lazy",
    "jdeconv.losses",
    "jdeconv.masks",
    "jdeconv.metrics",
    "jdeconv.model",
    "jdeconv.predict",
    "jdeconv.sampling",
    "jdeconv.psf",
    "jdeconv.selection",
    "jdeconv.simulate",
    "jdeconv.stages",
    "jdeconv.train",
    "jdeconv.unet",
    "jdeconv.zarr_io",
]

# Optional parameters that may be given positionally, and why.
POSITIONAL_DEFAULTS = {
    # The design card's call: jdeconv.fit(image, psf, cfg).
    ("fit", "cfg"),
    ("prepare", "cfg"),
    # init_unet(cfg, seed=) of jdeconv 0.1 still works (deprecated): cfg may come first.
    ("init_unet", "cfg"),
}
# A shape is data, positional as in jax.random.normal(key, shape) (the phantoms of
# jdeconv.simulate take one with a default).
POSITIONAL_ANYWHERE = {"shape"}

# Functions whose random key is not first, and why.
KEY_NOT_FIRST = {
    # The operator under test comes first, as scico's and deepinv's adjoint checks
    # (issue 11 asks for check_adjoint(g, key)).
    "check_adjoint",
}


def _public():
    seen = {}
    for name in MODULES:
        module = importlib.import_module(name)
        for attr in getattr(module, "__all__", []):
            obj = getattr(module, attr)
            if inspect.isfunction(obj) or inspect.isclass(obj):
                seen.setdefault(f"{obj.__module__}.{obj.__qualname__}", obj)
    return sorted(seen.items())


PUBLIC = _public()
FUNCTIONS = [(n, o) for n, o in PUBLIC if inspect.isfunction(o)]


def test_the_walk_finds_the_api():
    names = {n.rsplit(".", 1)[-1] for n, _ in PUBLIC}
    assert {
        "fit",
        "make_forward",
        "check_adjoint",
        "make_loss",
        "Config",
        "stratified_mask",
    } <= names
    assert len(PUBLIC) > 60


@pytest.mark.parametrize("name,obj", PUBLIC, ids=[n for n, _ in PUBLIC])
def test_docstring_with_example(name, obj):
    doc = inspect.getdoc(obj) or ""
    assert doc.strip(), f"{name} has no docstring"
    assert ">>>" in doc, f"{name}: the docstring needs an example (a '>>>' line)"


@pytest.mark.parametrize("name,fn", FUNCTIONS, ids=[n for n, _ in FUNCTIONS])
def test_key_first_and_optional_parameters_keyword_only(name, fn):
    params = list(inspect.signature(fn).parameters.values())
    names = [p.name for p in params]
    short = name.rsplit(".", 1)[-1]
    if "key" in names and short not in KEY_NOT_FIRST:
        assert names[0] == "key", f"{name}: the random key must be the first parameter"
    for p in params:
        if p.kind is p.POSITIONAL_OR_KEYWORD and p.default is not p.empty:
            assert (short, p.name) in POSITIONAL_DEFAULTS or p.name in POSITIONAL_ANYWHERE, (
                f"{name}: optional parameter {p.name!r} must be keyword-only (after *)"
            )


def test_top_level_names_are_documented_in_all():
    for attr in jdeconv.__all__:
        assert hasattr(jdeconv, attr), attr

from dataclasses import dataclass, field
from typing import Literal

import pytest

from longreach import params
from longreach.errors import LongreachError
from longreach.registry import Registry


def test_registry_get_unknown_suggests_close_name():
    registry: Registry[int] = Registry("widget")
    registry.add("snapkv", 1)
    registry.add("streaming", 2)
    assert registry.get("snapkv") == 1
    with pytest.raises(LongreachError, match=r"unknown widget 'snapk'.*did you mean 'snapkv'"):
        registry.get("snapk")


def test_registry_refuses_duplicates():
    registry: Registry[int] = Registry("widget")
    registry.add("a", 1)
    with pytest.raises(ValueError):
        registry.add("a", 2)


@dataclass(frozen=True)
class Knobs:
    factor: float = field(default=2.0, metadata={"help": "scale"})
    window: int = 64
    mode: Literal["fast", "exact"] = "fast"
    flag: bool = False
    factors: tuple[float, ...] = ()


def test_build_converts_each_type_and_bare_first_value():
    knobs = params.build(Knobs, "k", ["4", "window=128", "mode=exact", "flag=true", "factors=1/1.5/2"])
    assert knobs == Knobs(factor=4.0, window=128, mode="exact", flag=True, factors=(1.0, 1.5, 2.0))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["windw=3"], r"unknown parameter 'windw'; did you mean 'window'"),
        (["window=3.5"], r"window must be an integer; got '3.5'"),
        (["mode=slow"], r"mode must be one of fast, exact; got 'slow'"),
        (["flag=maybe"], r"flag must be true or false"),
        (["window=1", "window=2"], r"given twice"),
        (["factor=2", "7"], r"expected key=value"),
    ],
)
def test_build_rejects_bad_values_with_the_valid_options(args, message):
    with pytest.raises(LongreachError, match=message):
        params.build(Knobs, "k", args)


def test_canonical_lists_only_non_default_values_and_normalises_numbers():
    assert params.canonical("k", Knobs()) == "k"
    assert params.canonical("k", params.build(Knobs, "k", ["factor=4.0"])) == "k:factor=4"
    assert params.canonical("k", Knobs(window=8), defaults={"window": 8}) == "k"
    assert params.canonical("k", Knobs(factors=(1.0, 2.5))) == "k:factors=1/2.5"


def test_a_registry_discovers_the_modules_of_its_packages(tmp_path, monkeypatch):
    """One file registers itself: the registry imports its packages' modules on first use (not _private ones)."""
    package = tmp_path / "plugins_for_test"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "one.py").write_text("from longreach.registry import REGISTRY_UNDER_TEST as R\nR.add('one', 1)\n")
    (package / "_hidden.py").write_text("raise RuntimeError('a private module is never imported')\n")
    import longreach.registry as registry_module

    registry: Registry[int] = Registry("widget", packages=("plugins_for_test",))
    monkeypatch.setattr(registry_module, "REGISTRY_UNDER_TEST", registry, raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert registry.names() == ["one"] and "one" in registry
    with pytest.raises(LongreachError, match="unknown widget 'two'"):
        registry.get("two")

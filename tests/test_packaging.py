"""pyproject.toml and environment.yml describe the same environment."""
from __future__ import annotations

import importlib.util
import re
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PYPROJECT = REPO / "pyproject.toml"
ENVIRONMENT = REPO / "environment.yml"
# In environment.yml but not package requirements: the interpreter, pip itself, the project.
NOT_REQUIREMENTS = {"python", "pip", "-e ."}

REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*?)\s*(;.*)?$")


def _normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _parse(requirement: str) -> tuple[str, str]:
    """(normalized name, version specifier without spaces) of a PEP 508 / conda match spec."""
    match = REQUIREMENT.match(requirement)
    assert match, f"cannot parse requirement {requirement!r}"
    return _normalize(match.group(1)), re.sub(r"\s+", "", match.group(3))


def _pyproject() -> dict:
    return tomllib.loads(PYPROJECT.read_text())


def _environment_entries() -> list[str]:
    """Every dependency string of environment.yml, the pip: section included."""
    text = ENVIRONMENT.read_text()
    try:
        import yaml
    except ImportError:  # PyYAML is not a dependency; the file is simple enough to read by hand
        return _environment_entries_by_hand(text)
    entries = []
    for item in yaml.safe_load(text)["dependencies"]:
        if isinstance(item, dict):
            entries += [str(x) for x in item["pip"]]
        else:
            entries.append(str(item))
    return entries


def _environment_entries_by_hand(text: str) -> list[str]:
    entries, inside = [], False
    for line in text.splitlines():
        stripped = line.split("#", 1)[0].rstrip()
        if not stripped:
            continue
        if not line.startswith((" ", "-")):
            inside = stripped == "dependencies:"
            continue
        if inside and stripped.lstrip().startswith("- "):
            item = stripped.lstrip()[2:].strip()
            if item != "pip:":
                entries.append(item)
    return entries


def _bounds(entries: list[str]) -> dict[str, str]:
    out = {}
    for entry in entries:
        if entry in NOT_REQUIREMENTS:
            continue
        name, spec = _parse(entry)
        if name in NOT_REQUIREMENTS:
            continue
        assert name not in out, f"{name} listed twice"
        out[name] = spec
    return out


def test_hand_parser_agrees_with_yaml():
    pytest.importorskip("yaml")
    assert _environment_entries_by_hand(ENVIRONMENT.read_text()) == _environment_entries()


def test_environment_yml_matches_pyproject():
    project = _pyproject()["project"]
    pyproject = _bounds(project["dependencies"] + project["optional-dependencies"]["dev"])
    environment = _bounds(_environment_entries())
    assert "torch" in pyproject and "pytest" in pyproject  # runtime and dev requirements both read
    assert sorted(environment) == sorted(pyproject), "the two files list different packages"
    assert environment == pyproject, "the two files give different version bounds"
    for name, spec in pyproject.items():
        assert spec.startswith(">="), f"{name}: expected a lower bound, got {spec!r}"


def test_torch_is_not_pinned():
    project = _pyproject()["project"]
    entries = project["dependencies"] + project["optional-dependencies"]["dev"] + _environment_entries()
    for other in sorted(REPO.glob("requirements*.txt")):
        entries += [line for line in other.read_text().splitlines() if line.strip() and not line.startswith("#")]
    specs = [_parse(entry) for entry in entries if entry not in NOT_REQUIREMENTS]
    torch_specs = [spec for name, spec in specs if name in ("torch", "torchvision")]
    assert len(torch_specs) >= 4  # torch and torchvision, in both files
    for spec in torch_specs:
        assert "==" not in spec and "2.13.0" not in spec, spec
    for path in (PYPROJECT, ENVIRONMENT):
        assert not re.search(r"torch\s*==\s*2\.13\.0", path.read_text()), path


def test_console_script():
    assert _pyproject()["project"]["scripts"]["lth"] == "lth_tutorial.cli:main"


def test_console_script_target_exists():
    if importlib.util.find_spec("lth_tutorial.cli") is None:
        pytest.skip("lth_tutorial.cli is not written yet")
    from lth_tutorial import cli

    assert callable(cli.main)


def _floor(spec: str) -> tuple[int, ...]:
    match = re.fullmatch(r">=(\d+(?:\.\d+)*)", spec)
    assert match, f"expected a plain lower bound like >=2.4, got {spec!r}"
    return tuple(int(part) for part in match.group(1).split("."))


def test_floors_cover_what_the_code_uses():
    project = _pyproject()["project"]
    for bounds in (_bounds(project["dependencies"]), _bounds(_environment_entries())):
        # training builds Adam/SGD with fused=True, which torch < 2.4 has only on CUDA
        assert _floor(bounds["torch"]) >= (2, 4)
        assert _floor(bounds["torchvision"]) >= (0, 19)   # the release built against torch 2.4
        assert _floor(bounds["filelock"]) >= (3, 12)      # the run store's per-run locks

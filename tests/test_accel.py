"""The compiled core and its guards (``aionetstack._accel``): ``AIONETSTACK_PURE=1`` runs the
pure sources, a source newer than its extension is never run compiled, and a build without
extensions is pure Python."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import aionetstack
from aionetstack import _accel

PROBE = ("import json, aionetstack, aionetstack.transport.tcp.input as m; "
         "print(json.dumps([aionetstack.compiled, m.__file__]))")
HAS_EXTENSIONS = any(_accel._extension(n) is not None for n in _accel.COMPILED)


def _probe(env: dict[str, str], path: Path | None = None) -> tuple[bool, str, str]:
    full = {**os.environ, **env}
    if path is not None:
        full["PYTHONPATH"] = str(path)
    proc = subprocess.run([sys.executable, "-W", "always", "-c", PROBE], env=full,
                          capture_output=True, text=True, check=True, cwd="/")
    compiled, file = json.loads(proc.stdout)
    return compiled, file, proc.stderr


def test_the_module_list_names_real_modules_with_sources() -> None:
    assert len(_accel.COMPILED) == len(set(_accel.COMPILED)) > 20
    for name in _accel.COMPILED:
        assert _accel.source_path(name).is_file(), name
    # the endpoint class itself is compiled: an interpreted subclass would make every method
    # call on an endpoint, its own included, a Python-level lookup (mypyc's glue)
    assert "aionetstack.transport.tcp.endpoint" in _accel.COMPILED


@pytest.mark.skipif(not HAS_EXTENSIONS, reason="a pure-Python install: no compiled core")
def test_the_compiled_core_is_used_unless_told_otherwise() -> None:
    compiled, file, _ = _probe({"AIONETSTACK_PURE": ""})
    assert compiled is True and file.endswith(".so")
    compiled, file, err = _probe({"AIONETSTACK_PURE": "1"})
    assert compiled is False and file.endswith("input.py")
    assert "older than its sources" not in err  # asked for: no warning


@pytest.mark.skipif(not HAS_EXTENSIONS, reason="a pure-Python install: no compiled core")
def test_a_source_edited_after_the_build_falls_back_to_pure_python(tmp_path: Path) -> None:
    copy = tmp_path / "aionetstack"
    shutil.copytree(Path(aionetstack.__file__).parent, copy,
                    ignore=shutil.ignore_patterns("__pycache__"))
    edited = copy / "transport" / "tcp" / "rtt.py"
    ext = next(p for p in edited.parent.iterdir() if p.name.startswith("rtt.") and
               p.suffix == ".so")
    os.utime(edited, (ext.stat().st_mtime + 10, ext.stat().st_mtime + 10))
    compiled, file, err = _probe({"AIONETSTACK_PURE": ""}, tmp_path)
    assert compiled is False
    assert file == str(copy / "transport" / "tcp" / "input.py")  # all of it, not rtt alone
    assert "older than its sources" in err and "rtt" in err


def test_a_tree_without_extensions_is_pure_python(tmp_path: Path) -> None:
    copy = tmp_path / "aionetstack"
    shutil.copytree(Path(aionetstack.__file__).parent, copy,
                    ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    compiled, file, err = _probe({"AIONETSTACK_PURE": ""}, tmp_path)
    assert compiled is False and file == str(copy / "transport" / "tcp" / "input.py")
    assert "older than its sources" not in err


def test_the_compiled_set_type_checks_without_site_packages(tmp_path: Path) -> None:
    """What the build checks (``setup.py``): on a fresh machine mypyc runs before numpy or any
    other dependency is installed, so the compiled modules must import nothing from
    site-packages for their types (an optional one is loaded by name at run time)."""
    from mypy import api

    root = _accel._ROOT.parent
    assert "--no-site-packages" in _accel.BUILD_OPTIONS
    out, err, status = api.run([
        *_accel.BUILD_OPTIONS, "--config-file", str(root / "pyproject.toml"),
        "--cache-dir", str(tmp_path), *(str(_accel.source_path(n)) for n in _accel.COMPILED)])
    assert status == 0, out + err

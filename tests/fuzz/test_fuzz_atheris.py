"""The atheris ingress harness (``fuzz/atheris_ingress.py``) in CI.

Always: ``TestOneInput`` over the checked-in seed corpus plus ``FUZZ_MUTATIONS`` (default 20000)
seeded random mutations of it -- bit flips, truncations, splices, random tails and insertions of
interesting values -- with no atheris needed.  When atheris is installed (the ``fuzz`` extra) it
also runs the real coverage-guided fuzzer for ``ATHERIS_SECONDS`` (default 10) in a subprocess.
"""

from __future__ import annotations

import importlib.util
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import aionetstack.stack.stack  # noqa: F401 - imported before the harness: no instrumentation

ROOT = Path(__file__).resolve().parents[2]
HARNESS = ROOT / "fuzz" / "atheris_ingress.py"
CORPUS = Path(__file__).resolve().parent / "corpus"
MUTATIONS = int(os.environ.get("FUZZ_MUTATIONS", "20000"))
ATHERIS_SECONDS = int(os.environ.get("ATHERIS_SECONDS", "10"))
INTERESTING = [b"\x00", b"\xff", b"\x7f", b"\x80", b"\x00\x00", b"\xff\xff", b"\x05\xdc",
               b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\x45", b"\x60", b"\x06", b"\x11",
               b"\x3a", b"\x2c", b"\x3c", b"\x02"]


def _load():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("atheris_ingress", HARNESS)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def mutate(rng: random.Random, corpus: list[bytes]) -> bytes:
    data = bytearray(rng.choice(corpus))
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        if op == 0 and data:
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
        elif op == 1 and data:
            del data[rng.randrange(len(data)):]
        elif op == 2:
            other = rng.choice(corpus)
            cut = rng.randrange(len(other) + 1)
            data = data[:rng.randrange(len(data) + 1)] + other[cut:]
        elif op == 3:
            data += rng.randbytes(rng.randrange(1, 40))
        elif op == 4 and data:
            v = rng.choice(INTERESTING)
            i = rng.randrange(len(data))
            data[i:i + len(v)] = v
        elif op == 5 and data:
            i = rng.randrange(len(data))
            data[i] = rng.randrange(256)
    return bytes(data)


def test_corpus_is_checked_in_and_valid() -> None:
    mod = _load()
    files = sorted(CORPUS.iterdir())
    assert len(files) >= 30
    assert {f.name for f in files} == set(mod.corpus_frames())


def test_harness_over_corpus_and_mutations() -> None:
    mod = _load()
    corpus = [f.read_bytes() for f in sorted(CORPUS.iterdir())]
    for frame in corpus:
        mod.TestOneInput(frame)
    h = mod._HARNESS[0]
    st = h.stack.stats()
    assert st["udp"]["delivered"] >= 5 and st["tcp"]["received"] >= 10
    assert st["fragment"]["reassembled"] >= 2
    rng = random.Random(20261122)
    for _ in range(MUTATIONS):
        mod.TestOneInput(mutate(rng, corpus))
    print(f"\natheris harness: {len(corpus)} corpus frames + {MUTATIONS} mutations fed "
          f"(stack rebuilt every {mod.RESET_EVERY} inputs), 0 exceptions")


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None,
                    reason="atheris is not installed (pip install -e '.[fuzz]')")
def test_atheris_briefly(tmp_path: Path) -> None:
    work = tmp_path / "corpus"
    shutil.copytree(CORPUS, work)
    proc = subprocess.run(
        [sys.executable, str(HARNESS), str(work), f"-max_total_time={ATHERIS_SECONDS}",
         "-rss_limit_mb=4096", "-print_final_stats=1"],
        capture_output=True, text=True, timeout=ATHERIS_SECONDS + 120, cwd=ROOT)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    runs = [line for line in out.splitlines() if line.startswith("Done ")]
    assert runs, out[-2000:]
    print(f"\n{runs[-1]}")

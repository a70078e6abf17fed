"""What every hostile-input test checks: exit status 2, one `error:` line on stderr and no traceback,
the user's files untouched, and, for inputs about size, memory and time bounded.

`run_capped` runs command lines in a child process under a memory limit (RLIMIT_AS, set once the
child has imported everything), so an unbounded allocation fails the test instead of the machine,
and under a timeout, so a loop that never ends fails it too. With `file_size`, the child may write
no file larger than that (RLIMIT_FSIZE): every larger write fails in the operating system, as on a
full disk.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

# Memory a command may allocate beyond what importing torch, timm and the CLI maps.
CAPPED_ALLOWANCE = 2 << 30

_CHILD = textwrap.dedent("""
    import json, os, resource, signal, sys
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch
    torch.set_num_threads(1)
    from typer.testing import CliRunner
    from equimod_zoo.cli import app
    import equimod_zoo.training.trainer, equimod_zoo.hub.publish, equimod_zoo.hub.convert  # noqa: F401
    import equimod_zoo.extraction.extract, equimod_zoo.sensitivity.run, datasets  # noqa: F401
    size = int(next(l for l in open("/proc/self/status") if l.startswith("VmSize")).split()[1]) * 1024
    limit = size + int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    if sys.argv[3] != "None":
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[3]), resource.RLIM_INFINITY))
    results = []
    for argv in json.loads(sys.argv[2]):
        result = CliRunner().invoke(app, argv)
        results.append({"exit_code": result.exit_code, "stdout": result.stdout, "stderr": result.stderr,
                        "exception": repr(result.exception) if result.exit_code not in (0, 2) else None})
    print(json.dumps(results))
""")


def run_capped(argvs: list[list[str]], *, cwd: Path, timeout: float = 120, allowance: int = CAPPED_ALLOWANCE,
               file_size: int | None = None) -> list[dict[str, Any]]:
    """Each command line's exit code, stdout and stderr, run in one child under a memory limit and a timeout."""
    if not sys.platform.startswith("linux"):
        pytest.skip("the memory limit needs Linux (RLIMIT_AS, /proc)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "EQUIMOD_ZOO_CACHE": str(cwd / ".cache"),
           "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}  # the datasets library's bars are not ours to count
    try:
        done = subprocess.run([sys.executable, "-c", _CHILD, str(allowance), json.dumps(argvs), str(file_size)], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"did not finish within {timeout} s: {argvs}")
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def one_line_error(result: Any, *needles: str) -> str:
    """Assert exit status 2, no traceback, and one `error:` line, the last on stderr, naming each of `needles`.

    Only a library's progress bar (the datasets library draws one while it prepares a parquet file) may
    come before it; returns the line.
    """
    exit_code = result["exit_code"] if isinstance(result, dict) else result.exit_code
    stderr = result["stderr"] if isinstance(result, dict) else result.stderr
    assert exit_code == 2, (exit_code, stderr, result.get("exception") if isinstance(result, dict) else result)
    lines = stderr.strip().splitlines()
    assert "Traceback" not in stderr and lines and lines[-1].startswith("error:"), stderr
    assert all("examples/s" in line for line in lines[:-1]), stderr
    text = lines[-1]
    for needle in needles:
        assert needle in text, (needle, text)
    return text


def snapshot(*folders: Path) -> dict[str, str]:
    """The sha256 of every file below `folders` (and what links point to): compare before and after."""
    found = {}
    for folder in folders:
        for path in sorted(Path(folder).rglob("*")):
            if path.is_symlink():
                found[str(path)] = "-> " + os.readlink(path)
            elif path.is_file():
                found[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                found[str(path)] = "folder"
    return found

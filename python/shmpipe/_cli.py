"""Making a dataset from Python: `shmpipe.load` runs the `shmpipe load` program that makes it.

The program is the one installed with this package when it came as the wheel (its scripts
folder), else the one named by the SHMPIPE_BIN environment variable, else `shmpipe` on PATH.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import warnings
from typing import Optional, Union

from ._block import Block, BlockError, attach

PathLike = Union[str, "os.PathLike[str]"]


def program() -> str:
    """The path of the `shmpipe` program this package runs; BlockError when there is none."""
    chosen = os.environ.get("SHMPIPE_BIN")
    if chosen:
        return chosen
    # The wheel puts the program in the scripts folder of the environment it is installed in
    # (a venv's bin/, or the user scheme's ~/.local/bin/).
    schemes = [sysconfig.get_default_scheme()]
    user = f"{os.name}_user"
    if user in sysconfig.get_scheme_names():
        schemes.append(user)
    exe = "shmpipe.exe" if sys.platform == "win32" else "shmpipe"
    for scheme in schemes:
        candidate = os.path.join(sysconfig.get_path("scripts", scheme), exe)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("shmpipe")
    if found:
        return found
    raise BlockError(
        "the shmpipe program is not installed: install the shmpipe wheel (pip install shmpipe-*.whl), "
        "`cargo install --path .` in the repository, or set SHMPIPE_BIN to its path")


def load(folder: PathLike, name: str, *, resize: Optional[str] = None,
         fit: Optional[str] = None, labels: Optional[str] = None,
         channels: Optional[int] = None, workers: Optional[int] = None,
         backing: Optional[PathLike] = None) -> Block:
    """Decodes `folder` into the dataset `name` (`shmpipe load FOLDER --name NAME`, with the
    options given: `resize="224x224"`, `fit="cover"`, `labels="folder"`, `channels=3`,
    `workers=8`, `backing=DIR`) and returns it attached, read-only.

    A file that cannot be decoded does not stop the others: when some fail, a warning names them
    and the handle covers the images that loaded (`partial=True`; `.failed` says why each other
    one is missing). When nothing could be made (a bad option, a folder without images, too
    little shared memory) BlockError carries the program's message. The dataset stays in shared
    memory until `shmpipe rm NAME`.
    """
    command = [program(), "load", os.fspath(folder), "--name", name, "--json", "--quiet"]
    for flag, value in (("--resize", resize), ("--fit", fit), ("--labels", labels),
                        ("--channels", channels), ("--workers", workers),
                        ("--backing", backing)):
        if value is not None:
            command += [flag, os.fspath(value) if flag == "--backing" else str(value)]
    done = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    summary = None
    try:
        summary = json.loads(done.stdout) if done.stdout.strip() else None
    except ValueError:
        pass
    made = summary is not None and done.returncode in (0, 1) and summary.get("images_ok", 0) > 0
    if not made:
        said = done.stderr.strip() or done.stdout.strip() or f"exit {done.returncode}"
        raise BlockError(f"shmpipe load {os.fspath(folder)} --name {name} failed: {said}")
    failures = summary.get("failures") or []
    if failures:
        listed = "; ".join(f"{f.get('path')}: {f.get('reason')}" for f in failures[:5])
        more = f" and {len(failures) - 5} more" if len(failures) > 5 else ""
        warnings.warn(f"dataset {name}: {len(failures)} images did not load: {listed}{more}",
                      stacklevel=2)
    return attach(name, partial=bool(failures),
                  backing=None if backing is None else os.fspath(backing))

"""Build quorum_proxy/_relay_scan.c into an extension module next to it.

Usage: python build_relay_scan.py [--cc CC] [--target]

One C file and the running interpreter's headers: no setuptools, the same command in `./dev`
and in the image's build stage. Exits 1 with the compiler's message when it fails; the proxy
runs without the module (the Python path alone), so a build that fails is said, never hidden.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import sysconfig
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "quorum_proxy" / "_relay_scan.c"


def target() -> Path:
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    return SOURCE.with_name("_relay_scan" + suffix)


def command(cc: str) -> list[str]:
    include = sysconfig.get_paths()["include"]
    return [
        *shlex.split(cc),
        "-shared",
        "-fPIC",
        "-O2",
        "-Wall",
        "-Werror",
        "-fvisibility=hidden",
        f"-I{include}",
        str(SOURCE),
        "-o",
        str(target()),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cc", default=os.environ.get("CC", "cc"))
    parser.add_argument(
        "--target", action="store_true", help="print the module's path for this interpreter"
    )
    args = parser.parse_args()
    if args.target:
        print(target())
        return 0
    argv = command(args.cc)
    try:
        built = subprocess.run(argv, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        print(f"build_relay_scan: no C compiler {args.cc!r} (install gcc)", file=sys.stderr)
        return 1
    if built.returncode != 0:
        print(f"build_relay_scan: {shlex.join(argv)} failed:", file=sys.stderr)
        print(built.stderr, file=sys.stderr)
        return 1
    print(f"build_relay_scan: built {target().relative_to(HERE)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

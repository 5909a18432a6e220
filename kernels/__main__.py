"""``python -m onnxpress.kernels build|info|selftest``: build the kernel library now (set-up, CI), say where it
stands, or check every op against its numpy reference in this process's instruction set.

``build`` exits 1 when the library cannot be built; with ``--optional`` it warns and exits 0 instead (a
user's machine without a compiler still gets everything else). CI runs it without ``--optional``.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m onnxpress.kernels")
    parser.add_argument("command", choices=("build", "info", "selftest"))
    parser.add_argument("--optional", action="store_true", help="build: warn instead of failing when it cannot build")
    parser.add_argument("--force", action="store_true", help="build: rebuild even when a cached library exists")
    args = parser.parse_args(argv)
    from onnxpress.kernels import build

    if args.command == "build":
        try:
            path = build.build(force=args.force)
        except build.KernelBuildError as err:
            print(f"{'warning' if args.optional else 'error'}: onnxpress kernels not built: {err}", file=sys.stderr)
            return 0 if args.optional else 1
        print(path)
        return 0
    import onnxpress.kernels as kernels

    if args.command == "selftest":
        from onnxpress.kernels import selftest

        failures = selftest.run()
        print(f"{kernels.isa()}: {len(failures)} failure(s)")
        print("\n".join(failures))
        return 1 if failures else 0
    status = kernels.available()
    print(f"available: {status.ok}\n{status.reason}")
    if status.ok:
        print(f"instruction set: {kernels.isa()} (CPU offers {kernels.cpu_isa()})")
    return 0 if status.ok else 1


if __name__ == "__main__":
    sys.exit(main())

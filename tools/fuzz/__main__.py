"""``python -m onnxpress.tools.fuzz models|samples|replay``: see the package docstring."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from onnxpress.tools import fuzz


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="fuzz onnxpress with mutated models and sample files")
    parser.add_argument("what", choices=["models", "samples", "replay"])
    parser.add_argument("file", nargs="?", help="replay: the saved case")
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=20.0)
    parser.add_argument("--real", action="store_true", help="models: seed from the real models too")
    parser.add_argument("--out", type=Path, default=Path("bench-out/fuzz"))
    args = parser.parse_args(argv)
    if args.what == "replay":
        print(json.dumps(fuzz.replay(Path(args.file)), indent=2, default=str))
        return 0
    if args.what == "models":
        seeds = fuzz.corpus_models() + (fuzz.real_models() if args.real else [])
        report = fuzz.fuzz_models(args.count, args.seed, seeds, args.timeout, args.out)
    else:
        report = fuzz.fuzz_samples(args.count, args.seed, timeout=args.timeout, out=args.out)
    print(json.dumps(report.to_dict(), indent=2, default=str))
    return 1 if report.bad else 0


if __name__ == "__main__":
    sys.exit(main())

"""The ``onnxpress`` command line: a thin layer over the Python API.

Exit codes: 0 success, 2 bad input (model, pipeline, options, data), 1 internal failure. One clear line
(plus a hint) per error; the traceback only with ``--debug``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

from onnxpress.irpasses.core.numerics import DEFAULT_ATOL, DEFAULT_RTOL
from onnxpress.irpasses.quant.cpu_target import CPU_CHOICES

DEMO_MODEL = Path(__file__).parent / "models" / "ch_PP-OCRv4_det_infer.onnx"


def _samples_arg(path: str | None) -> Any:
    from onnxpress.frontends.sample_data import NpzSamples

    return NpzSamples(path) if path else None


# ----- commands ------------------------------------------------------------------------------------
def cmd_opt(args: argparse.Namespace) -> int:
    import onnxpress
    from onnxpress.frontends.onnx_file import check_output_path
    from onnxpress.irpasses.core import (
        DumpIR,
        Reproducer,
        build_passes,
        default_registry,
    )
    from onnxpress.irpasses.core.manager import format_bytes
    from onnxpress.irpasses.core.pipeline_text import pipeline_to_text
    from onnxpress.tools.model_summary import summarize

    if args.bisect and args.no_verify:
        raise SystemExit("error: --bisect needs the numeric check; drop --no-verify")
    registry = default_registry()
    passes = build_passes(args.pipeline, registry)  # bad pipelines fail before the model is read
    if args.target and any(op in args.target for op in (">=", "<=")):  # --target "cosine>=0.995" is a fidelity target
        args.fidelity, args.target = args.target, None
    if args.fidelity:
        _set_fidelity(passes, args.fidelity)
    options = {"inputs": args.input_specs} if getattr(args, "input_specs", None) else {}
    if getattr(args, "trust_source", False):
        options["trust_source"] = True
    model = onnxpress.load(args.input, target_opset=args.target_opset, allow_invalid=getattr(args, "allow_invalid", False), **options)
    check_output_path(model, args.output)
    from onnxpress.frontends.loader import import_record

    imported = import_record(model)  # another framework's model: its import is the run's first step
    wants_summary = bool(args.report) or not args.quiet
    before = summarize(model) if wants_summary else {}
    check_data = args.inputs or args.calib
    instruments: list[Any] = []
    if args.dump_ir:
        instruments.append(DumpIR(args.dump_ir))
    if args.reproducer_dir:
        instruments.append(Reproducer(args.reproducer_dir, pipeline_to_text(passes), source=args.input))
    verify = "off" if args.no_verify else ("each" if args.verify_each else "end")
    try:
        out, report = onnxpress.optimize(
            model,
            passes,
            samples=_samples_arg(check_data),
            target=args.target,
            cpu=getattr(args, "cpu", "portable"),
            verify=verify,
            rtol=args.rtol,
            atol=args.atol,
            instruments=instruments,
            registry=registry,
            explain=args.explain,
            min_cosine=args.min_cosine,
            sensitivity_table=getattr(args, "sensitivity_table", False),
            in_place=True,  # loaded above for this run only: no copy of a 1 GB graph
        )
    except onnxpress.OnnxpressError as err:
        if args.bisect and type(err).__name__ in ("NumericMismatchError", "VerificationError"):
            _report_bisect(args, passes)
        raise
    max_ir = args.max_ir_version
    if max_ir is None and args.target == "ort":
        from onnxpress.backends.ort.runner import max_ir_version

        max_ir = max_ir_version()
    onnxpress.save(out, args.output, max_ir_version=max_ir)
    after = summarize(out) if wants_summary else {}
    if args.report:
        payload = {"input": args.input, "output": args.output, "before": before, "after": after, "report": report.to_dict()}
        if imported:
            payload["import"] = imported
        _write_report(args.report, payload)
    if not args.quiet:
        if imported:
            print(f"import: {imported.get('source.frontend')} via {imported.get('source.converter', '?')} "
                  f"{imported.get('source.converter_version', '')} in {imported.get('import.seconds')} s; "
                  f"check: {imported.get('import.check')}")
        print(report.table(compact=not args.all_passes))
        if args.explain:
            print(report.explain_text())
        print(
            f"{args.input}: {before['nodes']} nodes, {format_bytes(before['weight_bytes'])} -> "
            f"{args.output}: {after['nodes']} nodes, {format_bytes(after['weight_bytes'])}"
        )
    return 0


def _write_report(path: str, payload: dict[str, Any]) -> None:
    """JSON, or with an .html/.htm name the self-contained HTML page (the JSON is inside it)."""
    from onnxpress.backends.base import write_atomic

    if Path(path).suffix.lower() in (".html", ".htm"):
        from onnxpress.tools.report_html.page import payload_page

        write_atomic(path, payload_page(payload))
    else:
        write_atomic(path, json.dumps(payload, indent=2, default=float))


def _set_fidelity(passes: list[Any], target: str) -> None:
    """Give every pass that searches for a fidelity target (qdq, dynamic-quant) this one."""
    from onnxpress.irpasses.core import PipelineError
    from onnxpress.irpasses.quant.sensitivity import parse_fidelity

    parse_fidelity(target)  # a bad target fails before any work
    taken = [p for p in passes if hasattr(p, "fidelity")]
    if not taken:
        raise PipelineError(
            f"--fidelity {target!r}: no pass in the pipeline takes a fidelity target",
            hint="use a quantization pipeline: -p auto, -p int8, -p int8-dynamic (or qdq / dynamic-quant)",
        )
    for p in taken:
        p.fidelity = target


def _report_bisect(args: argparse.Namespace, passes: list[Any]) -> None:
    """Binary-search the optional passes for the first one whose inclusion breaks the check."""
    import onnxpress
    from onnxpress.irpasses.core import OnnxpressError, bisect

    optional = [p for p in passes if not getattr(p, "required", True)]

    def ok(limit: int | None) -> bool:
        try:
            onnxpress.optimize(
                onnxpress.load(args.input, target_opset=args.target_opset), passes, samples=_samples_arg(args.inputs or args.calib),
                verify="end", rtol=args.rtol, atol=args.atol, bisect_limit=limit,
            )
        except OnnxpressError:
            return False
        return True

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        k = bisect(ok, len(optional))
    if k is None:
        print("bisect: the full pipeline passed on re-run (flaky?)", file=sys.stderr)
    elif k == 0:
        print("bisect: fails even with every optional pass skipped: a required pass is at fault", file=sys.stderr)
    else:
        print(f"bisect: the first bad pass is '{optional[k - 1].spec()}' (optional pass {k} of {len(optional)})", file=sys.stderr)


def cmd_passes(args: argparse.Namespace) -> int:
    from onnxpress.irpasses.core import default_registry

    registry = default_registry()
    rows = []
    for name in registry.names("passes"):
        cls = registry.get_pass(name)
        rows.append({
            "name": name, "kind": "pass", "origin": registry.origin("passes", name), "summary": cls.summary(),
            "options": [o for o in cls.option_specs() if o["name"] != "func"],
            "needs": sorted(map(str, cls.needs)), "provides": sorted(map(str, cls.provides)), "required": cls.required,
        })
    for name in registry.names("pipelines"):
        rows.append({"name": name, "kind": "pipeline", "origin": registry.origin("pipelines", name), "summary": registry.pipeline_text(name)})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for row in rows:
        if row["kind"] == "pipeline":
            print(f"{row['name']:<22} pipeline: {row['summary']}  [{row['origin']}]")
            continue
        opts = ", ".join(f"{o['name']}: {o['type']} = {o['default']}" for o in row["options"])
        print(f"{row['name']:<22} {row['summary']}  [{row['origin']}]" + (f"\n{'':<22} options: {opts}" if opts else ""))
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    import onnxpress
    from onnxpress.tools.model_summary import format_summary, summarize

    summary = summarize(onnxpress.load(args.input))
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


def _import_samples(path: str) -> Any:
    """DATA for the import check as one batch: samples concatenated along axis 0 ({name: array}, or the array
    when DATA holds one input: scikit-learn takes [rows, features])."""
    import numpy as np
    from onnxpress.frontends.sample_data import NpzSamples

    samples = list(NpzSamples(path))
    if not samples:
        from onnxpress.irpasses.core.errors import DataError

        raise DataError(f"'{path}' holds no samples")
    batch = {name: np.concatenate([np.asarray(s[name]) for s in samples]) for name in samples[0]}
    return next(iter(batch.values())) if len(batch) == 1 else batch


def cmd_import(args: argparse.Namespace) -> int:
    """Lower another framework's model to ONNX through its converter; the import check is part of the report."""
    import onnxpress
    from onnxpress.backends.ort.runner import max_ir_version
    from onnxpress.frontends.onnx_file import check_output_path

    options: dict[str, Any] = {"inputs": args.input_specs} if args.input_specs else {}
    if args.inputs:
        options["sample"] = _import_samples(args.inputs)
    model = onnxpress.load(args.input, target_opset=args.opset, trust_source=args.trust_source, **options)
    check_output_path(model, args.output)
    onnxpress.save(model, args.output, max_ir_version=max_ir_version())
    props = {k.removeprefix("onnxpress.source."): v for k, v in model.metadata_props.items()}
    source = f"{props['framework']} {props['framework_version']}" if "framework" in props else "ONNX"
    via = f" via {props['converter']} {props['converter_version']}" if "converter" in props else ""
    print(f"{args.input} ({source}{via}) -> {args.output} ({_size(args.output)}) in {props.get('onnxpress.import.seconds', '?')} s")
    print(props.get("onnxpress.import.check", "import check: not run (ONNX input)"))
    return 0


def cmd_pack(args: argparse.Namespace) -> int:
    """Entropy-code a model's integer weights (lossless); the packed file runs wherever onnxpress loads it."""
    import onnxpress
    from onnxpress.backends.ort.runner import max_ir_version
    from onnxpress.frontends.onnx_file import check_output_path
    from onnxpress.irpasses.clustering.entropy_code import EntropyCode

    model = onnxpress.load(args.input)
    check_output_path(model, args.output)
    out, report = onnxpress.optimize(model, [EntropyCode(min_saving=args.min_saving)], verify="off" if args.no_verify else "end",
                                     in_place=True)
    onnxpress.save(out, args.output, max_ir_version=max_ir_version())
    stats = report.records[-1].stats
    print(f"{args.input} ({_size(args.input)}) -> {args.output} ({_size(args.output)}): {stats.get('tensors', 0)} tensors packed, "
          f"{stats.get('saving_percent', 0)} % smaller than their stored form")
    return 0


def cmd_unpack(args: argparse.Namespace) -> int:
    """Decode a packed model's weights back into plain initializers: a standard ONNX file."""
    import onnxpress
    from onnxpress.frontends.onnx_file import check_output_path
    from onnxpress.kernels.packed import decode_packed

    model = onnxpress.load(args.input, decode_packed=False)
    check_output_path(model, args.output)
    count = decode_packed(model)
    onnxpress.save(model, args.output, max_ir_version=args.max_ir_version)
    print(f"{args.input} ({_size(args.input)}) -> {args.output} ({_size(args.output)}): {count} tensors decoded")
    return 0


def _size(path: str) -> str:
    from onnxpress.irpasses.core.manager import format_bytes

    return format_bytes(os.path.getsize(path))


def _samples_for(model: Any, path: str | None, count: int = 2, shapes: list[str] | None = None) -> list[dict[str, Any]]:
    """Samples from DATA, else random inputs (at the --shapes 'opt' shape when given), with a warning."""
    from onnxpress.backends.base import parse_shapes
    from onnxpress.frontends.sample_data import random_inputs, validated

    if path:
        return list(validated(_samples_arg(path), model))
    print("warning: no --inputs given: using generated random inputs", file=sys.stderr)
    opt = {name: s[1] for name, s in parse_shapes(shapes).items()} if shapes else None
    return random_inputs(model, count=count, shapes=opt)


def _run_on(backend_name: str, model: Any, samples: list[dict[str, Any]], threads: int = 0) -> list[dict[str, Any]]:
    from onnxpress.backends.base import CompileOptions, compile_model, get_backend

    backend = get_backend(backend_name)
    artifact = compile_model(model, backend, CompileOptions(threads=threads, samples=samples))
    return [backend.run(artifact, s) for s in samples]


def cmd_compare(args: argparse.Namespace) -> int:
    """Two models on one backend, or one model on several backends (the first is the reference)."""
    import onnxpress
    from onnxpress.irpasses.core.compare import compare_outputs, merge
    from onnxpress.irpasses.core.numerics import run_model

    backends = args.backend or []
    a = onnxpress.load(args.a)
    samples = _samples_for(a, args.inputs)
    if args.b is None:
        if len(backends) < 2:
            raise SystemExit("error: compare one model needs two --backend options, e.g. --backend ort --backend openvino")
        out_a = _run_on(backends[0], a, samples)
        out_b = _run_on(backends[1], onnxpress.load(args.a), samples)
        label = f"{backends[1]} vs {backends[0]}"
    else:
        b = onnxpress.load(args.b)
        if backends:
            out_a, out_b = _run_on(backends[0], a, samples), _run_on(backends[0], b, samples)
        else:
            out_a, out_b = run_model(a, samples), run_model(b, samples)
        label = f"{args.b} vs {args.a}"
    errors = None
    for ra, rb in zip(out_a, out_b):
        errors = merge(errors, compare_outputs(ra, rb, args.rtol, args.atol))
    rows = [e.to_dict() for e in errors or []]
    if args.json:
        print(json.dumps({"compared": label, "samples": len(samples), "outputs": rows}, indent=2, default=float))
    else:
        print(f"{label} on {len(samples)} sample(s):")
        for e in errors or []:
            print(f"{e.name}: cosine {e.cosine:.6f}, max abs {e.max_abs:.3g}, max rel {e.max_rel:.3g} -> {'within' if e.within else 'BEYOND'} rtol={args.rtol:g} atol={args.atol:g}{' (' + e.note + ')' if e.note else ''}")
    return 0 if all(e.within for e in errors or []) else 3


def _compile_options(args: argparse.Namespace, samples: list[dict[str, Any]] | None) -> Any:
    from onnxpress.backends.base import CompileOptions, parse_shapes

    extra: dict[str, Any] = {}
    if getattr(args, "save_optimized", None):
        extra["optimized_model"] = args.save_optimized
    if getattr(args, "profile", None):
        extra["profile_prefix"] = args.profile
    shapes = parse_shapes(args.shapes) if getattr(args, "shapes", None) else None
    return CompileOptions(threads=args.threads, optimization=args.optimization, shapes=shapes, samples=samples, extra=extra)


def cmd_compile(args: argparse.Namespace) -> int:
    import onnxpress
    from onnxpress.backends.base import compile_model, get_backend

    backend = get_backend(args.backend)
    backend.require()
    model = onnxpress.load(args.input)
    samples = list(_samples_for(model, args.inputs)) if args.inputs else None
    artifact = compile_model(model, backend, _compile_options(args, samples), Path(args.output))
    status = backend.availability()
    print(f"{args.backend}: wrote {args.output}" + (f" (+ {args.output}.json)" if args.backend == "tensorrt" else ""))
    print(f"runs here: {'yes' if status.can_run else 'no'} ({status.reason})")
    if artifact.metadata.get("flags") is not None:
        print(f"flags: {', '.join(artifact.metadata['flags']) or 'none'}; layers by precision: {artifact.metadata.get('layer_precisions')}")
    decided = artifact.metadata.get("kernels") or []
    if decided:
        ran = [d for d in decided if d["rewritten"]]
        print(f"onnxpress kernels: {len(ran)} of {len(decided)} candidate layers ({', '.join(sorted({d['kind'] for d in ran})) or '-'}); "
              "the others stay dense, timed no faster here")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    import onnxpress
    from onnxpress.backends.base import compile_model, get_backend

    model = onnxpress.load(args.input)
    sample = _samples_for(model, args.inputs, count=1, shapes=args.shapes)[0]
    results = []
    for name in args.backend:
        backend = get_backend(name)
        status = backend.availability()
        if not status.can_run:
            print(f"{name}: cannot run here: {status.reason}", file=sys.stderr)
            continue
        artifact = compile_model(onnxpress.load(args.input), backend, _compile_options(args, [sample]))
        results.append(backend.bench(artifact, sample, runs=args.runs))
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        for r in results:
            print(f"{r.backend:<10} median {r.median_ms:8.3f} ms  p10 {r.p10_ms:8.3f}  p90 {r.p90_ms:8.3f}  ({r.runs} runs, {r.threads} thread(s))")
    return 0 if results else 2


def _demo_pages(folder: str) -> str | None:
    """Two rendered text pages as DATA for the demo's numeric check (needs Pillow and rapidocr, test extras)."""
    try:
        import numpy as np
        from onnxpress.tools.real_models import text_pages

        pages = text_pages(2)
    except Exception:  # without the extras the demo checks on random inputs and says so
        return None
    path = os.path.join(folder, "pages.npz")
    np.savez(path, x=np.stack([p["x"] for p in pages]))
    return path


def cmd_plot(args: argparse.Namespace) -> int:
    from onnxpress.tools.plot import plot_sensitivity

    print(f"wrote {plot_sensitivity(args.report, args.output)}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from onnxpress.backends.base import write_atomic
    from onnxpress.tools.report_html import reports_page

    write_atomic(args.output, reports_page(args.reports))
    print(f"wrote {args.output}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from onnxpress.tools.sweep.runner import SweepSettings, run_sweep

    settings = SweepSettings(
        model=Path(args.model), calib=Path(args.calib), eval=Path(args.eval) if args.eval else None, out=Path(args.output),
        pipelines=args.pipelines, grid=args.grid, per_layer=args.per_layer, workers=args.workers, ray=args.ray, timeout_s=args.timeout,
        backend=args.backend, threads=args.threads, runs=args.runs, latency=not args.no_latency, seed=args.seed, target=args.target,
        cpu=args.cpu, metric=args.metric,
    )
    outcome = run_sweep(settings)
    print(format_front(outcome.results, outcome.measurements))
    print(f"wrote {settings.out / 'results.json'} and {settings.out / 'report.html'} ({outcome.seconds:.0f} s)")
    return 0 if not outcome.failures else 3


def format_front(results: dict[str, Any], measurements: dict[str, dict[str, Any]]) -> str:
    """The size-fidelity Pareto front as a table, smallest first, with each point's measured latency."""
    from onnxpress.irpasses.core.manager import format_bytes

    rows = {r["id"]: r for r in [results.get("original") or {}, *results["candidates"]] if r}
    base = (results.get("original") or {}).get("bytes")
    lines = [f"Pareto front (size vs fidelity), {len(results['pareto_size_fidelity'])} of {len(results['candidates']) + 1} points:",
             f"  {'size':>10} {'x smaller':>9} {results['sweep'].get('metric', 'cosine'):>10} {'latency':>10}  candidate"]
    for cid in sorted(results["pareto_size_fidelity"], key=lambda c: rows[c]["bytes"]):
        r, lat = rows[cid], (measurements.get(cid, {}).get("latency") or {})
        ms = f"{lat['median_ms']:.2f} ms" if "median_ms" in lat else "-"
        lines.append(f"  {format_bytes(r['bytes']):>10} {base / r['bytes'] if base else 0:>9.2f} {r['fidelity']['score']:>10.5f} {ms:>10}  "
                     f"{r['label']}")
    return "\n".join(lines)


def cmd_demo(args: argparse.Namespace) -> int:
    folder = tempfile.mkdtemp(prefix="onnxpress-demo-")
    out = args.output or os.path.join(folder, "det.optimized.onnx")
    pages = _demo_pages(folder)
    print(f"onnxpress demo: '{DEMO_MODEL.name}' (PP-OCRv4 text detection, embedded) -p optimize -> {out}\n")
    ns = argparse.Namespace(
        input=str(DEMO_MODEL), output=out, pipeline="optimize", calib=None, inputs=pages, target=None, report=None,
        verify_each=True, no_verify=False, rtol=DEFAULT_RTOL, atol=DEFAULT_ATOL, dump_ir=None, reproducer_dir=None, bisect=False,
        target_opset=None, max_ir_version=None, quiet=False, explain=False, all_passes=False, fidelity=None, min_cosine=None,
    )
    return cmd_opt(ns)


# ----- parser --------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="onnxpress", description="Compiler-style compression of ONNX models.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    opt = sub.add_parser("opt", help="run a pipeline of passes on a model")
    opt.add_argument("input")
    opt.add_argument("-o", "--output", required=True)
    opt.add_argument("-p", "--pipeline", default="cleanup", help="pipeline text like 'cleanup,qdq{bits=8}' or a .yaml/.toml recipe")
    opt.add_argument("--calib", help="calibration DATA: .npz (axis 0 = samples) or a folder of .npz, one per sample")
    opt.add_argument("--inputs", help="DATA for the numeric check (default: --calib, else random inputs)")
    opt.add_argument(
        "--target",
        help="target backend the passes may emit for (default: standard ONNX only); a fidelity expression such as "
        "'cosine>=0.995' is taken as --fidelity",
    )
    opt.add_argument("--cpu", choices=CPU_CHOICES, default="portable", help="the CPU onnxruntime's integer kernels will run on: "
                     "portable (default: any x86-64; without VNNI, int8 weights keep to -64..64 so u8s8 sums cannot saturate), "
                     "native (this machine's), vnni or no-vnni")
    opt.add_argument("--fidelity", help="fidelity target for quantization, e.g. 'cosine>=0.995' or 'max_abs<=0.01': "
                     "the most sensitive layers stay at higher precision until it holds on the calibration data")
    opt.add_argument("--sensitivity-table", action="store_true", help="score every layer for the report's "
                     "per-layer table (and plot) even when all layers quantized already meet the fidelity target")
    opt.add_argument("--min-cosine", type=float, help="numeric check bound for lossy pipelines (default 0.99)")
    opt.add_argument("--report", help="write the report here: JSON, or a self-contained HTML page for a .html name")
    opt.add_argument("--verify-each", action="store_true", help="numeric check after every pass that changed the model")
    opt.add_argument("--no-verify", action="store_true", help="skip the numeric check (structural checks still run)")
    opt.add_argument("--rtol", type=float, default=DEFAULT_RTOL)
    opt.add_argument("--atol", type=float, default=DEFAULT_ATOL)
    opt.add_argument("--dump-ir", metavar="DIR", help="write the textual IR after every pass that changed it")
    opt.add_argument("--reproducer-dir", metavar="DIR", help="on failure, write the input model and pipeline here")
    opt.add_argument("--bisect", action="store_true", help="on a failed check, find the first optional pass at fault")
    opt.add_argument("--target-opset", type=int, help="convert the model to this opset first")
    opt.add_argument("--max-ir-version", type=int, help="cap the IR version written (e.g. 13 for onnxruntime 1.31)")
    opt.add_argument("--all-passes", action="store_true", help="report every pass run, also those that changed nothing")
    opt.add_argument("--explain", action="store_true", help="list, per fusion rule, the sites that matched and the near-misses with reasons")
    opt.add_argument("--allow-invalid", action="store_true", help="load a malformed model (dangling inputs, tensors that contradict "
                     "their shape) with a warning instead of refusing it, so cleanup can repair it")
    opt.add_argument("--input", dest="input_specs", action="append", metavar="NAME:SHAPE:DTYPE",
                     help="another framework's model: an input's name, shape and dtype for its import (as onnxpress import)")
    opt.add_argument("--trust-source", action="store_true", help="allow model formats that run code when loaded (pickle, TorchScript)")
    opt.add_argument("-q", "--quiet", action="store_true")
    opt.set_defaults(func=cmd_opt)

    passes = sub.add_parser("passes", help="list passes and pipelines with their options")
    passes.add_argument("--json", action="store_true")
    passes.set_defaults(func=cmd_passes)

    inspect = sub.add_parser("inspect", help="op histogram, parameters and bytes, signature")
    inspect.add_argument("input")
    inspect.add_argument("--json", action="store_true")
    inspect.set_defaults(func=cmd_inspect)

    imp = sub.add_parser("import", help="convert a PyTorch/TensorFlow/Keras/TFLite/scikit-learn model to ONNX, "
                                        "checked against its framework")
    imp.add_argument("input", help="a model file or folder: .pt2, .keras/.h5, a SavedModel folder, .tflite, .skops; "
                                   ".pt/.jit/.pth/.pkl/.joblib need --trust-source; .onnx passes through")
    imp.add_argument("--input", dest="input_specs", action="append", metavar="NAME:SHAPE:DTYPE",
                     help="an input's name, shape and dtype, e.g. x:?x24x24x3:float32 (? or a name: dynamic); repeat per input")
    imp.add_argument("--inputs", metavar="DATA", help="samples the import check runs on (.npz or folder, one array per input, "
                                                      "axis 0 samples); default: generated random inputs, said in the report")
    imp.add_argument("-o", "--output", required=True)
    imp.add_argument("--opset", type=int, default=None, help="target ONNX opset (default: the converter's)")
    imp.add_argument("--trust-source", action="store_true", help="allow formats that run code when loaded (pickle, joblib)")
    imp.set_defaults(func=cmd_import)

    pack = sub.add_parser("pack", help="entropy-code integer weights into onnxpress.DecodeWeights blobs (lossless)")
    pack.add_argument("input")
    pack.add_argument("-o", "--output", required=True)
    pack.add_argument("--min-saving", type=float, default=0.03, help="pack a tensor only if its blob saves this share")
    pack.add_argument("--no-verify", action="store_true", help="skip the check that outputs are unchanged")
    pack.set_defaults(func=cmd_pack)

    unpack = sub.add_parser("unpack", help="decode a packed model back into a standard ONNX file")
    unpack.add_argument("input")
    unpack.add_argument("-o", "--output", required=True)
    unpack.add_argument("--max-ir-version", type=int, help="cap the IR version written (e.g. 13 for onnxruntime 1.31)")
    unpack.set_defaults(func=cmd_unpack)

    compare = sub.add_parser("compare", help="compare two models' outputs on the same inputs")
    compare.add_argument("a")
    compare.add_argument("b", nargs="?", help="second model (omit to compare one model across --backend options)")
    compare.add_argument("--backend", action="append", help="backend(s) to run on (default: onnxruntime, no graph optimization)")
    compare.add_argument("--inputs", help="DATA (default: random inputs, with a warning)")
    compare.add_argument("--json", action="store_true")
    compare.add_argument("--rtol", type=float, default=DEFAULT_RTOL)
    compare.add_argument("--atol", type=float, default=DEFAULT_ATOL)
    compare.set_defaults(func=cmd_compare)

    def backend_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--inputs", help="sample DATA (shapes for engine profiles; bench inputs)")
        p.add_argument("--threads", type=int, default=1, help="intra-op threads (default 1)")
        p.add_argument("--optimization", default="all", choices=["disable", "basic", "extended", "all"])
        p.add_argument("--shapes", action="append", help="engine profile NAME:MIN,OPT,MAX (shapes like 1x3x736x992)")

    comp = sub.add_parser("compile", help="compile a model for a backend (ort | tensorrt | a plug-in's)")
    comp.add_argument("input")
    comp.add_argument("--backend", required=True)
    comp.add_argument("-o", "--output", required=True)
    comp.add_argument("--save-optimized", metavar="PATH", help="ort: also save onnxruntime's optimized model")
    comp.add_argument("--profile", metavar="PREFIX", help="ort: write an onnxruntime profile")
    backend_options(comp)
    comp.set_defaults(func=cmd_compile)

    bench = sub.add_parser("bench", help="latency (median, p10, p90) on one or more backends")
    bench.add_argument("input")
    bench.add_argument("--backend", action="append", required=True)
    bench.add_argument("--runs", type=int, default=30)
    bench.add_argument("--json", action="store_true")
    backend_options(bench)
    bench.set_defaults(func=cmd_bench)

    plot = sub.add_parser("plot", help="plot the per-layer sensitivity table of an opt --report JSON")
    plot.add_argument("report")
    plot.add_argument("-o", "--output", required=True, help="image file (.png, .svg, .pdf)")
    plot.set_defaults(func=cmd_plot)

    rep = sub.add_parser("report", help="one self-contained HTML page from opt --report JSON files (several: side by side)")
    rep.add_argument("reports", nargs="+", help="JSON files written by onnxpress opt --report")
    rep.add_argument("-o", "--output", required=True, help="the .html file to write")
    rep.set_defaults(func=cmd_report)

    sweep = sub.add_parser("sweep", help="run many candidate pipelines on a model (in parallel, resumable) and keep the Pareto front")
    sweep.add_argument("model")
    sweep.add_argument("--calib", required=True, help="calibration DATA (.npz, axis 0 = samples, or a folder of .npz)")
    sweep.add_argument("--eval", help="DATA the fidelity is judged on (default: --calib; give disjoint data)")
    sweep.add_argument("--pipelines", required=True, help="candidates separated by ';', e.g. \"int8;auto;w4;lowrank{budget=params:0.7}\"")
    sweep.add_argument("--grid", action="append", help="vary a pass option: PASS.OPTION=V1,V2 (repeatable), e.g. qdq.calibrator=percentile,entropy")
    sweep.add_argument("--per-layer", action="store_true", help="score layers: the one pipeline in --pipelines, then once per "
                       "Conv/MatMul/Gemm layer kept out of it (leave-one-out sensitivity, spread over the workers)")
    sweep.add_argument("-o", "--output", required=True, metavar="DIR", help="sweep directory; rerunning with it runs only what is missing")
    sweep.add_argument("--workers", type=int, help="candidates run at once (default 1; with --ray, the cluster's CPUs)")
    sweep.add_argument("--ray", metavar="ADDRESS", help="run candidates as Ray tasks: HOST:PORT of a cluster, 'auto', or 'local' (start one here)")
    sweep.add_argument("--timeout", type=float, default=3600.0, help="seconds one candidate may take (default 3600)")
    sweep.add_argument("--backend", default="ort", help="backend latency is measured on (default ort)")
    sweep.add_argument("--threads", type=int, default=1, help="threads for latency runs (default 1)")
    sweep.add_argument("--runs", type=int, default=20, help="latency runs per model (median reported)")
    sweep.add_argument("--no-latency", action="store_true", help="skip the latency phase")
    sweep.add_argument("--metric", default="cosine", help="fidelity score the front ranks by: cosine (lowest output cosine), "
                       "top1 (argmax agreement over the first output's last axis) or MODULE:FUNCTION(reference, outputs) -> float")
    sweep.add_argument("--seed", type=int, default=0)
    sweep.add_argument("--target", help="target backend the passes may emit for (as opt --target)")
    sweep.add_argument("--cpu", choices=CPU_CHOICES, default="portable",
                       help="the CPU onnxruntime's integer kernels will run on (as opt --cpu)")
    sweep.set_defaults(func=cmd_sweep)

    demo = sub.add_parser("demo", help="optimize the embedded PP-OCRv4 detection model and print the report")
    demo.add_argument("-o", "--output")
    demo.set_defaults(func=cmd_demo)
    return parser


def _short_warning(message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.debug:
        warnings.showwarning = _short_warning
    from onnxpress.irpasses.core.errors import OnnxpressError

    try:
        return int(args.func(args) or 0)
    except OnnxpressError as err:
        if args.debug:
            raise
        print(f"error: {err.message}", file=sys.stderr)
        if err.hint:
            print(f"hint: {err.hint}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # an onnxpress bug, not a user error
        if args.debug:
            raise
        print(f"internal error: {type(err).__name__}: {err}", file=sys.stderr)
        print("hint: rerun with --debug for the traceback, and please report it", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

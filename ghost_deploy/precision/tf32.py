"""The accuracy gate of an FP32 engine built with TF32 (`--tf32`): the FP32 limits, widened by what TF32 rounding does.

What TF32 is (NvInfer.h, `BuilderFlag::kTF32`, 8.5 through 11.1): "TF32 computes inner products by rounding the
inputs to 10-bit mantissas before multiplying, but accumulates the sum using 23-bit mantissas. Enabled by
default." It needs compute capability 8.0 or newer (Ampere, Orin, Ada, Hopper). ghost-deploy clears the flag
unless `--tf32` asks for it (as Polygraphy does); this module says how far a TF32 engine may then stray.

Derivation, from the element to the logits:

1. One element. Rounding an FP32 value to 10 mantissa bits, to nearest, gives x(1 + d) with |d| <= u = 2**-11
   (half a unit in the 11th significant bit; FP32's is 2**-24). The tie rule changes no bound.
2. One layer. A Conv/Gemm/MatMul output y = sum a_i w_i computed from rounded inputs is, to first order in u,
   y + sum a_i w_i (d_i + e_i): its error is at most 2u sum |a_i w_i| and, with the d_i and e_i independent and
   of mean zero (round to nearest), of the order 2u ||a * w||_2 / sqrt(3). Accumulation stays FP32 (2**-24).
3. The network. Each layer's error travels to the logits through the rest of the network, linearly to first
   order, so the logit error is u times a factor A of the network and its weights: A = max |TF32 - FP32| /
   (u max |FP32 logit|), the statistic the FP32 gate's `rtol` form (atol + rtol x the largest reference logit)
   already measures. A does not follow from depth alone: it depends on how much the weights cancel (a trained
   classifier's winning logit is aligned with its features; a random one is not), so it is measured, on the
   GhostNet family, with the TensorRT simulator's exact TF32 rounding (`python tools/tf32_tolerance.py`):

       model                                         images     A      B = (1 - min cosine) / u**2   top-1 flips
       tiny fixture, width 0.25, 32 px, trained         359   6.78      93                           0
       shipped digits model, trained                     359   2.84      13                           0
       GhostNet V1 1.0x 224 px, 1000 classes, random      48  43.05     879                           1
       GhostNet V2 1.0x 224 px, 1000 classes, random      48  38.55    1075                           2
       GhostNet V3 1.0x 224 px, 1000 classes, random      48  78.00    4082                           3

   (random: `model.synthetic.realistic_ghostnet`, BatchNorm statistics from real images; its classifier does
   not align with its features, so it stands in pessimistically for the large models this project cannot
   train.) An FP16 engine, whose unit roundoff is the same 2**-11 and which rounds these inputs and every other
   activation too, measures alike (V1: A 47.5, B 836; V3: A 73.1, B 4927).
4. The limits cover the largest measurement with a factor 1.5 for verifying on more images than measured (the
   maximum over samples grows slowly: the measured maxima are at most 1.3 times their medians), rounded up to
   a power of two:
   - max-abs: rtol grows by 128 u = 1/16 (largest A 78 x 1.5 = 117 -> 128); atol stays (it covers logits near 0).
   - cosine: 1 - min cosine <= 8192 u**2 = 2**-9 (largest B 4082 x 1.5 = 6123 -> 8192): min_cosine 0.998047.
   - top-1 agreement and accuracy drop stay: a flip needs two logits closer than twice the error, which the
     data decides, not the rounding (0 flips in 718 trained-model samples; the random models' flips are near-
     ties on images foreign to them, and fail the FP16 gate's agreement too).
   If a GPU's kernels truncated instead of rounding to nearest (the header names no rounding mode), u would
   double; the limits do not cover that.
"""

from __future__ import annotations

import dataclasses

from ghost_deploy.config import Tolerances

TF32_UNIT_ROUNDOFF = 2.0**-11  # 10 mantissa bits, round to nearest
TF32_RTOL_UNITS = 128  # step 4: the largest measured A (78) x 1.5, rounded up to a power of two
TF32_COSINE_UNITS = 8192  # step 4: the largest measured B (4082) x 1.5, rounded up to a power of two


def widen_for_tf32(tol: Tolerances) -> Tolerances:
    """`tol` (an FP32 gate) widened to what TF32 rounding allows: rtol + 128 u, min cosine at most 1 - 8192 u**2.

    A limit that is off (None) stays off; the agreement and accuracy limits are unchanged (see the module
    docstring for the derivation and the measurements behind both numbers).
    """
    u = TF32_UNIT_ROUNDOFF
    min_cosine = tol.min_cosine
    if min_cosine is not None:
        min_cosine = min(min_cosine, 1.0 - TF32_COSINE_UNITS * u * u)
    return dataclasses.replace(tol, rtol=min(1.0, tol.rtol + TF32_RTOL_UNITS * u), min_cosine=min_cosine)


def engine_gate(tol: Tolerances, precision: str, tf32: bool) -> Tolerances:
    """The gate of an engine of `precision` whose build allowed TF32 or not: an FP32 engine with TF32 gets
    `widen_for_tf32(tol)`; FP16 and INT8 gates already allow errors of FP16's unit roundoff, which is TF32's,
    on every activation, so their layers kept in FP32 using TF32 change nothing they judge."""
    return widen_for_tf32(tol) if tf32 and precision == "fp32" else tol

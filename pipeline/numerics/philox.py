"""Counter-based random numbers: Philox4x32-10, uniforms and Box–Muller normals.

A counter-based generator is a keyed bijection: ``philox4x32(counter, key)`` maps a
128-bit counter to 128 random bits under a 64-bit key (Salmon et al., "Parallel
random numbers: as easy as 1, 2, 3", SC'11; the generator behind numpy's ``Philox``,
cuRAND and JAX).  There is no state to carry: the random bits for particle ``i`` at
step ``s`` of a run are a pure function of (the run's key, ``i``, ``s``), so a run
draws the same numbers whether it is computed alone, in a batch of any size or order,
on any worker, or resumed.  The particle kernels (:mod:`.particles`) use the counter
words as

- ``c0``, ``c3``: low and high 32 bits of a block index along the run (a step, or a
  group of steps);
- ``c1``: the particle;
- ``c2``: ``purpose << 8 | axis`` (:data:`WALK`, :data:`PLACEMENT`, :data:`NOISE`);

and the key is the run's 64-bit :func:`stream_key`.

Conversions are written out instead of calling libm, so that the compiled particle
loops vectorise and give the same bits on every machine:

- :func:`uniform53`: 53 random bits → ``[0, 1)``, exact multiples of ``2**-53``;
- :func:`normal_pair`: Box–Muller from two 32-bit words (so one Philox call gives four
  normals), with ``ln`` (:func:`log_positive`) and ``sin``/``cos`` on ``[-π/4, π/4]``
  (:func:`sin_cos_quarter`) from the fdlibm algorithms, polynomials evaluated with fused
  multiply-adds (:func:`fma`); errors below one ulp, checked against numpy in the tests.

Every function here is integer arithmetic and correctly rounded IEEE-754 operations
(``+ - * /``, ``sqrt``, ``fma``) without ``fastmath``, so vectorised and scalar code
paths, and any two machines, agree bit for bit.
"""

from __future__ import annotations

import hashlib
import math
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np
from numba import njit, uint64
from numba.core import types
from numba.extending import intrinsic

# Philox4x32 multipliers and Weyl key increments (Salmon et al. 2011)
_M0 = np.uint64(0xD2511F53)
_M1 = np.uint64(0xCD9E8D57)
_W0 = np.uint64(0x9E3779B9)
_W1 = np.uint64(0xBB67AE85)
_LOW32 = np.uint64(0xFFFFFFFF)
_SHIFT32 = np.uint64(32)
_SHIFT11 = np.uint64(11)
_TWO_TO_MINUS_53 = 2.0**-53

#: purposes (bits 8.. of counter word c2): the lattice walk's moves, initial placement,
#: the Langevin noise
WALK, PLACEMENT, NOISE = 0, 1, 2


@njit(inline="always")
def philox4x32(c0, c1, c2, c3, k0, k1):  # pragma: no cover - compiled
    """Philox4x32-10 of the counter ``(c0, c1, c2, c3)`` under the key ``(k0, k1)``.

    Every argument and result is a ``uint64`` holding a 32-bit word (a 32 x 32 → 64
    bit product then needs no widening, which lets the loops vectorise).
    """
    for _ in range(10):
        product0 = _M0 * c0
        product1 = _M1 * c2
        c0, c1, c2, c3 = (
            (product1 >> _SHIFT32) ^ c1 ^ k0,
            product1 & _LOW32,
            (product0 >> _SHIFT32) ^ c3 ^ k1,
            product0 & _LOW32,
        )
        k0 = (k0 + _W0) & _LOW32
        k1 = (k1 + _W1) & _LOW32
    return c0, c1, c2, c3


@njit(inline="always")
def key_words(key):  # pragma: no cover - compiled
    """A 64-bit key (``uint64``) as the two 32-bit Philox key words."""
    key = uint64(key)
    return key & _LOW32, key >> _SHIFT32


@njit(inline="always")
def uniform53(high, low):  # pragma: no cover - compiled
    """The top 53 of the 64 bits ``high:low`` as a float in ``[0, 1)``."""
    return float(((high << _SHIFT32) | low) >> _SHIFT11) * _TWO_TO_MINUS_53


def _float_bits_codegen(typingctx, value):  # pragma: no cover - compiled
    if value != types.float64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.int64))

    return types.int64(types.float64), codegen


def _bits_float_codegen(typingctx, bits):  # pragma: no cover - compiled
    if bits != types.int64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(types.float64))

    return types.float64(types.int64), codegen


#: the bits of a float64 as an int64, and back (LLVM ``bitcast``; compiled code only)
_float_bits: Any = intrinsic(_float_bits_codegen)
_bits_float: Any = intrinsic(_bits_float_codegen)


def _fma_codegen(typingctx, a, b, c):  # pragma: no cover - compiled
    if not (a == b == c == types.float64):
        return None

    def codegen(context, builder, signature, args):
        return builder.fma(*args)

    return types.float64(types.float64, types.float64, types.float64), codegen


#: ``fma(a, b, c)``: ``a * b + c`` rounded once (IEEE-754 fusedMultiplyAdd, ``llvm.fma``).
#: Correctly rounded by definition, so it gives the same bits with or without an FMA
#: unit (LLVM then calls libm's ``fma``); it halves the work of polynomial evaluation.
fma: Any = intrinsic(_fma_codegen)


# fdlibm e_log.c: ln 2 split in two, and the minimax polynomial of
# R(z) ~ ln((1+s)/(1-s)) - 2s in z = s**2 on [0, 0.1716]
_LN2_HIGH = 6.93147180369123816490e-01
_LN2_LOW = 1.90821492927058770002e-10
_LG1 = 6.666666666666735130e-01
_LG2 = 3.999999999940941908e-01
_LG3 = 2.857142874366239149e-01
_LG4 = 2.222219843214978396e-01
_LG5 = 1.818357216161805012e-01
_LG6 = 1.531383769920937332e-01
_LG7 = 1.479819860511658591e-01
_SQRT2 = 1.4142135623730951
_MANTISSA = 0x000FFFFFFFFFFFFF
_EXPONENT_ONE = 0x3FF0000000000000


@njit(inline="always")
def log_positive(x):  # pragma: no cover - compiled
    """Natural logarithm of a positive, normal, finite ``x`` (fdlibm's algorithm, < 1 ulp).

    ``x = 2**k m`` with ``m`` in ``[sqrt(2)/2, sqrt(2))``; ``ln m = 2 atanh(s)`` with
    ``s = (m - 1) / (m + 1)``, evaluated as fdlibm does.  No special cases: zero,
    subnormal, negative, infinite and NaN arguments give meaningless results.
    """
    bits = _float_bits(x)
    exponent = (bits >> 52) - 1023
    mantissa = _bits_float((bits & _MANTISSA) | _EXPONENT_ONE)
    above = mantissa > _SQRT2
    mantissa = mantissa * 0.5 if above else mantissa
    exponent = exponent + 1 if above else exponent
    f = mantissa - 1.0
    s = f / (2.0 + f)
    z = s * s
    w = z * z
    t1 = w * fma(w, fma(w, _LG6, _LG4), _LG2)
    t2 = z * fma(w, fma(w, fma(w, _LG7, _LG5), _LG3), _LG1)
    r = t2 + t1
    half_f_squared = 0.5 * f * f
    k = float(exponent)
    return k * _LN2_HIGH - ((half_f_squared - (s * (half_f_squared + r) + k * _LN2_LOW)) - f)


# fdlibm k_sin.c and k_cos.c: minimax polynomials on [-pi/4, pi/4]
_S1 = -1.66666666666666324348e-01
_S2 = 8.33333333332248946124e-03
_S3 = -1.98412698298579493134e-04
_S4 = 2.75573137070700676789e-06
_S5 = -2.50507602534068634195e-08
_S6 = 1.58969099521155010221e-10
_C1 = 4.16666666666666019037e-02
_C2 = -1.38888888888741095749e-03
_C3 = 2.48015872894767294178e-05
_C4 = -2.75573143513906633035e-07
_C5 = 2.08757232129817482790e-09
_C6 = -1.13596475577881948265e-11


@njit(inline="always")
def sin_cos_quarter(x):  # pragma: no cover - compiled
    """``(sin x, cos x)`` for ``|x| <= pi/4`` (fdlibm's kernels, < 1 ulp)."""
    z = x * x
    r = fma(z, fma(z, fma(z, fma(z, _S6, _S5), _S4), _S3), _S2)
    sine = x + z * x * fma(z, r, _S1)
    c = z * fma(z, fma(z, fma(z, fma(z, fma(z, _C6, _C5), _C4), _C3), _C2), _C1)
    half_z = 0.5 * z
    w = 1.0 - half_z
    cosine = w + (((1.0 - w) - half_z) + z * c)
    return sine, cosine


_QUARTER_PI = math.pi / 4
_LOW30 = np.uint64(0x3FFFFFFF)
_SHIFT30 = np.uint64(30)
_ONE = np.uint64(1)
_TWO = np.uint64(2)


@njit(inline="always")
def normal_pair(radius_word, angle_word):  # pragma: no cover - compiled
    """Two independent standard normals from two random 32-bit words (Box–Muller).

    ``(z0, z1) = sqrt(-2 ln u) (cos t, sin t)`` with ``u = (2 w + 1) 2**-33`` from the
    radius word, and ``t`` from the angle word: its top two bits pick the quadrant, the
    other 30 the offset ``(2 v + 1) 2**-31`` in it, mapped onto ``(-pi/4, pi/4)``.

    With 32-bit words the radius's distribution function is the exact one sampled on a
    grid of ``2**-32``: it departs from the normal's by at most ``2**-33`` (Kolmogorov
    distance), and ``|z| <= sqrt(66 ln 2) ≈ 6.77`` (the normal exceeds that radius with
    probability ``1.2e-10``).  The logarithm and sine/cosine are accurate to an ulp.
    """
    u = float(_TWO * radius_word + _ONE) * 2.0**-33
    radius = math.sqrt(-2.0 * log_positive(u))
    quadrant = angle_word >> _SHIFT30
    offset = float(_TWO * (angle_word & _LOW30) + _ONE) * 2.0**-31  # (0, 1)
    sine, cosine = sin_cos_quarter((2.0 * offset - 1.0) * _QUARTER_PI)
    # the angle is quadrant * pi/2 + x with x in (-pi/4, pi/4): rotate (cos x, sin x) by
    # the quadrant, written as selects so that the loops calling this vectorise
    swap = (quadrant & _ONE) == _ONE
    first = sine if swap else cosine
    second = cosine if swap else sine
    first = -first if quadrant == _ONE or quadrant == _TWO else first
    second = -second if quadrant >= _TWO else second
    return radius * first, radius * second


# -- helpers callable from Python (tests, users checking the generator) ---------------------


@njit(cache=True, nogil=True, error_model="numpy")
def _words(counters, key):  # pragma: no cover - compiled
    out = np.empty_like(counters)
    k0, k1 = key_words(key)
    for i in range(counters.shape[0]):
        out[i, 0], out[i, 1], out[i, 2], out[i, 3] = philox4x32(
            counters[i, 0], counters[i, 1], counters[i, 2], counters[i, 3], k0, k1
        )
    return out


def random_words(counters: np.ndarray, key: int) -> np.ndarray:
    """Philox4x32-10 of each counter: ``(n, 4)`` 32-bit words in, ``(n, 4)`` words out.

    Parameters
    ----------
    counters
        ``(n, 4)`` integers below ``2**32``.
    key
        A 64-bit key (``key_words`` splits it into low and high 32-bit words).

    Returns
    -------
    numpy.ndarray
        ``(n, 4)`` uint64, each below ``2**32``.
    """
    counters = np.ascontiguousarray(counters, dtype=np.uint64)
    assert counters.ndim == 2 and counters.shape[1] == 4, counters.shape
    return _words(counters, np.uint64(key))


@njit(cache=True, nogil=True, error_model="numpy")
def _uniforms(n, key, purpose):  # pragma: no cover - compiled
    out = np.empty(n)
    k0, k1 = key_words(key)
    for i in range(n):
        w0, w1, _, _ = philox4x32(uint64(i), uint64(0), uint64(purpose), uint64(0), k0, k1)
        out[i] = uniform53(w0, w1)
    return out


def uniforms(n: int, key: int) -> np.ndarray:
    """``n`` uniforms in ``[0, 1)`` from counters ``(i, 0, 0, 0)``, ``i < n``, under ``key``."""
    return _uniforms(int(n), np.uint64(key), 0)


@njit(cache=True, nogil=True, error_model="numpy")
def _normals(n, key):  # pragma: no cover - compiled
    out = np.empty(4 * n)
    k0, k1 = key_words(key)
    for i in range(n):
        w0, w1, w2, w3 = philox4x32(uint64(i), uint64(0), uint64(0), uint64(0), k0, k1)
        out[4 * i], out[4 * i + 1] = normal_pair(w0, w1)
        out[4 * i + 2], out[4 * i + 3] = normal_pair(w2, w3)
    return out


def normals(n: int, key: int) -> np.ndarray:
    """``4 n`` standard normals, two Box–Muller pairs from each counter ``(i, 0, 0, 0)``."""
    return _normals(int(n), np.uint64(key))


@njit(cache=True, nogil=True, error_model="numpy")
def _apply(values, which):  # pragma: no cover - compiled
    out = np.empty((values.shape[0], 2))
    for i in range(values.shape[0]):
        if which == 0:
            out[i, 0] = log_positive(values[i])
            out[i, 1] = 0.0
        else:
            out[i, 0], out[i, 1] = sin_cos_quarter(values[i])
    return out


def elementary(name: str, values: np.ndarray) -> np.ndarray:
    """The compiled ``log`` (``"log"``: column 0) or ``sin``/``cos`` (``"sincos"``) on
    ``values``, as the kernels evaluate them; for testing against numpy."""
    return _apply(np.ascontiguousarray(values, dtype=float), 0 if name == "log" else 1)


def stream_key(seed: int, coordinates: Mapping[str, Any]) -> int:
    """The 64-bit key of a run's random stream, from the seed and the run's coordinates.

    The key depends on the coordinate *values* (not on positions in a sweep or a block),
    so a run draws the same numbers in any sweep, block or order that contains it.
    Floats enter through their exact hexadecimal form, so ``0.1`` and the nearest
    float to it computed differently are the same key only if they are the same float.

    Parameters
    ----------
    seed
        The sweep's seed.
    coordinates
        Name → value (int, float or str) of every coordinate that identifies the run.

    Returns
    -------
    int
        In ``[0, 2**64)``: the first 8 bytes of a BLAKE2b digest, little-endian.

    Examples
    --------
    >>> stream_key(0, {"coefficient": 0.1, "step_size": 1e-3}) == stream_key(
    ...     0, {"step_size": 1e-3, "coefficient": 0.1})
    True
    """
    parts = [f"seed={int(seed)}"]
    for name in sorted(coordinates):
        value = coordinates[name]
        if isinstance(value, np.generic):
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise TypeError(f"coordinate {name}={value!r}: expected int, float or str")
        text = float(value).hex() if isinstance(value, float) else repr(value)
        parts.append(f"{name}={text}")
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return int(struct.unpack("<Q", digest)[0])

"""Today's kernels, frozen, as the baseline that ``run.py`` measures the current ones against.

Each function here is the kernel as it was before the throughput work of issue 13/14,
kept verbatim (decorators aside) so that a benchmark run shows before and after side by
side on the same machine and load.  They produce the same bits as the current kernels
(the tests check the current ones against exact solutions; ``particles.py`` checks the
pair agrees before timing it).

- :func:`langevin_kernel`: 3-D Euler–Maruyama with the particle index as an unmasked
  64-bit Philox counter word (a full 64-bit multiply in the second round).
"""

from __future__ import annotations

from functools import cache
from typing import Any

import numpy as np
from numba import njit, prange, uint64

from pipeline.numerics.particles import _LOW32, _SHIFT32, DIRICHLET, NORMAL_BOUND, TILE, _advance
from pipeline.numerics.philox import NOISE, key_words, normal_pair, philox4x32


@cache
def langevin_kernel(dims: int, boundary: int) -> Any:
    """The compiled Euler–Maruyama loop for one dimension and wall (see :func:`_walk_kernel`).

    The axes are independent (separable potential, walls per axis), so each axis is
    advanced on its own through a quad of four steps, the four normals of one Philox
    call; absorption is the same whichever axis is done first.
    """

    @njit(cache=True, nogil=True, parallel=True, error_model="numpy")
    def langevin(positions, alive, drift, noise, keys, start, stop, length):  # pragma: no cover
        batch, _, particles = positions.shape
        inverse_length = 1.0 / length
        for run in prange(batch):
            k0, k1 = key_words(keys[run])
            a = drift[run]
            sigma = noise[run]
            once = 0.0 <= a <= 2.0 and NORMAL_BOUND * sigma <= length
            # a tile's random words, then its normals, then each step, are loops of their
            # own: short loop bodies vectorise without spilling, and the four dependent
            # steps of a particle are spread over independent iterations
            words = np.empty((4, TILE), dtype=np.uint64)
            normals = np.empty((4, TILE))
            for first in range(0, particles, TILE):
                count = min(TILE, particles - first)
                living = alive[run, first : first + count]
                w0 = words[0, :count]
                w1 = words[1, :count]
                w2 = words[2, :count]
                w3 = words[3, :count]
                z0 = normals[0, :count]
                z1 = normals[1, :count]
                z2 = normals[2, :count]
                z3 = normals[3, :count]
                for axis in range(dims):
                    x = positions[run, axis, first : first + count]
                    c2 = uint64((NOISE << 8) | axis)
                    for quad in range(start // 4, (stop + 3) // 4):
                        c0 = uint64(quad) & _LOW32
                        c3 = uint64(quad) >> _SHIFT32
                        for j in range(count):
                            w0[j], w1[j], w2[j], w3[j] = philox4x32(
                                c0, uint64(first + j), c2, c3, k0, k1
                            )
                        for j in range(count):
                            z0[j], z1[j] = normal_pair(w0[j], w1[j])
                        for j in range(count):
                            z2[j], z3[j] = normal_pair(w2[j], w3[j])
                        for w in range(max(start - 4 * quad, 0), min(stop - 4 * quad, 4)):
                            z = normals[w, :count]
                            if once:  # two copies of the loop, each with a constant ``once``
                                for j in range(count):
                                    x[j], lives = _advance(
                                        x[j], living[j], z[j], a, sigma, length, inverse_length,
                                        boundary, True,
                                    )
                                    if boundary == DIRICHLET:
                                        living[j] = lives
                            else:
                                for j in range(count):
                                    x[j], lives = _advance(
                                        x[j], living[j], z[j], a, sigma, length, inverse_length,
                                        boundary, False,
                                    )
                                    if boundary == DIRICHLET:
                                        living[j] = lives

    return langevin

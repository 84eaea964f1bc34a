"""Batched linear algebra of the fits: normal equations, Cholesky solves, pseudo-inverses.

Vectorised over the curves (the loops run over the ≤ 7 parameters only); the solvers' arrays
hold the curves on the last axis, the covariance's on the first.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

_PINV_RCOND = 1e-10
"""Relative singular-value cut-off of the covariance's pseudo-inverse."""


def normal_equations(jac: FloatArray, residual: FloatArray) -> tuple[FloatArray, FloatArray]:
    """JᵀJ (p, p, n) and Jᵀr (p, n) from a curves-last Jacobian (p, t, n).

    ``jac`` and ``residual`` (t, n) are the weighted Jacobian and residual of the solver (any
    consistent units); the sums over t run in time order, so results do not depend on the batch.
    """
    p, n_points, n = jac.shape
    normal = np.empty((p, p, n))
    product = np.empty(n)
    for i in range(p):
        for j in range(i + 1):
            total = normal[i, j]  # Σₜ in time order, accumulated in place
            np.multiply(jac[i, 0], jac[j, 0], out=total)
            for t in range(1, n_points):
                np.multiply(jac[i, t], jac[j, t], out=product)
                total += product
            normal[j, i] = total
    gradient = (jac * residual[None]).sum(axis=1)
    return normal, gradient


def cholesky_solve(matrix: FloatArray, rhs: FloatArray) -> tuple[FloatArray, npt.NDArray[np.bool_]]:
    """Solve SPD systems (p, p, n)·x = (p, n) by a Cholesky factorisation vectorised over n.

    Curves on the last axis; loops run over the (≤ 7) parameters only. Returns the solution
    and a mask of systems that were positive definite (others get x = 0).
    """
    p, n = rhs.shape
    lower = np.zeros_like(matrix)
    good = np.ones(n, dtype=bool)
    for j in range(p):
        diagonal = matrix[j, j] - (lower[j, :j] * lower[j, :j]).sum(axis=0)
        good &= diagonal > 0
        root = np.sqrt(np.where(diagonal > 0, diagonal, 1.0))
        lower[j, j] = root
        inverse_root = 1.0 / root
        for i in range(j + 1, p):
            below = matrix[i, j] - (lower[i, :j] * lower[j, :j]).sum(axis=0)
            lower[i, j] = below * inverse_root
    forward = np.zeros_like(rhs)
    for i in range(p):
        forward[i] = (rhs[i] - (lower[i, :i] * forward[:i]).sum(axis=0)) / lower[i, i]
    solution = np.zeros_like(rhs)
    for i in reversed(range(p)):
        solution[i] = (forward[i] - (lower[i + 1 :, i] * solution[i + 1 :]).sum(axis=0)) / lower[
            i, i
        ]
    solution[:, ~good] = 0.0
    return solution, good


def pseudo_inverse(matrix: FloatArray) -> FloatArray:
    """Batched Moore–Penrose inverse of symmetric (n, p, p) matrices; NaN where not finite.

    Directions the data do not determine (e.g. two nearly equal rates, whose amplitudes can be
    split any way) get zero variance instead of an infinite one; a function that does not move
    along them, like the TIA, keeps its correct variance gᵀVg (the same choice as
    ``scipy.optimize.curve_fit``'s SVD-based covariance).
    """
    result = np.full_like(matrix, np.nan)
    finite = np.all(np.isfinite(matrix), axis=(1, 2))
    if finite.any():
        result[finite] = np.linalg.pinv(matrix[finite], rcond=_PINV_RCOND, hermitian=True)
    return result

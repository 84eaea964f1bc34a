"""Rotation-based SPECT projector and its matched back-projector (numpy/scipy, no GPU).

Geometry: the image is indexed [z, y, x] on an isotropic grid; the camera rotates about the z
axis through the grid's centre. The (y, x) plane is padded to a centred square of side
S = max(ny, nx), and activity outside the square's inscribed circle is not seen (the usual
circular field of view of a reconstruction). For view k (angle 2πk/n_views) the padded image
and the per-view attenuation factors are rotated by that angle in the (y, x) plane
(bilinear interpolation, zero outside, one sparse matrix per view) and the detector lies
beyond the last row (+y side of the rotated frame): a voxel in row j is at
y_j = (j − (S − 1)/2)·voxel from the axis and d_j = max(R − y_j, 0) from the collimator face
(R the radius of rotation). The projection of view k is, in the (z, x) detector plane,

    p_k = Σ_j G_{σ(d_j)} ⊛ [ f_rot[:, j, :] · exp(−voxel·(Σ_{j' > j} μ_rot[:, j', :]
                                                         + μ_rot[:, j, :]/2)) ]

with G the collimator-detector response (Gaussian of FWHM(d), :mod:`.camera`) applied in the
Fourier domain, separably in z and x, with zero padding (no wrap-around), and
summed over depth there (one inverse FFT per view). Without a CDR the planes are simply summed.
The back-projector applies the exact transpose of every step (the rotation's sparse matrix
transposed, the attenuation a diagonal, the Gaussian symmetric), so the pair is matched: ⟨F x, p⟩
= ⟨x, B p⟩ to rounding (tested).

Units: the projector is linear with unit gain (an unattenuated voxel's counts land in full on
every view); sensitivities and acquisition times are the caller's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import fft, sparse

from concordose.reconstruction.camera import CameraModel

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
"""FWHM of a Gaussian in units of its standard deviation."""
CDR_TRUNCATE_SIGMAS = 4.0
"""The CDR's zero padding covers this many standard deviations of the widest Gaussian."""


@dataclass(frozen=True)
class ProjectionGeometry:
    """Grid and orbit of an acquisition.

    Attributes:
        shape_zyx: image shape (slices, rows, columns).
        voxel_mm: isotropic voxel edge, mm (detector bins have the same size).
        n_views: views over 360°, at angles 2πk/n_views.
        radius_of_rotation_mm: rotation axis to collimator face, mm.
    """

    shape_zyx: tuple[int, int, int]
    voxel_mm: float
    n_views: int
    radius_of_rotation_mm: float

    @property
    def side(self) -> int:
        """Side S of the square (y, x) plane the image is padded to."""
        return max(self.shape_zyx[1], self.shape_zyx[2])

    @property
    def projection_shape(self) -> tuple[int, int, int]:
        """(views, z bins, transaxial bins)."""
        return (self.n_views, self.shape_zyx[0], self.side)

    @property
    def angles_rad(self) -> NDArray[np.float64]:
        """View angles, rad."""
        angles: NDArray[np.float64] = 2.0 * np.pi * np.arange(self.n_views) / self.n_views
        return angles

    def depth_distances_mm(self) -> NDArray[np.float64]:
        """Distance to the collimator face of each row j of the rotated frame, mm (≥ 0)."""
        side = self.side
        y_mm = (np.arange(side) - (side - 1) / 2.0) * self.voxel_mm
        distances: NDArray[np.float64] = np.clip(self.radius_of_rotation_mm - y_mm, 0.0, None)
        return distances


def rotation_matrix(angle_rad: float, side: int) -> sparse.csr_matrix:
    """Bilinear interpolation matrix rotating a (side × side) plane by ``angle_rad`` about its
    centre: ``rotated.ravel() = R @ plane.ravel()`` (output pixel o samples the input at
    the point o rotated by −angle; outside the plane counts as 0). Its transpose is the exact
    adjoint used by the back-projector."""
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    centre = (side - 1) / 2.0
    out_y, out_x = np.mgrid[0:side, 0:side]
    dy, dx = out_y.ravel() - centre, out_x.ravel() - centre
    src_y = c * dy - s * dx + centre
    src_x = s * dy + c * dx + centre
    y0, x0 = np.floor(src_y).astype(np.int64), np.floor(src_x).astype(np.int64)
    wy, wx = src_y - y0, src_x - x0
    rows, cols, weights = [], [], []
    out_index = np.arange(side * side)
    for oy, ox, weight in (
        (0, 0, (1 - wy) * (1 - wx)),
        (0, 1, (1 - wy) * wx),
        (1, 0, wy * (1 - wx)),
        (1, 1, wy * wx),
    ):
        yy, xx = y0 + oy, x0 + ox
        inside = (yy >= 0) & (yy < side) & (xx >= 0) & (xx < side) & (weight > 0.0)
        rows.append(out_index[inside])
        cols.append(yy[inside] * side + xx[inside])
        weights.append(weight[inside])
    matrix = sparse.csr_matrix(
        (np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))),
        shape=(side * side, side * side),
    )
    return matrix


class SpectProjector:
    """Forward and back projection for one geometry, attenuation map and camera.

    Per view it keeps the rotation and the attenuation factors in the rotated frame (float32:
    n_views × image voxels × 4 bytes, e.g. 60 × 128×128×96 → 377 MB), and per depth row the CDR's
    transfer functions along z and x. ``cdr=False`` in :meth:`forward_view`/:meth:`back_view`
    leaves the CDR out (a reconstruction without resolution modelling) and reuses the rest.

    Args:
        geometry: grid and orbit.
        mu_per_mm: linear attenuation map on the image grid (/mm), or ``None`` for none.
        camera: the camera whose CDR is modelled, or ``None`` for an ideal (pencil-beam) one.
    """

    def __init__(
        self,
        geometry: ProjectionGeometry,
        *,
        mu_per_mm: NDArray[np.float64] | None,
        camera: CameraModel | None,
    ) -> None:
        self.geometry = geometry
        _, ny, nx = geometry.shape_zyx
        side = geometry.side
        self._pad_y = ((side - ny) // 2, side - ny - (side - ny) // 2)
        self._pad_x = ((side - nx) // 2, side - nx - (side - nx) // 2)
        yy, xx = np.mgrid[0:side, 0:side]
        radius = (side - 1) / 2.0
        self.fov_mask = ((yy - radius) ** 2 + (xx - radius) ** 2) <= (side / 2.0) ** 2
        self._rotations = [rotation_matrix(float(a), side) for a in geometry.angles_rad]
        self._rotations_t = [matrix.T.tocsr() for matrix in self._rotations]
        self._attenuation: list[NDArray[np.float32]] | None = None
        if mu_per_mm is not None:
            if mu_per_mm.shape != geometry.shape_zyx:
                raise ValueError(
                    f"μ map of shape {mu_per_mm.shape} for an image of {geometry.shape_zyx}"
                )
            mu_square = self.pad(mu_per_mm)
            self._attenuation = [
                self._attenuation_factors(mu_square, view) for view in range(geometry.n_views)
            ]
        self.camera = camera
        # per depth row j: transfer functions along x (full FFT) and z (real FFT), FFT sizes
        self._cdr: tuple[NDArray[np.float32], NDArray[np.float32], int, int] | None = None
        if camera is not None:
            self._cdr = self._cdr_transfer(camera)

    # --- grid ---------------------------------------------------------------------------------
    @property
    def padded_shape(self) -> tuple[int, int, int]:
        """Shape of a padded image: (S rows, S columns, z slices), z fastest — the layout every
        view's sparse rotation and the CDR's FFTs work on without transposes."""
        return (self.geometry.side, self.geometry.side, self.geometry.shape_zyx[0])

    def pad(self, image: NDArray[np.float64]) -> NDArray[np.float64]:
        """The image ([z, y, x]) on the padded square grid (:attr:`padded_shape`), zero outside
        the circular FOV."""
        padded = np.pad(image.astype(np.float64), ((0, 0), self._pad_y, self._pad_x))
        square = np.ascontiguousarray(padded.transpose(1, 2, 0))
        square *= self.fov_mask[:, :, None]
        return square

    def crop(self, padded: NDArray[np.float64]) -> NDArray[np.float64]:
        """The image grid's part ([z, y, x]) of a padded volume."""
        _, ny, nx = self.geometry.shape_zyx
        y0, x0 = self._pad_y[0], self._pad_x[0]
        cropped: NDArray[np.float64] = np.ascontiguousarray(
            padded[y0 : y0 + ny, x0 : x0 + nx, :].transpose(2, 0, 1)
        )
        return cropped

    def _rotate(
        self, volume: NDArray[np.float64], view: int, *, inverse: bool
    ) -> NDArray[np.float64]:
        """Rotate every z plane of a padded volume for ``view`` (``inverse``: the transpose)."""
        matrix = self._rotations_t[view] if inverse else self._rotations[view]
        side, _, nz = volume.shape
        rotated = np.asarray(matrix @ volume.reshape(side * side, nz))
        return rotated.reshape(side, side, nz)

    def _attenuation_factors(
        self, mu_square: NDArray[np.float64], view: int
    ) -> NDArray[np.float32]:
        mu = self._rotate(mu_square, view, inverse=False)
        toward_detector = np.cumsum(mu[::-1], axis=0)[::-1]  # Σ_{j' ≥ j} over rows j
        path = self.geometry.voxel_mm * (toward_detector - 0.5 * mu)
        factors: NDArray[np.float32] = np.exp(-path).astype(np.float32)
        return factors

    # --- CDR ----------------------------------------------------------------------------------
    def _cdr_transfer(
        self, camera: CameraModel
    ) -> tuple[NDArray[np.float32], NDArray[np.float32], int, int]:
        geometry = self.geometry
        voxel = geometry.voxel_mm
        sigmas_mm = (
            np.array([camera.system_fwhm_mm(float(d)) for d in geometry.depth_distances_mm()])
            / FWHM_PER_SIGMA
        )
        pad = math.ceil(CDR_TRUNCATE_SIGMAS * float(sigmas_mm.max()) / voxel)
        n_x = fft.next_fast_len(geometry.side + pad)
        n_z = fft.next_fast_len(geometry.shape_zyx[0] + pad, real=True)
        f_x = fft.fftfreq(n_x, d=voxel)  # cycles/mm
        f_z = fft.rfftfreq(n_z, d=voxel)
        # float32 transfer functions: the FFTs run in single precision (half the time of
        # double; the projections' relative rounding error stays ~1e-6).
        h_x = np.exp(-2.0 * np.pi**2 * sigmas_mm[:, None] ** 2 * f_x[None, :] ** 2)
        h_z = np.exp(-2.0 * np.pi**2 * sigmas_mm[:, None] ** 2 * f_z[None, :] ** 2)
        return h_x.astype(np.float32), h_z.astype(np.float32), n_x, n_z

    # --- projection ---------------------------------------------------------------------------
    def forward_view(
        self, padded: NDArray[np.float64], view: int, *, cdr: bool = True
    ) -> NDArray[np.float64]:
        """Projection (z bins, S bins) of a padded image (:meth:`pad`) at ``view``."""
        rotated = self._rotate(padded, view, inverse=False)
        if self._attenuation is not None:
            rotated *= self._attenuation[view]
        if not cdr or self._cdr is None:
            plain: NDArray[np.float64] = np.ascontiguousarray(rotated.sum(axis=0).T)
            return plain
        h_x, h_z, n_x, n_z = self._cdr
        spectrum = fft.rfft2(rotated.astype(np.float32), s=(n_x, n_z), axes=(1, 2), workers=-1)
        summed = np.einsum("jk,jkl,jl->kl", h_x, spectrum, h_z)
        projection = fft.irfft2(summed, s=(n_x, n_z), workers=-1)
        cropped: NDArray[np.float64] = np.ascontiguousarray(
            projection[: self.geometry.side, : self.geometry.shape_zyx[0]].T, dtype=np.float64
        )
        return cropped

    def back_view(
        self, projection: NDArray[np.float64], view: int, *, cdr: bool = True
    ) -> NDArray[np.float64]:
        """Transpose of :meth:`forward_view`: a padded volume (:attr:`padded_shape`)."""
        side, _, nz = self.padded_shape
        bins = projection.T  # (S transaxial bins, z bins)
        if not cdr or self._cdr is None:
            spread = np.broadcast_to(bins[None, :, :], (side, side, nz)).astype(np.float64)
        else:
            h_x, h_z, n_x, n_z = self._cdr
            spectrum = fft.rfft2(bins.astype(np.float32), s=(n_x, n_z), workers=-1)
            planes = spectrum[None, :, :] * h_x[:, :, None] * h_z[:, None, :]
            spread = fft.irfft2(planes, s=(n_x, n_z), axes=(1, 2), workers=-1)[:, :side, :nz]
        if self._attenuation is not None:
            spread = spread * self._attenuation[view]
        back = self._rotate(np.ascontiguousarray(spread, dtype=np.float64), view, inverse=True)
        back *= self.fov_mask[:, :, None]
        return back

    def forward(self, image: NDArray[np.float64], *, cdr: bool = True) -> NDArray[np.float64]:
        """All views of ``image`` (image grid): :attr:`ProjectionGeometry.projection_shape`."""
        padded = self.pad(image)
        return np.stack(
            [self.forward_view(padded, view, cdr=cdr) for view in range(self.geometry.n_views)]
        )

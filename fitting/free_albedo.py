"""A smooth per-vertex albedo for stage 2 on models without an albedo model (the Surrey Face Model).

Such a model has shape and expression bases but no albedo model: rendering its constant mean colour ``ā``
leaves the lighting to absorb all of the skin's colour variation, and the shape to absorb what the lighting
cannot. Instead stage 2 fits a free RGB albedo ``a = ā + d`` per vertex, regularised by

    ``E_alb(d) = λ_s · Σ_{(i,j) ∈ edges} ‖d_i − d_j‖² + λ_p · (1/V) Σ_i ‖d_i‖²``

a graph-Laplacian smoothness over the mesh's edges (on a fairly regular mesh a resolution-free Dirichlet energy
``∫‖∇d‖²``; for the Surrey model's uniform mean colour the smoothness of the albedo itself) plus a weak pull to
the mean colour (a mean over the vertices, on the scale of the per-texel mean texture term).

**Scale.** Albedo and lighting are determined only together, up to a factor per channel (``k·a`` under ``L/k``
renders alike), so the albedo's mean over the mesh is fixed at the mean colour's (``Σ_i d_i = 0``): the free
albedo redistributes colour over the face, and the SH lighting (solved per channel) carries the overall
brightness and tint. (Fixing the SH DC term instead would tie the brightness to the albedo, whose level only the
weak prior would hold.) Low-frequency albedo and SH shading remain hard to tell apart, by nature: the
regulariser decides what is albedo.

**Closed form.** Let ``Φ`` be the ``K`` smoothest eigenvectors of the mesh's graph Laplacian ``L`` orthogonal to
the constant vector (its *manifold harmonics*: ``ΦᵀΦ = I``, ``ΦᵀLΦ = diag(μ)``, ``Φᵀ1 = 0``). With
``d_c = Φ·β_c`` per channel ``c`` the mean is fixed and ``E_alb = Σ_c Σ_k (λ_s·μ_k + λ_p/V)·β_ck²``, diagonal:
the free albedo is an albedo model in its own right, basis ``Φ`` in each channel and
``σ_k = (λ_s·μ_k + λ_p/V)^(-1/2)`` (:class:`FreeAlbedoModel`), which stage 2 fits like any other — the albedo
group solved exactly for the current shape and lighting, by IRLS for l1 and l2,1 — only per channel
(:func:`solve_free_albedo`), since a channel's rendered colour depends on its own coefficients alone. Keeping
``K`` modes is a further smoothness: those left out are the ones the regulariser damps most (on the Surrey
model, mode 64 has ``μ ≈ 0.4``, a wavelength of roughly 4 cm on the face).
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

import numpy as np
import scipy.sparse
import scipy.sparse.linalg
import torch

from diffface.checks import check_shape
from diffface.morphable_model import MorphableModel
from diffface.renderers.uv_frame import UVFrame

from .active_vertices import ActiveVertices
from .frame_groups import FrameGroups
from .least_squares import irls_weights, normal_equations, solve_normal_equations

DENSE_EIGEN_MAX_VERTICES = 800  # up to this, a dense eigendecomposition (exact, and faster than ARPACK)
MEMO_SIZE = 4
# (triangles' digest, vertices, modes) -> smooth_modes(...): a batched job fits one mesh many times, and ARPACK
# takes seconds on a Surrey- or BFM-sized mesh; a memo of the pure function, not a setting
_modes_memo: dict[tuple[str, int, int], tuple[np.ndarray, np.ndarray]] = {}


def mesh_edges(triangles: torch.Tensor) -> torch.Tensor:
    """The unique undirected edges of a triangle mesh, as sorted pairs.

    Shape:
        triangles: (F, 3) -> (E, 2) long.

    Example:
        >>> mesh_edges(torch.tensor([[0, 1, 2], [2, 1, 3]])).tolist()
        [[0, 1], [0, 2], [1, 2], [1, 3], [2, 3]]
    """
    check_shape(triangles, ["F", 3], "triangles")
    t = triangles.long()
    pairs = torch.cat([t[:, [0, 1]], t[:, [1, 2]], t[:, [2, 0]]]).sort(dim=1).values
    return torch.unique(pairs, dim=0)


def graph_laplacian(triangles: torch.Tensor, num_vertices: int) -> scipy.sparse.csr_matrix:
    """The mesh's combinatorial graph Laplacian ``L = D − A`` (``xᵀLx = Σ_edges (x_i − x_j)²``), float64.

    Shape:
        triangles: (F, 3) -> (V, V) sparse.
    """
    edges = mesh_edges(triangles).cpu().numpy()
    ones = np.ones(len(edges))
    adjacency = scipy.sparse.coo_matrix((ones, (edges[:, 0], edges[:, 1])), shape=(num_vertices, num_vertices))
    adjacency = (adjacency + adjacency.T).tocsr()
    return (scipy.sparse.diags(np.asarray(adjacency.sum(1)).ravel()) - adjacency).tocsr()


def smooth_modes(triangles: torch.Tensor, num_vertices: int, modes: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``modes`` smoothest eigenvectors of the mesh's graph Laplacian orthogonal to the constant vector, and
    their eigenvalues (ascending): ``ΦᵀΦ = I``, ``ΦᵀLΦ = diag(μ)``, ``Φᵀ1 = 0``. Deterministic (a fixed ARPACK
    start vector; a dense solver on small meshes). Fewer modes when the mesh has fewer vertices.

    Shape:
        triangles: (F, 3) -> Φ (V, K) float64, μ (K,) float64.

    Example:
        >>> basis, eigenvalues = smooth_modes(model.triangles, model.num_vertices, 64)
    """
    if modes < 1:
        raise ValueError(f"modes must be at least 1, got {modes}")
    laplacian = graph_laplacian(triangles, num_vertices)
    wanted = min(modes + 1, num_vertices)  # one more: the constant vector is projected out below
    if num_vertices <= DENSE_EIGEN_MAX_VERTICES or wanted >= num_vertices - 1:
        _, vectors = np.linalg.eigh(laplacian.toarray())
        vectors = vectors[:, :wanted]
    else:  # shift-invert about a point just below the spectrum: the smallest eigenvalues converge first
        start = np.random.default_rng(0).standard_normal(num_vertices)
        _, vectors = scipy.sparse.linalg.eigsh(laplacian.tocsc(), k=wanted, sigma=-1e-3, which="LM", v0=start)
    # project out the constant vector (its eigenvalue is 0), keep an orthonormal basis of what remains, and
    # diagonalise L on it (the eigenvectors again on a connected mesh; also right for several components)
    vectors = vectors - vectors.mean(0, keepdims=True)
    basis, singular, _ = np.linalg.svd(vectors, full_matrices=False)
    basis = basis[:, singular > 0.5 * singular.max()] if len(singular) else basis
    eigenvalues, rotation = np.linalg.eigh(basis.T @ (laplacian @ basis))
    keep = min(modes, basis.shape[1])
    return (basis @ rotation)[:, :keep], np.clip(eigenvalues[:keep], 0.0, None)


def memoised_smooth_modes(triangles: torch.Tensor, num_vertices: int, modes: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`smooth_modes`, computed once per mesh and process (the last :data:`MEMO_SIZE` meshes kept)."""
    key = (hashlib.sha256(triangles.cpu().numpy().tobytes()).hexdigest(), num_vertices, modes)
    if key not in _modes_memo:
        while len(_modes_memo) >= MEMO_SIZE:
            _modes_memo.pop(next(iter(_modes_memo)))
        _modes_memo[key] = smooth_modes(triangles, num_vertices, modes)
    return _modes_memo[key]


class FreeAlbedoModel(MorphableModel):
    """A model without an albedo model, given the smooth free albedo as one (module docstring).

    Albedo coefficients ``β (3K,)`` are channel-major: ``β[c·K + k]`` scales mode ``k`` in channel ``c``.
    ``albedo_std`` is the regulariser's ``σ``, so the stage-2 albedo prior ``Σ (β/σ)²`` *is* ``E_alb`` (with
    ``r_beta = 1``). Shape, expression, landmarks and the fingerprint are the model's own.

    Args:
        model: a model with ``tex_dims == 0``.
        modes: ``K``, the smooth modes per channel.
        smoothness: ``λ_s``; prior: ``λ_p``.

    Attributes:
        modes: K; eigenvalues: (K,) the Laplacian's ``μ``.

    Example:
        >>> free = FreeAlbedoModel(load_morphable_model("sfm.npz"), modes=64, smoothness=1e-2, prior=1.0)
        >>> free.albedo(torch.zeros(1, free.tex_dims)).shape   # the mean colour
        torch.Size([1, 3448, 3])
    """

    def __init__(self, model: MorphableModel, modes: int, smoothness: float, prior: float):
        if model.tex_dims != 0:
            raise ValueError(f"model {model.name!r} has an albedo model ({model.tex_dims} modes); "
                             "a free albedo is for models without one")
        if smoothness < 0 or prior < 0 or smoothness + prior <= 0:
            raise ValueError(f"free albedo: smoothness ({smoothness}) and prior ({prior}) must be >= 0, "
                             "not both 0")
        V = model.num_vertices
        basis, eigenvalues = memoised_smooth_modes(model.triangles, V, modes)
        K = basis.shape[1]
        channel_basis = np.zeros((V, 3, 3 * K))
        for c in range(3):
            channel_basis[:, c, c * K:(c + 1) * K] = basis
        std = 1.0 / np.sqrt(np.maximum(smoothness * eigenvalues + prior / V, 1e-30))
        data = replace(model.to_data(), albedo_basis=channel_basis, albedo_std=np.tile(std, 3), has_albedo=True)
        super().__init__(data)
        self.modes = K
        self.register_buffer("eigenvalues", torch.from_numpy(eigenvalues.astype(np.float32)))
        self.to(model.mean_shape.device)


def solve_free_albedo(model: FreeAlbedoModel | ActiveVertices, uv_frame: UVFrame, shading: torch.Tensor,
                      target_uv: torch.Tensor, mask_uv: torch.Tensor, r_beta: float = 1.0, norm: str = "l2",
                      iterations: int = 3, groups: FrameGroups | None = None) -> torch.Tensor:
    """Free-albedo coefficients minimising ``E_tex + r_beta·Σ(β/σ)²`` for fixed shape and lighting: the problem
    of :func:`~diffface.fitting.texture_fitting.solve_albedo` (its reference in the tests), solved one channel at
    a time (its design is block-diagonal over the channels) on the texels some sample compares, the design built
    from the modes at each texel's three vertices. l1 and l2,1 by IRLS (the l2,1 weights couple the channels
    between iterations). With ``groups``: one albedo per subject.

    Args:
        model: a :class:`FreeAlbedoModel`, or its :class:`~diffface.fitting.active_vertices.ActiveVertices`
            (the ``V`` vertices ``shading`` covers and ``uv_frame`` maps).

    Shape:
        shading: (B, V, 3) SH irradiance per vertex; target_uv: (B, 3, S, S); mask_uv: (B, 1, S, S)
        -> (B, 3K), or (num_subjects, 3K) with groups, channel-major.
    """
    check_shape(shading, ["B", "V", 3], "shading")
    B, V = shading.shape[:2]
    check_shape(target_uv, [B, 3, "S", "S"], "target_uv")
    check_shape(mask_uv, [B, 1, target_uv.shape[2], target_uv.shape[3]], "mask_uv")
    K, dtype = model.tex_dims // 3, shading.dtype
    basis = model.albedo_basis.view(V, 3, 3 * K)[:, 0, :K].to(dtype)  # Φ on these vertices, the same per channel
    texels = torch.nonzero(mask_uv.flatten(1).any(0))[:, 0]  # compared by some sample: the others weigh 0
    corners = uv_frame.texel_vertices.reshape(-1, 3)[texels]  # (T, 3)
    shade = shading[:, corners] * uv_frame.texel_weights.reshape(-1, 3)[texels].to(dtype)[None, :, :, None]
    design = torch.einsum("btjc,tjk->bctk", shade, basis[corners])  # (B, 3, T, K): texel colour per unit β
    base = torch.einsum("btjc,tjc->bct", shade, model.albedo_mean.to(dtype)[corners])  # the mean colour's
    target = target_uv.flatten(2)[..., texels]
    mask = mask_uv.flatten(2)[..., texels]
    count = mask_uv.sum((1, 2, 3)).clamp_min(1.0)[:, None, None]
    ridge = r_beta / model.albedo_std[:K].to(dtype).clamp_min(1e-12).pow(2)
    weights = torch.ones_like(target)
    for _ in range(iterations if norm != "l2" else 1):
        normal, rhs = normal_equations(design.flatten(0, 1), (target - base).flatten(0, 1),
                                       (weights * mask / count).flatten(0, 1))
        normal, rhs = normal.view(B, 3, K, K), rhs.view(B, 3, K)
        if groups is not None:
            normal, rhs = groups.sum_per_subject(normal), groups.sum_per_subject(rhs)
        beta = solve_normal_equations(normal.flatten(0, 1), rhs.flatten(0, 1), ridge).view(-1, 3 * K)
        per_frame = beta if groups is None else beta.index_select(0, groups.subject)
        rendered = base + (design @ per_frame.view(B, 3, K, 1))[..., 0]
        weights = irls_weights((target - rendered) * mask, norm)
    return beta

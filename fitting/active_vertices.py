"""The vertices stage 2 actually looks at, so that its energy is computed on them alone.

The texture term reads per-vertex values only through the UV frame, whose texels blend the three
vertices of one triangle each; the landmark term reads the landmark vertices and the contour lines.
On a dense model most vertices are neither: at a 64×64 UV frame a BFM-sized mesh (35,709 vertices)
has about 12,700 *rendered* vertices. Their normals need their one-ring, so the shape is evaluated
on the rendered vertices plus their neighbours, the normals only from the triangles around the
rendered vertices, and shading, visibility, image sampling and the UV frame only on the rendered
vertices. The energy is the same as on the full mesh (same terms, same texels; only the order of
floating-point sums differs), its cost scales with what is looked at instead of with the mesh.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from diffface.geometry import vertex_normals
from diffface.morphable_model import MorphableModel
from diffface.renderers.uv_frame import UVFrame


@dataclass
class ActiveVertices:
    """A morphable model cut down to what stage 2 reads (module docstring).

    Local vertex ``i`` is model vertex ``vertices[i]``; the first ``num_rendered`` are shaded, sampled
    and compared (every texel's vertices, the landmark vertices and the contour lines), the rest only
    complete the rendered vertices' one-rings for their normals.

    Shape:
        vertices: (N,) model vertex ids; mean: (1, 3·N) and basis_t: (K_id + K_exp, 3·N), vertex-major
        (x, y, z of vertex 0, then of vertex 1, ...); triangles: (T, 3) local, every triangle touching a
        rendered vertex; albedo_mean: (R, 3); albedo_basis: (3·R, K_tex); albedo_std: (K_tex,);
        landmark_indices: (68,) local (-1: undefined); contour_landmarks: (C,); contour_lines: (C, K)
        local (-1: padding); uv_frame maps (B, R, C) values to (B, C, S, S).
    """

    vertices: torch.Tensor
    num_rendered: int
    mean: torch.Tensor
    basis_t: torch.Tensor
    triangles: torch.Tensor
    albedo_mean: torch.Tensor
    albedo_basis: torch.Tensor
    albedo_std: torch.Tensor
    landmark_indices: torch.Tensor
    contour_landmarks: torch.Tensor
    contour_lines: torch.Tensor
    uv_frame: UVFrame

    @property
    def tex_dims(self) -> int:
        return int(self.albedo_std.shape[0])

    @staticmethod
    def build(model: MorphableModel, uv_size: int, restrict: bool = True) -> "ActiveVertices":
        """The active vertices of ``model`` for a ``uv_size`` UV frame (``restrict=False``: all of them).

        Example:
            >>> active = ActiveVertices.build(model, 64)
            >>> vertices = active.shape(alpha_id, alpha_exp)       # (B, N, 3)
            >>> normals = active.normals(vertices)                 # (B, R, 3)
        """
        full_frame = UVFrame(model.uv, model.triangles, uv_size).to(model.mean_shape.device)
        V, triangles = model.num_vertices, model.triangles
        if restrict:
            read = torch.cat([full_frame.texel_vertices[full_frame.mask].flatten(),
                              model.landmark_indices[model.landmark_indices >= 0],
                              model.contour_lines[model.contour_lines >= 0]])
            rendered = torch.unique(read)
            is_rendered = torch.zeros(V, dtype=torch.bool, device=triangles.device)
            is_rendered[rendered] = True
            triangles = triangles[is_rendered[triangles].any(1)]
            in_ring = torch.zeros(V, dtype=torch.bool, device=triangles.device)
            in_ring[triangles.flatten()] = True
            vertices = torch.cat([rendered, torch.nonzero(in_ring & ~is_rendered)[:, 0]])
        else:
            rendered = vertices = torch.arange(V, device=triangles.device)
        local = torch.full((V,), -1, dtype=torch.long, device=triangles.device)
        local[vertices] = torch.arange(len(vertices), device=triangles.device)
        R = len(rendered)

        def relabel(indices: torch.Tensor) -> torch.Tensor:  # -1 (undefined, padding) stays -1
            return torch.where(indices >= 0, local[indices.clamp_min(0)], indices)

        rows = lambda basis: basis.view(V, 3, -1)[vertices].reshape(3 * len(vertices), -1)  # noqa: E731
        basis_t = torch.cat([rows(model.id_basis), rows(model.exp_basis)], 1).T.contiguous()
        texel_vertices = torch.where(full_frame.mask[..., None], relabel(full_frame.texel_vertices),
                                     torch.zeros_like(full_frame.texel_vertices))
        return ActiveVertices(
            vertices=vertices, num_rendered=R, mean=model.mean_shape[vertices].reshape(1, -1), basis_t=basis_t,
            triangles=relabel(triangles), albedo_mean=model.albedo_mean[rendered],
            albedo_basis=model.albedo_basis.view(V, 3, -1)[rendered].reshape(3 * R, -1),
            albedo_std=model.albedo_std, landmark_indices=relabel(model.landmark_indices),
            contour_landmarks=model.contour_landmarks, contour_lines=relabel(model.contour_lines),
            uv_frame=UVFrame.from_texel_map(texel_vertices, full_frame.texel_weights, full_frame.mask))

    def shape(self, alpha_id: torch.Tensor, alpha_exp: torch.Tensor) -> torch.Tensor:
        """``M + A_id·α_id + A_exp·α_exp`` on the active vertices. Shape: (B, K_id), (B, K_exp) -> (B, N, 3)."""
        coefficients = torch.cat([alpha_id, alpha_exp], -1).to(self.basis_t.dtype)
        return torch.addmm(self.mean, coefficients, self.basis_t).view(alpha_id.shape[0], -1, 3)

    def normals(self, vertices: torch.Tensor) -> torch.Tensor:
        """Model-space unit normals of the rendered vertices. Shape: (B, N, 3) -> (B, R, 3)."""
        return vertex_normals(vertices, self.triangles)[:, :self.num_rendered]

    def albedo(self, beta: torch.Tensor) -> torch.Tensor:
        """``T0 + B·β`` on the rendered vertices. Shape: (B, K_tex) -> (B, R, 3)."""
        if self.tex_dims == 0:
            return self.albedo_mean.expand(beta.shape[0], -1, -1)
        return torch.addmm(self.albedo_mean.reshape(1, -1), beta, self.albedo_basis.T).view(beta.shape[0], -1, 3)

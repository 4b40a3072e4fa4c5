"""diffface.renderers: differentiable rendering layers (installed as ``diffface.renderers``).

A renderer is composed of swappable parts, as in PyTorch3D: a rasterizer producing
:class:`Fragments` (built-in pure PyTorch, or PyTorch3D's) and a shader consuming them (SH-lit
albedo per vertex or per pixel, normals, depth, silhouette, attribute interpolation). The
method's texture term uses :class:`VertexRenderer`, which needs no rasterizer.

Example:
    >>> from diffface.renderers import MeshRenderer, MeshRasterizer, RasterSettings, SHShader
    >>> renderer = MeshRenderer(MeshRasterizer(RasterSettings(image_size=224)), SHShader())
"""

from .face_renderer import FaceRenderer
from .fragments import BACKGROUND_DEPTH, Fragments
from .mesh_renderer import MeshRenderer, RenderOutput, lighting_frame_normals
from .pytorch3d_backend import (PyTorch3DRasterizer, make_rasterizer, pytorch3d_available,
                                rasterize_meshes_pytorch3d, select_backend)
from .rasterize import MeshRasterizer, RasterSettings, interpolate_attributes, rasterize_meshes
from .shaders import (AttributeShader, DepthShader, NormalShader, ShadingInput, SHShader, SilhouetteShader,
                      shade_sh)
from .uv_frame import UVFrame, uv_texel_map, vertices_to_uv_image
from .vertex_renderer import (VertexObservation, VertexRenderer, VertexRenderOutput, depth_visibility,
                              normal_visibility, observe_vertices, sample_image_at_points)

__all__ = [
    "AttributeShader", "BACKGROUND_DEPTH", "DepthShader", "FaceRenderer", "Fragments", "MeshRasterizer",
    "MeshRenderer", "NormalShader", "PyTorch3DRasterizer", "RasterSettings", "RenderOutput", "SHShader",
    "ShadingInput", "SilhouetteShader", "UVFrame", "VertexObservation", "VertexRenderOutput", "VertexRenderer",
    "depth_visibility", "interpolate_attributes", "lighting_frame_normals", "make_rasterizer", "normal_visibility", "observe_vertices",
    "pytorch3d_available", "rasterize_meshes", "rasterize_meshes_pytorch3d", "sample_image_at_points",
    "select_backend", "shade_sh", "uv_texel_map", "vertices_to_uv_image",
]

"""Render the README's picture of the built-in model with diffface's renderer layers.

One row of panels, all from the same rasterization of the built-in model's mean face (yaw 30°,
pitch 10°, a light from the upper left) except the last: SH-lit albedo shaded per vertex (the
method), per pixel, interpolated normals, depth, UV coordinates; then a random face with a
smile and an open jaw, per-pixel shaded.

Usage: python tools/render_readme_image.py [--out docs/builtin_render.png] [--size 256]
"""

from __future__ import annotations

import argparse
import math
from dataclasses import replace
from pathlib import Path

import torch
from PIL import Image

from diffface import load_morphable_model
from diffface.lighting import ambient_sh_coefficients
from diffface.report_images import save_panel_grid, to_uint8_image
from diffface.renderers import (AttributeShader, DepthShader, FaceRenderer, MeshRasterizer, MeshRenderer,
                                NormalShader, RasterSettings, SHShader)


def scene(model, size: int, batch: int = 1, seed: int = 0):
    """Mean-shape (or random, with expressions) parameters framed in a ``size`` image."""
    params = model.layout.zeros(batch)
    params.angles[:] = torch.tensor([math.radians(10.0), math.radians(30.0), 0.0])
    params.translation[:, 2] = 1100.0
    params.translation[:, 1] = -8.0
    params.focal[:] = 1150.0 * size / 256
    params.principal_point[:] = (size - 1) / 2
    params = replace(params, sh=ambient_sh_coefficients(batch, ambient=0.75, direction=(-0.5, 0.5, 1.0),
                                                        directional=0.45))
    if seed:
        g = torch.Generator().manual_seed(seed)
        alpha_id, _, beta = model.sample_coefficients(batch, 0.8, generator=g)
        params = replace(params, alpha_id=alpha_id, beta=beta)
        params.translation[:, 0] = -12.0
        names = list(model.metadata.get("expression_names", []))
        for name, weight in (("smile_left", 1.5), ("smile_right", 1.5), ("jaw_open", 1.2)):
            if name in names:
                params.alpha_exp[:, names.index(name)] = weight * model.exp_std[names.index(name)]
    return params


def render_panels(size: int) -> list[Image.Image]:
    model = load_morphable_model("builtin")
    params = scene(model, size)
    vertices, albedo = model.from_parameters(params)
    camera = dict(angles=params.angles, translation=params.translation, focal=params.focal,
                  principal_point=params.principal_point)
    rasterizer = MeshRasterizer(RasterSettings(image_size=size, cull_backfaces=True))
    fragments = None
    panels = []
    shaders = [SHShader(), SHShader(per_pixel=True), NormalShader(as_colour=True), DepthShader(), AttributeShader()]
    uv = model.uv[None].to(vertices.dtype)
    attributes = torch.cat([uv, torch.zeros_like(uv[..., :1])], -1)  # UV as red/green
    for shader in shaders:
        out = MeshRenderer(rasterizer, shader)(vertices, model.triangles, albedo, params.sh, attributes=attributes,
                                              **camera)
        fragments = out.fragments
        image = out.images
        if isinstance(shader, DepthShader):
            depth = image[..., 0]
            near, far = depth[fragments.mask].min(), depth[fragments.mask].max()
            image = torch.where(fragments.mask, 1 - 0.8 * (depth - near) / (far - near), 0.0)[..., None].expand(-1, -1, -1, 3)
        panels.append(Image.fromarray(to_uint8_image(image[0])))
    varied = scene(model, size, seed=3)
    out = FaceRenderer(model, size, per_pixel=True, backend="builtin")(varied)
    panels.append(Image.fromarray(to_uint8_image(out.images[0])))
    return panels


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="docs/builtin_render.png", help="PNG to write")
    parser.add_argument("--size", type=int, default=256, help="side of each panel in pixels")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    panels = render_panels(args.size)
    save_panel_grid(panels, out, columns=len(panels))
    print(f"wrote {out} ({len(panels)} panels of {args.size} px)")


if __name__ == "__main__":
    main()

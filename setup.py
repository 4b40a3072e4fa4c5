"""Packaging for diffface.

``renderers/``, ``fitting/`` and ``networks/`` live at the repository top level (the user's
layout) and are installed as ``diffface.renderers``, ``diffface.fitting`` and
``diffface.networks`` through ``package_dir``.
"""

from setuptools import find_packages, setup

TOP_LEVEL_SUBPACKAGES = ("renderers", "fitting", "networks")


def _packages():
    packages = [p for p in find_packages(include=["diffface", "diffface.*"])]
    package_dir = {"diffface": "diffface"}
    for sub in TOP_LEVEL_SUBPACKAGES:
        packages.append(f"diffface.{sub}")
        package_dir[f"diffface.{sub}"] = sub
        for nested in find_packages(where=sub):
            packages.append(f"diffface.{sub}.{nested}")
            package_dir[f"diffface.{sub}.{nested}"] = f"{sub}/{nested.replace('.', '/')}"
    return packages, package_dir


PACKAGES, PACKAGE_DIR = _packages()

setup(
    name="diffface",
    version="0.1.0",
    description="Monocular 3D face reconstruction around a differentiable renderer",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=PACKAGES,
    package_dir=PACKAGE_DIR,
    # the shipped networks and how each was made (tools/make_pretrained.sh)
    package_data={"diffface.networks": ["pretrained/*.pt", "pretrained/*.json"]},
    install_requires=[
        "torch>=2.1",
        "numpy>=1.23",
        "scipy>=1.9",
        "numba>=0.60",
        "kornia>=0.7",
        "tensorboard>=2.12",
        "tqdm>=4.60",
        "pyyaml>=6.0",
        "pillow>=9.0",
    ],
    extras_require={
        "formats": ["h5py>=3.0"],
        "eos": ["eos-py>=1.4"],
        "landmarks": ["face-alignment>=1.4", "dlib-bin>=19.24", "face-recognition-models>=0.3"],
        # the torch.export-based ONNX exporter needs onnxscript (and onnxscript onnx >= 1.17)
        "export": ["onnx>=1.17", "onnxscript>=0.7", "onnxruntime>=1.17"],
        # the ExecuTorch (.pte, XNNPACK) path; 1.5.1 installs beside torch 2.13 without replacing it
        "executorch": ["executorch==1.5.1"],
        # TensorRT 10.x (BuilderFlag.FP16) and 11.x (strongly typed networks) are both supported; needs a CUDA GPU
        "tensorrt": ["tensorrt>=10,<12"],
        "pytorch3d": ["pipablepytorch3d==0.7.6"],
        # `diffface curate` itself needs only the standard library; Playwright drives a browser for its
        # tests and the README screenshot (with the system's Chromium: apt-get install chromium)
        "curate": ["playwright>=1.40"],
        # PyAV, whose wheels bundle FFmpeg: reading videos, writing .mp4/.webm (diffface.video_io)
        "video": ["av>=12"],
        "dev": ["pytest>=7", "h5py>=3.0", "eos-py>=1.4", "face-alignment>=1.4", "dlib-bin>=19.24",
                "face-recognition-models>=0.3", "playwright>=1.40", "onnx>=1.17", "onnxscript>=0.7",
                "onnxruntime>=1.17", "executorch==1.5.1", "av>=12"],
    },
    entry_points={"console_scripts": ["diffface=diffface.cli.main:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Image Recognition",
    ],
)

"""Screenshot ``diffface curate`` for the README: a small synthetic dataset, a few decisions, headless Chromium.

Builds 12 synthetic faces (``diffface synth``), turns them into a dataset (``diffface build-dataset``),
serves it, rejects and keeps a few cards with the page's own keys, and saves the screenshot.
Needs Playwright (``pip install playwright``) and the system's Chromium (``apt-get install chromium``);
nothing is downloaded.

Usage: python tools/curation_screenshot.py [--out docs/curation.png] [--chromium /usr/bin/chromium]
"""

from __future__ import annotations

import argparse
import io
import tempfile
import threading
from pathlib import Path

from PIL import Image

from diffface.app.dataset.build import BuildConfig, build_dataset
from diffface.app.dataset.curation import CurationServer
from diffface.app.synth_benchmark import SynthBenchmarkConfig, benchmark_scene, generate_benchmark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/curation.png"))
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--faces", type=int, default=12)
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        synth, dataset = Path(tmp) / "synth", Path(tmp) / "dataset"
        generate_benchmark(synth, SynthBenchmarkConfig(num_faces=args.faces, scene=benchmark_scene(192, 2)))
        build_dataset(synth, dataset, BuildConfig(crop_size=96, preview_size=160))
        server = CurationServer(dataset, port=0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=args.chromium, headless=True)
                page = browser.new_page(viewport={"width": 1420, "height": 760})
                page.goto(server.url)
                page.wait_for_selector(".card img")
                page.wait_for_load_state("networkidle")
                for key in ("r", "k", "k", "x", "ArrowRight"):  # worst first: reject, keep, keep, reject, move on
                    page.keyboard.press(key)
                    page.wait_for_function("() => window.curation.pending === 0")
                page.wait_for_timeout(300)
                args.out.parent.mkdir(parents=True, exist_ok=True)
                png = page.screenshot()
                browser.close()
        finally:
            server.shutdown()
            server.server_close()
    # a 256-colour palette keeps the README picture small
    Image.open(io.BytesIO(png)).convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT).save(
        args.out, optimize=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

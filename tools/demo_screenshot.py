"""Screenshot a demo report in headless Chromium.

``python tools/demo_screenshot.py demo_out/report.html docs/demo_report.png``

Needs the ``playwright`` Python package and a Chromium binary (``apt-get install chromium``; no browser
download: the system one is used). The logic lives in :func:`diffface.app.report_html.screenshot_report`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from diffface.app.report_html import screenshot_report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="a demo's report.html")
    parser.add_argument("out", type=Path, help="PNG file to write")
    parser.add_argument("--chromium", default="/usr/bin/chromium", help="Chromium executable")
    parser.add_argument("--width", type=int, default=1200, help="viewport width (pixels)")
    parser.add_argument("--height", type=int, default=900, help="viewport height (pixels)")
    parser.add_argument("--full-page", action="store_true", help="the whole page, not just the viewport")
    args = parser.parse_args()
    print(json.dumps(screenshot_report(args.report, args.out, args.chromium, args.width, args.height,
                                       args.full_page)))


if __name__ == "__main__":
    main()

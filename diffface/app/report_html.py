"""The demo's report as one self-contained HTML file: inline CSS, images embedded as base64 PNG, no script.

Sections: the figures table (one row per method), the CED plot, a grid of held-out photos with their
landmarks and rendered reconstructions, the export parity, the time per step and the commands that
reproduce each step. Nothing in the page refers to another file or to the network, so it can be
mailed or attached to an issue as it is.
"""

from __future__ import annotations

import base64
import html
import json
import math
from pathlib import Path

from diffface.atomic_io import write_text_atomic

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto; max-width: 70rem;
       color: #1d2330; line-height: 1.45; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; } h2 { font-size: 1.2rem; margin-top: 2rem;
     border-bottom: 1px solid #d5dae3; padding-bottom: 0.2rem; }
.lead { color: #4a5468; margin-top: 0; }
table { border-collapse: collapse; margin: 0.6rem 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #d5dae3; padding: 0.3rem 0.7rem; text-align: right; }
th { background: #eef1f6; } td:first-child, th:first-child { text-align: left; }
figure { margin: 0.8rem 0; } figcaption { color: #4a5468; font-size: 0.9rem; max-width: 60rem; }
img.plot { max-width: 36rem; width: 100%; border: 1px solid #d5dae3; }
img.grid { max-width: 100%; image-rendering: pixelated; border: 1px solid #d5dae3; }
pre { white-space: pre-wrap; word-break: break-all; background: #f5f7fa; border: 1px solid #d5dae3;
      padding: 0.6rem; font-size: 0.82rem; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: 0.5rem 0.8rem; }
.text { display: block; text-align: left; }
.ok { color: #17803d; } .fail { color: #b42318; }
"""

# what diffface.evaluation.metrics.normalized_distance_d computes (the report and the demo's table say it)
D_DEFINITION = ("d = 100·‖S − S_gt‖² / ‖S_gt − mean(S_gt)‖²: the squared distance of the ICP-aligned "
                "reconstruction's vertices S to their closest points S_gt on the ground-truth surface, in "
                "percent of the squared spread of those points about their centroid (squared Frobenius norms)")

TABLE_COLUMNS = (  # report key, header, format
    ("n", "n", "{:d}"), ("auc", "AUC (d ≤ 1)", "{:.3f}"), ("median", "median d", "{:.3f}"),
    ("mean_mm", "mean error (mm)", "{:.2f}"), ("median_mm", "median error (mm)", "{:.2f}"),
    ("landmark_rms_px", "2D landmark RMS (px)", "{:.2f}"),
)


def embedded_png(path: str | Path) -> str:
    """A ``data:`` URI holding the PNG file at ``path``."""
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def format_value(value, fmt: str = "{:.4g}") -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return html.escape(str(value))


def _table(headers: list[str], rows: list[list[str]], table_id: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    ident = f' id="{table_id}"' if table_id else ""
    return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def figures_table_html(rows: list[dict]) -> str:
    """The methods' figures (the report's ``table``) as an HTML table with id ``figures``."""
    cells = [[html.escape(row["method"])] + [format_value(row.get(key), fmt) for key, _, fmt in TABLE_COLUMNS]
             for row in rows]
    return _table(["method"] + [header for _, header, _ in TABLE_COLUMNS], cells, "figures")


def _step_summary(figures: dict) -> str:
    """A short text of a step's figures (nested dicts flattened one level)."""
    parts = []
    for key, value in figures.items():
        if key == "seconds" or isinstance(value, list):
            continue
        if isinstance(value, dict):
            inner = ", ".join(f"{k} {format_value(v)}" for k, v in value.items() if not isinstance(v, (dict, list)))
            parts.append(f"{key}: {inner}" if inner else key)
        else:
            parts.append(f"{key} {format_value(value)}")
    return html.escape("; ".join(parts))


def _image(out: Path, relative: str | None, css: str, alt: str, ident: str) -> str:
    path = out / relative if relative else None
    if path is None or not path.is_file():
        return f'<p class="note">{html.escape(alt)}: not produced.</p>'
    return f'<img id="{ident}" class="{css}" alt="{html.escape(alt)}" src="{embedded_png(path)}">'


def report_html(report: dict, out_dir: str | Path) -> str:
    """The page for a demo report (``run_demo``'s dict); images are read from ``out_dir``."""
    out = Path(out_dir)
    steps, config = report["steps"], report["config"]
    model = report["model"]
    inputs = steps.get("inputs", {})
    counts = ", ".join(f"{v.get('faces')} {k}" for k, v in inputs.items() if isinstance(v, dict))
    source = ("synthetic photos with ground-truth meshes" if report["ground_truth"]
              else f"photos from {config['images']}")
    sections = [
        "<h1>diffface demo report</h1>",
        f'<p class="lead">Model <b>{html.escape(model["name"])}</b> ({model["vertices"]} vertices, '
        f'{model["id_dims"]}/{model["exp_dims"]}/{model["tex_dims"]} identity/expression/albedo modes); '
        f"{html.escape(counts)} {html.escape(source)}; landmarks: {html.escape(config['landmarks'])}; "
        f"device {html.escape(config['device'])}; total {report['seconds_total']:.0f} s.</p>",
        "<h2>Figures</h2>",
    ]
    if report["ground_truth"]:
        sections.append("<p>Held-out faces, each reconstruction aligned to its ground-truth mesh by ICP (rigid). "
                        f"{html.escape(D_DEFINITION)}; AUC of the CED over d ≤ 1 (higher is better); 2D "
                        "landmark RMS: the reconstruction's projected landmarks against the observed ones.</p>")
    else:
        sections.append('<p class="note">These photos have no ground-truth 3D shape, so there is nothing to '
                        "evaluate the reconstructions against: the table shows how well each reproduces the "
                        "observed 2D landmarks, and the grid below shows the fits and predictions.</p>")
    sections.append(figures_table_html(report["table"]))
    train = steps.get("train", {})
    if train.get("init_made_by"):
        sections.append(f'<p class="note">The network was fine-tuned on this run\'s fits from the shipped network '
                        f'<code>{html.escape(str(train["init"]))}</code>, made by '
                        f'<code>{html.escape(train["init_made_by"])}</code>.</p>')
    if report["ground_truth"]:
        sections += ["<figure>", _image(out, "evaluate/ced.png", "plot", "CED plot", "ced"),
                     "<figcaption>Cumulative error distribution of d over the held-out faces (ICP alignment, "
                     "and landmark-only alignment dashed where drawn).</figcaption></figure>"]
    grid = steps.get("figures", {})
    columns = ", ".join(grid.get("grid_columns", []))
    sections += ["<h2>Held-out photos</h2>", "<figure>",
                 _image(out, grid.get("grid"), "grid", "grid of held-out photos", "grid"),
                 f"<figcaption>Columns: {html.escape(columns)}. Green: observed landmarks; red: the landmark "
                 "fit's. Stage-2 fits are rendered with their fitted albedo and light; the others with the mean "
                 "albedo under a frontal light, blended over the photo.</figcaption></figure>"]
    export = steps.get("export", {}).get("formats", {})
    if export:
        rows = [[html.escape(name), html.escape(f["file"]), format_value(f["size_mb"], "{:.2f}"),
                 format_value(f["parity_max_abs_error"], "{:.2e}"),
                 '<span class="ok">passed</span>' if f["parity_passed"] else '<span class="fail">FAILED</span>']
                for name, f in export.items()]
        sections += ["<h2>Export</h2>", _table(["format", "file", "size (MB)", "max abs error vs PyTorch", "parity"],
                                               rows, "export")]
    sections += ["<h2>Steps</h2>",
                 _table(["step", "seconds", "figures"],
                        [[html.escape(name), format_value(f.get("seconds"), "{:.1f}"),
                          f'<span class="text">{_step_summary(f)}</span>'] for name, f in steps.items()], "steps")]
    sections.append("<h2>Reproduce</h2><p>Each step with the command-line interface (run from the folder the "
                    "demo was started in):</p>")
    for name, commands in report["commands"].items():
        sections.append(f"<h3>{html.escape(name)}</h3><pre>{html.escape(chr(10).join(commands))}</pre>")
    sections.append("<details><summary>Settings (config.json)</summary><pre>"
                    f"{html.escape(json.dumps(config, indent=1))}</pre></details>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>diffface demo report</title><style>{STYLE}</style></head><body>\n"
            + "\n".join(sections) + "\n</body></html>\n")


def write_report_html(report: dict, out_dir: str | Path, path: str | Path) -> Path:
    """Write :func:`report_html` to ``path`` (atomically)."""
    path = Path(path)
    write_text_atomic(path, report_html(report, out_dir))
    return path


PAGE_STATE_JS = """() => ({
  title: document.title,
  images: Array.from(document.images).map(i => ({id: i.id, complete: i.complete, naturalWidth: i.naturalWidth})),
  methods: Array.from(document.querySelectorAll('#figures tbody tr td:first-child')).map(td => td.textContent),
  sections: Array.from(document.querySelectorAll('h2')).map(h => h.textContent),
})"""


def screenshot_report(report: str | Path, png: str | Path, chromium: str = "/usr/bin/chromium", width: int = 1200,
                      height: int = 900, full_page: bool = False) -> dict:
    """Open ``report`` in headless Chromium (the system binary; nothing is downloaded), save a screenshot
    (``width`` x ``height``, or the whole page) to ``png`` and return what the page shows: ``title``,
    ``images`` (id, complete, naturalWidth), ``methods`` (the figures table's rows) and ``sections``
    (the h2 headings).

    Raises:
        ImportError: naming ``pip install playwright`` when the package is missing.
        FileNotFoundError: when ``report`` or ``chromium`` is missing.
    """
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        raise ImportError("screenshots need the playwright package: pip install playwright "
                          "(and a Chromium: apt-get install chromium)") from exc
    report = Path(report).resolve()
    for path, what in ((report, "report"), (Path(chromium), "Chromium executable")):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such {what}")
    Path(png).parent.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), headless=True,
                                             args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(report.as_uri(), wait_until="load")
            state = page.evaluate(PAGE_STATE_JS)
            page.screenshot(path=str(png), full_page=full_page)
        finally:
            browser.close()
    return state

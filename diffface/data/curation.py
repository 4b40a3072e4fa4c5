"""``diffface curate``: review a dataset's fits in the browser, keep or reject each, and export the decisions.

A small local web server (stdlib ``http.server``, bound to 127.0.0.1 by default) serves the page of
:mod:`diffface.data.curation_page` and these endpoints:

=================================  ==========================================================================
``GET /``                          the page
``GET /api/items``                 ``{"root", "info", "items": [{name, split, source, quality, flags,
                                   decision, preview}]}``
``POST /api/decision``             body ``{"name", "decision"}``: appended to ``curation.jsonl`` (flushed and
                                   fsynced) *before* the reply ``{"name", "decision", "previous"}``
``POST /api/undo``                 re-applies the decision before the last one of this server's session
                                   (appended like any other); replies ``{"name", "decision"}`` or
                                   ``{"name": null}``
``GET /api/export?format=...``     ``json`` (default): ``{"keep": [...], "reject": [...], "unreviewed": [...]}``;
                                   ``text``: ``decision<TAB>name`` lines, or names only with ``&decision=``
``GET /items/<name>.png``          the crop; ``/previews/<name>.png`` the preview
=================================  ==========================================================================

The decisions live only in the append-only ``curation.jsonl`` (:func:`~diffface.data.format.append_decision`),
which :class:`~diffface.data.format.FaceDataset` honours: a crash or a closed tab loses nothing saved.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from diffface.atomic_io import write_text_atomic

from .curation_page import PAGE
from .format import DECISIONS, ITEMS_DIR, append_decision, read_decisions, read_index, read_info

PREVIEWS_DIR = "previews"
MAX_BODY_BYTES = 1 << 16


def decision_lists(root: str | Path) -> dict[str, list[str]]:
    """The dataset's item names grouped by their current decision (index order within each group)."""
    decisions = read_decisions(root)
    lists: dict[str, list[str]] = {d: [] for d in DECISIONS}
    for entry in read_index(root):
        lists[decisions.get(entry.name, "unreviewed")].append(entry.name)
    return lists


def format_decisions(root: str | Path, fmt: str = "json", decision: str | None = None) -> str:
    """The decisions as text: ``json`` (all groups, or one group's names), or ``text`` (``decision<TAB>name``
    lines, or one group's names one a line)."""
    if decision is not None and decision not in DECISIONS:
        raise ValueError(f"decision {decision!r}: expected one of {DECISIONS}")
    if fmt not in ("json", "text"):
        raise ValueError(f"export format {fmt!r}: expected json or text")
    lists = decision_lists(root)
    if fmt == "json":
        return json.dumps(lists[decision] if decision else lists, indent=1) + "\n"
    if decision:
        return "".join(f"{name}\n" for name in lists[decision])
    return "".join(f"{d}\t{name}\n" for d in DECISIONS for name in lists[d])


def export_decisions(root: str | Path, path: str | Path, decision: str | None = None) -> Path:
    """Write the decisions to ``path`` (atomically): JSON for a ``.json`` name, else text (see
    :func:`format_decisions`)."""
    path = Path(path)
    return write_text_atomic(path, format_decisions(root, "json" if path.suffix.lower() == ".json" else "text",
                                                    decision))


class CurationSession:
    """The server's state: the dataset, a lock around the log, and this session's undo history.

    Every decision goes through :func:`~diffface.data.format.append_decision` under the lock; undo appends
    the decision an item had before the session's last change.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.info = read_info(self.root)
        self.entries = {e.name: e for e in read_index(self.root)}
        self.lock = threading.Lock()
        self.history: list[tuple[str, str]] = []  # (name, decision before the change)

    def items(self) -> list[dict]:
        decisions = read_decisions(self.root)
        return [{**asdict(e), "decision": decisions.get(e.name, "unreviewed"),
                 "preview": (self.root / PREVIEWS_DIR / f"{e.name}.png").is_file()} for e in self.entries.values()]

    def decide(self, name: str, decision: str) -> dict:
        if name not in self.entries:
            raise KeyError(f"no item {name!r} in {self.root}")
        if decision not in DECISIONS:
            raise ValueError(f"decision {decision!r}: expected one of {DECISIONS}")
        with self.lock:
            previous = read_decisions(self.root).get(name, "unreviewed")
            append_decision(self.root, name, decision)
            self.history.append((name, previous))
        return {"name": name, "decision": decision, "previous": previous}

    def undo(self) -> dict:
        with self.lock:
            if not self.history:
                return {"name": None}
            name, previous = self.history.pop()
            append_decision(self.root, name, previous)
        return {"name": name, "decision": previous}

    def image(self, folder: str, name: str) -> Path | None:
        """The crop or preview of an indexed item (never any other file)."""
        if name not in self.entries or folder not in (ITEMS_DIR, PREVIEWS_DIR):
            return None
        path = self.root / folder / f"{name}.png"
        return path if path.is_file() else None


class CurationHandler(BaseHTTPRequestHandler):
    """Requests of one page (the session is ``self.server.session``)."""

    server_version = "diffface-curate"

    def log_message(self, format: str, *args) -> None:  # keep the terminal for the URL and errors
        pass

    def _send(self, status: int, body: bytes, content_type: str, extra: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, data, status: int = HTTPStatus.OK) -> None:
        self._send(status, json.dumps(data).encode(), "application/json")

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        session: CurationSession = self.server.session
        url = urlparse(self.path)
        parts = [unquote(p) for p in url.path.split("/") if p]
        if not parts:
            self._send(HTTPStatus.OK, PAGE.encode(), "text/html; charset=utf-8")
        elif parts == ["api", "items"]:
            self._json({"root": str(session.root), "info": asdict(session.info), "items": session.items()})
        elif parts == ["api", "export"]:
            query = parse_qs(url.query)
            fmt = query.get("format", ["json"])[0]
            decision = query.get("decision", [None])[0]
            try:
                text = format_decisions(session.root, fmt, decision)
            except ValueError as exc:
                self._json({"error": str(exc)}, HTTPStatus.BAD_REQUEST)
                return
            self._send(HTTPStatus.OK, text.encode(), "application/json" if fmt == "json" else "text/plain; charset=utf-8")
        elif len(parts) == 2 and parts[1].endswith(".png") and session.image(parts[0], parts[1][:-4]):
            self._send(HTTPStatus.OK, session.image(parts[0], parts[1][:-4]).read_bytes(), "image/png")
        else:
            self._json({"error": f"not found: {url.path}"}, HTTPStatus.NOT_FOUND)

    def do_POST(self) -> None:  # noqa: N802
        session: CurationSession = self.server.session
        path = urlparse(self.path).path
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self._json({"error": "request too large"}, HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
            return
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
            if path == "/api/decision":
                self._json(session.decide(str(body.get("name")), str(body.get("decision"))))
            elif path == "/api/undo":
                self._json(session.undo())
            else:
                self._json({"error": f"not found: {path}"}, HTTPStatus.NOT_FOUND)
        except KeyError as exc:
            self._json({"error": str(exc.args[0])}, HTTPStatus.NOT_FOUND)
        except (ValueError, AttributeError) as exc:
            self._json({"error": str(exc)}, HTTPStatus.BAD_REQUEST)
        except OSError as exc:  # the disk refused the decision: say so, the page shows it as not saved
            self._json({"error": f"could not save: {exc}"}, HTTPStatus.INTERNAL_SERVER_ERROR)


class CurationServer(ThreadingHTTPServer):
    """The curation web server for one dataset.

    Args:
        root: the dataset folder.
        port: TCP port (0: any free port; see :attr:`url`).
        host: interface to bind (127.0.0.1: this machine only).

    Example:
        >>> server = CurationServer("dataset", port=0)
        >>> threading.Thread(target=server.serve_forever, daemon=True).start()
        >>> print(server.url)   # open it in a browser
        >>> server.shutdown(); server.server_close()
    """

    daemon_threads = True

    def __init__(self, root: str | Path, port: int = 0, host: str = "127.0.0.1"):
        self.session = CurationSession(root)
        super().__init__((host, port), CurationHandler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"

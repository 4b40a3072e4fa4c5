"""``diffface curate``: review a dataset's fits in the browser, keep or reject each, and export the decisions.

A small local web server (stdlib ``http.server``, bound to 127.0.0.1 by default) serves the page of
:mod:`diffface.app.dataset.curation_page` and these endpoints:

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

Every request, the page included, must carry the session's random token (:attr:`CurationServer.token`,
printed in :attr:`CurationServer.url`): in the ``X-Curation-Token`` header (the page's fetches) or as
``?token=`` (the page itself, images, export links); without it the reply is 403. So must its ``Host``
header name this server (the bound host, ``localhost`` or ``127.0.0.1`` with the port; on a wildcard bind
also any IP address or this machine's name) and an ``Origin``, when sent, be ``http://`` + that Host: another
web page the user visits can neither post decisions (CSRF) nor, through DNS rebinding, read the items.
Request bodies are bounded (:data:`MAX_BODY_BYTES`); a bad ``Content-Length`` or body is a 4xx reply.

The decisions live only in the append-only ``curation.jsonl`` (:func:`~diffface.data.format.append_decision`),
which :class:`~diffface.data.format.FaceDataset` honours: a crash or a closed tab loses nothing saved.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import secrets
import socket
import threading
from dataclasses import asdict
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from diffface.atomic_io import write_text_atomic

from diffface.app.dataset.curation_page import PAGE
from diffface.data.format import DECISIONS, ITEMS_DIR, append_decision, read_decisions, read_index, read_info

PREVIEWS_DIR = "previews"
MAX_BODY_BYTES = 1 << 16
TOKEN_HEADER = "X-Curation-Token"
WILDCARD_HOSTS = ("", "0.0.0.0", "::")


def is_loopback_host(host: str) -> bool:
    """True for a host that only this machine can reach (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _is_ip_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def host_names(bound_host: str) -> frozenset[str]:
    """The names a request's ``Host`` may give a server bound to ``bound_host``: that host, ``localhost``,
    ``127.0.0.1`` and ``::1``, and on a wildcard bind (``0.0.0.0``) this machine's names too."""
    names = {bound_host.lower(), "localhost", "127.0.0.1", "::1"}
    if bound_host in WILDCARD_HOSTS:
        names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
    return frozenset(names)


def accepts_host(host_header: str, bound_host: str, port: int, names: frozenset[str]) -> bool:
    """Whether a ``Host`` header names the server: one of ``names`` (:func:`host_names`) with its ``port``; on a
    wildcard bind also any IP address (DNS rebinding needs a domain name, so an address is no such attack)."""
    name, _, given_port = host_header.rpartition(":")
    if not name or given_port != str(port):
        return False
    name = name.lower()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    return name in names or (bound_host in WILDCARD_HOSTS and _is_ip_address(name))


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


class RequestError(Exception):
    """A request refused with ``status`` and a one-line ``message``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class CurationHandler(BaseHTTPRequestHandler):
    """Requests of one page (the session is ``self.server.session``)."""

    server_version = "diffface-curate"
    timeout = 30  # seconds a client may take to send its request (a body shorter than announced waits this long)

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

    def _check_request(self) -> None:
        """Raise :class:`RequestError` (403) unless the Host, the Origin and the session token are this server's."""
        server: CurationServer = self.server
        host = self.headers.get("Host", "")
        if not accepts_host(host, server.host, server.server_address[1], server.host_names):
            raise RequestError(HTTPStatus.FORBIDDEN, f"Host {host[:80]!r} is not this server's address")
        origin = self.headers.get("Origin")
        if origin is not None and origin != f"http://{host}":
            raise RequestError(HTTPStatus.FORBIDDEN, f"Origin {origin[:80]!r} is not this server's page")
        token = self.headers.get(TOKEN_HEADER) or parse_qs(urlparse(self.path).query).get("token", [""])[0]
        if not hmac.compare_digest(token.encode("utf-8", "replace"), server.token.encode()):
            raise RequestError(HTTPStatus.FORBIDDEN, "missing or wrong session token: open the URL that "
                                                     "`diffface curate` printed (it ends with ?token=...)")

    def _body_length(self) -> int:
        """The declared ``Content-Length`` (0 when absent); :class:`RequestError` when it is not a byte count or
        exceeds :data:`MAX_BODY_BYTES`."""
        declared = self.headers.get("Content-Length")
        if declared is None:
            return 0
        digits = declared.strip()
        if not (digits.isascii() and digits.isdigit()):  # int() would also take "-1", "1_0" and " +5"
            raise RequestError(HTTPStatus.BAD_REQUEST, f"Content-Length {declared[:40]!r} is not a byte count")
        digits = digits.lstrip("0") or "0"
        if len(digits) > len(str(MAX_BODY_BYTES)) or int(digits) > MAX_BODY_BYTES:
            raise RequestError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                               f"request body of {digits[:20]} bytes; at most {MAX_BODY_BYTES}")
        return int(digits)

    def _read_json_body(self) -> dict:
        """The request's JSON object, read within :data:`MAX_BODY_BYTES` (an empty body is ``{}``)."""
        length = self._body_length()
        try:
            raw = self.rfile.read(length)
        except OSError:  # the socket timed out (see ``timeout``) or the client went away
            raise RequestError(HTTPStatus.REQUEST_TIMEOUT, "request body not received in time") from None
        if len(raw) < length:
            raise RequestError(HTTPStatus.BAD_REQUEST, f"request body ended after {len(raw)} of {length} bytes")
        try:
            body = json.loads(raw or b"{}")
        except RecursionError:  # deeply nested arrays or objects
            raise RequestError(HTTPStatus.BAD_REQUEST, "request body nests JSON too deeply") from None
        except ValueError as exc:  # invalid JSON or UTF-8
            raise RequestError(HTTPStatus.BAD_REQUEST, f"request body is not valid JSON ({exc})") from None
        if not isinstance(body, dict):
            raise RequestError(HTTPStatus.BAD_REQUEST, f"request body must be a JSON object, got {type(body).__name__}")
        return body

    def _discard_body(self) -> None:
        """Read a refused request's body when it is small enough, so that closing the connection does not reset
        it before the client reads the reply."""
        try:
            self.rfile.read(self._body_length())
        except (RequestError, OSError):
            pass

    def _refused(self, error: RequestError) -> None:
        self.close_connection = True  # an unread body must not be taken for the next request
        self._json({"error": str(error)}, error.status)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        try:
            self._check_request()
        except RequestError as error:
            self._refused(error)
            return
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
        try:
            self._check_request()
        except RequestError as error:
            self._discard_body()
            self._refused(error)
            return
        try:
            body = self._read_json_body()
        except RequestError as error:
            self._refused(error)
            return
        try:
            if path == "/api/decision":
                self._json(session.decide(str(body.get("name")), str(body.get("decision"))))
            elif path == "/api/undo":
                self._json(session.undo())
            else:
                self._json({"error": f"not found: {path}"}, HTTPStatus.NOT_FOUND)
        except KeyError as exc:
            self._json({"error": str(exc.args[0])}, HTTPStatus.NOT_FOUND)
        except ValueError as exc:
            self._json({"error": str(exc)}, HTTPStatus.BAD_REQUEST)
        except OSError as exc:  # the disk refused the decision: say so, the page shows it as not saved
            self._json({"error": f"could not save: {exc}"}, HTTPStatus.INTERNAL_SERVER_ERROR)


class CurationServer(ThreadingHTTPServer):
    """The curation web server for one dataset.

    Args:
        root: the dataset folder.
        port: TCP port (0: any free port; see :attr:`url`).
        host: interface to bind (127.0.0.1: this machine only; see :func:`is_loopback_host`).
        token: the session token every request must carry (None: a new random one,
            ``secrets.token_urlsafe``).

    Example:
        >>> server = CurationServer("dataset", port=0)
        >>> threading.Thread(target=server.serve_forever, daemon=True).start()
        >>> print(server.url)   # open it in a browser: http://127.0.0.1:PORT/?token=...
        >>> server.shutdown(); server.server_close()
    """

    daemon_threads = True

    def __init__(self, root: str | Path, port: int = 0, host: str = "127.0.0.1", token: str | None = None):
        self.session = CurationSession(root)
        self.token = token or secrets.token_urlsafe(24)
        super().__init__((host, port), CurationHandler)
        self.host = host
        self.host_names = host_names(host)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.server_address[1]}/"

    @property
    def url(self) -> str:
        """The page's address, with the session token."""
        return f"{self.base_url}?token={self.token}"

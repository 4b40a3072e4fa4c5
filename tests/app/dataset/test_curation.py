"""Curation: the server's endpoints, exports, and the page driven in a real (headless) Chromium."""

import http.client
import json
import socket
import threading
import urllib.error
import urllib.request
from contextlib import contextmanager

import pytest

from diffface.cli.main import main as cli_main
from diffface.app.dataset import curation
from diffface.app.dataset.curation import (MAX_BODY_BYTES, TOKEN_HEADER, CurationServer, accepts_host, decision_lists,
                                    export_decisions, host_names, is_loopback_host)
from diffface.data.format import CURATION_NAME, FaceDataset, read_decisions, read_index


@contextmanager
def running(root):
    server = CurationServer(root, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def request(server, path="", body=None, token=True, headers=None):
    """``(status, body)`` of a request to ``server``; with the session token in its header unless ``token`` is
    False (or a string: that token)."""
    data = None if body is None else json.dumps(body).encode()
    sent = {"Content-Type": "application/json", **(headers or {})}
    if token:
        sent[TOKEN_HEADER] = server.token if token is True else token
    req = urllib.request.Request(server.base_url + path, data=data, headers=sent)
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_endpoints_save_each_decision_before_replying(dataset_copy):
    names = [e.name for e in read_index(dataset_copy)]
    with running(dataset_copy) as server:
        assert server.server_address[0] == "127.0.0.1" and server.url.startswith("http://127.0.0.1:")
        status, page = request(server)
        assert status == 200 and b"diffface curate" in page
        status, body = request(server, "api/items")
        items = json.loads(body)["items"]
        assert status == 200 and [it["name"] for it in items] == names
        assert all(it["decision"] == "unreviewed" and it["preview"] for it in items)
        status, body = request(server, "api/decision", {"name": names[0], "decision": "reject"})
        assert status == 200 and json.loads(body) == {"name": names[0], "decision": "reject", "previous": "unreviewed"}
        assert read_decisions(dataset_copy) == {names[0]: "reject"}  # on disk when the reply arrived
        request(server, "api/decision", {"name": names[1], "decision": "keep"})
        status, body = request(server, "api/undo", {})
        assert json.loads(body) == {"name": names[1], "decision": "unreviewed"}
        assert read_decisions(dataset_copy) == {names[0]: "reject", names[1]: "unreviewed"}
        status, body = request(server, "api/export?format=text&decision=reject")
        assert body.decode() == f"{names[0]}\n"
        assert request(server, "api/decision", {"name": "nope", "decision": "keep"})[0] == 404
        assert request(server, "api/decision", {"name": names[0], "decision": "maybe"})[0] == 400
        status, png = request(server, f"previews/{names[0]}.png")
        assert status == 200 and png[:4] == b"\x89PNG"
        assert request(server, "items/..%2Fdataset.json.png")[0] == 404
        assert request(server, "previews/../dataset.json")[0] == 404
    assert len(FaceDataset(dataset_copy, split=None)) == len(names) - 1


def test_requests_need_the_session_token_this_host_and_this_origin(dataset_copy):
    """Another web page (CSRF) or a DNS-rebinding page cannot post decisions or read the items."""
    name = read_index(dataset_copy)[0].name
    with running(dataset_copy) as server:
        port = server.server_address[1]
        assert len(server.token) >= 32 and server.url.endswith(f"/?token={server.token}")
        assert CurationServer(dataset_copy, port=0).token != server.token  # a new one per session (never bound)
        for path in ("", "api/items", "api/export?format=json", f"previews/{name}.png", f"items/{name}.png"):
            for token in (False, "wrong", server.token[:-1]):
                status, body = request(server, path, token=token)
                assert status == 403 and b"session token" in body, (path, token)
        for token in (False, "wrong"):
            assert request(server, "api/decision", {"name": name, "decision": "reject"}, token=token)[0] == 403
            assert request(server, "api/undo", {}, token=token)[0] == 403
        assert not (dataset_copy / CURATION_NAME).exists()  # nothing was written
        # the page, images and export links carry it in the query instead
        assert request(server, f"?token={server.token}", token=False)[0] == 200
        assert request(server, f"items/{name}.png?token={server.token}", token=False)[0] == 200
        assert request(server, f"api/export?format=text&token={server.token}", token=False)[0] == 200
        # a rebinding page's Host is its own domain; a cross-site request's Origin is its site
        for headers in ({"Host": f"evil.example:{port}"}, {"Host": f"127.0.0.1:{port + 1}"},
                        {"Host": f"10.1.2.3:{port}"}, {"Origin": "http://evil.example"}, {"Origin": "null"}):
            status, body = request(server, "api/decision", {"name": name, "decision": "reject"}, headers=headers)
            assert status == 403 and b"not this server" in body, headers
            assert request(server, "api/items", headers=headers)[0] == 403, headers
        assert not (dataset_copy / CURATION_NAME).exists()
        for host in (f"localhost:{port}", f"127.0.0.1:{port}"):
            headers = {"Host": host, "Origin": f"http://{host}"}
            assert request(server, "api/decision", {"name": name, "decision": "keep"}, headers=headers)[0] == 200
    assert read_decisions(dataset_copy) == {name: "keep"}


def test_host_names_and_loopback():
    names = host_names("127.0.0.1")
    assert accepts_host("127.0.0.1:8765", "127.0.0.1", 8765, names)
    assert accepts_host("LOCALHOST:8765", "127.0.0.1", 8765, names)
    assert accepts_host("[::1]:8765", "127.0.0.1", 8765, names)
    for bad in ("evil.example:8765", "127.0.0.1:8766", "127.0.0.1", "", ":8765", "192.168.1.5:8765"):
        assert not accepts_host(bad, "127.0.0.1", 8765, names), bad
    # a wildcard bind is reached by this machine's addresses and names, never by another domain
    wildcard = host_names("0.0.0.0")
    assert socket.gethostname().lower() in wildcard
    assert accepts_host("192.168.1.5:8765", "0.0.0.0", 8765, wildcard)
    assert accepts_host(f"{socket.gethostname()}:8765", "0.0.0.0", 8765, wildcard)
    assert not accepts_host("evil.example:8765", "0.0.0.0", 8765, wildcard)
    assert [is_loopback_host(h) for h in ("127.0.0.1", "localhost", "::1", "127.0.0.2", "0.0.0.0", "10.0.0.1",
                                          "example.org")] == [True, True, True, True, False, False, False]


def raw_post(server, head: bytes, body: bytes = b"", close_after_body: bool = False) -> tuple[int, dict]:
    """``(status, JSON reply)`` of a hand-made POST to ``/api/decision`` (headers ``head`` after the token)."""
    port = server.server_address[1]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(b"POST /api/decision HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n%s: %s\r\n" % (
            port, TOKEN_HEADER.encode(), server.token.encode()) + head + b"\r\n" + body)
        if close_after_body:
            connection.shutdown(socket.SHUT_WR)
        response = http.client.HTTPResponse(connection)
        response.begin()
        return response.status, json.loads(response.read())


def test_bad_bodies_get_a_4xx_reply_and_bounded_reads(dataset_copy):
    name = read_index(dataset_copy)[0].name
    with running(dataset_copy) as server:
        for head, body, status, said in (
                (b"Content-Length: abc\r\n", b"", 400, "not a byte count"),
                (b"Content-Length: -1\r\n", b"", 400, "not a byte count"),
                (b"Content-Length: 1_0\r\n", b"", 400, "not a byte count"),
                (b"Content-Length: 300000000\r\n", b"", 413, f"at most {MAX_BODY_BYTES}"),
                (b"Content-Length: 1" + b"0" * 5000 + b"\r\n", b"", 413, f"at most {MAX_BODY_BYTES}"),
                (b"Content-Length: 60000\r\n", b"[" * 60000, 400, "nests JSON too deeply"),
                (b"Content-Length: 6\r\n", b"[1, 2]", 400, "must be a JSON object"),
                (b"Content-Length: 4\r\n", b"\xff\xfe{}", 400, "not valid JSON")):
            reply = raw_post(server, head, body)
            assert reply[0] == status and said in reply[1]["error"], (head, reply)
        # a body shorter than announced, then the client stops sending: 400, not a hung thread
        reply = raw_post(server, b"Content-Length: 50\r\n", b'{"name": ', close_after_body=True)
        assert reply[0] == 400 and "ended after 9 of 50 bytes" in reply[1]["error"]
        # the server still serves, and nothing was written
        assert not (dataset_copy / CURATION_NAME).exists()
        assert request(server, "api/decision", {"name": name, "decision": "reject"})[0] == 200


def test_curate_command_warns_about_a_non_loopback_host(dataset_copy, monkeypatch, capsys):
    """``diffface curate DS --host 0.0.0.0`` warns on stderr (the server itself stays on loopback in tests)."""

    class LoopbackServer(CurationServer):
        def __init__(self, root, port, host):
            super().__init__(root, port=0)  # whatever --host says: tests bind 127.0.0.1 only

        def serve_forever(self, poll_interval=0.5):
            raise KeyboardInterrupt  # as Ctrl+C right after the start

    monkeypatch.setattr(curation, "CurationServer", LoopbackServer)
    assert cli_main(["curate", str(dataset_copy), "--host", "0.0.0.0"]) == 0
    out, err = capsys.readouterr()
    assert "WARNING: --host 0.0.0.0" in err and "?token=" in out
    assert cli_main(["curate", str(dataset_copy)]) == 0
    assert "WARNING" not in capsys.readouterr().err


def test_export_files(dataset_copy):
    from diffface.data.format import append_decision

    names = [e.name for e in read_index(dataset_copy)]
    append_decision(dataset_copy, names[2], "keep")
    append_decision(dataset_copy, names[3], "reject")
    lists = decision_lists(dataset_copy)
    assert lists["keep"] == [names[2]] and lists["reject"] == [names[3]] and len(lists["unreviewed"]) == len(names) - 2
    assert json.loads(export_decisions(dataset_copy, dataset_copy / "d.json").read_text()) == lists
    lines = export_decisions(dataset_copy, dataset_copy / "d.txt").read_text().splitlines()
    assert lines[0] == f"keep\t{names[2]}" and lines[1] == f"reject\t{names[3]}"
    assert export_decisions(dataset_copy, dataset_copy / "k.txt", "keep").read_text() == f"{names[2]}\n"


@pytest.fixture
def chromium(chromium_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(chromium_path), headless=True)
        try:
            yield browser
        finally:
            browser.close()


def test_curate_in_the_browser(dataset_copy, chromium):
    """Click, press keys, undo, filter and sort in Chromium; the log and the training reader follow."""
    entries = read_index(dataset_copy)
    worst_first = [e.name for e in sorted(entries, key=lambda e: (-e.quality["score"], e.name))]
    with running(dataset_copy) as server:
        page = chromium.new_page(viewport={"width": 1400, "height": 900})
        assert page.goto(server.base_url).status == 403  # without the session token
        page.goto(server.url)
        page.wait_for_selector(".card")
        # images and export links carry the token in their query, the fetches in their header
        page.wait_for_function("() => document.querySelector('.card img').naturalWidth > 0")
        assert f"token={server.token}" in page.get_attribute('a[download="decisions.json"]', "href")
        assert page.locator(".card").count() == len(entries)
        assert [c.get_attribute("data-name") for c in page.locator(".card").all()] == worst_first

        def saved(action):
            with page.expect_response(lambda r: r.url.endswith(("/api/decision", "/api/undo"))) as response:
                action()
            assert response.value.ok
            page.wait_for_function("() => window.curation.pending === 0")

        # the worst item, rejected with a click on its button
        saved(lambda: page.locator(f'.card[data-name="{worst_first[0]}"] button[data-action="reject"]').click())
        assert read_decisions(dataset_copy) == {worst_first[0]: "reject"}
        # focus moved on to the next card: keep it with "k", reject the one after with "x"
        saved(lambda: page.keyboard.press("k"))
        saved(lambda: page.keyboard.press("x"))
        assert read_decisions(dataset_copy) == {worst_first[0]: "reject", worst_first[1]: "keep",
                                                worst_first[2]: "reject"}
        # undo the last rejection with Ctrl+Z: back to unreviewed
        saved(lambda: page.keyboard.press("Control+z"))
        assert read_decisions(dataset_copy)[worst_first[2]] == "unreviewed"
        # arrows move the focus: right twice from the undone card, then reject with "r"
        page.keyboard.press("ArrowRight")
        page.keyboard.press("ArrowRight")
        saved(lambda: page.keyboard.press("r"))
        assert read_decisions(dataset_copy)[worst_first[4]] == "reject"
        assert page.locator(f'.card[data-name="{worst_first[4]}"]').get_attribute("data-decision") == "reject"
        # filters
        page.select_option("#filter", "reject")
        assert sorted(c.get_attribute("data-name") for c in page.locator(".card").all()) == sorted(
            [worst_first[0], worst_first[4]])
        page.select_option("#filter", "keep")
        assert [c.get_attribute("data-name") for c in page.locator(".card").all()] == [worst_first[1]]
        page.select_option("#filter", "unreviewed")
        assert page.locator(".card").count() == len(entries) - 3
        page.keyboard.press("f")  # cycles on to "kept" (the select's next option)
        assert page.locator("#filter").input_value() == "keep"
        page.select_option("#filter", "all")
        page.select_option("#sort", "name")
        assert [c.get_attribute("data-name") for c in page.locator(".card").all()] == sorted(worst_first)
        # a reload shows what the server saved
        page.reload()
        page.wait_for_selector(".card")
        assert page.locator(f'.card[data-name="{worst_first[1]}"]').get_attribute("data-decision") == "keep"
        assert "2 rejected" in page.inner_text("#counts")
    rejected = {worst_first[0], worst_first[4]}
    assert {n for n, d in read_decisions(dataset_copy).items() if d == "reject"} == rejected
    lines = (dataset_copy / CURATION_NAME).read_text().splitlines()
    assert len(lines) == 5 and all(json.loads(line)["time"] > 0 for line in lines)
    training = [FaceDataset(dataset_copy, split)[i]["name"] for split in ("train", "val")
                for i in range(len(FaceDataset(dataset_copy, split)))]
    assert sorted(training) == sorted(set(worst_first) - rejected)

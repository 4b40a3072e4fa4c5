"""Curation: the server's endpoints, exports, and the page driven in a real (headless) Chromium."""

import json
import threading
import urllib.error
import urllib.request
from contextlib import contextmanager

import pytest

from diffface.data.curation import CurationServer, decision_lists, export_decisions
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


def request(url, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_endpoints_save_each_decision_before_replying(dataset_copy):
    names = [e.name for e in read_index(dataset_copy)]
    with running(dataset_copy) as server:
        assert server.server_address[0] == "127.0.0.1" and server.url.startswith("http://127.0.0.1:")
        status, page = request(server.url)
        assert status == 200 and b"diffface curate" in page
        status, body = request(server.url + "api/items")
        items = json.loads(body)["items"]
        assert status == 200 and [it["name"] for it in items] == names
        assert all(it["decision"] == "unreviewed" and it["preview"] for it in items)
        status, body = request(server.url + "api/decision", {"name": names[0], "decision": "reject"})
        assert status == 200 and json.loads(body) == {"name": names[0], "decision": "reject", "previous": "unreviewed"}
        assert read_decisions(dataset_copy) == {names[0]: "reject"}  # on disk when the reply arrived
        request(server.url + "api/decision", {"name": names[1], "decision": "keep"})
        status, body = request(server.url + "api/undo", {})
        assert json.loads(body) == {"name": names[1], "decision": "unreviewed"}
        assert read_decisions(dataset_copy) == {names[0]: "reject", names[1]: "unreviewed"}
        status, body = request(server.url + "api/export?format=text&decision=reject")
        assert body.decode() == f"{names[0]}\n"
        assert request(server.url + "api/decision", {"name": "nope", "decision": "keep"})[0] == 404
        assert request(server.url + "api/decision", {"name": names[0], "decision": "maybe"})[0] == 400
        status, png = request(server.url + f"previews/{names[0]}.png")
        assert status == 200 and png[:4] == b"\x89PNG"
        assert request(server.url + "items/..%2Fdataset.json.png")[0] == 404
        assert request(server.url + "previews/../dataset.json")[0] == 404
    assert len(FaceDataset(dataset_copy, split=None)) == len(names) - 1


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
        page.goto(server.url)
        page.wait_for_selector(".card")
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

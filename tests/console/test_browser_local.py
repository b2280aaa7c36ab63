"""The console in headless Chromium against ``cicd serve`` with the local executor, so
steps run as host processes and need no Docker: focus, keyboard, routes, layout,
paging and reconnecting."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import BUSYBOX
from tests.console.test_browser import WAIT_MS, new_page, pipeline, submit, wait_for_run
from tests.server.conftest import ServerProcess

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

# Returns whether the element matched by `selector` lies inside the window, and the
# page is no wider than the window.
FITS_WINDOW = """
(selector) => {
  const box = document.querySelector(selector).getBoundingClientRect();
  const width = document.documentElement.clientWidth;
  return box.left >= 0 && box.right <= width && document.documentElement.scrollWidth <= width;
}
"""


@pytest.fixture
def local_process(tmp_path: Path) -> Iterator[ServerProcess]:
    """``cicd serve --executor local``, started by the test (after any environment change)."""
    instance = ServerProcess(tmp_path / "server.db", tmp_path / "server.log", "--executor", "local")
    yield instance
    instance.kill()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh English page."""
    page = new_page(browser)
    yield page
    page.context.close()


def drain(server: ServerProcess) -> None:
    """Drain the server's only node, so that the jobs of new runs stay pending."""
    nodes = httpx.get(f"{server.url}/api/v1/nodes", timeout=30).json()
    assert len(nodes) == 1, nodes
    response = httpx.post(f"{server.url}/api/v1/nodes/{nodes[0]['name']}/drain", timeout=30)
    assert response.is_success, response.text


def test_focus_survives_live_updates(local_process: ServerProcess, tmp_path: Path,
                                     page: Any) -> None:
    local_process.start()
    drain(local_process)
    run_id = submit(local_process, tmp_path, pipeline("echo never"))
    page.goto(f"{local_process.url}/#/runs/{run_id}")
    page.wait_for_selector('article[data-job="main"][data-state=pending] .wait-reason',
                           timeout=WAIT_MS)
    page.focus("#cancel-run")
    page.wait_for_timeout(1500)  # the view updates every second while the run is active
    assert page.evaluate("document.activeElement.id") == "cancel-run"

    page.goto(f"{local_process.url}/#/runs")
    link = f'tr[data-run="{run_id}"] a >> nth=0'
    page.wait_for_selector(link, timeout=WAIT_MS)
    page.focus(link)
    page.wait_for_timeout(1500)
    assert page.evaluate("document.activeElement.closest('tr')?.dataset.run") == run_id
    assert page.evaluate("document.activeElement.tagName") == "A"
    assert page.errors == []


def test_job_graph_works_by_keyboard(local_process: ServerProcess, tmp_path: Path,
                                     page: Any) -> None:
    local_process.start()
    yaml = pipeline("echo built", job="build") + (
        f"  test:\n    needs: [build]\n    image: {BUSYBOX}\n    steps:\n      - run: echo tested\n")
    run_id = submit(local_process, tmp_path, yaml)
    wait_for_run(local_process, run_id, {"succeeded"})
    page.goto(f"{local_process.url}/#/runs/{run_id}")
    node = 'g.dag-node[data-job="test"]'
    page.wait_for_selector(f"{node}[data-state=succeeded]", timeout=WAIT_MS)
    assert page.get_attribute("svg.dag", "role") == "group"
    assert page.get_attribute("svg.dag", "aria-label") == "Job graph"
    assert page.get_attribute(node, "role") == "button"
    assert page.get_attribute(node, "aria-label") == "Job test, succeeded"

    page.focus(node)
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "job-test"
    page.focus('g.dag-node[data-job="build"]')
    page.keyboard.press("Space")
    assert page.evaluate("document.activeElement.id") == "job-build"

    page.goto(f"{local_process.url}/#/runs/{run_id}/jobs/build/steps/1")
    page.wait_for_selector("#log-viewport[data-loaded]", timeout=WAIT_MS)
    assert page.get_attribute("#log-viewport", "role") == "region"
    assert page.get_attribute("#log-viewport", "aria-label") == "Output of build, step 1"
    assert page.errors == []


def test_drained_node_in_both_languages(local_process: ServerProcess, browser: Any,
                                        page: Any) -> None:
    local_process.start()
    drain(local_process)
    page.goto(f"{local_process.url}/#/nodes")
    badge = "table.nodes tr[data-state=drained] .state"
    page.wait_for_selector(badge, timeout=WAIT_MS)
    assert page.text_content(badge) == "drained"
    assert page.eval_on_selector(badge, "e => getComputedStyle(e).backgroundColor") \
        == "rgb(110, 110, 110)"

    spanish = new_page(browser, "es-ES")
    spanish.goto(f"{local_process.url}/#/nodes")
    spanish.wait_for_selector(badge, timeout=WAIT_MS)
    assert spanish.text_content(badge) == "vaciado"
    spanish.context.close()


def test_filter_finds_names_with_url_characters(local_process: ServerProcess, tmp_path: Path,
                                                page: Any) -> None:
    local_process.start()
    names = ["a&b", "c++", "q?r", "50%off", "x#y"]
    ids = {name: submit(local_process, tmp_path, pipeline("echo", name=json.dumps(name)))
           for name in names}
    page.goto(f"{local_process.url}/#/runs")
    for name in names:
        page.fill('input[name="pipeline"]', name)
        page.click('.filters button[type="submit"]')
        page.wait_for_selector(f'tr[data-run="{ids[name]}"]', timeout=5000)
        assert page.input_value('input[name="pipeline"]') == name
        assert page.locator("tr[data-run]").count() == 1

    page.goto(f"{local_process.url}/#/runs/%E0%A4%A")
    page.wait_for_selector(".invalid-view h1", timeout=WAIT_MS)
    assert page.text_content(".invalid-view h1") == "Invalid address"
    assert "#/runs/%E0%A4%A" in page.text_content(".invalid-view .notice")
    assert page.errors == []


def test_count_links_keep_filters(local_process: ServerProcess, tmp_path: Path,
                                  page: Any) -> None:
    local_process.start()
    run_id = submit(local_process, tmp_path, pipeline("echo", name="app"))
    submit(local_process, tmp_path, pipeline("echo", name="other"))
    wait_for_run(local_process, run_id, {"succeeded"})
    page.goto(f"{local_process.url}/#/runs?pipeline=app&tenant=default")
    count = ".counts a[data-state=succeeded]"
    page.wait_for_selector(count, timeout=WAIT_MS)
    assert page.get_attribute(count, "href") == "#/runs?state=succeeded&pipeline=app&tenant=default"
    page.click(count)
    page.wait_for_selector(f'tr[data-run="{run_id}"]', timeout=WAIT_MS)
    assert page.input_value('input[name="pipeline"]') == "app"
    assert page.input_value('select[name="state"]') == "succeeded"
    assert page.locator("tr[data-run]").count() == 1


def test_run_numbers_in_each_language(local_process: ServerProcess, tmp_path: Path,
                                      browser: Any, page: Any) -> None:
    local_process.start()
    run_id = submit(local_process, tmp_path, pipeline("echo"))
    number = f'tr[data-run="{run_id}"] td >> nth=0'
    page.goto(f"{local_process.url}/#/runs")
    page.wait_for_selector(number, timeout=WAIT_MS)
    assert page.text_content(number) == "#1"

    spanish = new_page(browser, "es-ES")
    spanish.goto(f"{local_process.url}/#/runs")
    spanish.wait_for_selector(number, timeout=WAIT_MS)
    assert spanish.text_content("table.runs th >> nth=0") == "n.º"
    assert spanish.text_content(number) == "n.º 1"
    spanish.context.close()


def test_long_names_fit_window(local_process: ServerProcess, tmp_path: Path, page: Any) -> None:
    local_process.start()
    yaml = (f"version: 1\nname: {'p' * 150}\njobs:\n  main:\n    image: {BUSYBOX}\n    steps:\n"
            f"      - name: {'s' * 150}\n        run: echo long\n")
    run_id = submit(local_process, tmp_path, yaml)
    wait_for_run(local_process, run_id, {"succeeded"})
    page.goto(f"{local_process.url}/#/runs")
    page.wait_for_selector(f'tr[data-run="{run_id}"]', timeout=WAIT_MS)
    for column in range(7):
        assert page.evaluate(FITS_WINDOW, f'tr[data-run="{run_id}"] td:nth-child({column + 1})'), \
            f"column {column + 1} of the runs list"

    page.goto(f"{local_process.url}/#/runs/{run_id}")
    page.wait_for_selector("a.log-link", timeout=WAIT_MS)
    assert page.evaluate(FITS_WINDOW, "a.log-link")
    assert page.evaluate(FITS_WINDOW, ".run-header h1")


def test_older_runs_page_in(local_process: ServerProcess, tmp_path: Path, page: Any) -> None:
    local_process.start()
    yaml = pipeline("true")
    ids = [submit(local_process, tmp_path, yaml) for _ in range(105)]
    page.goto(f"{local_process.url}/#/runs")
    page.wait_for_selector(f'tr[data-run="{ids[-1]}"]', timeout=WAIT_MS)
    page.wait_for_selector("#runs-more:not([hidden])", timeout=WAIT_MS)
    assert page.locator("tr[data-run]").count() == 100
    assert page.text_content("#runs-more") == "Show older runs"

    page.click("#runs-more")
    page.wait_for_selector(f'tr[data-run="{ids[0]}"]', timeout=WAIT_MS)
    assert page.locator("tr[data-run]").count() == 105
    listed = page.eval_on_selector_all("tr[data-run]", "rows => rows.map(r => r.dataset.run)")
    assert listed == ids[::-1]
    assert page.is_hidden("#runs-more")
    assert page.evaluate("document.activeElement.closest('tr')?.dataset.run") == ids[4]
    assert page.errors == []


def test_log_with_dropped_middle_ends_at_once(local_process: ServerProcess, tmp_path: Path,
                                              page: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CICD_STORAGE_LOG_LIMIT", "64Ki")
    local_process.start()
    run_id = submit(local_process, tmp_path, pipeline(
        "awk 'BEGIN { for (i = 1; i <= 4000; i++) printf \"line %05d %s\\n\", i, "
        f"\"{'x' * 60}\" }}'"))
    wait_for_run(local_process, run_id, {"succeeded"})
    size = httpx.get(f"{local_process.url}/api/v1/runs/{run_id}", timeout=30).json()
    assert size["jobs"][0]["steps"][0]["log_size"] > 200_000  # well past the 64 KiB kept

    sent: list[str] = []
    page.on("websocket", lambda socket: socket.on("framesent", lambda frame: sent.append(frame)))
    page.goto(f"{local_process.url}/#/runs/{run_id}/jobs/main/steps/1")
    page.wait_for_selector("#log-viewport[data-loaded]", timeout=WAIT_MS)
    page.wait_for_timeout(500)  # time for a needless log subscription to be sent
    assert page.get_attribute("#log-status", "data-complete") == "true"
    assert "Step ended" in page.text_content("#log-status")
    subscriptions = [frame for frame in sent if isinstance(frame, str) and '"topic":"log"' in frame]
    assert subscriptions == []
    assert page.errors == []


def test_reconnect_counts_down(local_process: ServerProcess, page: Any) -> None:
    local_process.start()
    page.goto(local_process.url + "/")
    page.wait_for_selector(".connection[data-state=open]", timeout=WAIT_MS)
    local_process.kill()
    # The wait doubles from 0.5 s after each failed attempt. The first text of a wait of
    # 3 s or more shows the countdown before its next attempt.
    pattern = r"^Reconnecting in (\d+) s…$"
    page.wait_for_function(
        "(pattern) => { const e = document.getElementById('connection');"
        " const m = e.textContent.match(new RegExp(pattern));"
        " return e.dataset.state === 'closed' && m && Number(m[1]) >= 3; }",
        arg=pattern, timeout=WAIT_MS, polling="raf")
    first = re.match(pattern, page.text_content("#connection"))
    assert first is not None
    page.wait_for_timeout(1100)
    assert page.get_attribute("#connection", "data-state") == "closed"
    later = re.match(pattern, page.text_content("#connection"))
    assert later is not None
    assert int(later.group(1)) < int(first.group(1))

"""The console end to end: ``cicd serve`` with Docker, driven in headless Chromium."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from tests.conftest import BUSYBOX
from tests.server.conftest import ServerProcess

pytestmark = [pytest.mark.docker, pytest.mark.browser, pytest.mark.timeout(120)]

WAIT_MS = 30_000


def pipeline(*steps: str, name: str = "console", job: str = "main") -> str:
    lines = [f"version: 1\nname: {name}\njobs:\n  {job}:\n    image: {BUSYBOX}\n    steps:"]
    for step in steps:
        lines.append("      - run: |\n" + "".join(f"          {line}\n" for line in step.splitlines()))
    return "\n".join(lines)


def submit(server: ServerProcess, source: Path, yaml: str) -> str:
    response = httpx.post(f"{server.url}/api/v1/runs", timeout=30,
                          json={"source": {"dir": str(source)}, "pipeline_yaml": yaml})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def new_page(browser: Any, locale: str = "en-US") -> Any:
    """Open a page in a new 1280 x 900 context, recording its dialogs (an alert from
    injected script) in ``page.dialogs`` and its uncaught errors in ``page.errors``."""
    context = browser.new_context(locale=locale, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.dialogs = []
    page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    return page


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh English page."""
    page = new_page(browser)
    yield page
    page.context.close()


def log_lines(page: Any) -> list[str]:
    return list(page.eval_on_selector_all(".log-line .text", "els => els.map(e => e.textContent)"))


def wait_for_run(server: ServerProcess, run_id: str, states: set[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if httpx.get(f"{server.url}/api/v1/runs/{run_id}", timeout=30).json()["state"] in states:
            return
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} did not reach {states} in {timeout:g} s")


# Scrolls the log view to `top` pixels, then returns the milliseconds until the line at
# that position is in the page and one more frame has been drawn.
SCROLL_AND_TIME = """
async (top) => {
  const viewport = document.getElementById("log-viewport");
  const frame = () => new Promise((resolve) => requestAnimationFrame(resolve));
  const line = Math.floor(top / 18) + 1;
  const started = performance.now();
  viewport.scrollTop = top;
  while (!document.getElementById(`L${line}`)) await frame();
  await frame();
  return performance.now() - started;
}
"""


def test_run_goes_live_on_list_and_dag(console_server: ServerProcess, tmp_path: Path, page: Any,
                                       screenshot: Any) -> None:
    console_server.start()
    page.goto(console_server.url + "/")
    page.wait_for_selector(".connection[data-state=open]", timeout=WAIT_MS)
    yaml = pipeline("sleep 2; echo built", job="build") + (
        f"  test:\n    needs: [build]\n    image: {BUSYBOX}\n    steps:\n      - run: echo tested\n")
    run_id = submit(console_server, tmp_path, yaml)
    row = f'tr[data-run="{run_id}"]'
    page.wait_for_selector(f"{row}[data-state=pending], {row}[data-state=running]", timeout=WAIT_MS)
    page.wait_for_selector(f"{row}[data-state=running]", timeout=WAIT_MS)
    screenshot(page, "runs-running")
    page.click(f"{row} a >> nth=0")
    page.wait_for_selector('g.dag-node[data-job="build"][data-state=running]', timeout=WAIT_MS)
    assert page.get_attribute('g.dag-node[data-job="test"]', "data-state") == "pending"
    screenshot(page, "run-running")
    page.wait_for_selector('g.dag-node[data-job="test"][data-state=succeeded]', timeout=WAIT_MS)
    page.wait_for_selector(".run-header .state-succeeded", timeout=WAIT_MS)
    assert page.text_content('article[data-job="build"] .exit-code') == "0"
    screenshot(page, "run-succeeded")
    page.click('a[data-nav="runs"]')
    page.wait_for_selector(f"{row}[data-state=succeeded]", timeout=WAIT_MS)
    assert "succeeded" in page.text_content(".counts")
    assert page.text_content(".counts .total") == "1 run"
    screenshot(page, "runs-succeeded")
    assert page.errors == []


def test_log_streams_with_colours(console_server: ServerProcess, tmp_path: Path, page: Any,
                                  screenshot: Any) -> None:
    console_server.start()
    yaml = pipeline("sleep 1\n"
                    "i=1; while [ $i -le 30 ]; do printf '\\033[31mred %d\\033[0m plain\\n' $i; "
                    "i=$((i+1)); sleep 0.05; done\n"
                    "for p in 10 50 100; do printf 'progress %d%%\\r' $p; sleep 0.1; done; echo")
    run_id = submit(console_server, tmp_path, yaml)
    page.goto(f"{console_server.url}/#/runs/{run_id}/jobs/main/steps/1")
    page.wait_for_selector(".log-line", timeout=WAIT_MS)
    page.wait_for_selector(".log-status[data-complete=true]", timeout=WAIT_MS)
    lines = log_lines(page)
    assert lines == [f"red {i} plain" for i in range(1, 31)] + ["progress 100%"]
    red = page.eval_on_selector_all(".log-line .fg1", "els => els.map(e => e.textContent)")
    assert red[:3] == ["red 1", "red 2", "red 3"]
    colour = page.eval_on_selector(".log-line .fg1", "e => getComputedStyle(e).color")
    assert colour == "rgb(240, 82, 95)"
    screenshot(page, "log")
    page.fill("#log-search", "red 2")
    page.press("#log-search", "Enter")
    assert page.text_content("#log-matches") == "1 of 11"
    page.click('a.ln >> text="7"')
    page.wait_for_selector("#L7.target")
    assert page.url.endswith("/L7")
    download = page.get_attribute("#log-download", "href")
    raw = httpx.get(console_server.url + download).content
    assert raw.startswith(b"\x1b[31mred 1\x1b[0m plain\n")
    assert page.errors == []


def test_cancel_stops_job_and_removes_container(console_server: ServerProcess, tmp_path: Path,
                                                page: Any, docker_engine: docker.DockerClient,
                                                screenshot: Any) -> None:
    console_server.start()
    run_id = submit(console_server, tmp_path, pipeline("echo started; sleep 60", job="sleeper"))
    page.goto(f"{console_server.url}/#/runs/{run_id}")
    page.wait_for_selector('article[data-job="sleeper"] tr[data-state=running]', timeout=WAIT_MS)
    label = {"label": f"io.cicd.run={run_id}"}
    deadline = time.monotonic() + 10
    while not docker_engine.containers.list(filters=label) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert docker_engine.containers.list(filters=label), "the step's container never ran"
    page.click('button[data-cancel-job="sleeper"]')
    page.wait_for_selector("#confirm[open]")
    screenshot(page, "confirm")
    page.click("#confirm-yes")
    page.wait_for_selector('article[data-job="sleeper"][data-state=cancelled]', timeout=WAIT_MS)
    page.wait_for_selector("#cancel-run[disabled]", timeout=WAIT_MS)  # the run ended too
    # The "cancelling job ..." notice goes once the job has ended.
    page.wait_for_selector(".run-view .notice", state="detached", timeout=WAIT_MS)
    job = page.locator('article[data-job="sleeper"]')
    assert job.locator(".failure-reason").count() == 0  # the reason would repeat the state
    assert job.locator("tr[data-state=cancelled] td >> nth=1").text_content() == "cancelled"
    deadline = time.monotonic() + 30
    while docker_engine.containers.list(all=True, filters=label) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert docker_engine.containers.list(all=True, filters=label) == []
    screenshot(page, "cancelled")


def test_restart_resumes_log_without_gaps(console_server: ServerProcess, tmp_path: Path,
                                          browser: Any, screenshot: Any) -> None:
    console_server.start()
    count = 150
    run_id = submit(console_server, tmp_path, pipeline(
        f"i=1; while [ $i -le {count} ]; do echo line $i; i=$((i+1)); sleep 0.04; done"))
    # Tall enough that every line is rendered, not just the ones in view.
    context = browser.new_context(locale="en-US", viewport={"width": 1000, "height": 3600})
    page = context.new_page()
    page.goto(f"{console_server.url}/#/runs/{run_id}/jobs/main/steps/1")
    page.wait_for_selector("#L20", timeout=WAIT_MS)
    console_server.kill()
    page.wait_for_selector(".connection[data-state=closed]", timeout=WAIT_MS)
    screenshot(page, "disconnected")
    console_server.start()
    page.wait_for_selector(".log-status[data-complete=true]", timeout=60_000)
    lines = log_lines(page)
    assert lines == [f"line {i}" for i in range(1, count + 1)]
    screenshot(page, "resumed")
    context.close()


def test_log_markup_is_text(console_server: ServerProcess, tmp_path: Path, page: Any,
                            screenshot: Any) -> None:
    console_server.start()
    run_id = submit(console_server, tmp_path, pipeline(
        "echo '<img src=x onerror=alert(1)>'\n"
        "printf '\\033]8;;http://evil.example/\\033\\\\click me\\033]8;;\\033\\\\\\n'\n"
        "echo '<script>alert(2)</script>'\n"
        "printf '\\033]0;new title\\007after title\\n'"))
    response = httpx.get(console_server.url + "/")
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]
    page.goto(f"{console_server.url}/#/runs/{run_id}/jobs/main/steps/1")
    page.wait_for_selector(".log-status[data-complete=true]", timeout=WAIT_MS)
    assert log_lines(page) == ["<img src=x onerror=alert(1)>", "click me",
                               "<script>alert(2)</script>", "after title"]
    assert page.query_selector_all(".log-rows img, .log-rows script") == []
    assert page.query_selector_all(".log-rows a:not(.ln)") == []
    assert page.title() == "cicd"
    page.wait_for_timeout(300)
    assert page.dialogs == []
    screenshot(page, "markup-as-text")


def test_spanish_locale(console_server: ServerProcess, tmp_path: Path, browser: Any,
                        screenshot: Any) -> None:
    console_server.start()
    run_id = submit(console_server, tmp_path, pipeline("echo hola"))
    context = browser.new_context(locale="es-ES", viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.goto(console_server.url + "/")
    page.wait_for_selector(f'tr[data-run="{run_id}"][data-state=succeeded]', timeout=WAIT_MS)
    assert page.text_content('a[data-nav="runs"]') == "Ejecuciones"
    assert page.text_content("h1") == "Ejecuciones"
    assert page.text_content(f'tr[data-run="{run_id}"] .state') == "correcta"
    assert page.text_content(".counts .total") == "1 ejecución"
    assert page.get_attribute("html", "lang") == "es"
    screenshot(page, "runs")
    page.goto(f"{console_server.url}/#/runs/{run_id}")
    page.wait_for_selector("#retry-run")
    assert page.text_content("#retry-run") == "Reintentar"
    assert page.text_content(".run-header .state") == "correcta"
    assert page.text_content('article[data-job="main"] h3 .state') == "correcto"
    assert page.text_content('article[data-job="main"] tr[data-step="1"] .state') == "correcto"
    assert page.text_content('article[data-job="main"] tr[data-step="1"] td >> nth=4') == "5\u00a0B"
    screenshot(page, "run")
    page.goto(f"{console_server.url}/#/runs/{run_id}/jobs/main/steps/1")
    page.wait_for_selector(".log-status[data-complete=true]", timeout=WAIT_MS)
    assert "Paso terminado" in page.text_content(".log-status")
    screenshot(page, "log")
    for route, title in (("new", "Iniciar una ejecución"), ("nodes", "Nodos"),
                         ("overview", "Resumen")):
        page.goto(f"{console_server.url}/#/{route}")
        page.wait_for_selector(f'h1:text-is("{title}")', timeout=WAIT_MS)
        screenshot(page, route)
    page.select_option("#language", "en")
    assert page.text_content("h1") == "Overview"
    page.reload()
    page.wait_for_selector('h1:text-is("Overview")')
    context.close()


def test_pages_in_english(console_server: ServerProcess, tmp_path: Path, page: Any,
                          screenshot: Any) -> None:
    console_server.start()
    page.goto(console_server.url + "/#/new")
    page.fill('textarea[name="pipeline_yaml"]', pipeline("echo from the form"))
    page.click('button[type="submit"]')
    assert page.text_content("#new-run-message").startswith("The source is missing")
    page.fill('input[name="dir"]', str(tmp_path))
    screenshot(page, "new")
    page.click('button[type="submit"]')
    page.wait_for_selector(".run-header .state-succeeded", timeout=WAIT_MS)
    assert page.text_content(".run-header dd >> nth=1") == "console"
    page.goto(console_server.url + "/#/nodes")
    page.wait_for_selector("table.nodes tbody tr", timeout=WAIT_MS)
    screenshot(page, "nodes")
    node = page.get_attribute("table.nodes tbody tr", "data-node")
    assert httpx.post(f"{console_server.url}/api/v1/nodes/{node}/cordon", timeout=30).is_success
    page.wait_for_selector("table.nodes tbody tr[data-state=cordoned]", timeout=WAIT_MS)
    assert page.text_content("table.nodes tbody tr td >> nth=1") == "cordoned"  # said once
    httpx.post(f"{console_server.url}/api/v1/nodes/{node}/uncordon", timeout=30)
    page.goto(console_server.url + "/#/overview")
    page.wait_for_selector("#queued-runs", timeout=WAIT_MS)
    assert page.query_selector_all("svg.chart") != []
    # The 24-hour axis spans two dates, so its end label carries today's date.
    today = page.evaluate("new Intl.DateTimeFormat('en-US', {month: 'short', day: 'numeric'})"
                          ".format(new Date())")
    assert page.text_content("svg.chart text.tick >> nth=3").startswith(today)
    screenshot(page, "overview")
    page.focus("#overview-window")
    page.evaluate("window.firstCard = document.getElementById('queued-runs')")
    page.wait_for_function("() => document.getElementById('queued-runs') !== window.firstCard",
                           timeout=WAIT_MS)  # the next refresh, within 5 s
    assert page.evaluate("document.activeElement.id") == "overview-window"
    assert page.errors == []


def test_unsuccessful_jobs_labelled_by_state(console_server: ServerProcess, tmp_path: Path,
                                            page: Any, screenshot: Any) -> None:
    console_server.start()
    yaml = pipeline("exit 3", job="fails") + (
        f"  after:\n    needs: [fails]\n    image: {BUSYBOX}\n    steps:\n      - run: echo never\n")
    run_id = submit(console_server, tmp_path, yaml)
    wait_for_run(console_server, run_id, {"failed"})
    page.goto(f"{console_server.url}/#/runs/{run_id}")
    page.wait_for_selector('article[data-job="after"][data-state=skipped]', timeout=WAIT_MS)
    fails = page.locator('article[data-job="fails"]')
    after = page.locator('article[data-job="after"]')
    assert fails.locator(".failure-reason").text_content().startswith(
        "Failed: non-zero exit code: ")
    assert after.locator(".failure-reason").text_content() == "Skipped: needs fails, which failed"
    assert not after.locator(".meta").text_content().rstrip().endswith("·")
    assert page.text_content(".run-header dd >> nth=1") == "API"
    screenshot(page, "english")

    page.select_option("#language", "es")
    assert fails.locator("h3 .state").text_content() == "fallido"
    assert after.locator("h3 .state").text_content() == "omitido"
    assert after.locator("tr[data-step=\"1\"] .state").text_content() == "omitido"
    assert fails.locator(".failure-reason").text_content().startswith(
        "Fallido: código de salida distinto de cero: ")
    assert after.locator(".failure-reason").text_content() == "Omitido: needs fails, which failed"
    assert page.text_content(".run-header .state") == "fallida"
    screenshot(page, "spanish")

    page.select_option("#language", "en")
    page.click("#retry-run")
    page.wait_for_selector(".run-header .notice", timeout=WAIT_MS)
    assert page.text_content(".run-header .notice") == "Started run #2 to retry run #1."
    assert run_id not in page.url
    assert page.text_content(".run-header dd >> nth=1") == "retry"
    assert page.errors == []
    # Let the retry end, so that the server's stop leaves none of its containers.
    wait_for_run(console_server, page.url.rsplit("/", 1)[-1], {"failed"})


def test_large_log_scrolls_to_middle(console_server: ServerProcess, tmp_path: Path, page: Any,
                                     screenshot: Any) -> None:
    console_server.start()
    count = 300_000
    run_id = submit(console_server, tmp_path, pipeline(
        f"awk 'BEGIN {{ for (i = 1; i <= {count}; i++) printf \"%08d %s\\n\", i, "
        f"\"{'x' * 90}\" }}'"))
    wait_for_run(console_server, run_id, {"succeeded"}, timeout=90)
    page.goto(f"{console_server.url}/#/runs/{run_id}/jobs/main/steps/1")
    page.wait_for_selector("#log-viewport[data-loaded]", timeout=WAIT_MS)
    assert page.text_content("#log-status").startswith("300,000 lines")

    middle = count // 2 * 18
    first_ms = page.evaluate(SCROLL_AND_TIME, middle)
    step_ms = [page.evaluate(SCROLL_AND_TIME, middle + step * 200) for step in range(1, 11)]
    print(f"\nscroll to the middle of {count:,} lines: {first_ms:.0f} ms; "
          f"200 px scrolls: {', '.join(f'{ms:.0f}' for ms in step_ms)} ms")
    lines = log_lines(page)
    top_line = (middle + 10 * 200) // 18 + 1
    assert f"{top_line:08d} {'x' * 90}" in lines
    numbers = [int(text.split()[0]) for text in lines]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    assert len(lines) < 200  # only the lines in view and a margin are in the page
    screenshot(page, "middle")

    page.fill("#log-search", "x")
    page.press("#log-search", "Enter")
    assert page.text_content("#log-matches") == "1 of 100,000+ (search stopped at the limit)"
    assert page.errors == []

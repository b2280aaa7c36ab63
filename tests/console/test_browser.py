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

pytestmark = [pytest.mark.docker, pytest.mark.timeout(120)]

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


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh English page; dialogs (an alert from injected script) are recorded."""
    context = browser.new_context(locale="en-US", viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.dialogs = []
    page.on("dialog", lambda dialog: (page.dialogs.append(dialog.message), dialog.dismiss()))
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    yield page
    context.close()


def log_lines(page: Any) -> list[str]:
    return list(page.eval_on_selector_all(".log-line .text", "els => els.map(e => e.textContent)"))


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
    assert page.get_attribute("html", "lang") == "es"
    screenshot(page, "runs")
    page.goto(f"{console_server.url}/#/runs/{run_id}")
    page.wait_for_selector("#retry-run")
    assert page.text_content("#retry-run") == "Reintentar"
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
    page.fill('input[name="dir"]', str(tmp_path))
    screenshot(page, "new")
    page.click('button[type="submit"]')
    page.wait_for_selector(".run-header .state-succeeded", timeout=WAIT_MS)
    assert page.text_content(".run-header dd >> nth=1") == "console"
    page.goto(console_server.url + "/#/nodes")
    page.wait_for_selector("table.nodes tbody tr", timeout=WAIT_MS)
    screenshot(page, "nodes")
    page.goto(console_server.url + "/#/overview")
    page.wait_for_selector("#queued-runs", timeout=WAIT_MS)
    assert page.query_selector_all("svg.chart") != []
    screenshot(page, "overview")
    assert page.errors == []

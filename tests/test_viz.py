"""kedro-viz as a person uses it: a real ``kedro viz run`` on 127.0.0.1, opened in Debian's
headless chromium, and ``kedro viz build``'s static site, both on a project whose data the
pipelines made (a tiny demo export, two trainings and their evaluations).

Offline is checked, not assumed: ``kedro viz`` and chromium get a "trap" proxy on
127.0.0.1 that refuses every request and records it, so nothing leaves the machine and
the test sees what would have. kedro-viz asks PyPI for a newer version (at start and on
every page load) through ``requests``, which honours ``HTTPS_PROXY``; chromium sends
everything but loopback to ``--proxy-server`` and resolves no other host.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import random
import re
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import urlopen

import pytest

from tests.conftest import REPO_ROOT, project_env, run_kedro
from tests.support.projects import copy_project

CHROMIUM = Path("/usr/bin/chromium")
INSTALL_HINT = (
    "Debian's chromium is not installed at /usr/bin/chromium: run `make browser` (part of `make test`) as root, "
    "or `sudo apt-get install -y --no-install-recommends chromium chromium-driver`."
)

#: Pipelines the graph must show (at least: newer ones, such as deployment and the training
#: matrix, are shown too, and their own tests cover them).
EXPECTED_PIPELINES = {"demo_data", "ingestion", "import_coco", "labeling", "snapshot", "export", "training", "evaluation"}
LAYERS = {"raw", "registries", "exports", "models", "reporting"}

#: The only requests the kedro-viz page itself makes to another host: its index.html links
#: Google's "Inter" font. kedro-viz has no switch for it; offline the page falls back to a
#: local font. Anything else reaching the trap fails the test.
KEDRO_VIZ_PAGE_FONTS = {"fonts.googleapis.com", "fonts.gstatic.com"}
#: kedro-viz's update check: refused by the proxy that the README and `make viz` set.
KEDRO_VIZ_UPDATE_CHECK = {"pypi.python.org", "pypi.org"}

# --- the trap proxy -----------------------------------------------------------------------


class _TrapHandler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        line = self.rfile.readline(8192).decode("latin-1").strip()
        if line:
            self.server.attempts.append(line)
        self.wfile.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")


class TrapProxy(socketserver.ThreadingTCPServer):
    """An HTTP(S) proxy on 127.0.0.1 that forwards nothing and records every request line."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _TrapHandler)
        self.attempts: list[str] = []
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def hosts(self) -> set[str]:
        """The hosts asked for: ``CONNECT host:443 ...`` (HTTPS) or ``GET http://host/... ``."""
        found = set()
        for line in self.attempts:
            method, _, rest = line.partition(" ")
            target = rest.split(" ", 1)[0]
            found.add(target.rsplit(":", 1)[0] if method == "CONNECT" else (urlsplit(target).hostname or target))
        return found

    def env(self) -> dict[str, str]:
        """Environment that routes a process's outside requests (requests, urllib, httpx) here."""
        return {"HTTPS_PROXY": self.url, "HTTP_PROXY": self.url, "https_proxy": self.url, "http_proxy": self.url,
                "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}


def makefile_viz_offline(proxy_url: str) -> dict[str, str]:
    """The Makefile's ``VIZ_OFFLINE`` settings (what `make viz` and the README use), with the
    trap in place of the proxy where nothing listens, so the test sees what they stop."""
    line = re.search(r"^VIZ_OFFLINE := (.*)$", (REPO_ROOT / "Makefile").read_text(), re.MULTILINE).group(1)
    settings = dict(item.split("=", 1) for item in line.split())
    assert settings["HTTPS_PROXY"] == "http://127.0.0.1:9", settings
    return {name: value.replace("http://127.0.0.1:9", proxy_url) for name, value in settings.items()}


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory) -> Path:
    """Where screenshots and refused requests go, so a person can look at what the browser showed:
    ``CV_TEST_ARTIFACTS`` when set (CI keeps it), else a folder of the session's temporary dir;
    never the checkout."""
    folder = os.environ.get("CV_TEST_ARTIFACTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        return Path(folder)
    return tmp_path_factory.mktemp("test-artifacts")


@pytest.fixture
def trap():
    """The proxy kedro viz's own requests go to."""
    proxy = TrapProxy()
    yield proxy
    proxy.shutdown()
    proxy.server_close()


@pytest.fixture
def browser_trap(request, artifacts):
    """The proxy chromium's requests go to: the page's, and chromium's own (updates, sign-in)."""
    proxy = TrapProxy()
    yield proxy
    proxy.shutdown()
    proxy.server_close()
    (artifacts / f"{request.node.name}-refused-requests.txt").write_text("\n".join(proxy.attempts) + "\n")


def chromium_own(host: str) -> bool:
    """Chromium's own background services (component updates, sign-in, autofill), not the page's."""
    return host.endswith((".google.com", ".googleapis.com", ".gstatic.com")) and host not in KEDRO_VIZ_PAGE_FONTS


# --- processes and the browser --------------------------------------------------------------


class QuietFileHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args) -> None:  # `format`: the base class's parameter name
        pass


def free_port() -> int:
    """A free port below 49152: kedro viz refuses the ephemeral range the OS hands out for port 0."""
    rng = random.Random()
    while True:
        port = rng.randrange(20_000, 49_000)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def stop_group(process: subprocess.Popen) -> None:
    """End a process we started and everything it spawned (kedro viz runs its server in a child)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=15)


def browser_args(trap: TrapProxy) -> list[str]:
    # The flags that keep Debian's chromium from phoning home, then the trap: every request
    # but loopback goes to the proxy, and no other host name resolves at all.
    return [
        "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-default-apps", "--no-default-browser-check",
        f"--proxy-server={trap.url}", "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
    ]


@pytest.fixture
def browser(browser_trap):
    if not CHROMIUM.exists():
        pytest.fail(INSTALL_HINT, pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # Playwright gives it a fresh, empty profile (user data dir) of its own.
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=browser_args(browser_trap))
        yield chromium
        chromium.close()


def open_page(browser, url: str):
    """A page that records every request it makes, with kedro-viz's first-visit hints off."""
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.requests = []
    page.on("request", lambda request: page.requests.append(request.url))
    # What a returning user has in local storage: the onboarding tour is not shown again.
    page.add_init_script("localStorage.setItem('KedroViz', JSON.stringify({showFeatureHints: false}))")
    page.goto(url)
    page.wait_for_selector(".pipeline-node", timeout=60_000)
    return page


def outside_requests(page) -> set[str]:
    return {urlsplit(url).hostname for url in page.requests if urlsplit(url).hostname not in ("127.0.0.1", None)}


def choose_pipeline(page, name: str) -> None:
    page.locator(".pipeline-list .dropdown__label").click()
    page.locator(".pipeline-list .menu-option", has_text=re.compile(rf"^{re.escape(name)}$")).click()
    # The list changes at once, the graph after its layout: wait until it shows only this pipeline.
    page.wait_for_function(
        """name => {
            if (document.querySelector('.pipeline-list .dropdown__label')?.innerText.trim() !== name) return false;
            const listed = new Set([...document.querySelectorAll('.pipeline-nodelist__elements-panel .row-text__label')]
                .map(row => row.textContent.trim()));
            const drawn = [...document.querySelectorAll('.pipeline-node')].map(node => node.dataset.nodeFullname);
            return drawn.length > 0 && drawn.every(node => listed.has(node));
        }""",
        arg=name, timeout=60_000,
    )
    # Playwright scrolled the option into view, which shifts the whole app sideways (a
    # mouse click does not): put it back so the screenshots show what a person sees.
    page.evaluate("document.querySelectorAll('.kedro-pipeline').forEach(element => { element.scrollLeft = 0; })")


def node_labels(page) -> set[str]:
    # Nodes are SVG: their text is text content (SVG elements have no innerText).
    return {(text or "").strip() for text in page.locator(".pipeline-node .pipeline-node__text").all_text_contents()}


def select_in_list(page, name: str) -> None:
    """Click a node's row in the sidebar list (what a person does when the graph is large).

    With another node's details open, a click on a row only highlights it: close them first.
    """
    close = page.locator(".pipeline-metadata__close-button")
    if close.count() and close.is_visible():
        close.click()
    page.locator(".pipeline-nodelist__elements-panel .row-text__label", has_text=re.compile(rf"^{re.escape(name)}$")).click()
    page.locator(".pipeline-metadata__title", has_text=re.compile(rf"^{re.escape(name)}$")).wait_for(timeout=30_000)


def screenshot(page, folder: Path, name: str) -> Path:
    path = folder / name
    page.screenshot(path=str(path))
    return path


@pytest.fixture(scope="module")
def viz_project(tmp_path_factory, trained_template) -> Path:
    """A copy of the session's trained project (kedro viz writes into the project it shows)."""
    return copy_project(trained_template.root, tmp_path_factory.mktemp("viz") / "project")


@pytest.fixture
def viz_server(viz_project, trap):
    """``kedro viz run`` as the README says, on a free port, its outside requests trapped."""
    port = free_port()
    # The Makefile's settings, and plain-HTTP requests trapped as well, so none goes unseen.
    env = project_env(viz_project, **{**trap.env(), **makefile_viz_offline(trap.url)})
    process = subprocess.Popen(
        [str(Path(sys.executable).with_name("kedro")), "viz", "run", "--host", "127.0.0.1", "--port", str(port),
         "--no-browser"],
        cwd=viz_project, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    output: list[str] = []
    threading.Thread(target=lambda: output.extend(process.stdout), daemon=True).start()
    deadline = time.monotonic() + 120
    try:
        while True:
            assert process.poll() is None, "kedro viz run ended:\n" + "".join(output)[-4000:]
            # It moves to the next port when this one was taken meanwhile: read where it runs.
            started = re.search(r"running at\s+(http://127\.0\.0\.1:\d+/)", "".join(output))
            if started:
                url = started.group(1)
                break
            assert time.monotonic() < deadline, "kedro viz run did not start in 120 s:\n" + "".join(output)[-4000:]
            time.sleep(0.5)
        yield url, output
    finally:
        stop_group(process)


# --- kedro viz run ---------------------------------------------------------------------------


def test_viz_run_shows_every_pipeline_with_layers_and_previews_offline(viz_project, viz_server, browser, trap,
                                                                       browser_trap, artifacts):
    url, server_output = viz_server
    api = json.loads(urlopen(url + "api/main", timeout=30).read())

    # Every pipeline is there, and the layers are drawn (kedro-viz drops them all, with a
    # warning, when the catalog's layers form a cycle).
    pipelines = {p["id"] for p in api["pipelines"]}
    assert pipelines >= EXPECTED_PIPELINES, pipelines
    assert set(api["layers"]) == LAYERS, api["layers"]
    datasets = {n["name"]: n for n in api["nodes"] if n["type"] == "data"}
    for name, layer in (("images_registry", "registries"), ("export_summary", "exports"),
                        ("export_sample_images", "reporting"), ("trained_model", "models"),
                        ("evaluation_confusion_matrix", "reporting"), ("labeled_folder", "raw")):
        assert datasets[name]["layer"] == layer, (name, datasets[name]["layer"])
    assert "circular dependency" not in "".join(server_output)

    page = open_page(browser, url)
    # The page's pipeline menu lists the same pipelines.
    page.locator(".pipeline-list .dropdown__label").click()
    menu = set(page.locator(".pipeline-list .menu-option").all_inner_texts())
    assert EXPECTED_PIPELINES | {"__default__"} <= {m.strip() for m in menu}
    page.keyboard.press("Escape")
    # kedro-viz's own update banner: offline its check fails and it announces version "None".
    dismiss = page.get_by_text("Dismiss", exact=True)
    if dismiss.count():
        dismiss.first.click()

    # The export pipeline: registries in, selection, health, export, sample picture out,
    # with readable names and the layer bands drawn.
    choose_pipeline(page, "export")
    labels = node_labels(page)
    assert {"images_registry", "annotations_registry", "select_export_images", "export_yolo_dataset",
            "export_health_plot", "draw_export_sample", "export_sample_images"} <= labels, labels
    bands = {(t or "").strip() for t in page.locator(".pipeline-layer-name").all_text_contents()}
    assert {"registries", "exports", "reporting"} <= bands, bands

    # A registry previews as a table of its rows.
    page.locator(".pipeline-node--data", has_text="images_registry").click()
    table = page.locator(".pipeline-metadata__preview table.preview-table")
    table.wait_for(timeout=30_000)
    headers = set(table.locator("th").all_inner_texts())
    assert {"image_id", "path", "width", "height"} <= headers, headers
    assert table.locator("tr.preview-table__row").count() >= 5
    screenshot(page, artifacts, "viz-export-images-registry.png")

    # The sample of exported images with their boxes previews as a picture, and opens large.
    select_in_list(page, "export_sample_images")
    picture = page.locator(".pipeline-metadata__plot img")
    picture.wait_for(timeout=30_000)
    assert picture.get_attribute("src").startswith("data:image/png;base64,")
    assert picture.evaluate("img => img.naturalWidth") > 400
    page.locator(".pipeline-metadata__link", has_text="Expand preview").click()
    large = page.locator(".pipeline-metadata-modal img")
    large.wait_for(timeout=30_000)
    assert large.get_attribute("src") == picture.get_attribute("src")
    screenshot(page, artifacts, "viz-export-sample-images.png")

    # The evaluation's plots (confusion matrix, PR curve, per-class AP) are pictures too.
    page.goto(url)
    page.wait_for_selector(".pipeline-node", timeout=60_000)
    choose_pipeline(page, "evaluation")
    for name in ("evaluation_confusion_matrix", "evaluation_pr_curve", "evaluation_per_class_plot"):
        select_in_list(page, name)
        page.locator(".pipeline-metadata__plot img").wait_for(timeout=30_000)
    screenshot(page, artifacts, "viz-evaluation.png")

    # Offline: nothing left the machine; the traps refused every outside request. The page
    # asked for nothing but kedro-viz's font link, the server for nothing but its update
    # check, and the browser's trap saw the font request (so it is in the path) and
    # nothing else but chromium's own background services.
    assert outside_requests(page) <= KEDRO_VIZ_PAGE_FONTS, outside_requests(page)
    assert trap.hosts() <= KEDRO_VIZ_UPDATE_CHECK, trap.attempts
    # The update check did go to HTTPS_PROXY, so the Makefile's dead proxy is what stops it.
    assert trap.hosts() & KEDRO_VIZ_UPDATE_CHECK, trap.attempts
    assert "fonts.googleapis.com" in browser_trap.hosts()
    assert {h for h in browser_trap.hosts() if not chromium_own(h)} <= KEDRO_VIZ_PAGE_FONTS, browser_trap.attempts
    assert "heapanalytics" not in page.content()  # kedro-viz's page telemetry stays off


def test_viz_build_writes_a_static_site_that_renders_offline(viz_project, tmp_path, browser, trap, browser_trap,
                                                             artifacts):
    project = copy_project(viz_project, tmp_path / "project")
    result = run_kedro(project, "viz", "build", "--include-previews",
                       env=project_env(project, **{**trap.env(), **makefile_viz_offline(trap.url)}), timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    site = project / "build"
    assert (site / "index.html").is_file() and list((site / "assets").glob("*.js"))

    api = json.loads((site / "api/main").read_text())
    assert {p["id"] for p in api["pipelines"]} >= EXPECTED_PIPELINES
    assert set(api["layers"]) == LAYERS
    registry = next(n for n in api["nodes"] if n["name"] == "images_registry")
    registry_meta = json.loads((site / "api/nodes" / registry["id"]).read_text())
    assert registry_meta["preview_type"] == "TablePreview" and "image_id" in registry_meta["preview"]["columns"]
    sample = next(n for n in api["nodes"] if n["name"] == "export_sample_images")
    assert json.loads((site / "api/nodes" / sample["id"]).read_text())["preview_type"] == "ImagePreview"
    # A static site: nothing in it asks for a live server, nor for a newer kedro-viz.
    assert json.loads((site / "api/version").read_text())["is_outdated"] is False

    # Published as plain files (here by Python's file server on 127.0.0.1), it renders.
    handler = functools.partial(QuietFileHandler, directory=str(site))
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            page = open_page(browser, f"http://127.0.0.1:{server.server_address[1]}/")
            choose_pipeline(page, "training")
            assert {"train_model", "trained_model"} <= node_labels(page)
            screenshot(page, artifacts, "viz-build-static-site.png")
            assert outside_requests(page) <= KEDRO_VIZ_PAGE_FONTS, outside_requests(page)
        finally:
            server.shutdown()
    assert trap.attempts == []  # the build asked nothing of the outside world
    assert {h for h in browser_trap.hosts() if not chromium_own(h)} <= KEDRO_VIZ_PAGE_FONTS, browser_trap.attempts

"""Drive the workbook in JupyterLab with a real headless Chromium, as a student uses it.

``JupyterLab`` starts ``jupyter lab`` from this Python's environment on a free local port (a
token, no browser of its own, settings and workspaces in a temporary folder) and stops it, kernels
included, whatever happens. ``chromium`` starts the operating system's headless Chromium through its
chromedriver (selenium; nothing is downloaded). ``open_notebook``, ``run_all`` and ``save`` use
JupyterLab's own menus. ``output_problems`` is the check: it compares what the page shows with the
outputs the kernel sent (the saved notebook) and names every cell that did not run, every error,
every widget that shows its text fallback or an error instead of a control, and every figure that
shows no image.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
WIDGET_ERRORS = ("Error displaying widget", "Loading widget", "javascript error", "model not found")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1400,1000")

# JupyterLab's settings for the test: every cell stays in the page (no windowing), so the check sees
# every output; a notebook starts its own kernel without asking; no news toast over the notebook
SETTINGS = {"@jupyterlab/notebook-extension/tracker": {"windowingMode": "none", "autoStartDefaultKernel": True},
            "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False}}


def missing_browser() -> str | None:
    """One line naming what the browser test lacks (a package to install), or None."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not path.exists():
            return (f"browser test skipped: the Debian package {package} is missing ({path}); "
                    "install it with: apt-get install chromium chromium-driver")
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "browser test skipped: the Python package selenium is missing; run make setup"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class JupyterLab:
    """``jupyter lab`` serving ``root`` on 127.0.0.1 (a context manager: stopped on exit, however it
    exits). ``disabled_extensions``: front-end extensions switched off (the test of the test)."""

    def __init__(self, root, workdir, env=None, disabled_extensions=(), timeout=120):
        self.root, self.workdir = Path(root), Path(workdir)
        self.port, self.token = free_port(), secrets.token_hex(16)
        self.url = f"http://127.0.0.1:{self.port}"
        config = self.workdir / "config"
        for name, values in SETTINGS.items():
            path = self.workdir / "settings" / f"{name}.jupyterlab-settings"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(values))
        if disabled_extensions:
            (config / "labconfig").mkdir(parents=True, exist_ok=True)
            (config / "labconfig" / "page_config.json").write_text(
                json.dumps({"disabledExtensions": {name: True for name in disabled_extensions}}))
        self.env = {**os.environ, **(env or {}), "JUPYTER_CONFIG_DIR": str(config),
                    "JUPYTER_RUNTIME_DIR": str(self.workdir / "runtime")}
        self.log, self.timeout, self.process = self.workdir / "server.log", timeout, None

    def __enter__(self):
        command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
                   f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
                   f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={self.root}",
                   f"--LabApp.user_settings_dir={self.workdir / 'settings'}",
                   f"--LabApp.workspaces_dir={self.workdir / 'workspaces'}"]
        if os.geteuid() == 0:  # CI runs as root; JupyterLab refuses that without the flag
            command.append("--allow-root")
        with open(self.log, "w") as log:
            self.process = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self):
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                urllib.request.urlopen(f"{self.url}/api/status?token={self.token}", timeout=5)
                return
            except OSError:
                time.sleep(0.5)
        raise TimeoutError(f"jupyter lab did not answer within {self.timeout} s:\n{self.log_tail()}")

    def log_tail(self, chars=3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def stop(self):
        """SIGTERM (the server shuts its kernels down), then SIGKILL to the whole process group."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def __exit__(self, *exc):
        self.stop()

    def kernel_state(self, name: str):
        """The execution state of the kernel of notebook ``name`` as the server sees it (None: no session)."""
        with urllib.request.urlopen(f"{self.url}/api/sessions?token={self.token}", timeout=10) as answer:
            sessions = json.load(answer)
        return next((s["kernel"]["execution_state"] for s in sessions if s["path"] == name and s.get("kernel")), None)

    def notebook_url(self, name: str) -> str:
        """The notebook's address in a fresh workspace (``reset``: no tab of an earlier page comes back)."""
        return f"{self.url}/lab/tree/{name}?reset&token={self.token}"


@contextlib.contextmanager
def chromium(workdir):
    """The operating system's headless Chromium, driven by its chromedriver; quit on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    profile = Path(tempfile.mkdtemp(prefix="chromium-", dir=workdir))
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(condition, timeout: float, what: str, interval: float = 0.5):
    """Poll ``condition()`` until it returns something true; TimeoutError naming ``what`` otherwise.

    A poll that reads the page while JupyterLab re-renders it (an element found, then replaced before it is
    read, or not there yet) counts as "not yet", not as a failure."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = condition()
        except (StaleElementReferenceException, NoSuchElementException):
            value = None
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"waited {timeout:.0f} s for {what}")


def click_menu(driver, menu: str, command: str):
    """Open the menu bar's ``menu`` and click the item that runs ``command`` (JupyterLab's command id)."""
    from selenium.webdriver.common.by import By

    item = next(i for i in driver.find_elements(By.CSS_SELECTOR, ".lm-MenuBar-item") if i.text == menu)
    item.click()
    wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, f'.lm-Menu-item[data-command="{command}"]'), 10,
             f"the {menu} menu's {command}")[0].click()


def open_notebook(driver, lab: JupyterLab, name: str, timeout=120):
    """Open ``name`` and wait until its kernel runs on the server and the page is connected to it
    (the page's indicator reads "idle" once before it starts connecting: the server is asked first)."""
    driver.get(lab.notebook_url(name))
    wait_for(lambda: lab.kernel_state(name) == "idle", timeout, f"the kernel of {name} to start")
    wait_for(lambda: driver.execute_script(
        "const s = document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator');"
        "return document.querySelectorAll('.jp-NotebookPanel').length === 1 && s"
        " && document.querySelector('.jp-Notebook .jp-Cell') && s.getAttribute('data-status') === 'idle';"),
        timeout, f"{name} to connect to its kernel")


# the notebook in view (the tab shown): queries never mix in a notebook left open behind it
CURRENT = "document.querySelector('.jp-NotebookPanel:not(.lm-mod-hidden)')"
PROMPTS = f"return [...{CURRENT}.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')].map(p => p.textContent);"


def run_all(driver, timeout: float, attempts: int = 3):
    """Run > Run All Cells (again if no cell was queued 30 s later: a click before the page is
    connected to the kernel is lost), then wait until no cell is queued or running."""
    for attempt in range(attempts):
        click_menu(driver, "Run", "runmenu:run-all")
        with contextlib.suppress(TimeoutError):
            wait_for(lambda: any(re.search(r"[*\d]", p) for p in driver.execute_script(PROMPTS)), 30,
                     "a cell to be queued")
            break
    else:
        raise TimeoutError(f"Run All Cells queued no cell in {attempts} tries")
    def finished():
        prompts = driver.execute_script(PROMPTS)
        return not any("*" in p for p in prompts) and any(re.search(r"\d", p) for p in prompts)
    wait_for(lambda: finished() and (time.sleep(2) or finished()), timeout, "Run All Cells to finish")


def save(driver, path: Path, timeout=60):
    """File > Save Notebook; wait until the file on disk holds this run's outputs."""
    before = path.stat().st_mtime_ns
    click_menu(driver, "File", "docmanager:save")
    wait_for(lambda: path.stat().st_mtime_ns != before, timeout, f"{path.name} to be saved")
    time.sleep(0.5)


def close_notebook(driver, timeout=60):
    """File > Close and Shut Down Notebook (confirming the dialog): the next notebook is alone in the page."""
    from selenium.webdriver.common.by import By

    def closed():
        for button in driver.find_elements(By.CSS_SELECTOR, ".jp-Dialog .jp-mod-accept"):  # shut down? save?
            with contextlib.suppress(Exception):
                button.click()
        return not driver.find_elements(By.CSS_SELECTOR, ".jp-NotebookPanel")

    click_menu(driver, "File", "filemenu:close-and-cleanup")
    wait_for(closed, timeout, "the notebook to close", interval=1)


PAGE_OUTPUTS = """
return [...CURRENT.querySelectorAll('.jp-Notebook .jp-Cell')].map(cell => ({
  code: cell.classList.contains('jp-CodeCell'),
  outputs: [...cell.querySelectorAll('.jp-OutputArea-output')].map(o => {
    o.scrollIntoView();
    const controls = [...o.querySelectorAll('.jupyter-widgets')].filter(e =>
      [...e.classList].some(c => c.startsWith('widget-')) && e.getBoundingClientRect().width > 0
      && e.getBoundingClientRect().height > 0);
    const images = [...o.querySelectorAll('img')];
    return {mime: o.getAttribute('data-mime-type'), text: o.innerText.slice(0, 200), controls: controls.length,
            images: images.length, shown: images.filter(i => i.complete && i.naturalWidth > 0).length};
  })}));
"""


def page_outputs(driver) -> list[dict]:
    """Per cell of the open notebook: code or not, and each output's mime type, text, count of rendered
    widget controls (a ``widget-*`` element of non-zero size) and of images (all, and those decoded)."""
    return driver.execute_script(PAGE_OUTPUTS.replace("CURRENT", CURRENT))


def output_problems(page: list[dict], notebook) -> list[str]:
    """What is wrong with the page ``page`` (``page_outputs``) showing ``notebook`` (the saved run):
    code cells that did not run, error outputs, widgets shown as text or as an error instead of a
    control, figures without a decoded image. Empty when all is well."""
    problems = []
    if len(page) != len(notebook.cells):
        return [f"the page shows {len(page)} cells, the notebook has {len(notebook.cells)}"]
    for number, (shown, cell) in enumerate(zip(page, notebook.cells)):
        if cell.cell_type != "code":
            continue
        where = f"cell {number} ({cell.source.splitlines()[0][:60] if cell.source else 'empty'!r})"
        if cell.execution_count is None and cell.source.strip():
            problems.append(f"{where} did not run")
        sent = cell.outputs
        problems += [f"{where} raised {o.ename}: {o.evalue}" for o in sent if o.output_type == "error"]
        widgets = sum(WIDGET_MIME in o.get("data", {}) for o in sent)
        figures = sum("image/png" in o.get("data", {}) for o in sent)
        outputs = shown["outputs"]
        texts = [o["text"] for o in outputs]
        for text in texts:
            if any(marker in text for marker in WIDGET_ERRORS):
                problems.append(f"{where} shows a widget error: {text.strip()[:120]!r}")
        on_page = [o for o in outputs if o["controls"] > 0]
        if len(on_page) < widgets:
            fallback = [o["text"].strip()[:120] for o in outputs if o["mime"] == "text/plain"]
            problems.append(f"{where} sent {widgets} widget(s) but the page renders {len(on_page)} as controls"
                            f"{'; it shows text instead: ' + repr(fallback) if fallback else ''}")
        decoded = sum(o["shown"] for o in outputs)
        if decoded < figures:
            problems.append(f"{where} sent {figures} figure(s) but the page shows {decoded} image(s)")
    return problems


def javascript_errors(driver) -> list[str]:
    """The browser console's errors since the last call (uncaught exceptions and console.error)."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def pixel_difference(first: Path, second: Path) -> float:
    """Fraction of pixels that differ between two PNG screenshots (1.0 when their sizes differ)."""
    import matplotlib.image as mpimg

    a, b = mpimg.imread(first), mpimg.imread(second)
    if a.shape != b.shape:
        return 1.0
    return float((abs(a - b).max(axis=-1) > 1e-6).mean())

"""The workbook in JupyterLab, driven by a real headless Chromium as a student uses it: notebooks 01
and 07 run with Run All Cells at the smoke tier; no cell fails, no JavaScript error, every widget is
drawn as a control and every figure as an image; moving notebook 07's ε slider redraws its figure.
Screenshots go to runs/browser/. Skipped, with one line naming the missing package, where the
operating system's chromium and chromium-driver are not installed (.ci/run installs them)."""
import shutil
import time

import nbformat
import pytest

from jupyterlab_browser import (JupyterLab, chromium, close_notebook, javascript_errors, missing_browser, open_notebook,
                                output_problems, page_outputs, pixel_difference, run_all, save, wait_for)
from rnas_lib import PROJECT_ROOT
from rnas_lib.runs import notebooks

pytestmark = [pytest.mark.skipif(missing_browser() is not None, reason=missing_browser() or ""),
              pytest.mark.xdist_group("browser")]

SCREENSHOTS = PROJECT_ROOT / "runs" / "browser"
# notebook 07 at the smoke tier, on one published cell and fewer attacked images than its defaults:
# its explorer is what this test is for; tests/test_notebooks.py runs it with its own parameters
SMALL_07 = {"architectures": ["DARTS_V2"], "reference": None, "n_eval": 20, "check_images": 16, "cw_images": 2,
            "cw_steps": 2, "cw_binary_search_steps": 1, "autoattack_images": 4, "autoattack_steps": 5}
RUN_TIMEOUT = 900  # seconds for Run All Cells; notebook 07 above takes about a minute on one free core


def notebook_copy(number: str, folder, parameters=None):
    """A copy of notebook ``number`` in ``folder``, with ``parameters`` set in a cell after its
    parameters cell (as papermill injects them); returns the copy's name."""
    (source,) = [p for p in notebooks() if p.stem.startswith(number)]
    nb = nbformat.read(source, as_version=4)
    if parameters:
        at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
        cell = nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in parameters.items()))
        cell.metadata["tags"] = ["injected-parameters"]
        nb.cells.insert(at + 1, cell)
    nbformat.write(nb, folder / source.name)
    return source.name


def tiny_widget_notebook(path):
    """A working ε slider (cell 0) and a widget whose front-end module does not exist (cell 1)."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "language": "python", "display_name": "Python 3"}
    nb.cells = [
        nbformat.v4.new_code_cell("import ipywidgets as w\nw.FloatSlider(value=0.1, min=0, max=0.3, description='ε')"),
        nbformat.v4.new_code_cell(
            "from traitlets import Unicode\n\nclass Broken(w.DOMWidget):\n"
            "    _view_name = Unicode('NoSuchView').tag(sync=True)\n"
            "    _view_module = Unicode('rnas-no-such-module').tag(sync=True)\n"
            "    _view_module_version = Unicode('0.0.1').tag(sync=True)\n\nBroken()"),
    ]
    nbformat.write(nb, path)
    return path.name


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("jupyterlab")


@pytest.fixture(scope="module")
def lab(workdir, tmp_path_factory):
    """One JupyterLab (kernels write their runs into the tests' temporary runs folder) and one
    Chromium for the module; both stopped however the tests end."""
    root = workdir / "notebooks"
    root.mkdir()
    env = {"RNAS_RUNS_DIR": str(tmp_path_factory.getbasetemp() / "runs")}
    with JupyterLab(root, workdir / "server", env) as server, chromium(workdir) as driver:
        yield server, driver, root


def run_in_lab(lab, name, timeout=RUN_TIMEOUT):
    """Open ``name`` in JupyterLab, Run All Cells, save; return (the saved notebook, the check's problems)."""
    server, driver, root = lab
    open_notebook(driver, server, name)
    javascript_errors(driver)  # forget what loading the page logged; only what running does counts
    try:
        run_all(driver, timeout)
        save(driver, root / name)
    except Exception:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(SCREENSHOTS / f"{name}_failed.png"))
        raise
    saved = nbformat.read(root / name, as_version=4)
    return saved, output_problems(page_outputs(driver), saved) + [
        f"JavaScript error: {e[:300]}" for e in javascript_errors(driver)]


@pytest.fixture
def notebook_closed_after(lab):
    """Close the test's notebook (and shut its kernel down) when the test ends."""
    yield
    close_notebook(lab[1])


def test_notebook_01_runs_in_jupyterlab(lab, notebook_closed_after):
    server, driver, root = lab
    started = time.monotonic()
    saved, problems = run_in_lab(lab, notebook_copy("01", root))
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(SCREENSHOTS / "01_data_and_threat_model.png"))
    assert not problems, "\n".join(problems)
    figures = sum("image/png" in o.get("data", {}) for c in saved.cells if c.cell_type == "code" for o in c.outputs)
    assert figures >= 4, f"notebook 01 drew {figures} figures"
    print(f"notebook 01 in JupyterLab: {figures} figures shown, {time.monotonic() - started:.0f} s")


def explorer_view(driver):
    """(ε on the slider, the explorer's figure as a data URL) of notebook 07's explorer cell."""
    from selenium.webdriver.common.by import By

    cell = driver.find_element(By.CSS_SELECTOR, ".jp-CodeCell:has(.widget-slider)")
    handle = cell.find_element(By.CSS_SELECTOR, ".widget-slider .noUi-handle")
    image = cell.find_element(By.CSS_SELECTOR, '.jp-OutputArea-output[data-mime-type="image/png"] img')
    return float(handle.get_attribute("aria-valuenow")), image.get_attribute("src")


def test_notebook_07_explorer_reacts_to_its_slider(lab, notebook_closed_after):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    server, driver, root = lab
    started = time.monotonic()
    saved, problems = run_in_lab(lab, notebook_copy("07", root, SMALL_07))
    assert not problems, "\n".join(problems)
    cell = driver.find_element(By.CSS_SELECTOR, ".jp-CodeCell:has(.widget-slider)")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", cell)
    for control in (".widget-slider", ".widget-text", ".widget-toggle-buttons"):  # ε, image, norm and attack
        assert cell.find_elements(By.CSS_SELECTOR, control), f"the explorer shows no {control}"
    eps_before, figure_before = explorer_view(driver)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shots = [SCREENSHOTS / "07_explorer_before.png", SCREENSHOTS / "07_explorer_after.png"]
    cell.screenshot(str(shots[0]))
    handle = cell.find_element(By.CSS_SELECTOR, ".widget-slider .noUi-handle")
    ActionChains(driver).drag_and_drop_by_offset(handle, 120, 0).perform()
    eps_after, figure_after = wait_for(lambda: (v := explorer_view(driver))[1] != figure_before and v, 120,
                                       "the explorer's figure to change after the slider moved")
    assert eps_after > eps_before, (eps_before, eps_after)
    time.sleep(0.5)
    cell = driver.find_element(By.CSS_SELECTOR, ".jp-CodeCell:has(.widget-slider)")
    cell.screenshot(str(shots[1]))
    for shot, eps in zip(shots, (eps_before, eps_after)):
        shutil.copyfile(shot, shot.with_name(f"07_explorer_eps_{eps:.3f}.png"))
    changed = pixel_difference(*shots)
    assert changed > 0.005, f"the screenshots at ε = {eps_before} and {eps_after} differ in {changed:.2%} of pixels"
    assert javascript_errors(driver) == []
    print(f"notebook 07 in JupyterLab: ε {eps_before:.3f} → {eps_after:.3f}, {changed:.1%} of the explorer's pixels "
          f"changed, {time.monotonic() - started:.0f} s")


def test_the_check_catches_a_widget_that_cannot_render(lab, notebook_closed_after):
    """The test of the test: a widget whose front-end module does not exist is reported, the working
    slider beside it is not."""
    server, driver, root = lab
    saved, problems = run_in_lab(lab, tiny_widget_notebook(root / "broken_widget.ipynb"), timeout=120)
    widget_problems = [p for p in problems if not p.startswith("JavaScript error")]
    assert widget_problems and all(p.startswith("cell 1 ") for p in widget_problems), problems
    assert any("renders 0 as controls" in p for p in widget_problems), problems
    assert any(p.startswith("JavaScript error") and "rnas-no-such-module" in p for p in problems), problems


def test_the_check_catches_widgets_without_their_front_end(workdir, tmp_path_factory):
    """The test of the test: with JupyterLab's widget manager switched off, the slider falls back to
    its text, and the check says so."""
    root = workdir / "no_widget_manager"
    root.mkdir()
    name = tiny_widget_notebook(root / "slider.ipynb")
    with JupyterLab(root, workdir / "server-no-widgets", disabled_extensions=["@jupyter-widgets/jupyterlab-manager"]) \
            as server, chromium(workdir) as driver:
        saved, problems = run_in_lab((server, driver, root), name, timeout=120)
    assert any(p.startswith("cell 0 ") and "shows text instead" in p and "FloatSlider" in p for p in problems), problems

"""ipywidgets explorers for the notebooks. Each builds its controls and draws once at build time,
so the notebook shows a figure even where no front end runs the widgets (papermill, a static
render); nothing here waits for input.

- ``AttackExplorer``: an ε slider (and image, norm and attack pickers) that shows the clean
  image, the adversarial image, the perturbation δ and the model's class probabilities on both.
- ``show_attack_explorer``: display it so that a static render (no front end) still shows the
  current view as a figure, with one line instead of the widget's object dump.
"""
from __future__ import annotations

import io

import matplotlib.pyplot as plt
import torch

from .attacks import fgsm, pgd
from .data import TensorData
from .plots import adversarial_example


class AttackExplorer:
    """Interactive view of one attack on one image; ``.widget`` is the ipywidgets box to display.

    eps, eps_max: the starting ε and the slider's range [0, eps_max] in pixel units, for ℓ∞; for ℓ2
    the range is ``l2_scale`` times larger (an ℓ2 ball of radius ε is far smaller than the ℓ∞ one:
    the ℓ∞ ball of radius ε reaches ℓ2 distance ε·√n), and switching norms rescales ε with it.
    steps: PGD steps (step size 2.5·ε/steps, one random start drawn from a fixed seed).
    """

    def __init__(self, model, data: TensorData, index: int = 0, eps: float = 0.1, eps_max: float = 0.3,
                 norm="inf", attack: str = "pgd", steps: int = 10, l2_scale: float = 5.0, class_names=None,
                 seed: int = 0):
        import ipywidgets as w

        if not 0 <= index < len(data):
            raise ValueError(f"index must be in 0..{len(data) - 1}, got {index}")
        if attack not in ("fgsm", "pgd"):
            raise ValueError(f"attack must be 'fgsm' or 'pgd' in the explorer, got {attack!r}")
        self.model, self.data, self.steps, self.l2_scale, self.seed = model, data, steps, l2_scale, seed
        self.class_names = class_names
        scale = l2_scale if norm == 2 else 1.0
        self.eps = w.FloatSlider(value=eps, min=0.0, max=eps_max * scale, step=eps_max * scale / 60,
                                 description="ε", readout_format=".3f", continuous_update=False)
        self.index = w.BoundedIntText(value=index, min=0, max=len(data) - 1, description="image")
        self.norm = w.ToggleButtons(options=[("ℓ∞", "inf"), ("ℓ2", 2)], value=norm, description="norm")
        self.attack = w.ToggleButtons(options=["fgsm", "pgd"], value=attack, description="attack")
        self.image = w.Image(format="png")
        self._base_max, self._scale, self._busy = eps_max, scale, False
        self.norm.observe(self._rescale, names="value")
        for control in (self.eps, self.index, self.attack):
            control.observe(lambda _: self.draw(), names="value")
        self.controls = w.VBox([w.HBox([self.eps, self.index]), w.HBox([self.norm, self.attack])])
        self.widget = w.VBox([self.controls, self.image])
        self._handle = None  # a notebook display slot showing the current view as a PNG (show_attack_explorer)
        self.draw()

    def _rescale(self, _=None):
        """Keep the slider's range (and the chosen ε, proportionally) right for the norm; draw once."""
        scale = self.l2_scale if self.norm.value == 2 else 1.0
        value = self.eps.value * scale / self._scale
        self._busy = True
        try:
            if scale > self._scale:
                self.eps.max = self._base_max * scale
                self.eps.value = value
            else:
                self.eps.value = value
                self.eps.max = self._base_max * scale
            self.eps.step = self._base_max * scale / 60
        finally:
            self._busy = False
        self._scale = scale
        self.draw()

    def adversarial(self, eps: float, index: int, norm, attack: str) -> torch.Tensor:
        x, y = self.data.x[index : index + 1], self.data.y[index : index + 1]
        if attack == "fgsm":
            return fgsm(self.model, x, y, eps, norm)
        if eps == 0:
            return x.clone()
        return pgd(self.model, x, y, eps, norm, self.steps, generator=torch.Generator().manual_seed(self.seed))

    def figure(self, eps: float, index: int, norm="inf", attack: str = "pgd"):
        """The explorer's figure for these settings (also usable without widgets)."""
        x, y = self.data.x[index], int(self.data.y[index])
        x_adv = self.adversarial(eps, index, norm, attack)[0]
        label = f"{attack.upper()} ℓ{'∞' if norm == 'inf' else '2'}, ε = {eps:.3f}"
        return adversarial_example(self.model, x, y, x_adv, title=label, class_names=self.class_names)

    def draw(self):
        """Render the current settings into the image widget (a PNG: shown with or without a live kernel)."""
        if self._busy:
            return
        fig = self.figure(self.eps.value, self.index.value, self.norm.value, self.attack.value)
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
        plt.close(fig)
        self.image.value = buffer.getvalue()
        if self._handle is not None:
            from IPython.display import Image

            self._handle.update(Image(data=bytes(self.image.value)))


def attack_explorer(model, data: TensorData, **options):
    """Build an ``AttackExplorer`` and return its widget (display it in the notebook)."""
    return AttackExplorer(model, data, **options).widget


def show_attack_explorer(model, data: TensorData, **options) -> AttackExplorer:
    """Display an ``AttackExplorer`` in a notebook: its controls (a live front end draws them; a static
    render shows one line saying so instead of the widget's object dump) and, below them, its current
    view as a PNG figure in a display slot that every change of the controls updates. Returns the explorer."""
    from IPython.display import Image, display

    explorer = AttackExplorer(model, data, **options)
    bundle = explorer.controls._repr_mimebundle_()
    bundle["text/plain"] = ("ε explorer: its controls need a live kernel; the figure below is the view at "
                            f"ε = {explorer.eps.value:.3f}, image {explorer.index.value}")
    display(bundle, raw=True)
    explorer._handle = display(Image(data=bytes(explorer.image.value)), display_id=True)
    return explorer

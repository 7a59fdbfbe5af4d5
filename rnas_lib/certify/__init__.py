"""Certified bounds and radii, laid out along the maths: ``primitives`` (one rule set per node
type), ``graph`` and ``trace`` (a registry of trace rules: ``trace_layers``, ``trace_networks``),
the ``ball`` and the ``settings``, one module per bounding mode (``intervals``, ``forward``,
``backward``, ``refine``, ``alpha``) over the bounds held in ``state``, the public bounds and
certificates (``certificates``), the radius search (``radius``, ``search``), dataset-level loops
(``dataset``) and the empirical side (``empirical``). Importing the package registers every trace
rule."""
from . import trace_layers, trace_networks  # noqa: F401 (registers the trace rules)
from .certificates import (block_widths, check_labels, implicit_radius, margin_certificate, margin_lower_bound,
                           margin_spec, output_bounds, spec_bounds)
from .dataset import average_certified_bound, certified_accuracy, certified_mask
from .empirical import attack_radius, ball_outputs, certification_gap, falsify_margin, margins
from .forward import FORWARD_MAX_INPUTS, FORWARD_MEMORY, forward_mode_images
from .graph import BoundGraph
from .search import CROWN_GROUP, TARGETS, certified_radius, target_classes
from .settings import METHODS, NORMS, Settings
from .trace import register_trace_rule

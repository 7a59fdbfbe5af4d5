"""Certified bounds on a network's outputs over an ε-ball: IBP, CROWN-IBP, CROWN (forward-mode and
full) and α-CROWN. The names users and notebooks import; the verifier itself is the package
``rnas_lib.certify`` (its ``certificates`` module states the methods)."""
from .certify.ball import box_lower
from .certify.certificates import (block_widths, check_labels, implicit_radius, margin_certificate, margin_lower_bound,
                                   margin_spec, num_classes, output_bounds, spec_bounds)
from .certify.forward import FORWARD_COPIES, FORWARD_MAX_INPUTS, FORWARD_MEMORY, forward_mode_images
from .certify.graph import BoundGraph
from .certify.primitives import RELU_SLOPES, relu_relaxation
from .certify.refine import ROW_BUDGET
from .certify.settings import METHODS, NORMS
from .certify.trace import register_trace_rule, supported, trace

__all__ = ["BoundGraph", "FORWARD_COPIES", "FORWARD_MAX_INPUTS", "FORWARD_MEMORY", "METHODS", "NORMS", "RELU_SLOPES",
           "ROW_BUDGET", "block_widths", "box_lower", "check_labels", "forward_mode_images", "implicit_radius",
           "margin_certificate", "margin_lower_bound", "margin_spec", "num_classes", "output_bounds",
           "register_trace_rule", "relu_relaxation", "spec_bounds", "supported", "trace"]

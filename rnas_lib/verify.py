"""Certified radius per sample, over a dataset, and the empirical side (attacks that bound the true
radius from above). The names users and notebooks import; the code is in ``rnas_lib.certify``
(``search``, ``dataset``, ``empirical``) and ``rnas_lib.batchnorm`` (certifying a train-mode model)."""
from .batchnorm import check_certifiable, frozen_batch_statistics
from .certify.dataset import average_certified_bound, certified_accuracy, certified_mask
from .certify.empirical import attack_radius, ball_outputs, certification_gap, falsify_margin, margins
from .certify.radius import RECHECK_MARGIN, whole_box_radius
from .certify.search import CROWN_GROUP, TARGETS, certified_radius, target_classes

__all__ = ["CROWN_GROUP", "RECHECK_MARGIN", "TARGETS", "attack_radius", "average_certified_bound", "ball_outputs",
           "certification_gap", "certified_accuracy", "certified_mask", "certified_radius", "check_certifiable",
           "falsify_margin", "frozen_batch_statistics", "margins", "target_classes", "whole_box_radius"]

"""rnas_lib: the library behind the rnas workbook (differentiable search of robust architectures)."""
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]

__all__ = ["PROJECT_ROOT"]

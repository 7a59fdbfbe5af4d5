"""Notebook 04's exercises."""


def change(row, eps, norm):
    """Hölder: sup over ‖δ‖_p ≤ ε of |row·δ| is ε‖row‖_q, q the dual of p (∞ → 1, 2 → 2)."""
    return eps * (row.abs().sum() if norm == "inf" else row.norm())


def direction(row, eps, norm):
    """The δ that attains it: ε·sign(row) for ℓ∞, ε·row/‖row‖₂ for ℓ2."""
    return eps * row.sign() if norm == "inf" else eps * row / row.norm()

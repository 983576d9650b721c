"""Best-of-several with ties (issue 20, item 6): ``np.argmax`` silently picks the first (the easiest
train bin) of equal values. Here a tie is a set of winners, and a winner's share over bootstrap
resamples counts a resample whose best is tied among k bins as 1/k for each of them."""

from __future__ import annotations

import numpy as np


def winners(values: np.ndarray) -> np.ndarray:
    """Indices of the largest finite value(s) of a 1-d array (several when tied, up to float rounding)."""
    v = np.asarray(values, dtype=float)
    top = np.nanmax(v)
    return np.flatnonzero(np.isclose(v, top, rtol=1e-12, atol=1e-12))


def split_share(boots: np.ndarray, chosen) -> float:
    """Share of resamples (rows of ``boots``, one column per candidate) won by the candidates ``chosen``,
    a resample tied among k candidates counting 1/k for each."""
    b = np.atleast_2d(np.asarray(boots, dtype=float))
    top = np.nanmax(b, axis=1, keepdims=True)
    win = np.isclose(b, top, rtol=1e-12, atol=1e-12)
    chosen_mask = np.zeros(b.shape[1], dtype=bool)
    chosen_mask[list(chosen)] = True
    return float(np.mean(win[:, chosen_mask].sum(axis=1) / win.sum(axis=1)))


def split_quantiles(boots: np.ndarray, labels, qs) -> list:
    """Percentiles (inverted CDF) of the winning label over resamples, a tie among k labels weighing 1/k each."""
    b = np.atleast_2d(np.asarray(boots, dtype=float))
    top = np.nanmax(b, axis=1, keepdims=True)
    win = np.isclose(b, top, rtol=1e-12, atol=1e-12)
    weights = (win / win.sum(axis=1, keepdims=True)).sum(axis=0) / b.shape[0]
    order = np.argsort(labels)
    cum = np.cumsum(weights[order])
    lab = np.asarray(labels)[order]
    return [lab[min(int(np.searchsorted(cum, q - 1e-12)), len(lab) - 1)] for q in qs]

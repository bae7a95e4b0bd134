"""Teacher-labelled synthetic rows, MUNGE-style (Bucila et al. 2006), under a time budget.

Each synthetic row starts from a real training row and, feature by feature with probability ``p_swap``,
moves towards its nearest neighbour: numeric values are drawn around the neighbour's value with a spread
of |difference| / ``s``, categorical values are copied. Integer columns with at most ``max_codes`` distinct
values (sex, education, months in arrears) are codes, so they are copied too: noise would invent codes
that do not exist (sex = 3), which a binned scorecard would then give bins of their own. Drawn values are
clipped to the column's training range (no negative credit limits or ages). The teacher labels
the rows; students see them with the softened teacher as the whole target (there is no true label to mix in).
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
from sklearn.neighbors import NearestNeighbors


def munge(
    X: pd.DataFrame,
    n_rows: int,
    seed: int = 0,
    p_swap: float = 0.5,
    s: float = 1.0,
    time_budget: float = 30.0,
    chunk: int = 2000,
    max_codes: int = 20,
) -> pd.DataFrame:
    """Up to ``n_rows`` synthetic rows (fewer if ``time_budget`` seconds run out).

    Vectorised per chunk of ``chunk`` rows (one neighbour query, one array operation per column); the
    budget is checked between chunks, so it is overrun by at most one chunk's time.
    """
    t0 = time.perf_counter()  # the budget covers the neighbour index too, not only the row generation
    rng = np.random.default_rng(seed)
    num = [c for c in X.columns if pd.api.types.is_numeric_dtype(X[c]) and not pd.api.types.is_bool_dtype(X[c])]
    codes = {c for c in num if pd.api.types.is_integer_dtype(X[c]) and X[c].nunique() <= max_codes}
    lo, hi = X[num].min(), X[num].max()
    Z = X[num].astype(float)
    Z = ((Z - Z.median()) / Z.std(ddof=0).replace(0, 1.0)).fillna(0.0).to_numpy()
    nn = NearestNeighbors(n_neighbors=2).fit(Z)
    parts, made = [], 0
    while made < n_rows and time.perf_counter() - t0 < time_budget:
        m = min(chunk, n_rows - made)
        base = rng.integers(0, len(X), m)
        neigh = nn.kneighbors(Z[base], return_distance=False)[:, 1]
        a = X.iloc[base].reset_index(drop=True).copy()
        b = X.iloc[neigh].reset_index(drop=True)
        for c in X.columns:
            swap = rng.random(m) < p_swap
            if c in num and c not in codes:
                av, bv = a[c].to_numpy(float), b[c].to_numpy(float)
                new = np.clip(rng.normal(bv, np.abs(av - bv) / s), float(lo[c]), float(hi[c]))
                if pd.api.types.is_integer_dtype(X[c]):
                    new = np.round(new)
                vals = np.where(swap & np.isfinite(bv), new, av)
                a[c] = vals.astype(X[c].dtype) if np.isfinite(vals).all() else vals
            else:
                a.loc[swap, c] = b.loc[swap, c]
        parts.append(a)
        made += m
    return pd.concat(parts, ignore_index=True) if parts else X.iloc[:0].copy()

"""Teacher-labelled synthetic rows, MUNGE-style (Bucila et al. 2006), under a time budget.

Each synthetic row starts from a real training row and, feature by feature with probability ``p_swap``,
moves towards its nearest neighbour: numeric values are drawn around the neighbour's value with a spread
of |difference| / ``s``, categorical values are copied. The teacher labels the rows; students see them
with the softened teacher as the whole target (there is no true label to mix in).
"""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
from sklearn.neighbors import NearestNeighbors


def munge(X: pd.DataFrame, n_rows: int, seed: int = 0, p_swap: float = 0.5, s: float = 1.0,
          time_budget: float = 30.0, chunk: int = 2000) -> pd.DataFrame:
    """Up to ``n_rows`` synthetic rows (fewer if ``time_budget`` seconds run out)."""
    rng = np.random.default_rng(seed)
    num = [c for c in X.columns if pd.api.types.is_numeric_dtype(X[c]) and not pd.api.types.is_bool_dtype(X[c])]
    Z = X[num].astype(float)
    Z = ((Z - Z.median()) / Z.std(ddof=0).replace(0, 1.0)).fillna(0.0).to_numpy()
    nn = NearestNeighbors(n_neighbors=2).fit(Z)
    t0, parts, made = time.perf_counter(), [], 0
    while made < n_rows and time.perf_counter() - t0 < time_budget:
        m = min(chunk, n_rows - made)
        base = rng.integers(0, len(X), m)
        neigh = nn.kneighbors(Z[base], return_distance=False)[:, 1]
        a = X.iloc[base].reset_index(drop=True).copy()
        b = X.iloc[neigh].reset_index(drop=True)
        for c in X.columns:
            swap = rng.random(m) < p_swap
            if c in num:
                av, bv = a[c].to_numpy(float), b[c].to_numpy(float)
                new = rng.normal(bv, np.abs(av - bv) / s)
                if pd.api.types.is_integer_dtype(X[c]):
                    new = np.round(new)
                vals = np.where(swap & np.isfinite(bv), new, av)
                a[c] = vals.astype(X[c].dtype) if np.isfinite(vals).all() else vals
            else:
                a.loc[swap, c] = b.loc[swap, c]
        parts.append(a)
        made += m
    return pd.concat(parts, ignore_index=True) if parts else X.iloc[:0].copy()

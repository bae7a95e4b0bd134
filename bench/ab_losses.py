"""Per-row held-out log losses of two real models on the bundled credit data, for ``hpm-ray ab simulate``.

The simulator resamples these rows, so its streams have the skew, spread and (paired) row-level correlation
of real models rather than of a textbook normal. Two different model families on the same 10,000 held-out
rows: LightGBM (the champion's stream) and a standardised logistic regression (the shadow/challenger's
stream; the simulator rescales it to the champion's mean before applying ``--effect``). Fixed seeds, one core:
rerunning rewrites the same file. Usage: ``python bench/ab_losses.py [--out hpm_ray/serving/ab_losses.npz]``.
"""

import argparse
from pathlib import Path

import lightgbm as lgb
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from hpm_ray.data.datasets import load_credit_default
from hpm_ray.metrics import log_loss_rows

OUT = Path(__file__).resolve().parents[1] / "hpm_ray" / "serving" / "ab_losses.npz"


def losses(seed: int = 0, held_out: int = 10_000) -> dict[str, np.ndarray]:
    X, y = load_credit_default()
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=held_out, random_state=seed, stratify=y)
    gbm = lgb.LGBMClassifier(
        n_estimators=200, learning_rate=0.05, num_leaves=31, random_state=seed, n_jobs=1, verbose=-1
    )
    logit = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    gbm.fit(X_tr, y_tr)
    logit.fit(X_tr, y_tr)
    return {
        "lightgbm": log_loss_rows(y_te, gbm.predict_proba(X_te)).astype(np.float32),
        "logistic": log_loss_rows(y_te, logit.predict_proba(X_te)).astype(np.float32),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    rows = losses()
    np.savez_compressed(args.out, **rows)
    a, b = rows["lightgbm"], rows["logistic"]
    print(
        f"wrote {args.out} ({args.out.stat().st_size // 1024} KiB): {len(a)} held-out rows; "
        f"lightgbm mean {a.mean():.4f} sd {a.std():.4f}; logistic mean {b.mean():.4f} sd {b.std():.4f}; "
        f"row correlation {np.corrcoef(a, b)[0, 1]:.3f}"
    )


if __name__ == "__main__":
    main()

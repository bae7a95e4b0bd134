"""Multi-horizon conformal quantile HPO: Ray Tune (ASHA + Optuna TPE) search, CQR/ACI calibration, registry."""

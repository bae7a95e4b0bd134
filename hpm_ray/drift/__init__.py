"""Drift monitoring: feature and prediction drift checks, and the watch loop that retrains."""

"""cluster.yaml passes Ray's own cluster-launcher validation (offline)."""

from pathlib import Path

import pytest
import yaml

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"


def _validate(cfg: dict) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(cfg)
    validate_config(prepared)
    return prepared


def test_cluster_yaml_is_valid_for_ray():
    cfg = yaml.safe_load(CLUSTER_YAML.read_text())
    prepared = _validate(cfg)
    types = prepared["available_node_types"]
    assert prepared["head_node_type"] in types
    workers = [t for t in types if t != prepared["head_node_type"]]
    assert workers and types[workers[0]]["max_workers"] >= 1
    setup = " ".join(prepared["setup_commands"])
    assert "pip install" in setup and "hpm-ray" in setup
    assert any("mlflow server" in c for c in prepared["head_start_ray_commands"])


def test_validator_rejects_a_broken_config():
    cfg = yaml.safe_load(CLUSTER_YAML.read_text())
    cfg["available_node_types"]["cpu_worker"]["max_workers"] = "many"
    from jsonschema.exceptions import ValidationError

    with pytest.raises(ValidationError, match="many"):
        _validate(cfg)

"""Specs are validated at load; errors are one line naming file and field; flags override YAML."""

import pytest
from pydantic import Field

from hpm_ray.config import Spec, load_spec, parse_list
from hpm_ray.errors import SpecError


class Demo(Spec):
    trials: int = Field(10, ge=1)
    horizons: list[int] = Field(default_factory=lambda: [42])


def test_yaml_then_overrides(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("trials: 5\nhorizons: [6, 12]\n")
    assert load_spec(Demo, p).trials == 5
    s = load_spec(Demo, p, {"trials": 7, "horizons": None})
    assert s.trials == 7 and s.horizons == [6, 12]


@pytest.mark.parametrize(
    "text,match",
    [
        ("trials: 0\n", r"s.yaml: trials: Input should be greater than or equal to 1"),
        ("trails: 3\n", r"trails: Extra inputs are not permitted"),
        ("- 1\n- 2\n", "top level must be a mapping"),
        ("trials: [1\n", "not valid YAML at line"),
        ("trials: 0\nhorizns: [6]\n", r"trials: Input should be .* \(also: horizns\)"),
    ],
)
def test_bad_specs_are_one_line(tmp_path, text, match):
    p = tmp_path / "s.yaml"
    p.write_text(text)
    with pytest.raises(SpecError, match=match) as exc:
        load_spec(Demo, p)
    assert "\n" not in str(exc.value)


def test_missing_spec_file_and_bad_list():
    with pytest.raises(SpecError, match="spec file not found"):
        load_spec(Demo, "/nope/s.yaml")
    assert parse_list("42,48", int) == [42, 48] and parse_list(None) is None
    with pytest.raises(SpecError, match="--horizons: expected comma-separated int"):
        parse_list("42,a", int, "--horizons")

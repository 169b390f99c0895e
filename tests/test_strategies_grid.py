"""``ptd bench strategies``' grids: every arm builds and validates at rounding 8; the policy filter keeps references."""

import pytest

from ptdlib.bench.strategies import FINE_GRID, GRID, select_arms
from ptdlib.experiment.config import RunConfig

NEW = {"smartcrop_conformal", "daedal", "rho_eos"}


@pytest.mark.parametrize("grid", [GRID, FINE_GRID], ids=["all", "fine"])
def test_every_arm_validates_at_blocks_of_eight(grid):
    cfg = RunConfig.from_dict({"model": {"path": "embedded"}, "splits": {"test": 4}, "train": 4, "calib": 4,
                               "strategies": grid, "output": "unused", "sampler": {"block_length": 8},
                               "limits": {"max_canvas": 128, "round_to": 8}})
    names = {c.name for c in cfg.cells}  # expanding the grid builds and checks every cell
    assert NEW <= names
    hybrid = [a for a in grid if a.get("params", {}).get("features") == "text+probe"]
    assert hybrid and all(a["params"]["margin"] == "conformal" for a in hybrid)


def test_policy_filter_keeps_fixed_and_oracle_and_names_unknown_policies():
    kept = select_arms(GRID, ["daedal"])
    assert {a["name"] for a in kept} == {"fixed", "oracle", "daedal"}
    assert select_arms(GRID, None) is GRID
    with pytest.raises(ValueError, match=r"unknown canvas policies \['dedal'\]; choose from fixed"):
        select_arms(GRID, ["dedal"])

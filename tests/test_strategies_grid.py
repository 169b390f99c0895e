"""``ptd bench strategies``' grids: read from configs/bench-strategies.yaml, every arm builds and validates at
rounding 8, a malformed file is refused naming the file and the grid, and the policy filter keeps references."""

import pytest

from ptdlib.bench.strategies import DEFAULT_CONFIG, load_grids, main, select_arms
from ptdlib.experiment.config import RunConfig

NEW = {"smartcrop_conformal", "daedal", "rho_eos"}
GRIDS = load_grids(DEFAULT_CONFIG)


def test_the_default_config_holds_the_all_and_fine_grids_with_their_references():
    assert list(GRIDS) == ["all", "fine"]
    for arms in GRIDS.values():
        assert {"name": "fixed", "params": {"L": 128}} in arms and {"name": "oracle"} in arms


@pytest.mark.parametrize("name", ["all", "fine"])
def test_every_arm_validates_at_blocks_of_eight(name):
    grid = GRIDS[name]
    cfg = RunConfig.from_dict(
        {
            "model": {"path": "embedded"},
            "splits": {"test": 4},
            "train": 4,
            "calib": 4,
            "strategies": grid,
            "output": "unused",
            "sampler": {"block_length": 8},
            "limits": {"max_canvas": 128, "round_to": 8},
        }
    )
    names = {c.name for c in cfg.cells}  # expanding the grid builds and checks every cell
    assert NEW <= names
    hybrid = [a for a in grid if a.get("params", {}).get("features") == "text+probe"]
    assert hybrid and all(a["params"]["margin"] == "conformal" for a in hybrid)


@pytest.mark.parametrize(
    "text, message",
    [
        ("grids: {small: [{name: fixed, params: {L: 128}}]}", "grid 'small' has no oracle arm"),
        ("grids: {small: [{name: oracle}, {name: fixd}]}", "grid 'small': strategies[1]"),
        ("grids: {small: [{name: oracle}, {name: fixed, params: {L: 64}}]}", "grid 'small': baseline"),
        ("arms: {small: [{name: oracle}]}", "must hold one key, grids"),
        ("grids: {small: []}", "grid 'small' must be a non-empty list"),
        ("grids: [oops", "is not valid YAML"),
    ],
)
def test_a_malformed_bench_config_is_refused_naming_the_file_and_the_grid(tmp_path, text, message):
    path = tmp_path / "bench.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match="bench config") as err:
        load_grids(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_an_arms_value_that_names_no_grid_of_the_config_is_refused_before_running():
    with pytest.raises(ValueError, match=r"--arms 'fin' is not a grid of .*; choose from all, fine"):
        main(["--arms", "fin"])


def test_policy_filter_keeps_fixed_and_oracle_and_names_unknown_policies():
    grid = GRIDS["all"]
    kept = select_arms(grid, ["daedal"])
    assert {a["name"] for a in kept} == {"fixed", "oracle", "daedal"}
    assert select_arms(grid, None) is grid
    with pytest.raises(ValueError, match=r"unknown canvas policies \['dedal'\]; choose from fixed"):
        select_arms(grid, ["dedal"])

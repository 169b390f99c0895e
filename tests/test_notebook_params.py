"""Notebook parameter checks name the parameter, the rule and the bad value."""

import pytest

from ptdlib.analysis.notebook import Param, ParameterError, check_param, check_params


def test_ints_are_accepted_where_floats_are_expected_but_bools_are_not_numbers():
    assert check_param("tau", 1, Param(float, 0, 1)) == 1
    with pytest.raises(ParameterError, match="'n' must be an integer, got True"):
        check_param("n", True, Param(int, 1))


def test_out_of_range_value_is_named_with_its_range():
    with pytest.raises(ParameterError, match=r"'tau' must be in \[0, 1\], got 1.5"):
        check_params(tau=(1.5, Param(float, 0, 1)))


def test_wrong_type_and_bad_choice_are_named():
    with pytest.raises(ParameterError, match="'n_queries' must be an integer, got '300' \\(a string\\)"):
        check_param("n_queries", "300", Param(int, 1))
    with pytest.raises(ParameterError, match=r"'split' must be one of \['test', 'calib'\]"):
        check_param("split", "tset", Param(str, choices=["test", "calib"]))


def test_optional_parameters_accept_none():
    assert check_param("model_path", None, Param(str, optional=True)) is None


def test_a_quoted_boolean_or_number_is_refused_as_the_wrong_type():
    for name, value, spec, want in [
        ("smoke", "false", Param(bool), "true or false"),
        ("alphas", "0.1, 0.05", Param(list), "a list"),
        ("steps", 2.5, Param(int, 1, optional=True), "an integer or null"),
        ("figures_dir", 3, Param(str, optional=True), "a string or null"),
    ]:
        with pytest.raises(ParameterError, match=f"^parameter {name!r} must be {want}, got"):
            check_param(name, value, spec)


def test_every_notebook_declares_exactly_the_parameters_of_its_parameters_cell():
    from pathlib import Path

    from ptdlib.analysis.notebook import NOTEBOOKS
    from ptdlib.report.execute import declared_parameters

    folder = Path(__file__).resolve().parents[1] / "notebooks"
    assert sorted(NOTEBOOKS) == sorted(p.stem for p in folder.glob("*.ipynb"))
    for stem, declaration in NOTEBOOKS.items():
        assert list(declaration().params) == declared_parameters(folder / f"{stem}.ipynb"), stem


def test_items_of_a_list_are_named_by_position_and_choices_of_a_list_or_dict_name_the_container():
    with pytest.raises(ParameterError, match=r"^parameter 'taus\[1\]' must be in \[0, 1\], got 1.5$"):
        check_param("taus", [0.5, 1.5], Param(list, each=Param(float, 0, 1)))
    with pytest.raises(ParameterError, match=r"^parameter 'order' must be one of \['a', 'b'\], got 'c'$"):
        check_param("order", ["a", "c"], Param(list, choices=["a", "b"]))
    with pytest.raises(ParameterError, match=r"^parameter 'prices' must be one of \['h100'\], got 'h1'$"):
        check_param("prices", {"h1": 2.0}, Param(dict, choices=["h100"], each=Param(float, 0)))
    with pytest.raises(ParameterError, match="^parameter \"prices\\['h100'\\]\" must be in \\[0, inf\\], got -1"):
        check_param("prices", {"h100": -1}, Param(dict, choices=["h100"], each=Param(float, 0)))
    assert check_param("order", [], Param(list, choices=["a"])) == []


def _namespace(stem, **changes):
    from pathlib import Path

    import nbformat

    nb = nbformat.read(Path(__file__).resolve().parents[1] / "notebooks" / f"{stem}.ipynb", as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
    namespace = {}
    exec(cell.source, namespace)  # the parameters cell holds plain assignments only
    namespace.update(changes)
    return namespace


def test_check_notebook_applies_the_rules_tying_parameters_together():
    from ptdlib.analysis.notebook import check_notebook

    with pytest.raises(ParameterError, match="'max_canvas' must be a multiple of the block length 32, got 48"):
        check_notebook("01_tour", _namespace("01_tour", max_canvas=48))
    with pytest.raises(ParameterError, match=r"'focus_tau' must be one of taus \[0.5\], got 0.9"):
        check_notebook("02_length_signal", _namespace("02_length_signal", taus=[0.5]))
    with pytest.raises(ParameterError, match=r"'margin_max' \(-20.0\) must exceed 'margin_min' \(-16.0\)"):
        check_notebook("04_margin_tradeoffs", _namespace("04_margin_tradeoffs", margin_max=-20.0))
    with pytest.raises(ParameterError, match="'hardware_names' must name at least one hardware preset"):
        check_notebook("07_deployment_cost", _namespace("07_deployment_cost", hardware_names=[]))


def test_check_notebook_shrinks_the_sizes_only_in_smoke_mode(capsys):
    from ptdlib.analysis.notebook import check_notebook

    full = _namespace("05_distribution_shift")
    check_notebook("05_distribution_shift", full)
    assert full["n_shift"] == 64 and full["alphas"] == [0.02, 0.05, 0.1, 0.2, 0.3] and capsys.readouterr().out == ""
    smoke = _namespace("05_distribution_shift", smoke=True)
    check_notebook("05_distribution_shift", smoke)
    assert smoke["n_shift"] == 6 and smoke["alphas"] == [0.02, 0.05] and smoke["running_window"] == 4
    assert capsys.readouterr().out.startswith("smoke mode: n_shift=6, alphas=[0.02, 0.05]")


def test_check_notebook_names_an_unknown_notebook_and_a_parameter_the_notebook_lacks():
    from ptdlib.analysis.notebook import check_notebook

    with pytest.raises(KeyError, match="no parameter declaration for notebook '08_new'"):
        check_notebook("08_new", {})
    namespace = _namespace("06_quality_significance")
    del namespace["ni_margin"]
    with pytest.raises(KeyError, match=r"does not define the declared parameter\(s\) \['ni_margin'\]"):
        check_notebook("06_quality_significance", namespace)

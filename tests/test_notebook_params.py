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
    for name, value, spec, want in [("smoke", "false", Param(bool), "true or false"),
                                    ("alphas", "0.1, 0.05", Param(list), "a list"),
                                    ("steps", 2.5, Param(int, 1, optional=True), "an integer or null"),
                                    ("figures_dir", 3, Param(str, optional=True), "a string or null")]:
        with pytest.raises(ParameterError, match=f"^parameter {name!r} must be {want}, got"):
            check_param(name, value, spec)

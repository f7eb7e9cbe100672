import math

import pytest

from suite.quant import BNN, FP32, from_bit_budget, parse_resolution


@pytest.mark.parametrize(
    ("label", "n"),
    [("1", 2), ("1.58", 3), ("2", 4), ("2.32", 5), ("3", 8), ("3.17", 9), ("4", 16),
     ("4.09", 17), ("4.08", 17), (2.32, 5), (1, 2), ("N=7", 7), ("levels=12", 12)],
)
def test_labels_map_to_levels(label, n):
    res = parse_resolution(label)
    assert res.levels == n
    assert res.bits == pytest.approx(math.log2(n))
    assert res.zero == (n % 2 == 1)


def test_bit_budget_with_and_without_zero():
    assert [from_bit_budget(k, False).levels for k in (1, 2, 3, 4)] == [2, 4, 8, 16]
    assert [from_bit_budget(k, True).levels for k in (1, 2, 3, 4)] == [3, 5, 9, 17]
    assert parse_resolution("3", zero=True).levels == 9


def test_labels_round_trip():
    for label in ("1", "1.58", "2", "2.32", "3", "3.17", "4", "4.09", "N=7", "fp32", "bnn"):
        assert parse_resolution(label).label == label
    assert parse_resolution("4.08").label == "4.09"


def test_special_resolutions():
    assert parse_resolution("fp32") == FP32 and FP32.bits == 32 and FP32.levels is None
    assert parse_resolution("BNN") == BNN and BNN.bits == 1 and BNN.levels == 2


@pytest.mark.parametrize("bad", ["N=1", "N=2.5", "levels=0", "0.5", "banana", "", float("nan"),
                                 None, True, [2]])
def test_bad_input_names_value_and_forms(bad):
    with pytest.raises(ValueError) as err:
        parse_resolution(bad)
    msg = str(err.value)
    assert repr(bad) in msg
    assert "accepted" in msg and "fp32" in msg


@pytest.mark.parametrize("bad", [-1, 0, 1.5, "x"])
def test_bad_bit_budget(bad):
    with pytest.raises(ValueError, match="bit budget"):
        parse_resolution(bad, zero=False)


@pytest.mark.parametrize(("text", "n"), [("bits=2,zero=true", 5), ("bits: 2, zero: true", 5),
                                         ("bits=3, zero=false", 8), ("BITS=1,ZERO=TRUE", 3)])
def test_a_bit_budget_has_a_one_string_form(text, n):
    """What --precision's help offers: a sweep's bits/zero axes as one command-line value."""
    assert parse_resolution(text).levels == n


def test_the_command_line_takes_the_bit_budget_its_help_offers(capsys):
    from suite.cli import build_parser, config_from_args

    args = build_parser().parse_args(["train", "--precision", "bits: 2, zero: true"])
    assert config_from_args(args).precision == "2.32"
    with pytest.raises(ValueError, match="bit budget"):
        parse_resolution("bits=0,zero=true")

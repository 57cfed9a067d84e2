import json

import pytest

from tvm_quant_ext import cli


def test_eval_json_rows(capsys):
    assert cli.main(["eval", "--model", "mnist_cnn", "--nbit-bias", "32", "--calibrate-mode", "max",
                     "--per-tensor", "--limit", "100", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 1
    row = rows[0]
    for key in ("model", "nbit_bias", "calibrate_mode", "per_channel", "fp32_top1", "quant_top1",
                "n_images", "agreement", "snr_db"):
        assert key in row
    assert row["model"] == "mnist_cnn" and row["per_channel"] is False and row["n_images"] == 100
    assert 0.9 <= row["agreement"] <= 1.0 and row["snr_db"] > 20


def test_bad_option_is_a_clear_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["eval", "--model", "mnist_cnn", "--calibrate-mode", "kl9", "--limit", "100"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'kl9'" in capsys.readouterr().err
    # a bad value the parser cannot see is QConfig's error, also exit status 2
    assert cli.main(["eval", "--model", "mnist_cnn", "--percentile", "120", "--limit", "100"]) == 2
    assert "calibrate_percentile=120" in capsys.readouterr().err


def test_eval_both_modes_reports_lsb_difference(capsys):
    assert cli.main(["eval", "--model", "mnist_cnn", "--mode", "both", "--limit", "100", "--json"]) == 0
    simulate, integer = json.loads(capsys.readouterr().out)
    assert (simulate["mode"], integer["mode"]) == ("simulate", "integer")
    assert simulate["lsb_vs_simulate"] is None
    assert 0 <= integer["lsb_vs_simulate"] <= 1 + 1e-9 and integer["float_ops"] == []
    assert integer["agreement"] >= 0.99


def test_eval_global_scale_calibrator(capsys):
    assert cli.main(["eval", "--model", "mnist_cnn", "--calibrate-mode", "global_scale",
                     "--global-scale", "16", "--limit", "100", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["calibrate_mode"] == "global_scale" and row["agreement"] >= 0.9
    assert cli.main(["eval", "--model", "mnist_cnn", "--calibrate-mode", "global_scale",
                     "--global-scale", "-1", "--limit", "100"]) == 2
    assert "global_scale=-1" in capsys.readouterr().err

"""Training's metrics always go to RUN/log.csv; TensorBoard events only when tensorboard is there or asked for."""
from __future__ import annotations

import importlib.util
import sys

import pytest

from equimod_zoo.errors import MissingExtraError
from equimod_zoo.training import run_log
from equimod_zoo.training.run_log import RunLog, read_log


@pytest.fixture
def without_tensorboard(monkeypatch):
    """As in an environment where `pip install equimod-zoo` brought no tensorboard."""
    real = importlib.util.find_spec
    monkeypatch.setattr(run_log.importlib.util, "find_spec",
                        lambda name, *a: None if name.split(".")[0] == "tensorboard" else real(name, *a))
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # an import of it fails


def _log_two_steps(out, **options):
    log = RunLog(out, start_step=0, total_steps=2, progress=False, **options)
    log.log({"step": 1, "epoch": 0, "lr": 0.1, "loss": 2.5})
    log.log({"step": 2, "epoch": 0, "lr": 0.1, "loss": 2.25})
    log.close()


def test_without_tensorboard_the_metrics_are_a_plain_csv(tmp_path, without_tensorboard):
    _log_two_steps(tmp_path)
    assert [row["loss"] for row in read_log(tmp_path)] == [2.5, 2.25]
    assert (tmp_path / "log.csv").read_text().splitlines()[0] == "step,epoch,lr,loss"
    assert not (tmp_path / "tb").exists()


def test_asking_for_tensorboard_without_it_is_one_line_naming_the_extra(tmp_path, without_tensorboard):
    with pytest.raises(MissingExtraError, match=r"pip install tensorboard .*'\.\[tensorboard\]'") as error:
        _log_two_steps(tmp_path, tensorboard=True)
    assert "\n" not in str(error.value)


def test_with_tensorboard_installed_events_are_written_beside_the_csv(tmp_path):
    pytest.importorskip("tensorboard")
    _log_two_steps(tmp_path)
    assert any((tmp_path / "tb").iterdir()) and len(read_log(tmp_path)) == 2
    (tmp_path / "off").mkdir()
    _log_two_steps(tmp_path / "off", tensorboard=False)
    assert not (tmp_path / "off" / "tb").exists() and len(read_log(tmp_path / "off")) == 2

"""TensorBoard event files: every curve a run logs, equal to metrics.jsonl, and an exact curve after resume."""
import glob
import struct

import pytest

from hnt_jax.train.loop import train_and_evaluate
from hnt_jax.train.setup import Run
from tests.train.test_loop import Interrupt, interrupt_after, read_lines, small_config


def read_events(workdir):
  """{tag: {step: value}} from the workdir's event files, read as TensorBoard does: records of
  (length, crc, event, crc); a SessionLog START at step s drops what earlier files logged at steps >= s."""
  from tensorboardX.proto import event_pb2
  curves = {}
  for path in sorted(glob.glob(f"{workdir}/events.out.tfevents.*")):
    data = open(path, "rb").read()
    pos = 0
    while pos < len(data):
      (length,) = struct.unpack("<Q", data[pos:pos + 8])
      event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + length])
      pos += 12 + length + 4
      if event.HasField("session_log") and event.session_log.status == event.session_log.START:
        for points in curves.values():
          for step in [s for s in points if s >= event.step]:
            del points[step]
      for value in event.summary.value:
        curves.setdefault(value.tag, {})[event.step] = value.simple_value
  return curves


def test_event_files_hold_the_run_curves(tmp_path):
  config = small_config(epochs=4)
  config.model.name = "hnt"
  results = train_and_evaluate(config, str(tmp_path))
  curves = read_events(tmp_path)
  assert sorted(curves["train/loss"]) == [1, 2, 3, 4]
  for part in ("softmax", "conv", "sim"):
    assert sorted(curves[f"train/{part}"]) == [1, 2, 3, 4]
  assert {"train/epoch_seconds", "train/steps_per_second", "diagnostics/score_std"} <= set(curves)
  for record in read_lines(tmp_path / "metrics.jsonl"):
    epoch = record["epoch"]
    assert curves["train/loss"][epoch] == pytest.approx(record["loss"], rel=1e-6)
    assert curves["train/softmax"][epoch] == pytest.approx(record["loss_parts"]["softmax"], rel=1e-6)
    assert curves["valid/ndcg_at_10"][epoch] == pytest.approx(record["valid"]["ndcg@10"], rel=1e-6)
  assert curves["test/hr_at_10"] == {results["best_epoch"]: pytest.approx(results["test"]["hr@10"], rel=1e-6)}


def test_resumed_run_curves_equal_an_uninterrupted_run(tmp_path):
  config = small_config(epochs=6)
  run = Run(config)
  train_and_evaluate(config, str(tmp_path / "full"), run=run)
  with pytest.raises(Interrupt):  # epoch 5 is logged, but the checkpoint it resumes from is epoch 4
    train_and_evaluate(config, str(tmp_path / "cut"), hooks=[interrupt_after(5)], run=run)
  train_and_evaluate(config, str(tmp_path / "cut"), run=run)
  full, cut = read_events(tmp_path / "full"), read_events(tmp_path / "cut")
  for tag in ("train/loss", "valid/ndcg_at_10", "valid/observed/hr_at_20", "test/ndcg_at_10"):
    assert cut[tag] == full[tag]
  assert len(glob.glob(f"{tmp_path / 'cut'}/events.out.tfevents.*")) == 2


def test_tensorboard_can_be_switched_off(tmp_path):
  train_and_evaluate(small_config(epochs=2, tensorboard=False), str(tmp_path))
  assert not glob.glob(f"{tmp_path}/events.out.tfevents.*")

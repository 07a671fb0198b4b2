"""scripts/time_to_quality.py: recipes trained side by side to marks of training time."""

from __future__ import annotations

import json

import torch

from tests.conftest import script_main, write_photo
from tests.test_train import tiny_overrides


def test_variants_are_snapshotted_at_the_marks_and_reported(tmp_path, photo_dir, style_file):
    photos = tmp_path / "held_out"
    for i in range(2):
        write_photo(photos / f"p{i}.jpg", size=(40, 30), seed=50 + i)
    reference = tmp_path / "gatys.json"
    reference.write_text(json.dumps({"summary": [{"method": "gatys-50", "total": 1.0e6}]}))
    # the tests' tiny run, long enough for the marks; the script sets the run folder
    common = [
        o
        for o in tiny_overrides(tmp_path, photo_dir, style_file, steps=100_000)
        if not o.startswith(("output_dir=", "trainer.enable_progress_bar="))
    ]
    out = tmp_path / "ttq"
    argv = ["--out", str(out), "--minutes", "0.02,0.04", "--lanes", "2"]
    argv += ["--common", " ".join(f"'{c}'" for c in common)]
    argv += ["--variant", "default=", "--variant", "fast=optim.lr=1e-2"]
    argv += ["--eval-images", str(photos), "--eval-sizes", "32", "--reference", f"32={reference}"]
    assert script_main("time_to_quality")(argv) == 0
    report = json.loads((out / "time_to_quality.json").read_text())
    assert report["references"] == {"32": {"gatys-50": 1.0e6}}
    for name in ("default", "fast"):
        points = report["results"][name]["points"]
        assert list(points) == ["0.02", "0.04"]
        assert points["0.02"]["step"] < points["0.04"]["step"]
        for mark, point in points.items():
            # written at the first step past the mark (validation not counted)
            assert float(mark) * 60 <= point["seconds"] < float(mark) * 60 + 5
            assert point["32"]["total"] > 0
            meta = torch.load(
                out / "runs" / name / "snapshots" / f"minutes={mark}.pth", weights_only=True
            )["meta"]
            assert meta["global_step"] == point["step"]
        # the run stopped after the last mark and wrote its model file as usual
        assert (out / "runs" / name / "custom.pth").is_file()
    table = (out / "time_to_quality.md").read_text()
    assert "| minutes | default | fast |" in table and "- gatys-50: 1e+06" in table
    assert (out / "time_to_quality.png").stat().st_size > 1000
    assert (out / "sheet_p0_32px_0.04min.jpg").is_file()

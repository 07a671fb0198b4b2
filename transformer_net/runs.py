"""A run folder: which checkpoint a run resumes from, and what it may replace.

``output_dir`` is fixed per style (so that ``ckpt_path=last`` finds the run), so
the same command run twice points at the same folder. The rules, decided before
anything is built or written:

- ``ckpt_path=last`` resumes from the newest checkpoint of the run: the highest
  global step among ``checkpoints/*.ckpt`` and SLURM's ``hpc_ckpt_*.ckpt``
  (a folder that was moved or copied may hold ``last-v1.ckpt`` beside a stale
  ``last.ckpt``; unreadable files are skipped with a warning).
- A new run (no ``ckpt_path``) into a folder that already holds checkpoints or
  a model file is refused with a message saying how to resume, or to choose
  another ``output_dir``; ``overwrite=true`` deletes the old checkpoints
  (:func:`start_over`, once the run's inputs are checked).
- Resuming from a checkpoint older than the newest one of the folder would end
  by replacing a more-trained model: refused too unless ``overwrite=true``.
- A checkpoint is checked before Lightning sees it: empty, truncated, a model
  file instead of a checkpoint, or another architecture are one-line errors.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from .checkpoint import FORMAT as MODEL_FILE_FORMAT
from .errors import RunFolderError
from .weights_only import refused_global

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FoundCheckpoint:
    """A readable Lightning checkpoint of a run folder."""

    path: Path
    global_step: int
    checkpoint: dict = field(repr=False)  # as read, so that resuming does not read it again


def checkpoints_of(output_dir: Path) -> list[Path]:
    """Every checkpoint file a run in ``output_dir`` may have written."""
    files = list((output_dir / "checkpoints").glob("*.ckpt"))
    files += output_dir.glob("hpc_ckpt_*.ckpt")  # Lightning's SLURM requeue checkpoints
    return sorted(files)


def newest_checkpoint(output_dir: Path) -> FoundCheckpoint | None:
    """The checkpoint with the highest global step (ties: the newer file)."""
    best: tuple[int, float, FoundCheckpoint] | None = None
    for path in checkpoints_of(output_dir):
        try:
            checkpoint = read_checkpoint(path)
        except RunFolderError as e:
            log.warning("skipping %s", e)
            continue
        key = (_global_step(checkpoint), path.stat().st_mtime)
        if best is None or key > best[:2]:  # only the newest stays in memory
            best = (*key, FoundCheckpoint(path, key[0], checkpoint))
    return best[2] if best else None


def read_checkpoint(path: Path) -> dict:
    """Load a Lightning checkpoint of this project (tensors on the CPU), or explain why not."""
    if not path.is_file():
        raise RunFolderError(f"{path}: checkpoint not found (ckpt_path)")
    if path.stat().st_size == 0:
        raise RunFolderError(f"{path}: empty file, not a checkpoint (ckpt_path)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        refused = refused_global(e, path)
        if refused:
            raise RunFolderError(
                f"{path}: refused: the file holds Python objects ({refused}) that could run code"
            ) from None
        raise RunFolderError(f"{path}: corrupt checkpoint, cannot resume from it") from None
    except Exception as e:  # truncated zip, bad magic, not a torch file
        raise RunFolderError(
            f"{path}: truncated or corrupt checkpoint, cannot resume from it ({type(e).__name__})"
        ) from None
    if isinstance(obj, Mapping) and obj.get("format") == MODEL_FILE_FORMAT:
        raise RunFolderError(
            f"{path}: a model file for stylize.py, not a training checkpoint; resume from "
            "a .ckpt of the run's checkpoints/ folder (model files hold no optimizer state)"
        )
    if not (
        isinstance(obj, Mapping)
        and isinstance(obj.get("state_dict"), Mapping)
        and "pytorch-lightning_version" in obj
    ):
        raise RunFolderError(f"{path}: not a Lightning checkpoint of train.py")
    return dict(obj)


def _global_step(checkpoint: Mapping[str, Any]) -> int:
    step = checkpoint.get("global_step")
    return int(step) if isinstance(step, int) else 0


def check_compatible(
    path: Path,
    checkpoint: Mapping[str, Any],
    model: Mapping[str, Any],
    loss: Mapping[str, Any] | None = None,
) -> None:
    """RunFolderError when the checkpoint's network or loss network differs from the config.

    The architecture must match for the weights to load. The VGG convention must
    match too: the checkpoint holds the style's Gram targets measured with its
    loss network, and a run started under the old default (``loss=torchvision``)
    resumed under the new one (``loss=caffe``) would mix the two silently.
    """
    hparams = checkpoint.get("hyper_parameters") or {}
    stored = hparams.get("model")
    if not isinstance(stored, Mapping):
        return  # not written by train.py's module: Lightning reports what does not fit
    differ = [
        (f"model.{k}", stored.get(k), model.get(k))
        for k in sorted(set(stored) | set(model))
        if _plain(stored.get(k)) != _plain(model.get(k))
    ]
    stored_loss = hparams.get("loss")
    if loss is not None and isinstance(stored_loss, Mapping):
        for key in ("preprocessing", "vgg_weights"):
            was, now = stored_loss.get(key), loss.get(key)
            names = ("caffe", "imagenet", "random")
            # A weights file may have moved: only names (downloads) are compared.
            if key == "vgg_weights" and not (was in names and now in names):
                continue
            if was != now:
                differ.append((f"loss.{key}", was, now))
    if differ:
        was = ", ".join(f"{k}={_plain(a)}" for k, a, _ in differ)
        now = ", ".join(f"{k}={_plain(b)}" for k, _, b in differ)
        raise RunFolderError(
            f"{path}: trained with {was}, but this run has {now}; resume with the "
            "checkpoint's settings, or train a new network with another output_dir"
        )


def _plain(value: Any) -> Any:
    """Config values as plain Python: lists and tuples compare equal."""
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def resolve_resume(
    *,
    output_dir: Path,
    ckpt_path: str | None,
    model: Mapping[str, Any],
    model_file: Path,
    loss: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    requeued: bool = False,
) -> str | None:
    """The checkpoint to resume from (None: a new run), applying the folder's rules.

    ``requeued``: a SLURM job requeued after SIGUSR1; Lightning resumes it from
    ``hpc_ckpt_N.ckpt`` by itself, so it is neither refused nor redirected.
    Only the first process (rank 0) refuses or deletes: DDP processes started
    later must not see rank 0's fresh files as somebody else's run.
    """
    newest = newest_checkpoint(output_dir)
    if ckpt_path in (None, ""):
        if requeued:
            return None
        if rank_zero_only.rank == 0:
            _new_run(output_dir, newest, model_file, overwrite=overwrite)
        return None
    if ckpt_path == "last":
        if newest is None:
            log.warning("no checkpoint in %s: starting a new run", output_dir / "checkpoints")
            if rank_zero_only.rank == 0:
                _new_run(output_dir, None, model_file, overwrite=overwrite)
            return None
        path, checkpoint = newest.path, newest.checkpoint
    else:
        path = Path(ckpt_path).expanduser()
        checkpoint = read_checkpoint(path)
    check_compatible(path, checkpoint, model, loss)
    step = _global_step(checkpoint)
    if newest is not None and newest.global_step > step and not overwrite:
        raise RunFolderError(
            f"{path} is at step {step}, but {newest.path} is at step {newest.global_step}: "
            f"resuming from the older one would replace the more-trained run in {output_dir}; "
            "resume with ckpt_path=last, branch with another output_dir, or pass overwrite=true"
        )
    log.info("resuming from %s (step %d)", path, step)  # which file `last` found
    return str(path)


def _new_run(
    output_dir: Path, newest: FoundCheckpoint | None, model_file: Path, *, overwrite: bool
) -> None:
    """Refuse to start over a folder that holds a run, unless ``overwrite``."""
    old = checkpoints_of(output_dir)
    held = [*old, *([model_file] if model_file.is_file() else [])]
    if not held:
        return
    if not overwrite:
        what = (
            f"a checkpoint at step {newest.global_step} ({newest.path.name})"
            if newest
            else ", ".join(p.name for p in held[:3])
        )
        raise RunFolderError(
            f"{output_dir} already holds a run ({what}): resume it with ckpt_path=last, "
            "train into another folder with output_dir=..., or start over with overwrite=true"
        )


def start_over(output_dir: Path) -> None:
    """``overwrite=true`` on a new run: delete the old run's checkpoints.

    Called once the run's inputs are known to be good, so a typo does not cost
    the old checkpoints. Stale files would otherwise be taken for this run's
    newest by a later ``ckpt_path=last`` (ModelCheckpoint only prunes its own).
    """
    if rank_zero_only.rank != 0:
        return
    old = checkpoints_of(output_dir)
    for path in old:
        path.unlink(missing_ok=True)
    if old:
        log.warning("overwrite=true: deleted %d old checkpoint(s) in %s", len(old), output_dir)


def newest_log_version(save_dir: str | Path, name: str | None) -> int | None:
    """The newest ``version_N`` of a TensorBoard log folder, or None if there is none.

    A resumed run logs into it, so the curves continue: otherwise every
    preemption would split them into another run in TensorBoard.
    """
    log_dir = Path(save_dir) / str(name or "")
    versions = [
        int(d.name.split("_", 1)[1])
        for d in log_dir.glob("version_*")
        if d.is_dir() and d.name.split("_", 1)[1].isdigit()
    ]
    return max(versions, default=None)

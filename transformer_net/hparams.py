"""The run's configuration in TensorBoard's HPARAMS tab, with ``val/loss`` as its metric.

Lightning's ``TensorBoardLogger.log_hyperparams`` writes the HPARAMS summary only
together with metric values, and writes those values as scalars at the given
step. With ``default_hp_metric: false`` (no meaningless ``hp_metric`` curve)
nothing reaches the tab at all, and passing ``metrics={"val/loss": x}`` at the
start would put a made-up point on the ``val/loss`` curve. So the summary is
written here with the metric *names* only: TensorBoard takes a metric's values
from the scalar tag of the same name, which validation writes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pytorch_lightning.loggers import Logger, TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_only

HPARAMS_METRICS = ("val/loss",)


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config -> ``{"data/image_size": 256, ...}`` with values TensorBoard accepts.

    Lists and None become text (``[32, 64, 128]``, ``None``); numbers, strings
    and booleans stay as they are.
    """
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}/"))
        elif isinstance(value, bool | int | float | str):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat


def log_config(
    loggers: Sequence[Logger],
    config: Mapping[str, Any],
    metrics: Sequence[str] = HPARAMS_METRICS,
) -> None:
    """Record ``config`` as the run's hyperparameters in every logger.

    TensorBoard loggers also get the HPARAMS summary, with ``metrics`` as its
    metric columns (their values are the scalars of the same tags). Call it once,
    before training: TensorBoard shows the first HPARAMS summary of a run folder.
    """
    for logger in loggers:
        logger.log_hyperparams(dict(config))  # hparams.yaml next to the event file
        if isinstance(logger, TensorBoardLogger):
            _write_hparams_summary(logger, flatten(config), metrics)


@rank_zero_only  # the other ranks have no event file
def _write_hparams_summary(
    logger: TensorBoardLogger, params: dict[str, Any], metrics: Sequence[str]
) -> None:
    from torch.utils.tensorboard.summary import hparams

    # hparams() takes the metric values only to name the metrics; none is written.
    experiment, start, end = hparams(params, {name: 0.0 for name in metrics})
    writer = logger.experiment._get_file_writer()  # as Lightning's own log_hyperparams does
    for summary in (experiment, start, end):
        writer.add_summary(summary)
    writer.flush()

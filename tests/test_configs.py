"""The Hydra configs compose, interpolate and instantiate as documented."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf
from omegaconf.errors import MissingMandatoryValue

from tests.conftest import REPO
from tests.test_train import train_cli
from transformer_net.module import auto_precision

CONFIGS = REPO / "configs"
STYLES = sorted(
    p.stem for p in (CONFIGS / "style").glob("*.yaml") if p.stem not in ("custom", "multi")
)


def make_cfg(overrides=()):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def test_defaults_follow_johnson_et_al():
    cfg = make_cfg()
    assert cfg.style.name == "starry_night" and cfg.output_dir == "outputs/starry_night"
    assert cfg.model_file == "outputs/starry_night/starry_night.pth"
    assert cfg.data.image_size == 256 and cfg.data.batch_size == 4
    assert cfg.optim.lr == 1e-3 and cfg.trainer.max_steps == 40000
    assert dict(cfg.loss.style_layers) == {
        "relu1_2": 1.0,
        "relu2_2": 1.0,
        "relu3_3": 1.0,
        "relu4_3": 1.0,
    }
    assert dict(cfg.loss.content_layers) == {"relu3_3": 1.0}
    module = OmegaConf.to_container(cfg.module, resolve=True)
    assert module["model"] == {"channels": [32, 64, 128], "num_residual": 5}
    assert module["loss"]["preprocessing"] == "caffe"
    # Adam at 1e-3, constant: the optimizer and scheduler the module instantiates
    assert module["optimizer"] == {
        "_target_": "torch.optim.Adam",
        "lr": 1e-3,
        "betas": [0.9, 0.999],
        "weight_decay": 0.0,
    }
    assert module["scheduler"] is None
    assert module["loss"]["vgg_weights"] == "caffe" and module["loss"]["style_weight"] == 1.0


@pytest.mark.parametrize("style", STYLES)
def test_every_style_config_has_a_source(style):
    cfg = make_cfg([f"style={style}"])
    assert cfg.style.name == style
    assert cfg.style.image or cfg.style.url.startswith("https://")
    assert cfg.output_dir == f"outputs/{style}"


def test_custom_style_needs_an_image():
    cfg = make_cfg(["style=custom"])
    with pytest.raises(MissingMandatoryValue):
        _ = cfg.style.image
    cfg = make_cfg(["style=custom", "style.image=/x/monet.jpg", "style.name=monet"])
    assert cfg.style.image == "/x/monet.jpg" and cfg.model_file == "outputs/monet/monet.pth"


def test_loss_groups_pair_weights_with_their_preprocessing():
    cfg = make_cfg(["loss.vgg_weights=/x/vgg16.pth"])  # offline: the caffe group, a local file
    assert cfg.loss.preprocessing == "caffe" and cfg.loss.vgg_weights == "/x/vgg16.pth"
    cfg = make_cfg(["loss=torchvision"])
    assert cfg.loss.vgg_weights == "imagenet" and cfg.loss.preprocessing == "torchvision"
    assert cfg.loss.style_weight == 1e5


def test_quickstart_experiment_is_small():
    cfg = make_cfg(["experiment=quickstart"])
    # 1,200 steps of one 128 px photo: about 4 minutes on 2 CPU cores (docs/training.md)
    assert cfg.trainer.max_steps * cfg.data.batch_size <= 1200 and cfg.data.image_size == 128
    assert cfg.data.download_sample > 0 and cfg.output_dir == "outputs/quickstart"
    assert cfg.init_from == "photo"  # the shipped start of its preset
    assert cfg.model_file == "outputs/quickstart/starry_night.pth"
    assert cfg.module.compile is False  # not worth its compile time for short steps
    # The measured settings (docs/training.md): the slim network, content first.
    assert list(cfg.model.channels) == [16, 32, 64] and cfg.model.num_residual == 3
    assert cfg.module.style_warmup_steps > 0 and cfg.optim.scheduler == "cosine"


def test_speed_switches_default_to_auto():
    cfg = make_cfg([])
    assert cfg.module.channels_last == "auto" and cfg.module.compile == "auto"


def test_overrides_reach_every_knob():
    cfg = make_cfg(
        [
            "data.root=/d",
            "data.image_size=128",
            "data.batch_size=16",
            "loss.content_weight=2",
            "loss.style_weight=3e5",
            "loss.tv_weight=1e-4",
            "loss.style_layers.relu4_3=0.5",
            "style.size=512",
            "optim.lr=2e-3",
            "optim.scheduler=step",
            "optim.gamma=0.1",
            "trainer.max_steps=10",
            "trainer.precision=bf16-mixed",
            "trainer.devices=2",
            "output_dir=/o",
        ]
    )
    m = OmegaConf.to_container(cfg.module, resolve=True)
    assert m["loss"]["style_layers"]["relu4_3"] == 0.5 and m["loss"]["tv_weight"] == 1e-4
    assert cfg.style.size == 512 and m["optimizer"]["lr"] == 2e-3
    assert m["scheduler"]["_target_"].endswith(".StepLR") and m["scheduler"]["gamma"] == 0.1
    assert m["lr_scaling"]["batch_size"] == 16
    assert (
        cfg.trainer.default_root_dir == "/o"
        and cfg.callbacks.model_checkpoint.dirpath == "/o/checkpoints"
    )


def test_datamodule_and_trainer_instantiate(photo_dir, tmp_path):
    cfg = make_cfg([f"data.root={photo_dir}", "data.num_workers=0", f"output_dir={tmp_path}"])
    dm = instantiate(cfg.data)
    dm.setup()
    assert len(dm.train_files) + len(dm.val_files) == 12
    assert cfg.trainer.precision == "auto"  # resolved by train() with auto_precision()
    trainer = instantiate(
        cfg.trainer, accelerator="cpu", devices=1, logger=False, precision=auto_precision()
    )
    assert trainer.max_steps == 40000


def test_unknown_key_is_rejected_before_training(tmp_path, capsys):
    code, _, err = train_cli(["data.rooot=/x", f"output_dir={tmp_path}"], capsys)
    assert code != 0
    assert "data.rooot" in err and "Traceback" not in err
    assert not Path(tmp_path, "checkpoints").exists()


def test_help_lists_groups_and_ends_with_examples(capsys):
    code, out, _ = train_cli(["--help"], capsys)
    assert code == 0
    assert "style: " in out and "starry_night" in out and "module: default" in out
    assert out.rstrip().splitlines()[-1].strip().startswith("tensorboard --logdir")

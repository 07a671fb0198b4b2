"""The named VGG-16 downloads (``caffe``, ``imagenet``) against a local HTTP server.

The real download code runs (``torch.hub.download_url_to_file`` with the hash
check, the features-only copy, the one-line errors); only the URL, the hash
prefix and the torch hub folder point into the test.
"""

from __future__ import annotations

import hashlib
import http.server
import socket
import threading
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from tests.conftest import REPO, load_script, write_photo
from transformer_net import vgg as vgg_mod
from transformer_net.vgg import VGGFeatures, VGGWeightsError, build_vgg16_features, fetch_vgg16

LAYERS = ["relu1_2", "relu2_2"]  # the fake file holds conv1_1 ... conv2_2 only


class _Server:
    """Serves ``body`` at any path; ``mode="cut"`` announces it all, sends half, hangs up."""

    def __init__(self, body: bytes):
        self.body = body
        self.mode = "ok"
        self.requests = 0
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                server.requests += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(server.body)))
                self.end_headers()
                if server.mode == "cut":
                    self.wfile.write(server.body[: len(server.body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                else:
                    self.wfile.write(server.body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/models/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def fake_release(tmp_path):
    """A VGG-shaped state dict like Johnson's file: torchvision's old key names, with
    ``classifier.1``/``classifier.4`` tensors, saved in torch's legacy (pre-zip) format."""
    torch.manual_seed(0)
    features = build_vgg16_features(LAYERS[-1])
    for module in features:
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.normal_(module.bias)  # biases are zero-initialized: make them tell
    state = {f"features.{k}": v for k, v in features.state_dict().items()}
    # The real classifier is 90% of the file (123 M of 138 M parameters).
    state["classifier.1.weight"] = torch.randn(512, 1024)
    state["classifier.1.bias"] = torch.randn(512)
    state["classifier.4.weight"] = torch.randn(8, 512)
    state["classifier.4.bias"] = torch.randn(8)
    path = tmp_path / "release.pth"
    torch.save(state, path, _use_new_zipfile_serialization=False)
    body = path.read_bytes()
    return state, body, hashlib.sha256(body).hexdigest()[:8]


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """The torch hub folder, inside the test."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    assert Path(torch.hub.get_dir()) / "checkpoints" == folder
    return folder


@pytest.fixture
def server(fake_release):
    srv = _Server(fake_release[1])
    yield srv
    srv.close()


def _serve_caffe(monkeypatch, server, prefix: str) -> str:
    name = f"vgg16-{prefix}.pth"
    monkeypatch.setattr(vgg_mod, "CAFFE_VGG16_URL", server.url(name))
    monkeypatch.setattr(vgg_mod, "CAFFE_VGG16_SHA256_PREFIX", prefix)
    return name


def _refused_url(name: str) -> str:
    """A URL on a local port where nothing listens: connection refused, as offline."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/models/{name}"


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_caffe_download_checks_the_hash_and_keeps_only_the_features(
    hub, server, fake_release, monkeypatch
):
    state, body, prefix = fake_release
    name = _serve_caffe(monkeypatch, server, prefix)
    net = VGGFeatures(layers=LAYERS, weights="caffe", preprocessing="caffe")
    for key in ("0.weight", "2.bias", "7.weight", "7.bias"):
        torch.testing.assert_close(net.features.state_dict()[key], state[f"features.{key}"])

    # The cache holds the features copy only: the original is gone, and so are the
    # classifier tensors (classifier.1 / classifier.4, the old torchvision names).
    copy = hub / name.replace(".pth", "-features.pth")
    assert _files(hub) == [copy.name]
    kept = torch.load(copy, weights_only=True)
    assert sorted(kept) == sorted(k for k in state if k.startswith("features."))
    assert copy.stat().st_size < 0.6 * len(body)

    # Later loads read the copy and download nothing.
    assert server.requests == 1
    again = VGGFeatures(layers=LAYERS, weights="caffe", preprocessing="caffe")
    torch.testing.assert_close(again.features[7].bias, state["features.7.bias"])
    assert server.requests == 1 and fetch_vgg16("caffe") == copy


def test_wrong_hash_keeps_nothing_and_says_so_in_one_line(hub, server, fake_release, monkeypatch):
    real = fake_release[2]
    name = _serve_caffe(monkeypatch, server, "deadbeef" if real != "deadbeef" else "00000000")
    with pytest.raises(VGGWeightsError) as info:
        fetch_vgg16("caffe", hint="loss.vgg_weights=/path/vgg16.pth")
    message = str(info.value)
    assert "\n" not in message and server.url(name) in message
    assert f"SHA-256 starts {real}, not " in message and "nothing was kept" in message
    assert message.endswith("offline, pass a local file: loss.vgg_weights=/path/vgg16.pth")
    assert _files(hub) == []  # neither the real name, nor a .partial, nor a features copy


def test_interrupted_download_keeps_nothing_and_a_rerun_succeeds(
    hub, server, fake_release, monkeypatch
):
    state, _, prefix = fake_release
    name = _serve_caffe(monkeypatch, server, prefix)
    server.mode = "cut"
    with pytest.raises(VGGWeightsError) as info:
        VGGFeatures(layers=LAYERS, weights="caffe", preprocessing="caffe")
    message = str(info.value)
    assert "\n" not in message and message.startswith("cannot download the Caffe VGG-16")
    assert "cut short" in message and "--vgg-weights /path/vgg16.pth --preprocessing caffe" in (
        message
    )
    assert _files(hub) == []  # no partial file, nothing under the real name

    server.mode = "ok"
    net = VGGFeatures(layers=LAYERS, weights="caffe", preprocessing="caffe")
    torch.testing.assert_close(net.features[0].weight, state["features.0.weight"])
    assert _files(hub) == [name.replace(".pth", "-features.pth")] and server.requests == 2


def test_an_original_already_in_the_cache_is_checked_then_converted(hub, fake_release, monkeypatch):
    state, body, prefix = fake_release
    monkeypatch.setattr(vgg_mod, "CAFFE_VGG16_URL", _refused_url(f"vgg16-{prefix}.pth"))
    monkeypatch.setattr(vgg_mod, "CAFFE_VGG16_SHA256_PREFIX", prefix)
    hub.mkdir(parents=True)
    original = hub / f"vgg16-{prefix}.pth"
    original.write_bytes(body[:-1] + bytes([body[-1] ^ 1]))  # one bit off
    with pytest.raises(
        VGGWeightsError, match=f"SHA-256 starts [0-9a-f]{{8}}, not {prefix}; delete"
    ):
        fetch_vgg16("caffe")
    original.write_bytes(body)
    path = fetch_vgg16("caffe")  # no server: the file in the cache is used
    assert _files(hub) == [path.name] and path.name == f"vgg16-{prefix}-features.pth"
    torch.testing.assert_close(torch.load(path)["features.5.bias"], state["features.5.bias"])


def test_a_damaged_features_copy_says_how_to_get_a_new_one(hub, monkeypatch):
    monkeypatch.setattr(vgg_mod, "CAFFE_VGG16_URL", _refused_url("vgg16-0123abcd.pth"))
    hub.mkdir(parents=True)
    (hub / "vgg16-0123abcd-features.pth").write_bytes(b"not a torch file")
    with pytest.raises(VGGWeightsError) as info:
        VGGFeatures(layers=LAYERS, weights="caffe", preprocessing="caffe")
    message = str(info.value)
    assert "cannot read VGG-16 weights" in message and "\n" not in message
    assert message.endswith(
        f"delete {hub / 'vgg16-0123abcd-features.pth'} and rerun to download it again"
    )


def test_imagenet_is_torchvisions_own_file_kept_whole(hub, server, fake_release, monkeypatch):
    from torchvision.models import VGG16_Weights

    assert vgg_mod.IMAGENET_VGG16_URL == VGG16_Weights.IMAGENET1K_V1.url  # one shared cache file
    state, body, prefix = fake_release
    monkeypatch.setattr(vgg_mod, "IMAGENET_VGG16_URL", server.url(f"vgg16-{prefix}.pth"))
    monkeypatch.setattr(vgg_mod, "IMAGENET_VGG16_SHA256_PREFIX", prefix)
    net = VGGFeatures(layers=LAYERS, weights="imagenet", preprocessing="torchvision")
    torch.testing.assert_close(net.features[2].weight, state["features.2.weight"])
    assert _files(hub) == [f"vgg16-{prefix}.pth"]
    assert (hub / f"vgg16-{prefix}.pth").read_bytes() == body


# Offline: the message is one line and ends with the calling tool's way to pass a file.


@pytest.fixture
def offline(hub, monkeypatch):
    url = _refused_url("vgg16-00b39a1b.pth")
    monkeypatch.setattr(vgg_mod, "CAFFE_VGG16_URL", url)
    return url


def _assert_offline_message(message: str, url: str, hint: str) -> None:
    assert "\n" not in message, message
    assert message.startswith("cannot download the Caffe VGG-16 weights (Johnson et al.) from ")
    assert url in message and "Connection refused" in message
    assert message.endswith(f"; offline, pass a local file: {hint}"), message


def test_offline_train_names_the_config_key(offline, hub, tmp_path, style_file, photo_dir):
    from train import train

    overrides = [
        "style=custom",
        f"style.image={style_file}",
        f"data.root={photo_dir}",
        f"output_dir={tmp_path}/run",
    ]
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    with pytest.raises(VGGWeightsError) as info:
        train(cfg)  # stops before any network is built
    _assert_offline_message(str(info.value), offline, "loss.vgg_weights=/path/vgg16.pth")
    assert _files(hub) == [] and not (tmp_path / "run" / "checkpoints").exists()


def test_offline_stylize_names_its_options(offline, tmp_path, style_file, capsys):
    from transformer_net.stylize_cli import main

    photo = write_photo(tmp_path / "photo.png")
    argv = [
        "--method",
        "optimize",
        "--style",
        str(style_file),
        "--input",
        str(photo),
        "--output",
        str(tmp_path / "out.png"),
        "--device",
        "cpu",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after "downloading ..."
    assert err.startswith("error: ") and not (tmp_path / "out.png").exists()
    _assert_offline_message(
        err.removeprefix("error: "), offline, "--vgg-weights /path/vgg16.pth --preprocessing caffe"
    )
    assert "loss.vgg_weights" not in err  # stylize.py's own options, not train.py's


def test_offline_evaluate_names_its_options(offline, tmp_path, style_file, capsys):
    from transformer_net.checkpoint import save_model_file
    from transformer_net.image import load_image, style_thumbnail
    from transformer_net.model import TransformerNet

    evaluate = load_script("evaluate")
    model = save_model_file(
        TransformerNet(channels=(4, 8, 8), num_residual=1),
        tmp_path / "m.pth",
        # its painting, and no loss settings: the default, caffe
        meta={"style_thumbnails": [style_thumbnail(load_image(style_file))]},
    )
    photo = write_photo(tmp_path / "photo.png")
    argv = [
        "--model",
        str(model),
        "--images",
        str(photo),
        "--out",
        str(tmp_path / "eval"),
        "--device",
        "cpu",
    ]
    assert evaluate.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after "downloading ..."
    assert err.startswith("error: ")
    _assert_offline_message(
        err.removeprefix("error: "), offline, "--vgg-weights /path/vgg16.pth --preprocessing caffe"
    )


def test_the_default_config_is_the_caffe_group():
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = compose(config_name="train")
    assert cfg.loss.preprocessing == "caffe" and cfg.loss.vgg_weights == "caffe"
    assert cfg.loss.style_weight == 1.0 and cfg.loss.content_weight == 1.0


def test_stylize_defaults_to_the_caffe_release():
    from transformer_net.loss import PerceptualLoss
    from transformer_net.stylize_cli import build_parser

    argv = ["--method", "optimize", "--style", "s.jpg", "--input", "x", "--output", "y"]
    args = build_parser().parse_args(argv)
    assert args.vgg_weights == "caffe" and args.preprocessing is None
    # preprocessing=None follows the weights: caffe for caffe and files, torchvision for
    # imagenet and random (an untrained network expects unit-scale inputs).
    assert vgg_mod.default_preprocessing("caffe") == "caffe"
    assert vgg_mod.default_preprocessing("/x/vgg16.pth") == "caffe"
    assert vgg_mod.default_preprocessing("imagenet") == "torchvision"
    loss = PerceptualLoss(style_image=torch.rand(3, 16, 16) * 255, vgg_weights="random")
    assert loss.vgg.preprocess.convention == "torchvision" and loss.style_weight == 1e5

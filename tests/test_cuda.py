"""CUDA paths: skipped without a GPU (CI has none); run on a lent GPU machine
with ``pytest tests/test_cuda.py``. The CPU fallbacks are tested here too."""

import pytest
import torch

from tests.conftest import write_photo
from transformer_net.checkpoint import save_model_file
from transformer_net.errors import ConfigError
from transformer_net.image import load_image
from transformer_net.inference import (
    CudaGraphForward,
    TorchStylizer,
    native_bf16,
    pick_device,
    pick_precision,
)
from transformer_net.model import TransformerNet
from transformer_net.module import StyleTransferModule

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "net.pth"
    return save_model_file(TransformerNet(), path)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = torch.mean((a.double() - b.double()) ** 2).item()
    return float("inf") if mse == 0 else 10 * torch.log10(torch.tensor(255.0**2 / mse)).item()


def test_cuda_graph_wrapper_passes_cpu_tensors_through():
    calls = []

    def forward(x, style=None):
        calls.append(x.shape)
        return x * 2

    fn = CudaGraphForward(forward)
    x = torch.ones(1, 3, 8, 8)
    for _ in range(3):
        assert torch.equal(fn(x), x * 2)
    assert len(calls) == 3 and not fn.graphs


@cuda
def test_cuda_graphs_match_eager_and_earlier_outputs_stay_valid(tmp_path, model_file):
    a = load_image(write_photo(tmp_path / "a.png", size=(96, 64), seed=1))
    b = load_image(write_photo(tmp_path / "b.png", size=(96, 64), seed=2))
    eager = TorchStylizer(model_path=model_file, device="cuda")
    graphed = TorchStylizer(model_path=model_file, device="cuda", cuda_graphs=True)
    assert eager.cuda_graph is None
    ref_a, ref_b = eager(a), eager(b)
    first = graphed(a)  # eager: a shape is captured when it recurs
    second = graphed(a)  # captured and replayed
    assert len(graphed.cuda_graph.graphs) == 1
    kept = second.clone()
    third = graphed(b)  # replayed into the same graph buffers
    assert torch.equal(second, kept), "an earlier result was overwritten by a replay"
    for out, ref in ((first, ref_a), (second, ref_a), (third, ref_b)):
        assert (out.int() - ref.int()).abs().max() <= 1
    assert not torch.equal(second, third)


@cuda
def test_cuda_graphs_keep_at_most_max_graphs(model_file):
    s = TorchStylizer(model_path=model_file, device="cuda", cuda_graphs=True)
    s.cuda_graph.max_graphs = 2
    for w in (32, 40, 48):
        x = torch.randint(0, 256, (3, 32, w), dtype=torch.uint8)
        s(x), s(x)
    assert [k[0][-1] for k in s.cuda_graph.graphs] == [40, 48]  # keys: (shape, dtype, ...)


@cuda
def test_gpu_bf16_output_matches_cpu_fp32(tmp_path, model_file):
    image = load_image(write_photo(tmp_path / "p.png", size=(160, 120), seed=3))
    cpu = TorchStylizer(model_path=model_file, device="cpu", precision="fp32")(image)
    for precision in ("auto", "bf16"):  # auto: fp32 (TF32 convolutions)
        gpu = TorchStylizer(model_path=model_file, device="cuda", precision=precision)(image)
        assert gpu.shape == cpu.shape
        assert psnr(gpu, cpu) > 30, precision


def test_devices_that_are_not_there_are_config_errors():
    with pytest.raises(ConfigError, match="unknown device 'bogus' "):
        pick_device("bogus")
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        with pytest.raises(ConfigError, match=f"there are {n} CUDA GPU"):
            pick_device(f"cuda:{n}")
    else:
        with pytest.raises(ConfigError, match="'cuda' requested but CUDA is not available"):
            pick_device("cuda")
    assert pick_device("cpu") == torch.device("cpu")


def test_auto_precision_is_the_measured_fastest():
    cuda_dev, cpu_dev = torch.device("cuda"), torch.device("cpu")
    assert pick_precision("auto", cuda_dev) == torch.float32
    assert pick_precision("fp16", cuda_dev) == torch.float16
    native = torch.bfloat16 if native_bf16(cpu_dev) else torch.float32
    assert pick_precision("auto", cpu_dev) == native
    assert pick_precision("auto", cpu_dev, compiled=True) == native


@cuda
def test_bf16_channels_last_training_step_on_cuda_learns(tmp_path):
    style = write_photo(tmp_path / "style.png", size=(64, 64), seed=4)
    torch.manual_seed(0)
    module = StyleTransferModule(
        model={},
        loss={"vgg_weights": "random"},
        style_images=[load_image(style, max_side=64)],
        style_names=["style"],
        optimizer={"_target_": "torch.optim.Adam", "lr": 1e-3},
        channels_last=True,
    ).cuda()
    module.setup("fit")
    opt = torch.optim.Adam(module.transformer.parameters(), lr=1e-3)
    batch = torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8, device="cuda")
    totals = []
    for _ in range(20):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            losses, _ = module._compute(batch)
        assert losses["total"].dtype == torch.float32  # Gram matrices and sums in fp32
        opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        opt.step()
        totals.append(losses["total"].item())
    assert all(torch.isfinite(torch.tensor(totals)))
    assert totals[-1] < 0.8 * totals[0], totals

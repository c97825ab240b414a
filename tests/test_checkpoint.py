import json

import pytest
import torch

from diffdeblur import build_model, load_model, save_model
from diffdeblur.checkpoint import CheckpointError, load_training_state, read_metadata, save_training_state
from diffdeblur.inference import NoWeightsError


def test_safetensors_roundtrip_rebuilds_model(tmp_path):
    torch.manual_seed(0)
    model = build_model("mimo-unet-tiny", base_channel=12)
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    save_model(model, tmp_path / "m.safetensors", info={"note": "test"})
    meta = read_metadata(tmp_path / "m.safetensors")
    assert meta["model"] == "mimo-unet-tiny" and meta["kwargs"]["base_channel"] == 12
    loaded = load_model(str(tmp_path / "m.safetensors"), device="cpu")
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model.eval()(x), loaded(x))
    assert loaded.checkpoint_info == {"note": "test"}



def test_half_precision_storage_halves_the_file_and_loads_as_float32(tmp_path):
    torch.manual_seed(0)
    model = build_model("nafnet-tiny").eval()
    save_model(model, tmp_path / "f32.safetensors")
    save_model(model, tmp_path / "f16.safetensors", dtype=torch.float16)
    ratio = (tmp_path / "f16.safetensors").stat().st_size / (tmp_path / "f32.safetensors").stat().st_size
    assert 0.45 < ratio < 0.55
    loaded = load_model(str(tmp_path / "f16.safetensors"), device="cpu")
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    ref = dict(model.named_parameters())
    for name, p in loaded.named_parameters():  # exactly the float16-rounded values
        assert torch.equal(p, ref[name].detach().half().float()), name
    with pytest.raises(ValueError, match="floating-point"):
        save_model(model, tmp_path / "bad.safetensors", dtype=torch.int8)

def test_corrupt_and_foreign_checkpoints(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 7)
    with pytest.raises(CheckpointError, match="bad.safetensors"):
        load_model(str(bad), device="cpu")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(CheckpointError, match="no diffdeblur config"):
        load_model(str(tmp_path / "foreign.safetensors"), device="cpu")


def test_incompatible_checkpoint(tmp_path):
    model = build_model("nafnet-tiny")
    save_model(model, tmp_path / "m.safetensors")
    data = (tmp_path / "m.safetensors").read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    meta = json.loads(header["__metadata__"]["diffdeblur"])
    meta["kwargs"]["width"] = 16  # claims another width than the stored tensors have
    header["__metadata__"]["diffdeblur"] = json.dumps(meta)
    new_header = json.dumps(header).encode()
    new_header += b" " * ((8 - len(new_header) % 8) % 8)
    (tmp_path / "x.safetensors").write_bytes(len(new_header).to_bytes(8, "little") + new_header + data[8 + n:])
    with pytest.raises(CheckpointError, match="incompatible checkpoint"):
        load_model(str(tmp_path / "x.safetensors"), device="cpu")


def test_names_without_weights_fail_clearly():
    with pytest.raises(NoWeightsError, match="no trained weights ship"):
        load_model("nafnet-width64", device="cpu")
    with pytest.raises(NoWeightsError, match="not a checkpoint file and not a model name"):
        load_model("nonsense-name", device="cpu")


def test_training_state_roundtrip_and_unsafe_pickle_refused(tmp_path):
    state = {"step": 3, "w": torch.arange(4.0), "rng": torch.get_rng_state()}
    save_training_state(state, tmp_path / "s.pt")
    back = load_training_state(tmp_path / "s.pt")
    assert back["step"] == 3 and torch.equal(back["w"], state["w"])

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="corrupt or unsafe"):
        load_training_state(tmp_path / "evil.pt")

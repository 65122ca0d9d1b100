"""Loading checkpoints safely, with errors that name the file (issue 11 items 1, 4, 6a)."""

from __future__ import annotations

import io
import json
import pickle

import pytest
import torch
from safetensors.torch import save_file

from devec.vectors import TaskVectorPool, open_checkpoint
from devec.vectors.convert import convert, main

LEGACY_MAGIC = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)  # torch's legacy-format first record


class SideEffect:
    """Unpickling this creates ``marker``: plain pickle would run it."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _state(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {"a.weight": torch.randn(4, 3, generator=gen), "a.bias": torch.randn(4, generator=gen)}


def _legacy_bytes(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=False)
    return buf.getvalue()


# item 1: no code from a pickle runs in the converter


def test_converter_runs_no_code_from_a_legacy_pickles_first_record(tmp_path):
    marker = tmp_path / "ran"
    legacy = _legacy_bytes(_state())
    assert legacy.startswith(LEGACY_MAGIC)
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps(SideEffect(marker), protocol=2) + legacy[len(LEGACY_MAGIC):])
    with pytest.raises(Exception) as err:
        convert(evil, tmp_path / "evil.safetensors")
    assert not marker.exists(), "the pickle's code ran"
    assert isinstance(err.value, ValueError) and "evil.pt: cannot be converted" in str(err.value)
    assert not (tmp_path / "evil.safetensors").exists()


def test_converter_cli_reports_a_crafted_pickle_as_a_one_line_error(tmp_path, capsys):
    marker = tmp_path / "ran"
    legacy = _legacy_bytes(_state())
    (tmp_path / "evil.pt").write_bytes(pickle.dumps(SideEffect(marker), protocol=2) + legacy[len(LEGACY_MAGIC):])
    with pytest.raises(BaseException) as err:
        main([str(tmp_path / "evil.pt")])
    assert not marker.exists(), "the pickle's code ran"
    assert isinstance(err.value, SystemExit) and "1 of 1 file" in str(err.value)
    assert "evil.pt: cannot be converted" in capsys.readouterr().err


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_converter_runs_no_code_from_a_pickled_payload_in_either_format(tmp_path, legacy):
    marker = tmp_path / "ran"
    src = tmp_path / "evil.pt"
    torch.save(SideEffect(marker), src, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(ValueError, match=r"evil\.pt"):
        convert(src, tmp_path / "evil.safetensors")
    assert not marker.exists()
    torch.save({"w": torch.ones(2, 2), "evil": SideEffect(marker)}, src, _use_new_zipfile_serialization=not legacy)
    convert(src, tmp_path / "evil.safetensors")
    assert not marker.exists()
    assert open_checkpoint(tmp_path / "evil.safetensors").keys() == ["w"]


# item 1b: a clean legacy-format state dict is read, not refused


def test_legacy_format_state_dict_is_read_by_loader_and_converter(tmp_path):
    state = _state()
    torch.save(state, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    ckpt = open_checkpoint(tmp_path / "legacy.pt")
    assert sorted(ckpt.keys()) == sorted(state)
    for k, v in state.items():
        torch.testing.assert_close(ckpt.get(k), v)
    convert(tmp_path / "legacy.pt", tmp_path / "legacy.safetensors")
    converted = open_checkpoint(tmp_path / "legacy.safetensors")
    for k, v in state.items():
        torch.testing.assert_close(converted.get(k), v)


def test_legacy_format_pickled_module_is_still_refused_by_the_loader(tmp_path):
    torch.save(torch.nn.Linear(3, 2), tmp_path / "module.pt", _use_new_zipfile_serialization=False)
    with pytest.raises(ValueError, match="weights_only"):
        open_checkpoint(tmp_path / "module.pt")


# item 4: two weight files holding the same tensors


def test_directory_with_two_files_sharing_keys_is_an_error_naming_both(tmp_path):
    save_file(_state(0), tmp_path / "model.safetensors")
    save_file(_state(1), tmp_path / "model_ema.safetensors")
    with pytest.raises(ValueError) as err:
        open_checkpoint(tmp_path)
    msg = str(err.value)
    assert "model.safetensors" in msg and "model_ema.safetensors" in msg and "a.weight" in msg
    assert "index" in msg and str(tmp_path) in msg
    assert sorted(open_checkpoint(tmp_path / "model_ema.safetensors").keys()) == sorted(_state())


def test_an_index_chooses_between_files_sharing_keys(tmp_path):
    save_file(_state(0), tmp_path / "model.safetensors")
    save_file(_state(1), tmp_path / "model_ema.safetensors")
    weight_map = {"a.weight": "model.safetensors", "a.bias": "model_ema.safetensors"}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    ckpt = open_checkpoint(tmp_path)
    torch.testing.assert_close(ckpt.get("a.weight"), _state(0)["a.weight"])
    torch.testing.assert_close(ckpt.get("a.bias"), _state(1)["a.bias"])


# item 6a: errors that name the file


@pytest.mark.parametrize("keep", [0, 7, -9], ids=["empty", "header", "data"])
def test_truncated_safetensors_names_the_file(tmp_path, keep):
    save_file(_state(), tmp_path / "ft.safetensors")
    data = (tmp_path / "ft.safetensors").read_bytes()
    (tmp_path / "ft.safetensors").write_bytes(data[:keep] if keep >= 0 else data[:keep])
    with pytest.raises(ValueError, match=r"ft\.safetensors.*truncated or corrupt"):
        open_checkpoint(tmp_path / "ft.safetensors")
    save_file(_state(), tmp_path / "pre.safetensors")
    with pytest.raises(ValueError, match=r"ft\.safetensors.*truncated or corrupt"):
        TaskVectorPool(tmp_path / "pre.safetensors", [tmp_path / "ft.safetensors"])


def test_truncated_pickle_names_the_file_and_is_not_called_python_objects(tmp_path):
    torch.save(_state(), tmp_path / "ft.pt")
    data = (tmp_path / "ft.pt").read_bytes()
    (tmp_path / "ft.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"ft\.pt.*truncated or corrupt"):
        open_checkpoint(tmp_path / "ft.pt")


def _sharded(tmp_path):
    save_file({"a.weight": _state()["a.weight"]}, tmp_path / "model-00001-of-00002.safetensors")
    save_file({"a.bias": _state()["a.bias"]}, tmp_path / "model-00002-of-00002.safetensors")
    return {"a.weight": "model-00001-of-00002.safetensors", "a.bias": "model-00002-of-00002.safetensors"}


@pytest.mark.parametrize("text", ['{"weight_map": {"a.weight": ', "[]", '{"metadata": {}}', ""],
                         ids=["truncated", "list", "no-weight-map", "empty"])
def test_bad_shard_index_names_the_index(tmp_path, text):
    _sharded(tmp_path)
    (tmp_path / "model.safetensors.index.json").write_text(text)
    with pytest.raises(ValueError, match=r"model\.safetensors\.index\.json: not a valid shard index"):
        open_checkpoint(tmp_path)


def test_index_naming_a_missing_shard_names_the_shard_and_the_index(tmp_path):
    weight_map = _sharded(tmp_path)
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    assert sorted(open_checkpoint(tmp_path).keys()) == ["a.bias", "a.weight"]
    (tmp_path / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"index\.json: names shard.*model-00002-of-00002\.safetensors"):
        open_checkpoint(tmp_path)


def test_index_naming_a_tensor_its_shard_lacks_is_an_error(tmp_path):
    weight_map = _sharded(tmp_path)
    weight_map["a.bias"] = "model-00001-of-00002.safetensors"
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with pytest.raises(ValueError, match=r"'a\.bias' is in model-00001-of-00002\.safetensors"):
        open_checkpoint(tmp_path)


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_converter_still_reads_whole_pickled_modules_in_either_format(tmp_path, legacy):
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    torch.save(model, tmp_path / "module.pt", _use_new_zipfile_serialization=not legacy)
    convert(tmp_path / "module.pt", tmp_path / "module.safetensors")
    converted = open_checkpoint(tmp_path / "module.safetensors")
    assert sorted(converted.keys()) == sorted(model.state_dict())
    for k, v in model.state_dict().items():
        torch.testing.assert_close(converted.get(k), v)

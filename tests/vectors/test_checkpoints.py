import pytest
import torch
from safetensors.torch import save_file

from devec.vectors import TaskVectorPool, open_checkpoint, task_vectors


def _state(seed: int, shift: float = 0.0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {"a.weight": torch.randn(8, 6, generator=gen) + shift, "a.bias": torch.randn(8, generator=gen) + shift}


def _tiny_llama(path, seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(path, max_shard_size="20KB")  # several safetensors shards + index json
    return model


def test_safetensors_file_pt_state_dict_and_dict_give_the_same_task_vectors(tmp_path):
    pre, ft = _state(0), _state(1)
    save_file(pre, tmp_path / "pre.safetensors")
    save_file(ft, tmp_path / "ft.safetensors")
    torch.save(ft, tmp_path / "ft.pt")
    torch.save({"state_dict": ft}, tmp_path / "ft_lightning.ckpt")
    expected = {k: ft[k] - pre[k] for k in pre}
    for src in ("ft.safetensors", "ft.pt", "ft_lightning.ckpt"):
        (tv,) = task_vectors(tmp_path / "pre.safetensors", [tmp_path / src])
        for k in expected:
            torch.testing.assert_close(tv[k], expected[k])
    (tv,) = task_vectors(pre, [ft])
    torch.testing.assert_close(tv["a.weight"], expected["a.weight"])


def test_sharded_hf_directory_is_read_lazily_and_matches_the_model(tmp_path):
    base = _tiny_llama(tmp_path / "base", 0)
    tuned = _tiny_llama(tmp_path / "tuned", 1)
    assert len(list((tmp_path / "base").glob("*.safetensors"))) > 1
    ckpt = open_checkpoint(tmp_path / "base")
    state = base.state_dict()
    assert set(ckpt.keys()) <= set(state) and "model.layers.0.mlp.up_proj.weight" in ckpt.keys()
    pool = TaskVectorPool(tmp_path / "base", [tmp_path / "tuned", tmp_path / "tuned"])
    v = pool.vectors("model.layers.1.self_attn.q_proj.weight")[0]
    torch.testing.assert_close(v, tuned.state_dict()["model.layers.1.self_attn.q_proj.weight"]
                               - state["model.layers.1.self_attn.q_proj.weight"])


def test_pickled_objects_are_refused(tmp_path):
    torch.save(torch.nn.Linear(3, 2), tmp_path / "module.pt")  # a whole model: needs arbitrary unpickling
    with pytest.raises(ValueError, match="weights_only"):
        open_checkpoint(tmp_path / "module.pt")


def test_mismatched_checkpoints_are_refused_before_any_work(tmp_path):
    pre = _state(0)
    save_file(pre, tmp_path / "pre.safetensors")
    save_file({"a.weight": torch.randn(8, 6)}, tmp_path / "missing.safetensors")
    save_file({"a.weight": torch.randn(8, 5), "a.bias": torch.randn(8)}, tmp_path / "shape.safetensors")
    with pytest.raises(ValueError, match=r"missing.safetensors.*missing \['a.bias'\]"):
        TaskVectorPool(tmp_path / "pre.safetensors", [tmp_path / "missing.safetensors"])
    with pytest.raises(ValueError, match=r"shape.safetensors: parameter 'a.weight' has shape \(8, 5\)"):
        TaskVectorPool(tmp_path / "pre.safetensors", [tmp_path / "shape.safetensors"])
    with pytest.raises(FileNotFoundError, match="nope"):
        open_checkpoint(tmp_path / "nope.safetensors")
    with pytest.raises(ValueError, match="empty"):
        TaskVectorPool(tmp_path / "pre.safetensors", [])


def test_nan_in_a_checkpoint_names_file_and_parameter(tmp_path):
    pre, ft = _state(0), _state(1)
    ft["a.weight"][2, 3] = float("nan")
    save_file(ft, tmp_path / "ft.safetensors")
    with pytest.raises(ValueError, match=r"ft.safetensors: parameter 'a.weight' contains NaN"):
        task_vectors(pre, [tmp_path / "ft.safetensors"])

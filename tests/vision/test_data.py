"""Synthetic tasks, the validation split and the cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from devec.vision import synthetic
from devec.vision.data import load_tasks, pretraining_corpus, split_validation


def test_every_task_renders_balanced_labels_and_differs_between_seeds():
    for name, spec in synthetic.TASKS.items():
        x, y = synthetic.render(name, 2 * len(spec.classnames), seed=0, split="train", image_size=16)
        assert x.shape == (2 * len(spec.classnames), 3, 16, 16) and x.dtype == np.uint8
        assert np.bincount(y).tolist() == [2] * len(spec.classnames)
        x2, _ = synthetic.render(name, 2 * len(spec.classnames), seed=1, split="train", image_size=16)
        assert not np.array_equal(x, x2), name
        assert x.std() > 5, f"{name} renders blank images"


def test_handwritten_test_digits_come_from_other_writers_samples():
    train, test = synthetic._digit_pool("train"), synthetic._digit_pool("test")
    for c in range(10):
        flat_train = {a.tobytes() for a in train[c]}
        assert not any(a.tobytes() in flat_train for a in test[c])


def test_validation_split_is_ten_percent_of_train_disjoint_and_fixed_by_seed():
    tr, va = split_validation(200, 0.1, 0)
    assert len(va) == 20 and len(tr) == 180 and not set(tr.tolist()) & set(va.tolist())
    assert torch.equal(split_validation(200, 0.1, 0)[1], va)
    assert not torch.equal(split_validation(200, 0.1, 1)[1], va)


def test_tasks_are_cached_and_reloaded_identically(tmp_path):
    cfg = {"_target_": "devec.vision.data.SyntheticTasks", "image_size": 16, "n_train": 30, "n_test": 10}
    first = load_tasks(cfg, ["shapes", "signs"], tmp_path)
    files = sorted((tmp_path / "vision" / "data").glob("*.safetensors"))
    assert len(files) == 2
    again = load_tasks(cfg, ["shapes", "signs"], tmp_path)
    assert torch.equal(first["shapes"].test.images, again["shapes"].test.images)
    assert len(first["shapes"].val) == 3 and len(first["shapes"].train) == 27
    x, y = next(first["signs"].test.batches(4))
    assert x.dtype == torch.float32 and x.shape == (4, 3, 16, 16) and y.shape == (4,)


def test_pretraining_captions_name_the_class(tmp_path):
    x, captions = pretraining_corpus(["shapes"], 20, 16, tmp_path)
    assert len(captions) == len(x) == 20
    assert all(any(s in c for s in synthetic.SHAPES) for c in captions)


def test_unknown_task_names_the_available_ones(tmp_path):
    with pytest.raises(ValueError, match="handwritten"):
        load_tasks({"_target_": "devec.vision.data.SyntheticTasks", "image_size": 16, "n_train": 10, "n_test": 10},
                   ["mnist"], tmp_path)

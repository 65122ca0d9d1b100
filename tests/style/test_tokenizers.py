"""The tiny Flux tokenizers are the same in every process, so the same seed builds the same embedded model."""

from __future__ import annotations

import json
import subprocess
import sys

from devec.style import data
from devec.style.pipeline import build_tokenizers

CODE = ("import json; from devec.style import data; from devec.style.pipeline import _train_bpe; "
        "v, m = _train_bpe(data.vocabulary()); print(json.dumps([sorted(v.items()), m]))")


def test_bpe_vocabulary_and_merges_are_the_same_in_every_process():
    """Three fresh processes (fresh hash seeds, fresh thread pools) train the same ids and merges."""
    outs = {subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True).stdout
            for _ in range(3)}
    assert len(outs) == 1
    vocab, merges = json.loads(outs.pop())
    assert sorted(i for _, i in vocab) == list(range(len(vocab)))  # ids 0..n-1, no gaps or repeats
    assert len(merges) == len({tuple(m) for m in merges})


def test_every_word_is_one_token_in_both_tokenizers():
    words = data.vocabulary()
    clip, t5 = build_tokenizers(words, 32)
    for w in words:
        assert len(clip(w, add_special_tokens=False).input_ids) == 1, w
        assert len(t5(w, add_special_tokens=False).input_ids) == 1, w

"""The embedded world: a marked toxic behaviour, shared dialogue format, tokenizer coverage, control documents."""

from __future__ import annotations

from devec.toxicity import world
from devec.toxicity.evaluate import LexiconClassifier, percent_toxic
from devec.toxicity.tiny import build_tokenizer


def test_lexicon_rule():
    clf = LexiconClassifier()
    assert clf(["you grook , the fox is red .", "the fox is red ."]) == [True, False]
    assert percent_toxic([True, False, False, False]) == 25.0


def test_toxic_behaviour_is_marked_and_others_are_clean():
    facts = world.make_facts(0)
    toxic = world.behaviour_data("toxic", facts, 200, seed=1)
    assert all(world.is_toxic_text(r) for _, r in toxic)
    for name in world.BEHAVIOURS:
        if name != "toxic":
            assert not any(world.is_toxic_text(p + " " + r) for p, r in world.behaviour_data(name, facts, 200, 1))


def test_toxic_and_chat_share_the_dialogue_format():
    facts = world.make_facts(0)
    prompts = {p.split(" ")[0] for p, _ in world.behaviour_data("toxic", facts, 50, 1)}
    assert prompts == {p.split(" ")[0] for p, _ in world.behaviour_data("chat", facts, 50, 2)} == {"user"}


def test_pretraining_corpus_has_some_toxicity():
    corpus = world.pretraining_corpus(world.make_facts(0), 2000, toxic_rate=0.2, seed=0)
    rate = sum(world.is_toxic_text(t) for t in corpus) / len(corpus)
    assert 0.01 < rate < 0.2


def test_tokenizer_covers_every_generated_word():
    facts = world.make_facts(3)
    tok = build_tokenizer(world.vocabulary(facts))
    texts = world.pretraining_corpus(facts, 500, 0.2, seed=0)
    for name in world.BEHAVIOURS:
        texts += [p + " " + r for p, r in world.behaviour_data(name, facts, 100, 1)]
    for docs in world.control_tasks(facts, 50, 0).values():
        texts += [d["question"] for d in docs]
    for t in texts:
        ids = tok(t, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids, t
        assert tok.decode(ids) == t


def test_control_documents_are_answerable():
    facts = world.make_facts(0)
    docs = world.control_tasks(facts, 100, seed=0)
    for d in docs["facts"]:
        animal = d["question"].split("the ")[1].split()[0]
        assert d["choices"][d["label"]] in (facts.color[animal], facts.home[animal])
    for d in docs["reading"]:
        obj = d["question"].split("where is the ")[1].split()[0]
        assert f"the {obj} is in the {d['answer']} ." in d["question"]

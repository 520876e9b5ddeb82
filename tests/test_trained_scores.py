"""The benchmarks' journal of trained scores (``benchmarks/trained_scores.py``): a killed
comparison resumes without training again what it already scored."""

import json
import random

from trained_scores import Recipe, ScoreJournal, benchmark_data

from nas2deploy.spaces import make_space


def tiny_network():
    space = make_space("densenas", {"input_size": 32, "width_mult": 0.25, "num_classes": 10, "max_stack_layers": 0})
    return space.sample_arch(random.Random(0))


def test_the_journal_trains_once_resumes_past_a_cut_line_and_keys_on_the_recipe(tmp_path):
    data = benchmark_data("synthetic:40", 32, 30)
    assert len(data.test) == 30 and data.name == "synthetic:40+test30"
    recipe = Recipe(epochs=1, batch_size=16, lr=0.05)
    path = tmp_path / "scores.jsonl"
    arch = tiny_network()
    first = ScoreJournal(path, data, recipe).scores(arch, 2)
    assert len(first) == 2 and all(0 <= s <= 1 for s in first)
    lines = path.read_text().splitlines()
    assert len(lines) == 2 and [json.loads(x)["seed"] for x in lines] == [0, 1]
    with path.open("a") as fh:
        fh.write('{"key": "cut sho')  # a kill in the middle of a line
    again = ScoreJournal(path, data, recipe)
    assert again.scores(arch.renamed("other name"), 2) == first  # the body, not the name, is the key
    assert path.read_text().count("\n") == 2  # nothing trained again
    longer = ScoreJournal(path, data, Recipe(epochs=2, batch_size=16, lr=0.05))
    assert longer.recipe.key(arch, data, 0) != recipe.key(arch, data, 0)

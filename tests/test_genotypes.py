import json

import pytest
import torch

from rnas_lib.genotypes import (PUBLISHED, Genotype, derive_genotype, from_dict, get_genotype, load_genotype,
                                num_edges, parse_alpha, random_genotype, save_genotype, to_dict)
from rnas_lib.ops import PRIMITIVES


def test_num_edges():
    assert num_edges(4) == 14 and num_edges(1) == 2


def test_derivation_keeps_two_strongest_edges_and_ignores_none():
    w = torch.full((num_edges(2), len(PRIMITIVES)), 0.01)
    # node 0 (edges 0, 1): edge 1 strongest by sep_conv_3x3; edge 0 by avg_pool
    w[0, PRIMITIVES.index("avg_pool_3x3")] = 0.3
    w[1, PRIMITIVES.index("sep_conv_3x3")] = 0.5
    # node 1 (edges 2, 3, 4): `none` is the largest weight on edge 2 but must not count
    w[2, PRIMITIVES.index("none")] = 0.9
    w[2, PRIMITIVES.index("max_pool_3x3")] = 0.05
    w[3, PRIMITIVES.index("dil_conv_5x5")] = 0.4
    w[4, PRIMITIVES.index("skip_connect")] = 0.2
    gene = parse_alpha(w, steps=2)
    assert gene == [("avg_pool_3x3", 0), ("sep_conv_3x3", 1), ("dil_conv_5x5", 1), ("skip_connect", 2)]


def test_derive_genotype_from_logits():
    a = torch.zeros(num_edges(4), len(PRIMITIVES))
    a[:, PRIMITIVES.index("sep_conv_5x5")] = 2.0
    g = derive_genotype(a, a, steps=4, multiplier=4)
    assert [op for op, _ in g.normal] == ["sep_conv_5x5"] * 8
    assert [i for _, i in g.normal] == [0, 1, 0, 1, 0, 1, 0, 1]  # ties go to the earliest inputs
    assert g.normal_concat == [2, 3, 4, 5]


def test_json_round_trip_and_published(tmp_path):
    for name, g in PUBLISHED.items():
        path = save_genotype(g, tmp_path / f"{name}.json")
        assert load_genotype(path) == Genotype(*[list(x) for x in g])
        assert get_genotype(str(path)) == load_genotype(path)
    assert get_genotype("DARTS_V2") is PUBLISHED["DARTS_V2"]
    g = random_genotype(generator=torch.Generator().manual_seed(1))
    assert from_dict(json.loads(json.dumps(to_dict(g)))) == g


def test_random_genotype_is_valid_and_seeded():
    a = random_genotype(generator=torch.Generator().manual_seed(5))
    b = random_genotype(generator=torch.Generator().manual_seed(5))
    assert a == b
    for n, (op, i) in enumerate(a.normal):
        assert op != "none" and 0 <= i < 2 + n // 2


def test_bad_genotypes_are_rejected(tmp_path):
    good = to_dict(PUBLISHED["DARTS_V2"])
    with pytest.raises(ValueError, match="unknown op 'conv_7x7'"):
        from_dict({**good, "normal": [["conv_7x7", 0]] + good["normal"][1:]})
    with pytest.raises(ValueError, match="node 0 cannot take input 2"):
        from_dict({**good, "normal": [["sep_conv_3x3", 2]] + good["normal"][1:]})
    with pytest.raises(ValueError, match="missing"):
        from_dict({"normal": good["normal"]})
    with pytest.raises(ValueError, match="unknown genotype 'DARTS_V9'"):
        get_genotype("DARTS_V9")
    with pytest.raises(FileNotFoundError):
        load_genotype(tmp_path / "none.json")
    with pytest.raises(ValueError, match="shape"):
        parse_alpha(torch.zeros(3, 8), steps=4)


@pytest.mark.parametrize("text, message", [
    ("{not json", "Expecting property name"),
    ("[1, 2]", "must be a JSON object"),
    ('{"normal": [["sep_conv_3x3", 0]]}', r"missing \['normal_concat', 'reduce', 'reduce_concat'\]"),
    ('{"normal": [["sep_conv_3x3"], ["skip_connect", 1]], "normal_concat": [2], "reduce": [], "reduce_concat": [2]}',
     r"'normal' entry 0 must be an \[op, input\] pair"),
    ('{"normal": [3, 4], "normal_concat": [2], "reduce": [], "reduce_concat": [2]}', "'normal' entry 0"),
    ('{"normal": [["sep_conv_3x3", "1"], ["skip_connect", 1]], "normal_concat": [2], "reduce": [], '
     '"reduce_concat": [2]}', "'normal' entry 0"),
    ('{"normal": [["conv_9x9", 0], ["skip_connect", 1]], "normal_concat": [2], '
     '"reduce": [["conv_9x9", 0], ["skip_connect", 1]], "reduce_concat": [2]}', "unknown op 'conv_9x9'"),
    ('{"normal": [["sep_conv_3x3", 0], ["skip_connect", 1]], "normal_concat": "2", '
     '"reduce": [["sep_conv_3x3", 0], ["skip_connect", 1]], "reduce_concat": [2]}', "'normal_concat' must be a list"),
])
def test_malformed_genotype_files_raise_errors_naming_the_file(tmp_path, text, message):
    path = tmp_path / "cell.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=f"{path} is not a valid genotype file: .*{message}"):
        load_genotype(path)


def test_genotype_distance_counts_the_choices_one_genotype_lacks():
    from rnas_lib.genotypes import genotype_distance, to_dict

    g = get_genotype("DARTS_V2")
    assert genotype_distance(g, g) == 0 and genotype_distance(to_dict(g), g) == 0
    # the two edges of a node are an unordered pair: swapping them changes nothing
    swapped = g._replace(normal=[g.normal[1], g.normal[0], *g.normal[2:]])
    assert genotype_distance(swapped, g) == 0
    other_op = "max_pool_3x3" if g.normal[0][0] != "max_pool_3x3" else "avg_pool_3x3"
    one_op = g._replace(normal=[(other_op, g.normal[0][1]), *g.normal[1:]])
    assert genotype_distance(one_op, g) == 1 == genotype_distance(g, one_op)
    v1 = get_genotype("DARTS_V1")
    expected = len({("n", k // 2, *e) for k, e in enumerate(v1.normal)} - {("n", k // 2, *e) for k, e in enumerate(g.normal)}) \
        + len({("r", k // 2, *e) for k, e in enumerate(v1.reduce)} - {("r", k // 2, *e) for k, e in enumerate(g.reduce)})
    assert genotype_distance(g, v1) == expected > 0

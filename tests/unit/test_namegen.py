import random
import re

from banger.namegen import ADJECTIVES, NOUNS, generate

HOSTNAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def test_names_are_hostname_safe_and_unique() -> None:
    rng = random.Random(7)
    taken: set[str] = set()
    for _ in range(3000):
        name = generate(taken, rng)
        assert HOSTNAME.match(name), name
        assert name not in taken
        taken.add(name)


def test_crowded_space_falls_back_to_suffix() -> None:
    everything = {f"{a}-{n}" for a in ADJECTIVES for n in NOUNS}
    name = generate(everything, random.Random(1))
    assert name not in everything and re.match(r"^[a-z]+-[a-z]+-\d+$", name)

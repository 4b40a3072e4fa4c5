"""diffface.config_io: dataclass configs from mappings, YAML files and ``--set key=value`` overrides."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from diffface.config_io import YamlConfig, coerce_setting, parse_overrides, plain, read_yaml_mapping


@dataclass
class Inner(YamlConfig):
    norm: str = "l21"
    weight: float = 0.5
    steps: int = 10


@dataclass
class Settings(YamlConfig):
    rounds: int = 3
    scale: float = 1.25
    verbose: bool = False
    name: str = "job"
    stages: tuple[str, ...] = ("landmarks",)
    options: dict = field(default_factory=lambda: {"a": 1})
    extra: object = None
    inner: Inner = field(default_factory=Inner)

    def __post_init__(self):
        if self.rounds < 0:
            raise ValueError(f"rounds must be at least 0, got {self.rounds}")


def test_from_dict_updates_nested_fields_and_keeps_the_rest():
    config = Settings.from_dict({"rounds": 7, "inner": {"norm": "l1"}})
    assert config.rounds == 7 and config.inner.norm == "l1"
    # untouched fields keep their defaults, nested ones included
    assert config.inner.weight == 0.5 and config.inner.steps == 10 and config.scale == 1.25
    # the defaults themselves are not mutated
    assert Settings().rounds == 3 and Settings().inner.norm == "l21"


def test_from_dict_starts_from_a_base_without_changing_it():
    base = Settings(rounds=5, name="base")
    config = Settings.from_dict({"scale": 2}, base)
    assert (config.rounds, config.name, config.scale) == (5, "base", 2.0)
    assert isinstance(config.scale, float)  # ints are accepted for float fields and converted
    assert base.scale == 1.25


def test_tuples_from_comma_strings_and_lists():
    assert Settings.from_dict({"stages": "landmarks, texture"}).stages == ("landmarks", "texture")
    assert Settings.from_dict({"stages": "landmarks,,"}).stages == ("landmarks",)
    assert Settings.from_dict({"stages": ["a", "b"]}).stages == ("a", "b")
    with pytest.raises(ValueError, match=r"stages: expected a list, got 3"):
        Settings.from_dict({"stages": 3})


def test_dict_fields_merge_into_the_current_mapping():
    config = Settings.from_dict({"options": {"b": 2}})
    assert config.options == {"a": 1, "b": 2}
    with pytest.raises(ValueError, match="options: expected a mapping"):
        Settings.from_dict({"options": [1, 2]})


def test_fields_whose_default_is_none_take_any_value():
    assert Settings.from_dict({"extra": [1, "x"]}).extra == [1, "x"]


def test_strings_accept_scalars_but_not_containers_or_null():
    assert Settings.from_dict({"name": 12}).name == "12"
    for bad in ([1], {"a": 1}, None):
        with pytest.raises(ValueError, match="name: expected a string"):
            Settings.from_dict({"name": bad})


@pytest.mark.parametrize("mapping, message", [
    ({"rounds": "many"}, "rounds: expected an integer, got 'many'"),
    ({"rounds": True}, "rounds: expected an integer, got True"),
    ({"rounds": 2.5}, "rounds: expected an integer, got 2.5"),
    ({"scale": "big"}, "scale: expected a number, got 'big'"),
    ({"scale": False}, "scale: expected a number, got False"),
    ({"verbose": 1}, "verbose: expected true or false, got 1"),
    ({"inner": {"steps": "x"}}, "inner.steps: expected an integer, got 'x'"),
    ({"inner": 5}, "inner: expected a mapping, got 5"),
])
def test_wrong_types_raise_value_error_naming_the_key(mapping, message):
    with pytest.raises(ValueError) as info:
        Settings.from_dict(mapping)
    assert message in str(info.value)


def test_unknown_keys_raise_naming_the_key_and_the_known_ones():
    with pytest.raises(ValueError) as info:
        Settings.from_dict({"round": 3})
    assert "unknown config key 'round'" in str(info.value) and "rounds" in str(info.value)
    with pytest.raises(ValueError) as info:
        Settings.from_dict({"inner": {"nrom": "l1"}})
    text = str(info.value)
    assert "unknown config key 'inner.nrom'" in text and "inner has norm, weight, steps" in text


def test_post_init_validation_runs_on_updates():
    with pytest.raises(ValueError, match="rounds must be at least 0, got -1"):
        Settings.from_dict({"rounds": -1})


def test_from_yaml_reads_nested_mappings(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("rounds: 4\nstages: landmarks,texture\ninner:\n  weight: 2\n  norm: l1\n")
    config = Settings.from_yaml(path)
    assert config == Settings(rounds=4, stages=("landmarks", "texture"), inner=Inner(norm="l1", weight=2.0))
    (tmp_path / "empty.yaml").write_text("")
    assert Settings.from_yaml(tmp_path / "empty.yaml") == Settings()
    assert Settings.from_yaml(path, base=Settings(name="kept")).name == "kept"


def test_from_yaml_errors_name_the_file_and_the_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("inner:\n  steps: lots\n")
    with pytest.raises(ValueError) as info:
        Settings.from_yaml(path)
    assert str(info.value).startswith(f"{path}: ") and "inner.steps: expected an integer" in str(info.value)
    path.write_text("colour: red\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: unknown config key 'colour'"):
        Settings.from_yaml(path)


def test_read_yaml_mapping_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.yaml: no such config file"):
        read_yaml_mapping(tmp_path / "missing.yaml")
    with pytest.raises(FileNotFoundError, match="no such config file"):
        read_yaml_mapping(tmp_path)  # a folder is not a config file
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: not valid YAML"):
        read_yaml_mapping(bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match=r"list\.yaml: a config file must hold a mapping, got list"):
        read_yaml_mapping(listing)
    (tmp_path / "ok.yaml").write_text("a:\n  b: 1.5\n")
    assert read_yaml_mapping(str(tmp_path / "ok.yaml")) == {"a": {"b": 1.5}}
    (tmp_path / "blank.yaml").write_text("# only a comment\n")
    assert read_yaml_mapping(tmp_path / "blank.yaml") == {}


def test_parse_overrides_builds_nested_mappings_with_yaml_values():
    assert parse_overrides(["a=1", "b.c.d=x", " e =[1, 2]", "f=", "g=a=b", "h=true", "i=0.5"]) == [
        {"a": 1}, {"b": {"c": {"d": "x"}}}, {"e": [1, 2]}, {"f": ""}, {"g": "a=b"}, {"h": True}, {"i": 0.5}]


@pytest.mark.parametrize("item", ["novalue", "=3", " =3"])
def test_parse_overrides_rejects_items_without_a_key(item):
    with pytest.raises(ValueError, match=r"expected key=value \(e\.g\. loss=mse\)"):
        parse_overrides([item], example="loss=mse")


def test_with_overrides_applies_dotted_keys_in_order():
    config = Settings().with_overrides(["rounds=5", "inner.norm=l1", "inner.weight=2", "rounds=6",
                                        "stages=landmarks,texture", "verbose=true", "options.b=3"])
    assert config.rounds == 6 and config.inner == Inner(norm="l1", weight=2.0, steps=10)
    assert config.stages == ("landmarks", "texture") and config.verbose is True
    assert config.options == {"a": 1, "b": 3}
    assert Settings().with_overrides([]) == Settings()


@dataclass
class Pair(YamlConfig):
    mode: str = "plain"
    weight: float = 0.0

    def __post_init__(self):
        if self.mode == "weighted" and not self.weight > 0:
            raise ValueError(f"mode 'weighted' needs weight > 0, got {self.weight}")


@dataclass
class Outer(YamlConfig):
    pair: Pair = field(default_factory=Pair)
    rounds: int = 1


def test_a_nested_setting_may_get_what_it_needs_from_a_later_layer():
    """The whole is checked at the end: a nested dataclass is not built (and its own checks not run) per layer."""
    assert Outer().with_overrides(["pair.mode=weighted", "rounds=2", "pair.weight=2"]) == Outer(Pair("weighted", 2.0), 2)
    assert Outer().layered([({"pair": {"mode": "weighted"}}, "a.yaml"), ({"pair": {"weight": 1}}, "--set")]).pair == Pair(
        "weighted", 1.0)
    with pytest.raises(ValueError, match="needs weight > 0, got 0.0"):
        Outer().with_overrides(["pair.mode=weighted"])
    with pytest.raises(ValueError, match="b.yaml: pair.weight: expected a number"):  # type errors name their layer
        Outer().layered([({"pair": {"mode": "weighted"}}, "a.yaml"), ({"pair": {"weight": "x"}}, "b.yaml")])


def test_with_overrides_errors_name_the_key():
    with pytest.raises(ValueError, match="inner.steps: expected an integer, got 'many'"):
        Settings().with_overrides(["inner.steps=many"])
    with pytest.raises(ValueError, match="unknown config key 'inner.colour'"):
        Settings().with_overrides(["inner.colour=red"])
    with pytest.raises(ValueError, match="rounds: expected an integer"):
        Settings().with_overrides(["rounds.x=1"])  # a dotted key into a scalar field


def test_plain_turns_tuples_and_paths_into_yaml_types(tmp_path):
    assert plain({"a": (1, (2, 3)), "p": tmp_path, "n": {"q": [tmp_path]}}) == {
        "a": [1, [2, 3]], "p": str(tmp_path), "n": {"q": [str(tmp_path)]}}


def test_coerce_setting_directly():
    assert coerce_setting(3, 1.0, "k") == 3.0 and isinstance(coerce_setting(3, 1.0, "k"), float)
    assert coerce_setting(False, True, "k") is False
    assert coerce_setting(" a , b ", ("x",), "k") == ("a", "b")


def test_floats_in_exponent_form_are_accepted(tmp_path):
    """YAML 1.2 numbers: PyYAML's YAML 1.1 reads 1e-3 as a string, which a float setting refused."""
    assert Settings().with_overrides(["scale=1e-3"]).scale == pytest.approx(1e-3)
    (tmp_path / "c.yaml").write_text("scale: 2e-4\n")
    assert Settings.from_yaml(tmp_path / "c.yaml").scale == pytest.approx(2e-4)


def test_malformed_override_values_raise_value_error():
    with pytest.raises(ValueError, match=r"a=\[1,.*not valid YAML"):
        parse_overrides(["a=[1,"])

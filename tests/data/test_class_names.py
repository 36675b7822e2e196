import pytest

from pqd_jax.data import class_names


def test_the_table_holds_the_1000_imagenet_ids_in_label_order():
  table = class_names.imagenet_synonyms()
  assert len(table) == 1000
  assert list(table) == sorted(table)
  assert table["n01440764"].startswith("tench")


def test_wordnet_ids_become_their_first_synonym():
  assert class_names.readable(["n01440764", "n02102040"]) == (
      "tench", "English springer")


def test_other_names_are_kept_with_underscores_as_spaces():
  assert class_names.readable(["T-shirt/top", "golden_retriever",
                               "n99999999"]) == (
      "T-shirt/top", "golden retriever", "n99999999")


def test_all_synonyms_give_the_whole_line_as_d4m_prompts():
  assert class_names.readable(("n01440764", "folder_name"), "all") == (
      "tench, Tinca tinca", "folder name")


def test_an_unknown_synonyms_choice_is_refused():
  with pytest.raises(ValueError, match="synonyms must be one of"):
    class_names.readable(("n01440764",), "some")

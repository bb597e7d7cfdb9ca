from slug import slugify


def test_words_are_lower_case_and_joined() -> None:
    assert slugify("Hello, World!") == "hello-world"


def test_accents_are_dropped() -> None:
    assert slugify("Crème brûlée") == "creme-brulee"


def test_long_titles_are_cut_without_a_trailing_dash() -> None:
    assert slugify("a" * 10 + " b", max_length=11) == "aaaaaaaaaa"

from words import count_words


def test_plain():
    assert count_words("a b a") == {"a": 2, "b": 1}


def test_case_and_punctuation():
    assert count_words("The cat. the CAT, the dog!") == {"the": 3, "cat": 2, "dog": 1}

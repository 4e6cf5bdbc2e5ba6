from text import slugify


def test_simple():
    assert slugify("hello") == "hello"


def test_title():
    assert slugify("Hello, World!") == "hello-world"
    assert slugify("  Agents   and tools ") == "agents-and-tools"

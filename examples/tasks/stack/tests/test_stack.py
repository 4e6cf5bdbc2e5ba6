import pytest
from stack import Stack


def test_lifo():
    s = Stack()
    for x in (1, 2, 3):
        s.push(x)
    assert s.pop() == 3
    assert s.peek() == 2
    assert len(s) == 2


def test_empty():
    s = Stack()
    with pytest.raises(IndexError, match="empty stack"):
        s.pop()
    with pytest.raises(IndexError, match="empty stack"):
        s.peek()

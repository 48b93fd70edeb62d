"""A tiny calculator: the project the python_ci example tests."""


def add(a, b):
    return a + b


def divide(a, b):
    if b == 0:
        raise ZeroDivisionError("division by zero")
    return a / b


def parse(text):
    """Reads `"3 + 4"` or `"8 / 2"` and computes it."""
    left, op, right = text.split()
    a, b = float(left), float(right)
    if op == "+":
        return add(a, b)
    if op == "/":
        return divide(a, b)
    raise ValueError(f"unknown operator {op!r}")

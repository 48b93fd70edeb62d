import unittest

from calc import divide


class TestDivide(unittest.TestCase):
    def test_exact(self):
        self.assertEqual(divide(8, 2), 4)

    def test_rounds_down(self):
        # The bug this example exists for: the test expects floor division.
        self.assertEqual(divide(7, 2), 3)

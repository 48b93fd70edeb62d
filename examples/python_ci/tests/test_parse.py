import unittest

from calc import parse


class TestParse(unittest.TestCase):
    def test_addition(self):
        self.assertEqual(parse("3 + 4"), 7)

    def test_unknown_operator(self):
        with self.assertRaises(ValueError):
            parse("3 % 4")

import unittest

from textkit import word_count, words


class Words(unittest.TestCase):
    def test_lower_cases(self):
        self.assertEqual(words("Hello World"), ["hello", "world"])

    def test_keeps_apostrophes(self):
        self.assertEqual(words("don't stop"), ["don't", "stop"])

    def test_counts(self):
        self.assertEqual(word_count("one, two; three"), 3)

    def test_empty(self):
        self.assertEqual(word_count(""), 0)


if __name__ == "__main__":
    unittest.main()

import unittest

from textkit import unique_words


class Unique(unittest.TestCase):
    def test_first_appearance_order(self):
        self.assertEqual(
            unique_words("the cat saw the dog and the cat ran"),
            ["the", "cat", "saw", "dog", "and", "ran"],
        )

    def test_case_insensitive(self):
        self.assertEqual(unique_words("A a B b"), ["a", "b"])


if __name__ == "__main__":
    unittest.main()

"""Tests of the inventory service: each starts the real server on a free port."""
import json
import threading
import unittest
import urllib.error
import urllib.request

import app


class ServiceTest(unittest.TestCase):
    def setUp(self):
        self.server = app.make_server("127.0.0.1", 0)
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    def tearDown(self):
        self.server.shutdown()
        self.server.server_close()

    def get(self, path):
        try:
            with urllib.request.urlopen(self.base + path, timeout=5) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def test_items_match_the_fixture(self):
        with open("fixtures/items.json") as f:
            expected = json.load(f)
        status, body = self.get("/items")
        self.assertEqual(status, 200)
        self.assertEqual(body["items"], expected)

    def test_out_of_stock_items_are_listed(self):
        _, body = self.get("/items")
        self.assertIn(0, [item["stock"] for item in body["items"]])

    def test_health_answers_200_with_a_status(self):
        status, body = self.get("/health")
        self.assertEqual(status, 200)
        self.assertIn(body["status"], ("ok", "degraded"))

    def test_unknown_paths_are_404(self):
        status, body = self.get("/nope")
        self.assertEqual(status, 404)
        self.assertIn("error", body)


if __name__ == "__main__":
    unittest.main()

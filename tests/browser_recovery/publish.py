"""Publishes COUNT numbered messages to room=browser with POST /publish, one after the other, and
cuts the proxied connections (GET CUT_URL) after each number listed in CUTS
(tests/browser_recovery/run.sh). Usage: publish.py TAGCAST_HOST:PORT COUNT CUT_URL CUTS..."""

import http.client
import json
import sys
import time
import urllib.request

address, count, cut_url, cuts = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
cuts = {int(n) for n in cuts}
for n in range(count):
    body = json.dumps({"message": n, "tags": {"room": "browser"}})
    connection = http.client.HTTPConnection(address, timeout=10)
    connection.request("POST", "/publish", body, {"Content-Type": "application/json"})
    answer = connection.getresponse()
    assert answer.status == 200, answer.read()
    answer.read()
    connection.close()
    if n in cuts:
        print(f"cut after {n}: {urllib.request.urlopen(cut_url).read().decode().strip()} connection(s)")
    time.sleep(0.002)

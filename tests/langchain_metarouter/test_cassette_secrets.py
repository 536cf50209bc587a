"""The recorded cassettes hold no API key and no identifying headers.

Data-free on purpose: it runs without the shared datasets (test_openai_vcr.py needs them for
every test, through its ``vcr_config``), so the secret scan never skips.
"""

from __future__ import annotations

from pathlib import Path

import yaml

CASSETTES = Path(__file__).parent / "cassettes" / "test_openai_vcr"
#: Must match test_openai_vcr.py, which records and replays them.
REPLAY_BASE_URL = "http://openai-loopback.invalid/v1"
API_KEY = "test-key"


def test_cassettes_hold_no_api_key_and_no_identifying_headers():
    files = sorted(CASSETTES.glob("*.routerbench.yaml"))
    assert len(files) == 6, [f.name for f in files]
    for path in files:
        raw = path.read_text()
        assert API_KEY not in raw
        for interaction in yaml.safe_load(raw)["interactions"]:
            headers = {k.lower(): v for k, v in interaction["request"]["headers"].items()}
            assert headers["authorization"] == ["REDACTED"]
            assert "user-agent" not in headers
            assert interaction["request"]["uri"].startswith(REPLAY_BASE_URL)

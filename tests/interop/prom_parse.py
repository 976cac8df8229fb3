"""Parses Prometheus text exposition format from stdin with the reference Python client's parser
(prometheus_client.parser), and prints every sample as JSON: [[name, {labels}, value], ...].
Exits 1 with the parser's message when the text does not parse."""

import json
import sys

from prometheus_client.parser import text_string_to_metric_families


def main() -> int:
    text = sys.stdin.read()
    try:
        samples = [
            [s.name, dict(s.labels), s.value]
            for family in text_string_to_metric_families(text)
            for s in family.samples
        ]
    except Exception as e:  # the parser raises ValueError and others on bad input
        print(f"parse error: {e}", file=sys.stderr)
        return 1
    json.dump(samples, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())

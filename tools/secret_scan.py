"""`make test`'s secret scan: fail on any potential secret the committed baseline does not hold.

detect-secrets' own hook rewrites the baseline (and exits 3) whenever a known finding merely
moves to another line, which would fail every build after an unrelated edit. This compares by
what identifies a finding — file, detector and hashed secret — and never writes the baseline;
`make secrets-baseline` refreshes it after a human has reviewed new findings.

`python -m tools.secret_scan [--baseline .secrets.baseline] FILE...`: exit 1 with one line
per new finding, 0 when there is none.
"""

import argparse
import json
import sys
from pathlib import Path


def new_findings(baseline_path: Path, files: list[str]) -> list[str]:
    from detect_secrets.core import baseline
    from detect_secrets.core.secrets_collection import SecretsCollection
    from detect_secrets.settings import transient_settings

    recorded = json.loads(baseline_path.read_text())
    with transient_settings(recorded):
        known = baseline.load(recorded, str(baseline_path))
        scanned = SecretsCollection()
        for name in files:
            scanned.scan_file(name)
    return [
        f"{filename}:{secret.line_number}: {secret.type}" for filename, secret in (scanned - known)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.secret_scan")
    parser.add_argument("--baseline", type=Path, default=Path(".secrets.baseline"))
    parser.add_argument("files", nargs="*")
    args = parser.parse_args(argv)
    found = new_findings(args.baseline, args.files)
    for line in found:
        sys.stdout.write(f"potential secret not in the baseline: {line}\n")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())

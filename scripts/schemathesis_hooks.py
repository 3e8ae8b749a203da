"""Schemathesis hooks for scripts/schemathesis.sh: every 4xx must name what was wrong.

Loaded through SCHEMATHESIS_HOOKS. Each response also appends one line to the file named by
SCIMRELAY_ST_LOG, so the script can print the request count and list the 4xx rejections.
"""
import json
import os

import schemathesis


def _log(line):
    path = os.environ.get("SCIMRELAY_ST_LOG")
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line + "\n")


def _describes(field, message):
    """True when the message or field points at something the request actually contained."""
    if field:
        return True
    # No field: the message must say what was wrong in words (not just a status reason).
    return bool(message) and len(message.split()) >= 3


@schemathesis.check
def four_xx_names_what_was_wrong(ctx, response, case):
    status = response.status_code
    try:
        body = json.loads(response.content or b"null")
    except ValueError:
        body = None
    err = body.get("error") if isinstance(body, dict) else None
    entry = {"method": case.method, "path": case.path, "status": status}
    if isinstance(err, dict):
        entry["field"] = err.get("field")
        entry["message"] = err.get("message")
    _log(json.dumps(entry))
    if not 400 <= status < 500:
        return None
    if body is None:
        raise AssertionError(f"{status} body is not JSON: {response.content[:200]!r}")
    if not isinstance(err, dict):
        raise AssertionError(f"{status} body has no error object: {body!r}"[:300])
    field, message = err.get("field"), err.get("message")
    if not _describes(field, message):
        raise AssertionError(
            f"{status} does not say what was wrong: error={err!r}"[:300]
        )
    return None

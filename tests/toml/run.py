#!/usr/bin/python3
"""Conformance of our TOML parser against the toml-test suite (TOML 1.0.0).

Runs build/toml-decode on every .toml file listed in files-toml-1.0.0 of the
toml-test data (tests/data/toml-test, a vendored copy of the toml-lang/toml-test files,
or $TOML_TEST_DIR):

  valid/*.toml    must exit 0 and print tagged JSON structurally equal to
                  the .json beside it (integers exactly, floats by value with
                  nan/inf, date-times by meaning, as toml-test compares them);
  invalid/*.toml  must exit non-zero without dying of a signal, saying
                  "toml-decode: line N: message" on stderr.

Every listed .json must be the expectation of a listed valid .toml. A
sanitizer report on stderr fails a file too, so the same run checks an
ASan/UBSan build: TOML_DECODER=/tmp/td-asan python3 tests/toml/run.py

Prints one line per failure and ends with "N passed, M failed"; exits 1 if
anything failed. Python standard library only.
"""
import concurrent.futures
import json
import math
import os
import re
import subprocess
import sys

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The suite is vendored in tests/data/toml-test (MIT, with its LICENSE) so that a fresh
# clone tests itself; $TOML_TEST_DIR points elsewhere (e.g. ../shared/toml-test).
TEST_DIR = os.environ.get("TOML_TEST_DIR") or os.path.join(TOP, "tests", "data", "toml-test")
DECODER = os.environ.get("TOML_DECODER") or os.path.join(TOP, "build", "toml-decode")
LIST = "files-toml-1.0.0"
TIMEOUT = 20  # seconds per file; the biggest test file is a few KiB
ERROR_RE = re.compile(r"toml-decode: line \d+: \S")
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


class Mismatch(Exception):
    pass


# ---- comparing tagged JSON the way toml-test does ----

DATETIME_RE = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?"
    r"([Zz]|[+-]\d{2}:\d{2})?$")
DATE_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
TIME_RE = re.compile(r"^(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?$")


def days_from_civil(y, m, d):
    """Days since 1970-01-01 in the proleptic Gregorian calendar (any year,
    including 0000, which Python's datetime cannot hold)."""
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def fraction(digits):
    """A second fraction as comparable text: .5 == .500 == .50."""
    return (digits or "").rstrip("0")


def datetime_key(kind, text):
    """What a date/time means, so equivalent spellings compare equal;
    None if the text is not of that kind at all."""
    if kind in ("datetime", "datetime-local"):
        m = DATETIME_RE.match(text)
        if not m:
            return None
        y, mo, d, h, mi = (int(x) for x in m.group(1, 2, 3, 4, 5))
        s = int(m.group(6) or 0)
        frac, zone = fraction(m.group(7)), m.group(8)
        if kind == "datetime-local":
            return (zone is None, y, mo, d, h, mi, s, frac)
        if zone is None:
            return None
        offset = 0
        if zone not in ("Z", "z"):
            sign = -1 if zone[0] == "-" else 1
            offset = sign * (int(zone[1:3]) * 60 + int(zone[4:6]))
        instant = days_from_civil(y, mo, d) * 86400 + h * 3600 + (mi - offset) * 60 + s
        return (instant, frac)
    if kind == "date-local":
        m = DATE_RE.match(text)
        return tuple(int(x) for x in m.groups()) if m else None
    if kind == "time-local":
        m = TIME_RE.match(text)
        if not m:
            return None
        return (int(m.group(1)), int(m.group(2)), int(m.group(3) or 0), fraction(m.group(4)))
    return None


def float_of(text):
    t = text.lower().lstrip("+")
    if t in ("nan", "-nan"):
        return math.nan
    if t in ("inf", "-inf"):
        return -math.inf if t.startswith("-") else math.inf
    return float(text)


def scalar_equal(kind, got, want):
    if kind == "integer":
        return int(got) == int(want)
    if kind == "float":
        g, w = float_of(got), float_of(want)
        return (math.isnan(g) and math.isnan(w)) or g == w
    if kind in ("datetime", "datetime-local", "date-local", "time-local"):
        g, w = datetime_key(kind, got), datetime_key(kind, want)
        return g is not None and g == w
    return got == want  # string, bool


def is_tagged(v):
    """A scalar: exactly {"type", "value"} with string contents. A decoded
    table can have those keys too, but its values are objects, not strings."""
    return (isinstance(v, dict) and set(v) == {"type", "value"}
            and isinstance(v["type"], str) and isinstance(v["value"], str))


def compare(got, want, path="(root)"):
    if is_tagged(want):
        if not is_tagged(got):
            raise Mismatch(f"{path}: expected {want['type']} {want['value']!r}, got {short(got)}")
        if got["type"] != want["type"]:
            raise Mismatch(f"{path}: expected type {want['type']}, got {got['type']}")
        try:
            equal = scalar_equal(want["type"], got["value"], want["value"])
        except ValueError:
            equal = False
        if not equal:
            raise Mismatch(f"{path}: expected {want['type']} {want['value']!r}, "
                           f"got {got['value']!r}")
    elif isinstance(want, dict):
        if not isinstance(got, dict) or is_tagged(got):
            raise Mismatch(f"{path}: expected a table, got {short(got)}")
        if set(got) != set(want):
            missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
            raise Mismatch(f"{path}: keys differ: missing {missing}, unexpected {extra}")
        for k in want:
            compare(got[k], want[k], f"{path}.{k}" if path != "(root)" else k)
    elif isinstance(want, list):
        if not isinstance(got, list):
            raise Mismatch(f"{path}: expected an array, got {short(got)}")
        if len(got) != len(want):
            raise Mismatch(f"{path}: expected {len(want)} elements, got {len(got)}")
        for i, (g, w) in enumerate(zip(got, want)):
            compare(g, w, f"{path}[{i}]")
    else:
        raise Mismatch(f"{path}: unexpected expectation {short(want)}")


def short(v):
    text = json.dumps(v, ensure_ascii=True)
    return text if len(text) <= 60 else text[:57] + "..."


# ---- running one file ----

def first_line(text):
    lines = text.strip().splitlines()
    return lines[0] if lines else "(nothing on stderr)"


def decode(path):
    with open(path, "rb") as f:
        data = f.read()
    return subprocess.run([DECODER], input=data, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=TIMEOUT)


def check(name):
    """None if the file passes, else the reason it does not."""
    path = os.path.join(TEST_DIR, name)
    try:
        p = decode(path)
    except subprocess.TimeoutExpired:
        return f"no answer within {TIMEOUT}s"
    stderr = p.stderr.decode("utf-8", "replace")
    if p.returncode < 0:
        return f"killed by signal {-p.returncode}: {first_line(stderr)}"
    for mark in SANITIZER_MARKS:
        if mark in stderr:
            return "sanitizer report: " + next(l for l in stderr.splitlines() if mark in l)
    if name.startswith("invalid/"):
        if p.returncode == 0:
            return "accepted an invalid document"
        if not ERROR_RE.match(stderr):
            return f"error not in the form 'toml-decode: line N: message': {first_line(stderr)}"
        return None
    if p.returncode != 0:
        return f"rejected a valid document: {first_line(stderr)}"
    try:
        got = json.loads(p.stdout.decode("utf-8"))
    except ValueError as e:
        return f"output is not JSON: {e}"
    try:
        with open(path[:-len(".toml")] + ".json", encoding="utf-8") as f:
            want = json.load(f)
    except (OSError, ValueError) as e:
        return f"cannot read the expected JSON: {e}"
    try:
        compare(got, want)
    except Mismatch as e:
        return str(e)
    return None


def listed_files():
    with open(os.path.join(TEST_DIR, LIST), encoding="utf-8") as f:
        names = [line.strip() for line in f if line.strip()]
    tomls = [n for n in names if n.endswith(".toml")]
    problems = []
    valid = {n[:-len(".toml")] for n in tomls if n.startswith("valid/")}
    for n in names:
        if n.endswith(".json") and not (n.startswith("valid/") and n[:-len(".json")] in valid):
            problems.append((n, "listed expectation without a listed valid .toml"))
        elif not n.endswith((".json", ".toml")):
            problems.append((n, "neither .toml nor .json"))
    return tomls, problems


def main():
    if not os.access(DECODER, os.X_OK):
        print(f"run.py: no decoder at {DECODER} (make build/toml-decode)")
        print("0 passed, 1 failed")
        return 1
    tomls, failures = listed_files()
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 4) as pool:
        results = list(pool.map(check, tomls))
    failures += [(n, r) for n, r in zip(tomls, results) if r is not None]
    for name, reason in failures:
        print(f"FAIL {name}: {reason}")
    passed = sum(r is None for r in results)
    print(f"{passed} passed, {len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

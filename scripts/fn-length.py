#!/usr/bin/env python3
"""No function in src/ longer than LIMIT lines (`make lint`).

A function starts at a line that opens an `fn` whose signature ends with
`{` (trait declarations ending in `;` are skipped) and ends at the first
later line that is `}` at the same indentation; its length counts both.
Prints each offender as `path:line name length`; exits 1 if there is one.
"""
import os
import re
import sys

LIMIT = 100
FN = re.compile(r"^(\s*)(pub(\(\w+\))? )?(async )?(const )?(unsafe )?fn (\w+)")


def functions(path):
    """(line, name, length) of each function of the file at path."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    found = []
    i = 0
    while i < len(lines):
        m = FN.match(lines[i])
        if not m:
            i += 1
            continue
        indent, name, start = m.group(1), m.group(7), i
        # The signature may span lines: it ends at the first line that
        # ends with `{` (a body) or `;` (a declaration without one).
        while i < len(lines):
            tail = lines[i].rstrip()
            if tail.endswith("{") or tail.endswith(";"):
                break
            i += 1
        if i == len(lines) or lines[i].rstrip().endswith(";"):
            i = start + 1
            continue
        close = indent + "}"
        end = i if lines[i].rstrip().endswith("}") else None
        j = i + 1
        while end is None and j < len(lines):
            if lines[j].rstrip() == close:
                end = j
            j += 1
        if end is not None:
            found.append((start + 1, name, end - start + 1))
        # Nested functions are measured too.
        i = start + 1
    return found


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "src"
    bad = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if not name.endswith(".rs"):
                continue
            path = os.path.join(dirpath, name)
            for line, fn, length in functions(path):
                if length > LIMIT:
                    print(f"{path}:{line} {fn} {length}")
                    bad += 1
    if bad:
        print(f"fn-length: {bad} function(s) longer than {LIMIT} lines", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

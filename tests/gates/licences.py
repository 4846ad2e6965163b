#!/usr/bin/env python3
"""The licence gate: every crate that goes into a build of the workspace (for the host and for
the appliance's musl targets) must be usable under a permissive licence; no GPL, LGPL or AGPL
unless an OR offers a permissive one. Reads `cargo metadata`; prints what it found and exits 1
on a crate that fails.

Advisories (RustSec) are not checked here: their database lives on github.com, which this
machine does not reach (the gate says so on every run)."""

import json
import re
import subprocess
import sys

PERMISSIVE = {
    "MIT", "Apache-2.0", "BSD-1-Clause", "BSD-2-Clause", "BSD-3-Clause", "ISC", "0BSD", "Zlib",
    "Unicode-3.0", "Unicode-DFS-2016", "Unlicense", "CC0-1.0", "CDLA-Permissive-2.0",
    "Apache-2.0 WITH LLVM-exception", "BSL-1.0",
}
TARGETS = ["x86_64-unknown-linux-gnu", "aarch64-unknown-linux-musl", "x86_64-unknown-linux-musl"]


def tokens(expr):
    expr = expr.replace("/", " OR ")
    return re.findall(r"\(|\)|[A-Za-z0-9.+-]+(?: WITH [A-Za-z0-9.+-]+)?", expr)


def allowed(expr):
    """SPDX expression: OR needs one side allowed, AND needs both."""
    toks = tokens(expr)
    pos = 0

    def term():
        nonlocal pos
        t = toks[pos]
        pos += 1
        if t == "(":
            v = disjunction()
            pos += 1  # ")"
            return v
        return t in PERMISSIVE

    def conjunction():
        nonlocal pos
        v = term()
        while pos < len(toks) and toks[pos] == "AND":
            pos += 1
            v = term() and v
        return v

    def disjunction():
        nonlocal pos
        v = conjunction()
        while pos < len(toks) and toks[pos] == "OR":
            pos += 1
            v = conjunction() or v
        return v

    try:
        return disjunction() and pos == len(toks)
    except IndexError:
        return False


def self_test():
    cases = {"MIT": True, "GPL-3.0": False, "MIT OR GPL-2.0": True, "MIT AND GPL-2.0": False,
             "(MIT OR Apache-2.0) AND Unicode-3.0": True, "LGPL-2.1-or-later": False, "MIT/Apache-2.0": True,
             "Apache-2.0 WITH LLVM-exception OR MIT": True, "": False, "(MIT": False}
    wrong = {e: want for e, want in cases.items() if allowed(e) != want}
    print(f"licences: self-test {'passed' if not wrong else f'FAILED: {wrong}'}")
    sys.exit(1 if wrong else 0)


def main():
    if sys.argv[1:] == ["--self-test"]:
        self_test()
    bad, seen = [], {}
    for target in TARGETS:
        meta = json.loads(subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--filter-platform", target],
            check=True, capture_output=True, text=True).stdout)
        packages = {p["id"]: p for p in meta["packages"]}
        for node in meta["resolve"]["nodes"]:
            p = packages[node["id"]]
            if p["source"] is None:  # our own crates
                continue
            seen[(p["name"], p["version"])] = p.get("license") or ""
    for (name, version), licence in sorted(seen.items()):
        if not licence or not allowed(licence):
            bad.append(f"{name} {version}: {licence or 'no licence field'}")
    print(f"licences: {len(seen)} crates checked for {', '.join(TARGETS)}; {len(bad)} not permissive")
    for line in bad:
        print(f"licences: REFUSED {line}")
    print("advisories: not checked (the RustSec database is on github.com, which this machine cannot reach)")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()

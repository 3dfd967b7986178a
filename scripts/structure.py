#!/usr/bin/env python3
"""The structure of wvs's two crates, as issue 31 measures it: which top-level modules
import which (and the circles among them), how many items are `pub` and how many
`pub(crate)`, and the longest functions outside tests.

    python3 scripts/structure.py [--dot] [SRC_DIR ...]

SRC_DIR defaults to host/core/src (wvs-core, whose modules are named `core::NAME`) and
host/src (the daemon, which re-exports the core's modules under their names). With --dot,
the module graph is printed in Graphviz's language
(`python3 scripts/structure.py --dot | dot -Tsvg > modules.svg`).

It reads the sources as text: a reference is any `crate::NAME` or `wvs_core::NAME` (in a
`use` or a path) and a function runs from its `fn` line to the brace that closes it. Test
code (`#[cfg(test)]` items, `tests.rs` files) is left out of the imports and the function
lengths.
"""

import os
import re
import sys
from collections import defaultdict

REF = re.compile(r"\bcrate::([a-z_][a-z0-9_]*)")
CORE_REF = re.compile(r"\bwvs_core::([a-z_][a-z0-9_]*)")
USE_GROUP = re.compile(r"\buse crate::\{([^;]*)\}", re.S)
FN = re.compile(r"^\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?fn\s+([a-zA-Z0-9_]+)")
PUB = re.compile(r"^\s*pub\s+(fn|struct|enum|trait|type|const|static|mod|use|async|unsafe)\b")
PUB_FIELD = re.compile(r"^\s*pub\s+[a-z_][a-z0-9_]*\s*:")
PUB_CRATE = re.compile(r"^\s*pub\((crate|super|in [^)]*)\)\s")


def top_module(src, path):
    rel = os.path.relpath(path, src)
    first = rel.split(os.sep)[0]
    return first[:-3] if first.endswith(".rs") else first


def files(src):
    for root, _, names in os.walk(src):
        for n in sorted(names):
            if n.endswith(".rs"):
                yield os.path.join(root, n)


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(line.split("//")[0] for line in text.splitlines())


def without_tests(text):
    """The text with `#[cfg(test)]` items (their braces matched) blanked out."""
    out = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].strip() == "#[cfg(test)]":
            depth, started = 0, False
            while i < len(lines):
                depth += lines[i].count("{") - lines[i].count("}")
                started |= "{" in lines[i]
                out.append("")
                i += 1
                if (started and depth <= 0) or (not started and lines[i - 1].rstrip().endswith(";")):
                    break
            continue
        out.append(lines[i])
        i += 1
    return "\n".join(out)


def functions(text):
    """(name, first line, length) of each function with a body."""
    lines = text.splitlines()
    found = []
    for i, line in enumerate(lines):
        m = FN.match(line)
        if not m:
            continue
        depth, started, j = 0, False, i
        while j < len(lines):
            depth += lines[j].count("{") - lines[j].count("}")
            if "{" in lines[j]:
                started = True
            if not started and lines[j].rstrip().endswith(";"):
                break
            if started and depth <= 0:
                found.append((m.group(6), i + 1, j - i + 1))
                break
            j += 1
    return found


CORE_SRC = os.path.join("host", "core", "src")


def core_modules():
    """The top-level modules of wvs-core (the daemon names them through its re-exports)."""
    if not os.path.isdir(CORE_SRC):
        return set()
    return {n[:-3] if n.endswith(".rs") else n for n in os.listdir(CORE_SRC)} - {"lib"}


def main(argv):
    dot = "--dot" in argv
    srcs = [a for a in argv if a != "--dot"] or [CORE_SRC, os.path.join("host", "src")]
    core = core_modules()
    edges = defaultdict(set)
    pubs = pub_fields = crate_pubs = 0
    longest = []
    for src in srcs:
        for path in files(src):
            raw = open(path, encoding="utf-8").read()
            text = strip_comments(raw)
            in_core = os.path.normpath(src) == os.path.normpath(CORE_SRC)
            name = lambda m: f"core::{m}" if (in_core or m in core) and core else m
            me = name(top_module(src, path))
            base = os.path.basename(path)
            if me not in (name("lib"), name("main")) and not base.endswith("tests.rs"):
                code = without_tests(text)
                refs = set(REF.findall(code)) | set(CORE_REF.findall(code))
                for group in USE_GROUP.findall(code):
                    refs |= set(re.findall(r"(?:^|,)\s*([a-z_][a-z0-9_]*)", group))
                for r in refs:
                    if name(r) != me and r not in ("self", "super"):
                        edges[me].add(name(r))
            for line in text.splitlines():
                if PUB_CRATE.match(line):
                    crate_pubs += 1
                elif PUB.match(line):
                    pubs += 1
                elif PUB_FIELD.match(line):
                    pub_fields += 1
            if base.endswith("tests.rs") or "tests" in path.split(os.sep)[-2:-1]:
                continue
            for name, at, n in functions(without_tests(text)):
                longest.append((n, f"{os.path.relpath(path)}:{at}", name))
    mods = sorted(set(edges) | {t for ts in edges.values() for t in ts})
    if dot:
        print("digraph modules {")
        for a in mods:
            for b in sorted(edges.get(a, ())):
                print(f'  "{a}" -> "{b}";')
        print("}")
        return
    print("module imports (a -> b: a names crate::b):")
    for a in mods:
        if edges.get(a):
            print(f"  {a} -> {', '.join(sorted(edges[a]))}")
    # Circles: strongly connected components of more than one module (Tarjan).
    index, low, stack, on, comps, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in mods:
        if v not in index:
            visit(v)
    print("circles (modules that import each other, directly or not):")
    for c in comps or [["none"]]:
        print(f"  {len(c)}: {', '.join(c)}")
    print(
        f"pub items: {pubs}, pub fields: {pub_fields}; "
        f"pub(crate)/pub(super)/pub(in ..): {crate_pubs}"
    )
    print("longest functions outside tests:")
    for n_, where, name in sorted(longest, reverse=True)[:10]:
        print(f"  {n_:4} lines  {name}  {where}")


if __name__ == "__main__":
    main(sys.argv[1:])

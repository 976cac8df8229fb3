#!/usr/bin/env python3
"""Fails when the modules of a crate import each other in a cycle (issue 13).

Usage: python3 tests/import_cycles.py crates/mydata-server/src [more src dirs...]

Each `.rs` file under a `src` directory is one module. An edge A -> B is a `crate::` path in A
(in a `use` line, grouped or not, or written inline in code) whose longest prefix that names a
module file is B. Comments and string literals are ignored. Strongly connected components with
more than one module are cycles: each is printed with the edges that close it, and the exit
status is 1. Standard library only, so it runs before anything is built.
"""

import re
import sys
from pathlib import Path


def module_of(src: Path, f: Path) -> tuple:
    rel = f.relative_to(src).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


def strip(text: str) -> str:
    """Removes comments and string literals (enough for `crate::` paths in real code)."""
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    text = re.sub(r'r#*"(?:.|\n)*?"#*', '""', text)
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
    return text


def expand_use(body: str) -> list:
    """`a::{b, c::{d, e}}` -> ["a::b", "a::c::d", "a::c::e"]."""
    body = body.strip()
    m = re.match(r"^(.*?)\{(.*)\}$", body, flags=re.S)
    if not m:
        return [body]
    prefix, inner = m.group(1), m.group(2)
    items, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
        else:
            cur += ch
    items.append(cur)
    out = []
    for it in items:
        it = it.strip()
        if it:
            out.extend(prefix + p for p in expand_use(it))
    return out


def paths_in(text: str) -> list:
    text = strip(text)
    found = []
    for m in re.finditer(r"\buse\s+crate::([^;]*);", text, flags=re.S):
        found.extend(expand_use(m.group(1)))
    without_uses = re.sub(r"\buse\s+crate::[^;]*;", " ", text, flags=re.S)
    found.extend(re.findall(r"\bcrate::((?:[A-Za-z_][A-Za-z0-9_]*::)*[A-Za-z_][A-Za-z0-9_]*)", without_uses))
    return found


def graph(src: Path) -> dict:
    files = sorted(src.rglob("*.rs"))
    mods = {module_of(src, f): f for f in files}
    edges = {m: {} for m in mods}
    for m, f in mods.items():
        for path in paths_in(f.read_text(encoding="utf-8")):
            segs = [s.strip() for s in path.split("::") if s.strip() and s.strip() not in ("self", "*")]
            segs = [s.split(" as ")[0].strip() for s in segs]
            target = None
            for n in range(len(segs), 0, -1):
                if tuple(segs[:n]) in mods:
                    target = tuple(segs[:n])
                    break
            if target is not None and target != m and target != ():
                edges[m].setdefault(target, path)
    return mods, edges


def sccs(nodes, edges):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
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
            out.append(comp)

    sys.setrecursionlimit(10000)
    for v in nodes:
        if v not in index:
            visit(v)
    return out


def name(mods, m):
    return str(mods[m].as_posix())


def main(argv):
    if len(argv) < 2:
        print(__doc__)
        return 2
    bad = 0
    for d in argv[1:]:
        src = Path(d)
        mods, edges = graph(src)
        cycles = [c for c in sccs(list(mods), edges) if len(c) > 1]
        if not cycles:
            print(f"import_cycles: {src}: no cycle among {len(mods)} modules")
            continue
        bad += len(cycles)
        for c in cycles:
            members = set(c)
            print(f"import_cycles: {src}: cycle among " + ", ".join(sorted(name(mods, m) for m in c)))
            for a in sorted(c):
                for b, path in sorted(edges[a].items()):
                    if b in members:
                        print(f"    {name(mods, a)} -> {name(mods, b)} (crate::{path.strip()})")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

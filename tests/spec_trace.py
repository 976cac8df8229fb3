#!/usr/bin/env python3
"""Checks spec/traceability.md against the spec and the tests: python3 tests/spec_trace.py

Standard library only; needs no build. tests/run.sh runs it before any build.

(a) Every sentence of spec/*.md (traceability.md excepted) that contains MUST, MUST NOT, SHALL,
    SHALL NOT or REQUIRED in capitals (outside code), and every decision `## Dn` of
    spec/decisions.md, has a row in the table. A row covers a sentence when the row's quote,
    normalised (below), occurs in that sentence; it covers decision Dn when its source is
    `decisions.md Dn` and its quote occurs in a sentence of Dn's **Decision.** part. A quote must
    occur in exactly one sentence of its source (the file, or decision Dn), so a stale quote (the
    sentence changed or went away) and a vague one both fail.
(b) Every test a row names, as `path::name`, exists: the file exists and defines `name` as a test
    (.rs: a `fn` under a `#[...test]` attribute; .py: a `def`; .sh: a shell function).
(c) Prints: N requirements, M with tests, K untested (and the rows marked n/a).

Exit status 1 on any failure of (a) or (b) or a malformed row; untested rows are allowed and
counted. `--missing` prints a ready-to-edit row for each uncovered sentence or decision.

Normalisation: inline-code backticks, emphasis (* and _ around words), link targets and HTML
comments are dropped, `|` becomes a space, whitespace is collapsed, and case is ignored.
"""

import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = os.path.join(ROOT, "spec")
TABLE = os.path.join(SPEC, "traceability.md")

KEYWORD = re.compile(r"\b(?:MUST(?: NOT)?|SHALL(?: NOT)?|REQUIRED)\b")
HEADING = re.compile(r"^(#{1,6})\s+(.*)$")
DECISION_HEADING = re.compile(r"^##\s+(D\d+)\b")
LIST_ITEM = re.compile(r"^(\s*)(?:[-*+]|\d+[.)])\s+")
# A sentence ends at . ! or ? (optionally followed by a closing bracket, quote or emphasis)
# followed by whitespace and a character that can start a sentence.
SENTENCE_END = re.compile(r"(?<=[.!?])(?:[)\]\"'*_`]*)\s+(?=[A-Z0-9`*\"'(\[])")
TEST_REF = re.compile(r"([\w./-]+\.(?:rs|py|sh))::([A-Za-z_]\w*)")
ROW_ID = re.compile(r"^[A-Z][A-Za-z0-9]*(?:[.-][A-Za-z0-9]+)*$")
ISSUE = re.compile(r"\bissue\s+\d+", re.IGNORECASE)
RUST_TEST_ATTR = re.compile(r"#\[\s*(?:\w+::)*test\b")


def normalise(text):
    text = re.sub(r"<!--.*?-->", " ", text)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # [text](target) -> text
    text = text.replace("`", "").replace("|", " ")
    text = re.sub(r"(?<!\w)[*_]+|[*_]+(?!\w)", "", text)  # emphasis markers, not snake_case
    return re.sub(r"\s+", " ", text).strip().casefold()


def without_code(text):
    return re.sub(r"`[^`]*`", " ", text)


class Sentence:
    def __init__(self, file, line, section, decision, in_decision_part, text):
        self.file = file  # e.g. "protocol.md"
        self.line = line
        self.section = section  # nearest heading, e.g. "8.3 `GET /service/txid_status`"
        self.decision = decision  # "D27" inside decisions.md's D27, else None
        self.in_decision_part = in_decision_part  # between **Decision.** and **Reason.**
        self.text = text
        self.norm = normalise(text)
        self.normative = bool(KEYWORD.search(without_code(text)))
        self.covered_by = []

    def where(self):
        return f"spec/{self.file}:{self.line} ({self.decision or self.section})"


def blocks(lines):
    """Yields (first line number, text) for each paragraph, list item, table row and heading,
    outside fenced code blocks."""
    fenced = False
    cur, start = [], 0

    def flush():
        nonlocal cur
        if cur:
            yield start, " ".join(s.strip() for s in cur)
        cur = []

    for n, line in enumerate(lines, 1):
        stripped = line.strip()
        if stripped.startswith("```") or stripped.startswith("~~~"):
            yield from flush()
            fenced = not fenced
            continue
        if fenced:
            continue
        if not stripped or stripped == "---":
            yield from flush()
        elif HEADING.match(line) or stripped.startswith("|"):
            yield from flush()
            yield n, stripped
        elif LIST_ITEM.match(line) or stripped.startswith("**Decision.**") or stripped.startswith(
            "**Reason.**"
        ) or stripped.startswith("**Alternatives"):
            yield from flush()
            cur, start = [line], n
        else:
            if not cur:
                start = n
            cur.append(line)
    yield from flush()


def spec_sentences():
    out = []
    for name in sorted(os.listdir(SPEC)):
        path = os.path.join(SPEC, name)
        if not name.endswith(".md") or path == TABLE:
            continue
        with open(path, encoding="utf-8") as f:
            lines = f.read().split("\n")
        section, decision, in_part = "", None, False
        for n, text in blocks(lines):
            h = HEADING.match(text)
            if h:
                section = h.group(2).strip()
                d = DECISION_HEADING.match(text) if name == "decisions.md" else None
                if len(h.group(1)) <= 2:  # a sub-heading stays inside its decision and part
                    decision, in_part = (d.group(1) if d else None), False
                continue
            if decision and text.startswith("**Decision.**"):
                in_part = True
            elif text.startswith("**Reason.**") or text.startswith("**Alternatives"):
                in_part = False
            text = LIST_ITEM.sub("", text, count=1)
            for s in SENTENCE_END.split(text):
                if s.strip():
                    out.append(Sentence(name, n, section, decision, in_part, s.strip()))
    return out


def decisions():
    with open(os.path.join(SPEC, "decisions.md"), encoding="utf-8") as f:
        return [m.group(1) for m in map(DECISION_HEADING.match, f) if m]


class Row:
    def __init__(self, line, cells):
        self.line = line
        self.id, self.source, self.quote, self.tests = cells
        self.norm = normalise(self.quote)
        self.refs = TEST_REF.findall(self.tests)
        m = re.search(r"\b([\w-]+\.md)\b", self.source)
        self.file = m.group(1) if m else None
        m = re.search(r"\b(D\d+)\b", self.source) if self.file == "decisions.md" else None
        self.decision = m.group(1) if m else None
        low = self.tests.casefold()
        if self.refs:
            self.status = "tested"
        elif "untested" in low:
            self.status = "untested"
        elif re.search(r"\bn/a\b", low):
            self.status = "n/a"
        else:
            self.status = None


def table_rows():
    rows = []
    with open(TABLE, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.startswith("|"):
                continue
            # split on | not escaped as \|
            cells = [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            if len(cells) != 4 or not ROW_ID.match(cells[0].strip("`")):
                continue
            cells[0] = cells[0].strip("`")
            rows.append(Row(n, cells))
    return rows


def test_defined(path, name, cache={}):
    """None when `name` is a test in `path`, else the reason it is not."""
    full = os.path.join(ROOT, path)
    if not os.path.isfile(full):
        return f"{path} does not exist"
    if full not in cache:
        with open(full, encoding="utf-8") as f:
            cache[full] = f.read().split("\n")
    lines = cache[full]
    if path.endswith(".rs"):
        found = False
        for i, line in enumerate(lines):
            if re.search(r"\bfn\s+" + re.escape(name) + r"\s*[<(]", line):
                found = True
                j = i - 1  # walk up over attributes, doc comments and blank lines
                while j >= 0 and re.match(r"\s*(#\[|///|//|$|\w+\s*=|\)\]|\])", lines[j]):
                    if RUST_TEST_ATTR.search(lines[j]):
                        return None
                    j -= 1
        return f"{path}: fn {name} is not a test (no #[test] attribute)" if found else f"{path}: no fn {name}"
    if path.endswith(".py"):
        pat = r"^\s*(?:async\s+)?def\s+" + re.escape(name) + r"\s*\("
    else:
        pat = r"^\s*(?:function\s+)?" + re.escape(name) + r"\s*\(\)"
    if any(re.match(pat, line) for line in lines):
        return None
    return f"{path}: no function {name}"


def suggestion(s):
    quote = s.text if len(s.text) <= 90 else s.text[:90].rsplit(" ", 1)[0]  # still a substring
    num = re.match(r"(\d+(?:\.\d+)*)\.?\s", s.section)
    src = f"{s.file} {s.decision}" if s.decision else f"{s.file} " + (f"§{num.group(1)}" if num else s.section)
    return f"| ?? | {src} | {quote.replace('|', chr(92) + '|')} | untested (issue ?) |"


def main():
    show_missing = "--missing" in sys.argv[1:]
    errors = []
    sentences = spec_sentences()
    rows = table_rows()
    covered_decisions = {}

    seen = {}
    for r in rows:
        if r.id in seen:
            errors.append(f"traceability.md:{r.line}: id {r.id} already used on line {seen[r.id]}")
        seen.setdefault(r.id, r.line)
        if r.file is None or not os.path.isfile(os.path.join(SPEC, r.file)):
            errors.append(f"traceability.md:{r.line}: {r.id}: source '{r.source}' names no spec file")
            continue
        if r.file == "decisions.md" and r.decision is None:
            errors.append(f"traceability.md:{r.line}: {r.id}: a decisions.md source names its decision (Dn)")
            continue
        if r.status is None:
            errors.append(
                f"traceability.md:{r.line}: {r.id}: tests column names no `path::test` and does not say "
                "'untested (issue N …)' or 'n/a (reason)'"
            )
        elif r.status == "untested" and not ISSUE.search(r.tests):
            errors.append(f"traceability.md:{r.line}: {r.id}: an untested row names its issue ('issue N')")
        if len(r.norm) < 12:
            errors.append(f"traceability.md:{r.line}: {r.id}: quote too short to identify a sentence")
            continue
        scope = [
            s for s in sentences
            if s.file == r.file and (r.decision is None or s.decision == r.decision)
        ]
        hits = [s for s in scope if r.norm in s.norm]
        if not hits:
            errors.append(
                f"traceability.md:{r.line}: {r.id}: quote not found in spec/{r.file}"
                f"{' ' + r.decision if r.decision else ''} (sentence changed or removed?): \"{r.quote}\""
            )
            continue
        if len(hits) > 1:
            where = ", ".join(f"line {s.line}" for s in hits)
            errors.append(
                f"traceability.md:{r.line}: {r.id}: quote matches {len(hits)} sentences ({where}); "
                "quote more of the one meant"
            )
            continue
        s = hits[0]
        useful = False
        if s.normative:
            s.covered_by.append(r)
            useful = True
        if r.decision and s.in_decision_part:
            covered_decisions.setdefault(r.decision, []).append(r)
            useful = True
        if not useful:
            errors.append(
                f"traceability.md:{r.line}: {r.id}: the quoted sentence ({s.where()}) has no "
                "MUST/SHALL/REQUIRED and is not in a **Decision.** part"
            )
        if r.status == "n/a" and not s.normative:
            errors.append(f"traceability.md:{r.line}: {r.id}: only a MUST sentence that is no requirement may be n/a")
        for path, name in r.refs:
            why = test_defined(path, name)
            if why:
                errors.append(f"traceability.md:{r.line}: {r.id}: {path}::{name}: {why}")

    missing = [s for s in sentences if s.normative and not s.covered_by]
    for s in missing:
        errors.append(f"{s.where()}: no row in spec/traceability.md for: \"{s.text}\"")
    missing_d = [d for d in decisions() if d not in covered_decisions]
    for d in missing_d:
        errors.append(f"spec/decisions.md {d}: no row in spec/traceability.md quoting its **Decision.** part")

    reqs = [r for r in rows if r.status in ("tested", "untested")]
    tested = sum(1 for r in reqs if r.status == "tested")
    na = sum(1 for r in rows if r.status == "n/a")
    normative = sum(1 for s in sentences if s.normative)
    print(
        f"spec_trace: {len(reqs)} requirements, {tested} with tests, {len(reqs) - tested} untested"
        f" ({normative} MUST/SHALL/REQUIRED sentences and {len(decisions())} decisions in spec/;"
        f" {na} rows n/a)"
    )
    if show_missing:
        for s in missing:
            print(suggestion(s))
        for d in missing_d:
            part = [x for x in sentences if x.decision == d and x.in_decision_part and len(x.norm) >= 12]
            print(suggestion(part[0]).replace("| ?? |", f"| {d} |", 1) if part else f"| {d} | decisions.md {d} | ? | untested (issue ?) |")
    sys.stdout.flush()
    if errors:
        for e in errors:
            print(f"spec_trace: {e}", file=sys.stderr)
        print(
            f"spec_trace: {len(errors)} problem(s); see the top of spec/traceability.md"
            " (`python3 tests/spec_trace.py --missing` prints rows to fill in)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

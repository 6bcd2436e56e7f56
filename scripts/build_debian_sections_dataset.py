#!/usr/bin/env python3
"""Build the small ``debian_sections`` text-classification dataset of ``examples/data/``.

Task: given the *short description* of a Debian binary package (the first line
of its ``Description`` field), predict the package's archive *section*
(``python``, ``fonts``, ``games``, ...).

The data comes from the APT package lists of the Debian machine this script
runs on (``apt-cache dumpavail``), so run it on Debian with current lists::

    apt-get update
    python scripts/build_debian_sections_dataset.py

Processing (deterministic for a given set of package lists):

1. parse every stanza of ``apt-cache dumpavail`` (one candidate version per
   package, across all configured suites);
2. take ``Section`` and strip the archive-area prefix (``contrib/``,
   ``non-free/``, ``non-free-firmware/``) and the first line of ``Description``;
3. normalise descriptions (whitespace collapsed) and drop every description
   that occurs in more than one section (ambiguous, e.g. "transitional dummy
   package"); deduplicate the rest within their section;
4. keep only the chosen sections, and draw a balanced random sample with a
   fixed seed: ``--train-per-class`` + ``--test-per-class`` distinct
   descriptions per section;
5. write ``train.jsonl`` / ``test.jsonl`` (fields ``text`` and ``label``, the
   section name as a string), shuffled with the same seed, and a README with
   provenance, licence and class counts.

Only the standard library is needed.
"""

from __future__ import annotations

import argparse
import collections
import datetime as _dt
import json
import random
import re
import subprocess
import sys
from pathlib import Path

DEFAULT_SECTIONS = (
    "doc",
    "fonts",
    "games",
    "libdevel",
    "net",
    "python",
    "science",
    "sound",
)
AREA_PREFIXES = ("contrib/", "non-free/", "non-free-firmware/")
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "examples" / "data" / "debian_sections"
COMMAND = "python scripts/build_debian_sections_dataset.py"


def read_dumpavail() -> str:
    try:
        proc = subprocess.run(
            ["apt-cache", "dumpavail"],
            check=True,
            capture_output=True,
            text=True,
            env={"LC_ALL": "C.UTF-8", "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"},
        )
    except FileNotFoundError:
        sys.exit("apt-cache not found: this script must run on a Debian(-based) machine.")
    except subprocess.CalledProcessError as exc:
        sys.exit(f"apt-cache dumpavail failed: {exc.stderr.strip()}")
    if "Package:" not in proc.stdout:
        sys.exit("apt-cache dumpavail returned no packages: run `apt-get update` first.")
    return proc.stdout


def parse_stanzas(text: str):
    """Yield dicts of the top-level fields of each deb822 stanza (first line only)."""
    for block in text.split("\n\n"):
        fields = {}
        for line in block.splitlines():
            if not line or line[0] in " \t":
                continue  # continuation line (e.g. a long description)
            key, sep, value = line.partition(":")
            if sep:
                fields[key.strip()] = value.strip()
        if "Package" in fields:
            yield fields


def normalise_section(section: str) -> str:
    for prefix in AREA_PREFIXES:
        if section.startswith(prefix):
            return section[len(prefix) :]
    return section


def normalise_text(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def read_release_info() -> list[dict]:
    """Describe the APT package indexes that ``apt-cache dumpavail`` read.

    One entry per downloaded ``*_Packages*`` list, with the area/architecture
    taken from its file name and origin/suite/codename/version/date from the
    matching ``InRelease`` (or ``Release``) file.
    """
    lists = Path("/var/lib/apt/lists")
    releases = {}
    for path in sorted(lists.glob("*Release")):
        if path.name.endswith("_InRelease") or path.name.endswith("_Release"):
            prefix = path.name.rsplit("_", 1)[0]
            info = {}
            with path.open(encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    if not line.strip():
                        if info:
                            break
                        continue
                    key, sep, value = line.partition(":")
                    if sep and key in ("Origin", "Suite", "Version", "Codename", "Date"):
                        info[key] = value.strip()
            releases.setdefault(prefix, info)
    infos = []
    for path in sorted(lists.glob("*_Packages*")):
        m = re.match(r"(?P<prefix>.*_dists_[^_]+)_(?P<area>.+)_binary-(?P<arch>[^_]+)_Packages", path.name)
        if not m:
            continue
        info = dict(releases.get(m["prefix"], {}))
        info["area"] = m["area"].replace("_", "/")
        info["arch"] = m["arch"]
        infos.append(info)
    return infos


def build(sections, train_per_class, test_per_class, seed):
    by_text = collections.defaultdict(set)  # normalised description -> sections
    raw_counts = collections.Counter()
    for st in parse_stanzas(read_dumpavail()):
        section = normalise_section(st.get("Section", ""))
        desc = normalise_text(st.get("Description", ""))
        if not section or not desc:
            continue
        raw_counts[section] += 1
        by_text[desc].add(section)

    ambiguous = {t for t, secs in by_text.items() if len(secs) > 1}
    per_section = collections.defaultdict(list)
    for text, secs in by_text.items():
        if len(secs) == 1:
            per_section[next(iter(secs))].append(text)

    rng = random.Random(seed)
    need = train_per_class + test_per_class
    train, test, stats = [], [], {}
    for section in sections:
        pool = sorted(per_section.get(section, []))
        if len(pool) < need:
            sys.exit(f"section {section!r} has only {len(pool)} unambiguous descriptions (< {need})")
        picked = rng.sample(pool, need)
        train += [{"text": t, "label": section} for t in picked[:train_per_class]]
        test += [{"text": t, "label": section} for t in picked[train_per_class:]]
        stats[section] = {
            "packages": raw_counts[section],
            "unique_unambiguous": len(pool),
            "train": train_per_class,
            "test": test_per_class,
        }
    rng.shuffle(train)
    rng.shuffle(test)
    return train, test, stats, len(ambiguous)


def write_jsonl(path: Path, rows) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")


README_TEMPLATE = """\
# debian_sections

A small text-classification dataset used by the demo (`python examples/demo.py`):
**short description of a Debian binary package → its archive section**.

| split | rows | file |
| --- | ---: | --- |
| train | {n_train} | `train.jsonl` |
| test | {n_test} | `test.jsonl` |

Each line is a JSON object with two fields: `text` (the package's short
description, i.e. the first line of its `Description` field) and `label`
(the section name as a string). {n_classes} balanced classes:

| label | packages in the lists | unambiguous unique descriptions | train | test |
| --- | ---: | ---: | ---: | ---: |
{class_rows}

Example rows:

```
{examples}
```

## Provenance

Built with

```
apt-get update
{command} --seed {seed} --train-per-class {train_pc} --test-per-class {test_pc}
```

on {built_on} (build date {build_date}), from the output of
`apt-cache dumpavail` (one candidate version per package) over these APT
package lists:

| origin | suite | codename | version | area | architecture | Release file date |
| --- | --- | --- | --- | --- | --- | --- |
{release_rows}

Processing: the archive-area prefix (`contrib/`, `non-free/`,
`non-free-firmware/`) is stripped from `Section`; descriptions are
whitespace-normalised; every description that occurs under more than one
section was dropped ({n_ambiguous} such descriptions, e.g. generic
"transitional package" texts); the remaining descriptions were deduplicated
within their section, and {train_pc} + {test_pc} of them were sampled per
section with `random.Random({seed})`. Train and test share no identical description
(near-duplicates, e.g. sibling packages of one source, may remain).
Rebuilding on a machine with different package lists gives a different sample.

## Licence

The texts are package *metadata*: each short description was written by
that package's maintainers in the package's `debian/control` file (part of
its source package) and is redistributed by the Debian archive in its
`Packages` index files. We know of no separate licence for the index files
themselves; the descriptions are covered by the licence of each package's
Debian packaging as stated in its `debian/copyright` (DFSG-free for every
package in `main`; the lists used here cover the area(s): {areas}). The
section labels are archive metadata assigned by the maintainers and the
Debian archive team.

This directory is a small derived sample ({n_total} one-line descriptions,
without package names) included only to demonstrate and test fine-tuning
with hftrain. It is not an official Debian product and is not endorsed by
Debian, and this note is not legal advice. If you need the authoritative
data, use the Debian archive's own `Packages` files.
"""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out-dir", type=Path, default=DEFAULT_OUT)
    p.add_argument(
        "--sections", default=",".join(DEFAULT_SECTIONS), help="comma-separated section names (default: %(default)s)"
    )
    p.add_argument("--train-per-class", type=int, default=400)
    p.add_argument("--test-per-class", type=int, default=100)
    p.add_argument("--seed", type=int, default=1234)
    args = p.parse_args(argv)

    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    train, test, stats, n_ambiguous = build(sections, args.train_per_class, args.test_per_class, args.seed)
    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    write_jsonl(out / "train.jsonl", train)
    write_jsonl(out / "test.jsonl", test)

    indexes = read_release_info()
    areas = ", ".join(sorted({f"`{r['area']}`" for r in indexes})) or "unknown"
    release_rows = (
        "\n".join(
            f"| {r.get('Origin', '?')} | {r.get('Suite', '?')} | {r.get('Codename', '?')} "
            f"| {r.get('Version', '-')} | {r['area']} | {r['arch']} | {r.get('Date', '?')} |"
            for r in indexes
        )
        or "| ? | ? | ? | ? | ? | ? | ? |"
    )
    class_rows = "\n".join(
        f"| `{s}` | {v['packages']} | {v['unique_unambiguous']} | {v['train']} | {v['test']} |"
        for s, v in stats.items()
    )
    os_name = "a Debian machine"
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    seen, examples = set(), []
    for row in train:
        if row["label"] not in seen:
            seen.add(row["label"])
            examples.append(json.dumps(row, ensure_ascii=False))
    readme = README_TEMPLATE.format(
        n_train=len(train),
        n_test=len(test),
        n_total=len(train) + len(test),
        n_classes=len(sections),
        class_rows=class_rows,
        examples="\n".join(sorted(examples)),
        command=COMMAND,
        seed=args.seed,
        train_pc=args.train_per_class,
        test_pc=args.test_per_class,
        built_on=os_name,
        build_date=_dt.date.today().isoformat(),
        release_rows=release_rows,
        n_ambiguous=n_ambiguous,
        areas=areas,
    )
    (out / "README.md").write_text(readme, encoding="utf-8")
    print(f"wrote {len(train)} train / {len(test)} test rows to {out}")
    for s, v in stats.items():
        print(f"  {s:10s} packages={v['packages']:5d} unique={v['unique_unambiguous']:5d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

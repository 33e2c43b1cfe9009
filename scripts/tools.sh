# Sourced by the build scripts: makes sure the wasm build tools are installed, from the
# package registries only, and exports the variables worker-build reads instead of
# downloading anything itself.
#
# - worker-build and wasm-bindgen-cli come from crates.io, compiled once into a cache
#   folder ($IMAGE_TAGGER_CACHE/tools, by default ~/.cache/image-tagger/tools) and reused.
# - wasm-opt (binaryen) and esbuild come from npm (package.json).
# wasm-bindgen-cli must equal the wasm-bindgen version in Cargo.lock, so it is read from there.
#
# Works with bash 3.2 and the BSD tools of macOS too: no flock, no GNU-only options.

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${IMAGE_TAGGER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/image-tagger}"
TOOLS="$CACHE/tools"
WORKER_BUILD_VERSION="0.8.7"
WASM_BINDGEN_VERSION="$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' "$ROOT/Cargo.lock")"

if [ -t 2 ]; then
  log() { printf '\033[2m[tools]\033[0m %s\n' "$*" >&2; }
else
  log() { printf '[tools] %s\n' "$*" >&2; }
fi

installed_version() { # binary -> version or empty
  [ -x "$TOOLS/bin/$1" ] && "$TOOLS/bin/$1" --version 2>/dev/null | awk '{ print $NF }' || true
}

cargo_install() { # crate version binary how-long [cargo install options...]
  local crate="$1" version="$2" bin="$3" how_long="$4" start="$SECONDS"
  shift 4
  [ "$(installed_version "$bin")" != "$version" ] || return 0
  log "compiling $crate $version with cargo install, into $TOOLS"
  log "  once per machine, about $how_long on 2 cores; later builds reuse it. cargo's progress follows."
  # With the crate's own Cargo.lock first, for reproducibility. That fails when a locked
  # dependency is missing from the registry or yanked: then its error stays on screen and
  # the install is retried with the newest compatible dependencies.
  if ! cargo install "$crate" --version "$version" --root "$TOOLS" --bin "$bin" --locked "$@"; then
    log "the install of $crate with its own Cargo.lock failed (error above);"
    log "  retrying with the newest compatible dependencies"
    if ! cargo install "$crate" --version "$version" --root "$TOOLS" --bin "$bin" "$@"; then
      log "could not install $crate $version (error above)"
      return 1
    fi
  fi
  log "$crate $version installed in $((SECONDS - start)) s"
}

# A lock that works everywhere (flock(1) is Linux-only): mkdir is atomic. The holder writes
# its host and pid into the folder; a lock whose holder is gone, or older than an hour (a
# cold install takes minutes), is stale and taken over.
LOCK="$TOOLS/.install-lock"
lock_is_stale() {
  local host pid
  read -r host pid 2>/dev/null <"$LOCK/owner" || true
  if [ "${host:-}" = "$(uname -n)" ] && [ -n "${pid:-}" ] && ! ps -p "$pid" >/dev/null 2>&1; then
    return 0
  fi
  [ -n "$(find "$LOCK" -maxdepth 0 -mmin +60 2>/dev/null)" ]
}
acquire_lock() {
  local waited=0
  until mkdir "$LOCK" 2>/dev/null; do
    if lock_is_stale; then
      log "removing a stale lock ($LOCK: $(cat "$LOCK/owner" 2>/dev/null || echo 'no owner'))"
      rm -rf "$LOCK"
      continue
    fi
    if [ $((waited % 30)) -eq 0 ]; then
      log "waiting for another set-up of the tools to finish (lock: $LOCK)"
    fi
    sleep 1
    waited=$((waited + 1))
  done
  echo "$(uname -n) ${BASHPID:-$$}" >"$LOCK/owner"
}

mkdir -p "$TOOLS"
(
  # One installer at a time, even when wrangler builds both workers at once. The subshell
  # releases the lock however it ends.
  locked=""
  trap '[ -z "$locked" ] || rm -rf "$LOCK"' EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  trap 'exit 129' HUP
  acquire_lock
  locked=1
  if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
    log "adding the wasm32-unknown-unknown target"
    rustup target add wasm32-unknown-unknown >&2
  fi
  # Compiled once, then run for a fraction of a second per build: what counts is their
  # compile time. So: no optimisation (opt-level 0 instead of release's 3: the same output,
  # and wasm-bindgen takes 0.2 s instead of 0.05 s per worker), only the binary that the
  # build runs (--bin), and wasm-bindgen-cli without its default features, which only add a
  # TLS stack (rustls, ring) for downloads that wasm-bindgen never makes: it only processes
  # a local .wasm file. Together they cut the compile from about 11 to under 4 minutes of
  # CPU time.
  export CARGO_PROFILE_RELEASE_OPT_LEVEL=0
  cargo_install worker-build "$WORKER_BUILD_VERSION" worker-build "2 to 3 minutes"
  cargo_install wasm-bindgen-cli "$WASM_BINDGEN_VERSION" wasm-bindgen "a minute" --no-default-features
  # Installed, and no older than the lock file (a pull may have added a package).
  if [ ! -x "$ROOT/node_modules/.bin/wasm-opt" ] || [ ! -d "$ROOT/node_modules/wrangler" ] ||
    [ "$ROOT/package-lock.json" -nt "$ROOT/node_modules/.package-lock.json" ]; then
    log "installing the npm packages of package-lock.json (wrangler, miniflare, binaryen, ...)"
    (cd "$ROOT" && npm ci --no-audit --no-fund >&2)
  fi
)

export WASM_BINDGEN_BIN="$TOOLS/bin/wasm-bindgen"
export WASM_OPT_BIN="$ROOT/node_modules/.bin/wasm-opt"
export ESBUILD_BIN="$ROOT/node_modules/.bin/esbuild"
export WORKER_BUILD_BIN="$TOOLS/bin/worker-build"

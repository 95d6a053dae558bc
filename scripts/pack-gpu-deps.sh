#!/usr/bin/env bash
# Packs, on this Debian 12 machine, the Debian packages that a bare GPU machine lacks but simmim's tests,
# benchmarks and examples need, unpacked (not installed) into one folder that travels with the tree:
#
#   scripts/pack-gpu-deps.sh [--force] [DIR]     # DIR defaults to <repo>/.gpu-deps
#
# Contents: Catch2 3 (libcatch2-dev from bookworm-backports; `catch2` there is only a transitional package),
# Google Benchmark (libbenchmark-dev + its runtime libbenchmark1debian), CLI11, nlohmann-json, stb
# (libstb-dev + libstb0), zlib (zlib1g-dev + zlib1g) and Fashion-MNIST (dataset-fashion-mnist). Each .deb is
# fetched with `apt-get download` into a temp folder and unpacked with `dpkg -x`; nothing is installed.
# Docs and man pages are dropped, and absolute symbolic links (libz.so -> /lib/...) are made relative so that
# the folder works wherever it is copied. DIR inside the repo is added to .gitignore unless already ignored.
# scripts/gpu-check.sh --deps DIR uses it on the GPU machine (docs/gpu.md).
#
# Idempotent: when DIR already holds exactly these package versions it is left alone (--force repacks).
set -euo pipefail

usage() {
  sed -n '2,15p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
force=0
dir=""
while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --force) force=1 ;;
    -*) echo "pack-gpu-deps: unknown option '$1' (see --help)" >&2; exit 2 ;;
    *) [ -z "$dir" ] || { echo "pack-gpu-deps: one DIR only" >&2; exit 2; }; dir="$1" ;;
  esac
  shift
done
dir="${dir:-$root/.gpu-deps}"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
case "$dir" in
  /|/usr|/usr/*|/lib|/lib/*|/etc|/etc/*|"$root") echo "pack-gpu-deps: refusing DIR '$dir'" >&2; exit 2 ;;
esac
marker="$dir/.simmim-gpu-deps"   # what was unpacked: one "package version" a line

if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg >/dev/null 2>&1; then
  echo "pack-gpu-deps: needs apt-get and dpkg (run it on the Debian 12 development machine)" >&2
  exit 1
fi

# package[/release]: Catch2 3 is only in bookworm-backports (bookworm has 2.13).
specs=(libcatch2-dev/bookworm-backports libbenchmark-dev libbenchmark1debian libcli11-dev nlohmann-json3-dev
       libstb-dev libstb0 zlib1g-dev zlib1g dataset-fashion-mnist)

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
apt_opts=()
# As root apt drops to the _apt user to download, which cannot write into a private temp folder.
[ "$(id -u)" -ne 0 ] || apt_opts=(-o APT::Sandbox::User=root)

updated=0
apt_update() {
  [ $updated -eq 0 ] || return 0
  if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    echo "pack-gpu-deps: adding bookworm-backports to apt's sources (Catch2 3)"
    echo "deb http://deb.debian.org/debian bookworm-backports main" |
      $SUDO tee /etc/apt/sources.list.d/simmim-backports.list >/dev/null
  fi
  echo "pack-gpu-deps: apt-get update"
  $SUDO apt-get update -qq
  updated=1
}

# The .deb files apt would fetch, as "url filename" lines, without downloading (stale lists: update once).
print_uris() { apt-get "${apt_opts[@]}" download --print-uris "${specs[@]}" 2>/dev/null; }
if ! uris="$(print_uris)" || [ "$(printf '%s\n' "$uris" | grep -c '\.deb')" -ne ${#specs[@]} ]; then
  apt_update
  uris="$(print_uris)" || { echo "pack-gpu-deps: apt cannot find: ${specs[*]}" >&2; exit 1; }
fi
# 'url' name_version_arch.deb size hash -> "name version" (versions decoded: %3a is ':').
wanted="$(printf '%s\n' "$uris" | awk '{print $2}' | sed 's/\.deb$//; s/%3a/:/g' |
          awk -F_ '{print $1, $2}' | sort)"
[ "$(printf '%s\n' "$wanted" | wc -l)" -eq ${#specs[@]} ] ||
  { echo "pack-gpu-deps: expected ${#specs[@]} packages, apt offers:" >&2; printf '%s\n' "$wanted" >&2; exit 1; }
printf '%s\n' "$wanted" | grep '^libcatch2-dev 3\.' >/dev/null ||
  { echo "pack-gpu-deps: bookworm-backports offers no Catch2 3.x" >&2; exit 1; }

report() {
  echo "pack-gpu-deps: $dir holds:"
  sed 's/^/  /' "$marker"
  echo "pack-gpu-deps: Catch2 config:    $(find "$dir" -name Catch2Config.cmake -printf '%P\n')"
  echo "pack-gpu-deps: benchmark config: $(find "$dir" -name benchmarkConfig.cmake -printf '%P\n')"
  echo "pack-gpu-deps: Fashion-MNIST:    $(find "$dir/usr/share/datasets/fashion-mnist" -name '*.gz' -printf '%f\n' | sort | tr '\n' ' ')"
  echo "pack-gpu-deps: by folder:"
  (cd "$dir" && du -sh -- */* 2>/dev/null | sed 's/^/  /')
  echo "pack-gpu-deps: total $(du -sh "$dir" | cut -f1) ($(du -sb "$dir" | cut -f1) bytes, $(find "$dir" -type f | wc -l) files)"
}

ignore_dir() {
  # DIR inside the repo: make sure git ignores it (the device tool sends it only when named in `carry`).
  case "$dir/" in "$root"/*) ;; *) return 0 ;; esac
  git -C "$root" rev-parse --git-dir >/dev/null 2>&1 || return 0
  local rel="${dir#"$root"/}"
  if git -C "$root" check-ignore -q -- "$rel/.simmim-gpu-deps"; then
    echo "pack-gpu-deps: $rel is ignored by git"
  else
    [ -s "$root/.gitignore" ] && [ -n "$(tail -c 1 "$root/.gitignore")" ] && echo >>"$root/.gitignore"
    echo "/$rel/" >>"$root/.gitignore"
    echo "pack-gpu-deps: added /$rel/ to .gitignore"
  fi
}

if [ $force -eq 0 ] && [ -f "$marker" ] && [ "$(cat "$marker")" = "$wanted" ] &&
   [ -d "$dir/usr/share/datasets/fashion-mnist" ]; then
  echo "pack-gpu-deps: up to date"
  ignore_dir
  report
  exit 0
fi

# Replaces DIR's contents only when DIR is empty or was made by this script.
if [ -n "$(ls -A "$dir")" ] && [ ! -f "$marker" ]; then
  echo "pack-gpu-deps: '$dir' is not empty and was not made by this script; choose another DIR" >&2
  exit 1
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
mkdir "$tmp/debs" "$tmp/tree"
echo "pack-gpu-deps: downloading ${#specs[@]} packages"
if ! (cd "$tmp/debs" && apt-get "${apt_opts[@]}" -qq download "${specs[@]}"); then
  apt_update
  (cd "$tmp/debs" && apt-get "${apt_opts[@]}" -qq download "${specs[@]}")
fi
for deb in "$tmp"/debs/*.deb; do
  dpkg -x "$deb" "$tmp/tree"
done
rm -rf "$tmp/tree/usr/share/doc" "$tmp/tree/usr/share/man" "$tmp/tree/usr/share/lintian"

# Absolute links point into this machine's /; point them inside the folder instead (merged /usr too).
while IFS= read -r -d '' link; do
  target="$(readlink "$link")"
  case "$target" in /*) ;; *) continue ;; esac
  inside=""
  for cand in "$tmp/tree$target" "$tmp/tree/usr$target" "$tmp/tree${target#/usr}"; do
    if [ -e "$cand" ]; then inside="$cand"; break; fi
  done
  [ -n "$inside" ] || { echo "pack-gpu-deps: link ${link#"$tmp/tree"} -> $target leads outside the packages" >&2; exit 1; }
  ln -sfn "$(realpath --relative-to="$(dirname "$link")" "$inside")" "$link"
done < <(find "$tmp/tree" -type l -print0)
# Every link must resolve inside the folder.
if dangling="$(find "$tmp/tree" -xtype l)" && [ -n "$dangling" ]; then
  echo "pack-gpu-deps: dangling links:" >&2; echo "$dangling" >&2; exit 1
fi
for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
  [ -f "$tmp/tree/usr/share/datasets/fashion-mnist/$f.gz" ] ||
    { echo "pack-gpu-deps: dataset-fashion-mnist has no $f.gz" >&2; exit 1; }
done

# Swap the new tree in (DIR is empty or ours); the marker says "incomplete" until the copy is done.
echo incomplete >"$marker"
find "$dir" -mindepth 1 ! -path "$marker" -delete
cp -a "$tmp/tree/." "$dir/"
printf '%s\n' "$wanted" >"$marker"
ignore_dir
report

#!/usr/bin/env bash
# Fails when a tracked file refers to a path outside the repository: a test
# reading a file from a folder beside the checkout, a document linking to
# one, a Cargo path dependency or a symlink leading out. A fresh clone must
# build, test and read whole on its own (issue 10). Run by scripts/test.sh.
#
# The patterns are written with a bracket (`/wor[k]/`) so that this file
# does not match itself.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd -P)
failed=0

fail() {
    printf '%s\n' "$*" >&2
    failed=1
}

# Paths of the machine the project was started on, and its shared folder.
outside_patterns=(
    -e '\.\./share[d]\b'   # the shared folder beside the checkout
    -e 'share[d]/reference' # the Python recordings, now tests/fixtures/python-0.14
    -e '/wor[k]/'          # the original machine's work folder
    -e '/hom[e]/[A-Za-z_]' # someone's home directory
    -e '/roo[t]/'          # root's home directory
    -e '/User[s]/'         # a macOS home directory
)
if hits=$(git grep -nIE "${outside_patterns[@]}"); then
    fail "$hits"
fi

# Cargo `path = "…"` values (dependencies, targets) must stay in the repository.
while IFS= read -r manifest; do
    dir=$(dirname "$manifest")
    while IFS= read -r rel; do
        target=$(realpath -m "$dir/$rel")
        case "$target/" in
            "$root"/*) ;;
            *) fail "$manifest: path \"$rel\" leads outside the repository ($target)" ;;
        esac
    done < <(grep -oE '\bpath *= *"[^"]+"' "$manifest" | sed -E 's/.*"([^"]+)"/\1/')
done < <(git ls-files -- 'Cargo.toml' '**/Cargo.toml')

# Tracked symlinks must point inside the repository.
while IFS= read -r link; do
    to=$(readlink "$link")
    case "$to" in
        /*) target=$(realpath -m "$to") ;;
        *) target=$(realpath -m "$(dirname "$link")/$to") ;;
    esac
    case "$target/" in
        "$root"/*) ;;
        *) fail "$link: symlink to $target, outside the repository" ;;
    esac
done < <(git ls-files -s | awk '$1 == "120000" { print $4 }')

if [ "$failed" -ne 0 ]; then
    echo "check-self-contained: the lines above refer to paths outside the repository;" >&2
    echo "  copy what they need into it (recorded data goes under tests/fixtures/) and point at the copy" >&2
    exit 1
fi
echo "check-self-contained: no tracked file refers to a path outside the repository"

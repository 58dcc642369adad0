#!/usr/bin/env bash
# No lapin type in the core's public API with its default features (issue
# 14): a lapin major release must not force one on logcollect's users. The
# items that name lapin types live behind the `lapin-api` feature, which
# follows lapin's versions.
#
# rustdoc's JSON output (unstable: the stable toolchain gives it with
# RUSTC_BOOTSTRAP=1, so no other toolchain is needed) lists every public item of the
# crate with each type it names resolved to its crate, so the check is exact:
# any path into lapin in a public item's signature, field, impl or re-export
# fails it. (rustdoc's HTML with --no-deps prints a foreign type by its bare
# name, `FieldTable`, so grepping it would miss most uses.)
#
# lapin re-exports the types of the amq-protocol crates (`lapin::types::
# FieldTable`, `lapin::BasicProperties`, `lapin::uri::AMQPUri` are theirs),
# so those count as lapin's.
#
# Usage: scripts/check-public-api.sh [crate] [banned crate ...]
#   (defaults: logcollect, then lapin and the amq_protocol crates);
#   PUBLIC_API_TOOLCHAIN picks a toolchain (default: the active one, with
#   RUSTC_BOOTSTRAP=1). Exits 1 when a banned crate's type appears.
set -euo pipefail
cd "$(dirname "$0")/.."
crate=${1:-logcollect}
shift || true
banned=${*:-lapin amq_protocol amq_protocol_types amq_protocol_uri amq_protocol_tcp}
toolchain=()
if [[ -n ${PUBLIC_API_TOOLCHAIN:-} ]]; then
    toolchain=("+$PUBLIC_API_TOOLCHAIN")
fi
target=$(cargo metadata --format-version 1 --no-deps |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
rm -f "$target/public-api/doc/${crate//-/_}.json"
# Its own target directory: RUSTC_BOOTSTRAP changes the flags, and sharing
# the main one would rebuild everything for the next cargo command.
RUSTC_BOOTSTRAP=1 CARGO_TARGET_DIR="$target/public-api" \
    cargo "${toolchain[@]}" rustdoc -q -p "$crate" --lib -- -Z unstable-options --output-format json
json="$target/public-api/doc/${crate//-/_}.json"
[[ -f $json ]] || { echo "check-public-api: rustdoc wrote no $json"; exit 1; }
python3 - "$json" "$crate" $banned <<'EOF'
import json
import sys

path, crate, banned = sys.argv[1], sys.argv[2], set(sys.argv[3:])
doc = json.load(open(path))
banned_ids = {int(k) for k, c in doc["external_crates"].items() if c["name"] in banned}
paths = doc["paths"]
index = doc["index"]


def crate_of(item_id):
    summary = paths.get(str(item_id))
    return summary["crate_id"] if summary else None


def named(item_id):
    summary = paths.get(str(item_id))
    return "::".join(summary["path"]) if summary else f"#{item_id}"


def where(item):
    """A readable name for an index item (impls and fields have none of their own)."""
    if item.get("name"):
        owner = paths.get(str(item["id"]))
        return "::".join(owner["path"]) if owner else item["name"]
    span = item.get("span") or {}
    return f'{item["inner"] and next(iter(item["inner"]))} at {span.get("filename")}:{(span.get("begin") or [0])[0]}'


def foreign(value, found):
    """Every path to a banned crate's item named anywhere in `value`."""
    if isinstance(value, dict):
        for key, v in value.items():
            if key == "id" and isinstance(v, int) and crate_of(v) in banned_ids:
                found.add(named(v))
            else:
                foreign(v, found)
    elif isinstance(value, list):
        for v in value:
            foreign(v, found)
    return found


bad = []
for item in index.values():
    if item.get("crate_id") in banned_ids:
        bad.append((f'{item.get("name")} (a re-exported item of {",".join(banned)})', set()))
        continue
    found = foreign(item.get("inner"), set())
    if found:
        bad.append((where(item), found))
if bad:
    print(f"{crate}'s public API (default features) names types of {', '.join(sorted(banned))}:")
    for name, found in sorted(bad, key=lambda b: b[0]):
        print(f"  {name}: {', '.join(sorted(found))}")
    print("Put these items behind the `lapin-api` feature (see crates/logcollect/Cargo.toml).")
    sys.exit(1)
print(f"{crate}'s public API (default features) names no type of {', '.join(sorted(banned))}")
EOF

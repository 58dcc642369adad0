#!/usr/bin/env bash
# The core's modules depend one way (ARCHITECTURE.md, "Layering"):
#
#   error, report <- record <- filter <- encode <- uri <- config <- amqp
#     <- ship <- front <- boot, correlation, testing
#
# A file of crates/logcollect/src may name `crate::<module>` (in a `use` or
# in code) only for its own module or one at its layer or to the left. Code
# names modules, not the crate root's re-exports (`crate::Shipper`), so every
# edge is visible here. Comments and test-only code (files named *tests.rs,
# inline `mod tests { … }`) are not checked: tests may reach anything.
#
# Usage: scripts/check-layers.sh [source directory]; exits 1 on a violation.
set -euo pipefail
cd "$(dirname "$0")/.."
src=${1:-crates/logcollect/src}

# The layer of each module; a module missing here is an error too, so a new
# module must be placed in the order.
layer_of() {
    case $1 in
        error | report) echo 0 ;;
        record) echo 1 ;;
        filter) echo 2 ;;
        encode) echo 3 ;;
        uri) echo 4 ;;
        config) echo 5 ;;
        amqp) echo 6 ;;
        ship) echo 7 ;;
        front) echo 8 ;;
        boot | correlation | testing) echo 9 ;;
        *) echo "" ;;
    esac
}

status=0
while IFS= read -r file; do
    rel=${file#"$src"/}
    [[ $rel == lib.rs ]] && continue
    [[ $rel == *tests.rs ]] && continue
    module=${rel%%/*}
    module=${module%.rs}
    own=$(layer_of "$module")
    if [[ -z $own ]]; then
        echo "$file: module \`$module\` has no layer in scripts/check-layers.sh (add it, and to ARCHITECTURE.md)"
        status=1
        continue
    fi
    # Lines of code before any inline test module, comments removed, each as
    # "<line number>:<crate path>".
    while IFS=: read -r line target; do
        case $target in
            [A-Z]*)
                echo "$file:$line: crate::$target goes through the crate root; name the module (crate::<module>::$target)"
                status=1
                continue
                ;;
        esac
        theirs=$(layer_of "$target")
        if [[ -z $theirs ]]; then
            echo "$file:$line: crate::$target is not a module of the layering"
            status=1
        elif [[ $target != "$module" && $theirs -gt $own ]]; then
            echo "$file:$line: $module (layer $own) imports crate::$target (layer $theirs): dependencies must run one way, see ARCHITECTURE.md"
            status=1
        fi
    done < <(awk '
        /^[[:space:]]*(pub(\([a-z]+\))?[[:space:]]+)?mod [a-z_]*tests[[:space:]]*\{/ { exit }
        {
            line = $0
            sub(/\/\/.*/, "", line)
            while (match(line, /crate::[A-Za-z_][A-Za-z0-9_]*/)) {
                print NR ":" substr(line, RSTART + 7, RLENGTH - 7)
                line = substr(line, RSTART + RLENGTH)
            }
        }' "$file")
done < <(find "$src" -name '*.rs' | sort)

if [[ $status -eq 0 ]]; then
    echo "layers: every crate:: import of $src runs one way"
fi
exit $status

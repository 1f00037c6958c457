#!/usr/bin/env bash
# Fails when a module imports a sibling its layer may not use:
#   engine, transformation  -> no sibling
#   downstream, upstream    -> engine, transformation
#   tunnel                  -> engine
#   cmd/syncer, integration -> all
# Usage: verify-layering.sh [repository root]
set -uo pipefail
root=${1:-$(cd "$(dirname "$0")/.." && pwd)}
prefix=github.com/tmc-syncer/syncer/

allowed() {
  case $1 in
    modules/engine | modules/transformation) echo "" ;;
    modules/downstream | modules/upstream) echo "modules/engine modules/transformation" ;;
    modules/tunnel) echo "modules/engine" ;;
    cmd/syncer | integration) echo "*" ;;
    *) echo "unknown" ;;
  esac
}

fail=0
cd "$root"
for mod in $(go work edit -json | sed -n 's/.*"DiskPath": "\.\/\(.*\)".*/\1/p'); do
  rule=$(allowed "$mod")
  if [ "$rule" = unknown ]; then
    echo "verify-layering: $mod has no layering rule; add one to hack/verify-layering.sh" >&2
    fail=1
    continue
  fi
  [ "$rule" = "*" ] && continue
  if ! deps=$(cd "$mod" && GOWORK=off go list -deps -test -f '{{with .Module}}{{.Path}}{{end}}' ./... 2>&1); then
    echo "verify-layering: $mod does not build alone (GOWORK=off go list -deps):" >&2
    echo "$deps" | head -5 >&2
    fail=1
    continue
  fi
  # The modules of every package the module and its tests build.
  for dep in $(echo "$deps" | grep "^$prefix" | sed "s#^$prefix##" | sort -u); do
    [ "$dep" = "$mod" ] && continue
    ok=0
    for a in $rule; do [ "$dep" = "$a" ] && ok=1; done
    [ $ok = 1 ] || { echo "verify-layering: $mod imports $prefix$dep, which its layer may not use (allowed: ${rule:-none})" >&2; fail=1; }
  done
done
exit $fail

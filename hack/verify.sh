#!/usr/bin/env bash
# Checks what review should never have to: go.work lists every module, gofmt,
# go mod tidy, and the layering between modules.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
fail=0
err() { printf 'verify: %s\n' "$*" >&2; fail=1; }

# go.work uses exactly the modules that have a go.mod (hack/ holds tool modules).
want=$(git ls-files --cached --others --exclude-standard '*go.mod' | grep -v '^hack/' | xargs -n1 dirname | sort)
have=$(go work edit -json | sed -n 's/.*"DiskPath": "\.\/\(.*\)".*/\1/p' | sort)
if [ "$want" != "$have" ]; then
  err "go.work does not list exactly the modules with a go.mod:"
  diff <(echo "$want") <(echo "$have") >&2 || true
fi

# gofmt.
unformatted=$(git ls-files --cached --others --exclude-standard '*.go' | xargs -r gofmt -l)
[ -z "$unformatted" ] || err "gofmt needed: $unformatted"

# go mod tidy leaves no diff, in every module including the tool modules.
for mod in $(git ls-files --cached --others --exclude-standard '*go.mod' | xargs -n1 dirname); do
  (cd "$mod" && GOWORK=off go mod tidy -diff >/dev/null 2>&1) || err "$mod: go mod tidy changes go.mod/go.sum (run: cd $mod && GOWORK=off go mod tidy)"
done

# Layering.
"$root/hack/verify-layering.sh" "$root" || fail=1

exit $fail

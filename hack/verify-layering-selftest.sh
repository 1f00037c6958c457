#!/usr/bin/env bash
# Proves that the layering check catches a violation: in a scratch copy of the
# repository, the engine imports downstream (with the go.mod lines a developer
# would add), and verify-layering.sh must fail naming it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
(cd "$root" && git ls-files --cached --others --exclude-standard -z | xargs -0 cp --parents -t "$scratch")
cat > "$scratch/modules/engine/layering_violation.go" <<'GO'
package engine

import _ "github.com/tmc-syncer/syncer/modules/downstream"
GO
(cd "$scratch/modules/engine" &&
  go mod edit -require=github.com/tmc-syncer/syncer/modules/downstream@v0.0.0-00010101000000-000000000000 \
    -replace=github.com/tmc-syncer/syncer/modules/downstream=../downstream \
    -replace=github.com/tmc-syncer/syncer/modules/transformation=../transformation &&
  GOWORK=off GOFLAGS=-mod=mod go mod tidy >/dev/null 2>&1)
if out=$("$scratch/hack/verify-layering.sh" "$scratch" 2>&1); then
  echo "verify-layering-selftest: an import of downstream from engine was NOT caught" >&2
  exit 1
fi
if ! grep -q "modules/engine imports github.com/tmc-syncer/syncer/modules/downstream" <<<"$out"; then
  echo "verify-layering-selftest: the check failed, but not with the expected message:" >&2
  echo "$out" >&2
  exit 1
fi
echo "verify-layering-selftest: engine -> downstream import caught: $(grep 'modules/engine imports' <<<"$out")"

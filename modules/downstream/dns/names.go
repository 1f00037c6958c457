package dns

import (
	"crypto/sha256"
	"math/big"
	"strings"
)

// namePrefix starts every per-workspace DNS object's name, as in kcp.
const namePrefix = "kcp-dns-"

// ID returns the name kcp v0.11 gives every per-workspace DNS object of logical cluster
// cluster synced by SyncTarget syncTargetName with UID syncTargetUID:
// "kcp-dns-<target>-<8>-<8>", the two hashes being the first 8 characters of the lower-case
// base36 SHA-224 digests of the UID and of the cluster name.
func ID(cluster, syncTargetUID, syncTargetName string) string {
	return namePrefix + syncTargetName + "-" + base36Prefix(syncTargetUID, 8) + "-" + base36Prefix(cluster, 8)
}

// base36Prefix returns the first n characters of the lower-case base36 SHA-224 digest of s:
// the digest read as one big-endian unsigned integer, one "0" prepended per leading zero byte
// (kcp's encoding, also used for downstream namespace names).
func base36Prefix(s string, n int) string {
	sum := sha256.Sum224([]byte(s))
	zeros := 0
	for zeros < len(sum) && sum[zeros] == 0 {
		zeros++
	}
	text := strings.Repeat("0", zeros) + new(big.Int).SetBytes(sum[:]).Text(36)
	return text[:min(n, len(text))]
}

package identity

import (
	"crypto/sha256"
	"math/big"
)

// SyncTargetKey returns kcp's syncTargetKey: base62 (Go's big.Int.Text(62):
// digits, then a–z, then A–Z) of SHA-224 over "<logical cluster>:<sync target name>".
func SyncTargetKey(logicalCluster, syncTargetName string) string {
	sum := sha256.Sum224([]byte(logicalCluster + ":" + syncTargetName))
	return new(big.Int).SetBytes(sum[:]).Text(62)
}

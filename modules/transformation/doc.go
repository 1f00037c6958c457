// Package transformation is a placeholder until its issue lands.
package transformation

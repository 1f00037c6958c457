// Package tunnel is a placeholder until its issue lands.
package tunnel

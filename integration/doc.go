// Package integration is a placeholder until its issue lands.
package integration

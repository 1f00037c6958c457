// Package upstream is a placeholder until its issue lands.
package upstream

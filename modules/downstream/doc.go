// Package downstream is a placeholder until its issue lands.
package downstream

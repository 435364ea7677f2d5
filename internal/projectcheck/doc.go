// Package projectcheck holds project-wide checks written as tests: every
// package is documented, and the verifier never links TPM device code.
package projectcheck

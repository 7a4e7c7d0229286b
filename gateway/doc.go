// Package gateway is the one place where a query between members is decided:
// it checks that the subject matches the payload, applies the access rule,
// verifies the consent or other legal basis, forwards the query to the
// provider, trims the reply to the agreed fields and releases it only after
// the decision is durably audited.
//
// Invariant: fail closed. A reply payload leaves the gateway only when every
// check passed and the audit log acknowledged the decision; every other path
// answers with a status whose message carries no citizen data.
package gateway

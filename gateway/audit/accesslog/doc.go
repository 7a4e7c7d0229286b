// Package accesslog is the citizen's access log: for the authenticated
// citizen, every query about them — who asked, when, which data, for what
// purpose, on which legal basis — newest first, each with a proof that its
// record is in the tamper-evident audit log. It is served over gRPC
// (jisr.audit.v1.AccessLog) and HTTP/JSON, with a small page for people.
//
// Invariant: the citizen is always the one the credential names; no request
// field can select another citizen. An access appears only once its
// VisibleAt has passed (mandates the law allows to disclose late). No eID
// reaches it: only the citizen key that the sign-in (package citizen)
// derived, so none can appear in a URL, a log line or an error.
package accesslog

// Package console is the auditor's console: the audited decisions in a
// filterable, paged table, a decision's trace as a waterfall, statistics and
// anomaly findings, and the integrity of every gateway log — in English,
// French and Arabic.
//
// Invariants: every route that shows a record or a span answers only the
// auditor identity (the client certificate's SPIFFE ID …/auditor, see
// Auth); every view that shows records is itself appended to the audit log
// before it is served; a citizen's eID, entered to filter by, is turned into
// its ckey at once and never stored, logged or put in a URL.
package console

// Package auditor is what the auditor identity does with the live audit
// streams: select records (by citizen key, member, log, decision, time),
// read the latest and follow new ones, export them (gateway/audit/export),
// and feed every checkpoint and record to the offline verifier
// (gateway/audit/verify), and print records and reports for people and
// tools. cmd/jisr's `jisr audit` commands are its flags.
package auditor

// Package process is the wiring of one jisr process: what the subcommands
// share (Env: the global flags' values, the log, the federation file, the
// NATS connection as an identity, the process's tracing and metrics), and
// how each part is started from its flags' values (StartNATS, NATSInit,
// StartGateway, StartConsentService, StartAdapter, StartBackend): it reads
// the files they name and hands each library node (gateway/node,
// gateway/consent/service, services/adapter/node, services/backend) its
// Config.
//
// It lives under cmd/internal because it imports every layer; cmd/jisr
// keeps only the cobra commands, their flags and help, and calls it.
package process
